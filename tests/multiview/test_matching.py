"Stage 2 (object-candidate matching) on synthetic multi-view problems with ground truth."
import math

import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.geometry.transforms import invert_T, make_T
from cosypose_nb.geometry.rotations import rotation_angle, random_rotations
from cosypose_nb.structures import Candidates, MatchingResult
from cosypose_nb.synthetic.mvproblems import make_problem, make_object_set
from cosypose_nb.multiview.config import MatchingConfig
from cosypose_nb.multiview.matching import match_candidates, connected_objects, count_pairs, best_symmetry, SymmetrySets

CONFIGS = [(4, 6), (4, 12), (8, 6), (8, 12), (16, 6), (16, 12)]


def grouping_errors(prob, cand_obj, n_objects):
    "merged (a group holding two objects), spurious (only outliers), split, missing (objects seen in >= 2 views)."
    gt = prob.cand_gt_obj
    out = dict(merged=0, spurious=0, split=0, missing=0, outliers_in=0)
    for k in range(n_objects):
        g = gt[cand_obj == k]
        inl = set(g[g >= 0].tolist())
        out["merged"] += len(inl) > 1
        out["spurious"] += len(inl) == 0
        out["outliers_in"] += int((g < 0).sum())
    for o in (prob.visible.sum(0) >= 2).nonzero().flatten().tolist():
        groups = set(cand_obj[gt == o].tolist()) - {-1}
        out["missing"] += len(groups) == 0
        out["split"] += len(groups) > 1
    return out


def check_result(res: MatchingResult, C: int):
    P = len(res.view_pairs)
    assert res.view_pairs.shape == (P, 2) and res.T_C1C2.shape == (P, 4, 4) and res.pair_scores.shape == (P,)
    assert (res.view_pairs[:, 0] < res.view_pairs[:, 1]).all()
    assert res.cand_obj.shape == (C,) and (int(res.cand_obj.max()) if C else -1) == res.n_objects - 1
    for k in range(res.n_objects):                     # every object has at least 2 candidates
        assert int((res.cand_obj == k).sum()) >= 2
    if len(res.edges):
        assert (res.cand_obj[res.edges[:, 0]] == res.cand_obj[res.edges[:, 1]]).all()


def test_grouping_on_many_problems(objects):
    "No merged or spurious object on at least 95% of 36 problems, and at least 97% of the objects seen twice found."
    n_bad, n_req, n_found = 0, 0, 0
    for s in range(36):
        V, O = CONFIGS[s % 6]
        p = make_problem(V, O, seed=100 + s, objects=objects)
        r = match_candidates(p.candidates, objects, V)
        check_result(r, len(p.candidates))
        e = grouping_errors(p, r.cand_obj, r.n_objects)
        n_bad += e["merged"] + e["spurious"] > 0
        req = int((p.visible.sum(0) >= 2).sum())
        n_req += req
        n_found += req - e["missing"]
    assert n_bad <= 36 * 0.05, n_bad
    assert n_found >= 0.97 * n_req, (n_found, n_req)


def test_relative_poses(objects):
    "The kept view pairs have their relative camera pose right (rotation < 15 deg, translation < 15 cm) in >= 97% of cases."
    ok, tot = 0, 0
    for s in range(12):
        V, O = CONFIGS[s % 6]
        p = make_problem(V, O, seed=200 + s, objects=objects)
        r = match_candidates(p.candidates, objects, V)
        T_gt = invert_T(p.T_WC[r.view_pairs[:, 0]]) @ p.T_WC[r.view_pairs[:, 1]]
        ang = rotation_angle(T_gt[:, :3, :3], r.T_C1C2[:, :3, :3]).rad2deg()
        dt = (T_gt[:, :3, 3] - r.T_C1C2[:, :3, 3]).norm(dim=-1)
        ok += int(((ang < 15) & (dt < 0.15)).sum()); tot += len(ang)
        # pair scores are the inlier counts of the edges of each view pair
        vid = p.candidates.view_ids
        for (a, b), sc in zip(r.view_pairs.tolist(), r.pair_scores.tolist()):
            n = int(((vid[r.edges[:, 0]] == a) & (vid[r.edges[:, 1]] == b)).sum())
            assert n == sc
    assert ok >= 0.97 * tot, (ok, tot)


