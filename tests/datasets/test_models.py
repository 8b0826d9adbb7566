"""The object set: `MeshDatabase.from_points` (the point-cloud objects of the synthetic problems), and
`batched` gives the same `ObjectBatch` for the same points whichever way the database was built."""
import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.structures import ObjectBatch, ObjectSet
from cosypose_nb.geometry.symmetries import make_symmetries, symmetric_centres, symmetry_counts
from cosypose_nb.datasets.objects import MeshDatabase, load_default_objects, subsample_points, even_indices


@pytest.fixture(scope="module")
def problem_objects():
    from cosypose_nb.synthetic.mvproblems import make_object_set
    return make_object_set(seed=3, n_points=200, n_surface_points=500)


def _as_db(objs, **kw):
    "The `MeshDatabase` made again of the clouds and symmetry specs of `objs` (a database of point clouds)."
    return MeshDatabase.from_points({l: objs[l].points for l in objs.labels}, symmetry_specs={l: objs[l].info for l in objs.labels},
                                    surface_points={l: objs[l].surface for l in objs.labels}, **kw)


def test_from_points_clouds_symmetries_diameters(problem_objects):
    "Points as given, symmetries re-discretised from the specs (identity first, identity-padded), diameters the largest distance."
    objs = problem_objects
    assert isinstance(objs, ObjectSet) and len(objs) == 7 and objs.n_points == 200
    lab = objs.labels + objs.labels[:2]
    assert objs.points(lab).shape == (9, 200, 3) and objs.surface_points(lab).shape == (9, 500, 3)
    for n in (None, 8, 64):
        S = objs.symmetries(lab, n_continuous=n)
        for l, s in zip(lab, S):
            info = objs[l].info
            want = make_symmetries(info["symmetries_discrete"], info["symmetries_continuous"], n_continuous=n or 64)
            assert torch.equal(s[:len(want)], want) and torch.equal(s[len(want):], torch.eye(4, dtype=s.dtype).expand(len(s) - len(want), 4, 4))
            assert torch.equal(objs.object_symmetries(l, n), want)
    P = objs.points(objs.labels)
    assert torch.allclose(objs.diameters(objs.labels), torch.cdist(P, P).amax((1, 2)), rtol=1e-12, atol=0)
    db = _as_db(objs, n_continuous=64)                                   # the same clouds and specs: the same database
    assert all(torch.equal(getattr(db, f)(lab), getattr(objs, f)(lab)) for f in ("points", "surface_points", "symmetries", "diameters"))


def test_uneven_clouds_cut_to_common_size():
    rng = np.random.default_rng(0)
    P = {"obj_000001": rng.normal(size=(101, 3)), "obj_000002": rng.normal(size=(40, 3))}
    db = MeshDatabase.from_points(P)
    assert db.n_points == 40 and np.array_equal(db["obj_000001"].points, P["obj_000001"][even_indices(101, 40)])
    assert db.diameters(["obj_000002"]).item() == pytest.approx(np.sqrt(((P["obj_000002"][:, None] - P["obj_000002"][None]) ** 2).sum(-1)).max())
    t = torch.from_numpy(P["obj_000001"])[None]
    assert torch.equal(subsample_points(t, 40)[0], torch.from_numpy(db["obj_000001"].points))
    assert subsample_points(t, None) is t and subsample_points(t, 500) is t


def test_batched_from_folder_and_from_points_agree(tmp_path):
    db = load_default_objects(tmp_path)
    pdb = MeshDatabase.from_points({l: db[l].points for l in db.labels}, symmetry_specs={l: db[l].info for l in db.labels},
                                   diameters={l: db[l].diameter for l in db.labels})
    for lab in (db.labels, ["obj_000004", "obj_000002"], []):
        for dt in (torch.float64, torch.float32):
            a, b = db.batched(lab, dtype=dt), pdb.batched(lab, dtype=dt)
            U = len(lab)
            assert a.points.shape == (U, db.n_points, 3) and a.symmetries.shape[0] == U and a.centres.shape == (U, 3)
            assert a.points.dtype == dt and a.n_symmetries.dtype == torch.long
            for f in ("points", "symmetries", "n_symmetries", "diameters", "centres"):
                assert torch.equal(getattr(a, f), getattr(b, f)), (lab, f)
            if U:
                assert torch.equal(a.n_symmetries, symmetry_counts(a.symmetries))
                assert torch.allclose(a.centres, symmetric_centres(a.points, a.symmetries))
    assert db.batched(db.labels) is db.batched(list(db.labels))        # a cache hit is the same object


def test_batch_cache_is_bounded():
    from cosypose_nb.datasets.objects import BATCH_CACHE_SIZE
    db = MeshDatabase.from_points({f"obj_{i:06d}": np.random.default_rng(i).normal(size=(20, 3)) for i in range(1, 9)})
    first = db.batched(["obj_000001"])
    for i in range(BATCH_CACHE_SIZE + 5):
        db.batched(["obj_000002"], n_continuous=i + 1)
    assert len(db._batches) == BATCH_CACHE_SIZE and db.batched(["obj_000001"]) is not first


def test_centres_match_the_multiview_implementation(problem_objects):
    "The one implementation in `geometry.symmetries` gives what `multiview.matching.symmetric_centres` gives."
    from cosypose_nb.multiview.matching import symmetric_centres as old
    db = _as_db(problem_objects)
    b = db.batched(db.labels)
    assert torch.allclose(b.centres, old(b.points, b.symmetries), atol=1e-12)


@pytest.mark.parametrize("bad, words", [
    (lambda: MeshDatabase.from_points({}), "no objects"),
    (lambda: MeshDatabase.from_points({"a": np.zeros((3, 2))}), "(N, 3)"),
    (lambda: MeshDatabase.from_points({"a": np.full((3, 3), np.nan)}), "NaN"),
    (lambda: MeshDatabase.from_points({"a": np.eye(3)}, symmetries={"b": np.eye(4)[None]}), "unknown labels"),
    (lambda: MeshDatabase.from_points({"a": np.eye(3)}, surface_points={"b": np.eye(3)}), "same labels"),
    (lambda: MeshDatabase.from_points({"a": np.eye(3)}).batched(["z"]), "'z'"),
    (lambda: MeshDatabase.from_points({"a": np.eye(3)}).to_bop_folder("/nonexistent/x"), "point clouds"),
    (lambda: ObjectBatch(("a", "a"), torch.zeros(2, 3, 3), torch.zeros(2, 1, 4, 4), torch.ones(2), torch.ones(2), torch.zeros(2, 3)), "distinct"),
])
def test_bad_input(bad, words):
    with pytest.raises(InputError, match=None) as e:
        bad()
    assert words in str(e.value)