def test_known_cameras(objects):
    "With the true cameras there is no RANSAC, the relative poses are the cameras', and the grouping is right."
    n_bad = 0
    for s in range(12):
        V, O = CONFIGS[s % 6]
        p = make_problem(V, O, seed=300 + s, objects=objects)
        r = match_candidates(p.candidates, objects, V, T_WC=p.T_WC, config=MatchingConfig(min_inliers=1))
        T_gt = invert_T(p.T_WC[r.view_pairs[:, 0]]) @ p.T_WC[r.view_pairs[:, 1]]
        assert torch.allclose(r.T_C1C2, T_gt, atol=1e-9)
        e = grouping_errors(p, r.cand_obj, r.n_objects)
        n_bad += e["merged"] + e["spurious"] + e["missing"] + e["split"] > 0
    assert n_bad <= 1, n_bad


def test_symmetric_objects_only(objects):
    "Scenes of symmetric objects only (a box, a square block, a can, a bowl): symmetry-aware seeds still match them."
    from cosypose_nb.datasets.models import MeshDatabase
    sym = ["obj_000002", "obj_000003", "obj_000005", "obj_000007"]
    objs = MeshDatabase.from_points({l: objects[l].points for l in sym}, {l: objects.object_symmetries(l) for l in sym},
                                    {l: objects[l].info for l in sym})
    n_bad = 0
    for s in range(10):
        p = make_problem(8, 6, seed=400 + s, objects=objs)
        r = match_candidates(p.candidates, objs, 8)
        e = grouping_errors(p, r.cand_obj, r.n_objects)
        n_bad += e["merged"] + e["spurious"] + e["missing"] > 0
    assert n_bad <= 1, n_bad


def test_permutation_invariance(objects):
    "Shuffling the candidates gives the same grouping (up to numbering)."
    p = make_problem(8, 12, seed=7, objects=objects)
    c = p.candidates
    r1 = match_candidates(c, objects, 8)
    perm = torch.randperm(len(c), generator=torch.Generator().manual_seed(0))
    r2 = match_candidates(c[perm], objects, 8)
    a, b = r1.cand_obj[perm], r2.cand_obj
    assert ((a >= 0) == (b >= 0)).all()
    pairs = set(zip(a[a >= 0].tolist(), b[b >= 0].tolist()))
    assert len(pairs) == r1.n_objects == r2.n_objects


def test_float32_input(objects):
    "float32 candidates are matched like float64 ones."
    p = make_problem(8, 6, seed=3, objects=objects)
    r64 = match_candidates(p.candidates, objects, 8)
    r32 = match_candidates(p.candidates.to(dtype=torch.float32), objects, 8)
    assert r32.n_objects == r64.n_objects and (r32.cand_obj == r64.cand_obj).all()


def test_edge_cases(objects):
    g = torch.Generator().manual_seed(0)
    T = make_T(random_rotations(4, g), torch.tensor([[0, 0, 1.0]]).repeat(4, 1))
    # one view: nothing to match
    c = Candidates(torch.zeros(4, dtype=torch.long), ["obj_000001"] * 4, torch.ones(4, dtype=torch.float64), T)
    r = match_candidates(c, objects, 1)
    assert r.n_objects == 0 and (r.cand_obj == -1).all() and len(r.view_pairs) == 0
    # no candidates at all
    c0 = Candidates(torch.zeros(0, dtype=torch.long), [], torch.zeros(0, dtype=torch.float64), torch.zeros(0, 4, 4, dtype=torch.float64))
    assert match_candidates(c0, objects, 3).n_objects == 0
    # no consistent pair: different labels in each view
    c = Candidates(torch.arange(4), ["obj_000001", "obj_000002", "obj_000003", "obj_000004"], torch.ones(4, dtype=torch.float64), T)
    assert match_candidates(c, objects, 4).n_objects == 0
    # all candidates of one label, random poses: no crash, valid output
    p = make_problem(6, 8, seed=5, objects=objects)
    c = Candidates(p.candidates.view_ids, ["obj_000001"] * len(p.candidates), p.candidates.scores, p.candidates.T_CO)
    check_result(match_candidates(c, objects, 6), len(c))
    # a label without a model, a NaN pose, a bad view id: clear errors
    c = Candidates(torch.tensor([0, 1]), ["obj_000001", "obj_999999"], torch.ones(2, dtype=torch.float64), T[:2])
    with pytest.raises(InputError, match="obj_999999"):
        match_candidates(c, objects, 2)
    Tn = T[:2].clone(); Tn[1, 0, 3] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        match_candidates(Candidates(torch.tensor([0, 1]), ["obj_000001"] * 2, torch.ones(2, dtype=torch.float64), Tn), objects, 2)
    with pytest.raises(InputError, match="view"):
        match_candidates(Candidates(torch.tensor([0, 5]), ["obj_000001"] * 2, torch.ones(2, dtype=torch.float64), T[:2]), objects, 2)


def test_connected_objects():
    co, n = connected_objects(torch.tensor([[0, 1], [1, 2], [4, 5]]), 7)
    assert n == 2 and co.tolist() == [0, 0, 0, -1, 1, 1, -1]
    co, n = connected_objects(torch.zeros(0, 2, dtype=torch.long), 3)
    assert n == 0 and co.tolist() == [-1, -1, -1]


def test_memory_grows_with_the_pairs_and_a_scene_too_large_is_refused(objects):
    """Stage 2 counts the same-label candidate pairs between views before listing any (no C x C table): a scene over
    `max_pairs` is refused with an error that says the limit; under it, chunked listing gives the same matching."""
    p = make_problem(8, 12, seed=3, objects=objects)
    c, V = p.candidates, 8
    labels = sorted(set(c.labels))
    lab = torch.tensor([labels.index(l) for l in c.labels])
    n, G, Mmax = count_pairs(lab, c.view_ids, len(labels), V)
    brute = int(((lab[:, None] == lab[None]) & (c.view_ids[:, None] < c.view_ids[None])).sum())
    assert n == brute and 0 < Mmax <= n
    with pytest.raises(InputError, match=f"max_pairs = {n - 1:,}"):
        match_candidates(c, objects, V, config=MatchingConfig(max_pairs=n - 1))
    # 200,000 candidates of two labels in 4 views: refused at once, naming the limit
    big = Candidates(torch.arange(200_000) % 4, ["obj_000001", "obj_000002"] * 100_000, torch.ones(200_000, dtype=torch.float64),
                     c.T_CO[:1].expand(200_000, 4, 4).clone())
    with pytest.raises(InputError, match="max_pairs = 2,000,000"):
        match_candidates(big, objects, 4, validate=False)
    from cosypose_nb.multiview import matching as mt
    r1 = match_candidates(c, objects, V)
    orig = mt._list_pairs
    try:
        mt._list_pairs = lambda *a: orig(*a, max_elems=7)                # tiny chunks: the same pairs, the same result
        r2 = match_candidates(c, objects, V)
    finally:
        mt._list_pairs = orig
    assert torch.equal(r1.edges, r2.edges) and torch.equal(r1.T_C1C2, r2.T_C1C2)


def test_best_symmetry_of_many_labels():
    "Rows of several labels against their own label's symmetries only (the others masked), in any chunk size."
    g = torch.Generator().manual_seed(0)
    SR = [torch.randn(n, 9, dtype=torch.float64, generator=g) for n in (1, 5, 64, 3)]
    sets = SymmetrySets.from_lists(SR)
    rows, X = torch.randint(0, 4, (300,), generator=g), torch.randn(300, 9, dtype=torch.float64, generator=g)
    ref = [SR[int(u)] @ x for u, x in zip(rows, X)]
    for max_elems in (4_000_000, 500, 1):
        best, arg = best_symmetry(sets, X, rows, max_elems)
        assert arg.tolist() == [int(v.argmax()) for v in ref] and torch.allclose(best, torch.stack([v.max() for v in ref]))


def test_label_models_read_the_object_batch(objects):
    "Stage 2's per-label view comes from the object set's cached `ObjectBatch`: each label's own symmetry block, identity padding."
    from cosypose_nb.multiview.matching import label_models
    labels = tuple(objects.labels)
    for n in (8, 32):
        lm = label_models(objects, labels, n, torch.device("cpu"), torch.float64)
        b = objects.batched(labels, n)
        assert objects.batched(labels, n) is b and torch.equal(lm.n_sym, b.n_symmetries) and torch.equal(lm.centres, b.centres)
        for u, l in enumerate(labels):
            R = objects.object_symmetries(l, n)[:, :3, :3].reshape(-1, 9)
            k = int(lm.n_sym[u])
            assert k == len(R) and torch.equal(lm.sets.flat[int(lm.sets.offsets[u]):][:k], R)
            assert torch.equal(lm.rotations[u, :k], R) and torch.equal(lm.rotations[u, k:], torch.eye(3, dtype=R.dtype).reshape(9).expand(lm.rotations.shape[1] - k, 9))
