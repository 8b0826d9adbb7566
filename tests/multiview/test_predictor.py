"The scene predictor (stages 2 + 3) and the `cosypose-nb multiview` command, on problems with ground truth."
import json
import math

import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.geometry.transforms import invert_T, make_T, check_poses
from cosypose_nb.geometry.rotations import random_rotations
from cosypose_nb.structures import Candidates
from cosypose_nb.synthetic.mvproblems import make_problem, make_object_set, evaluate_scene
from cosypose_nb.multiview.predictor import (predict_scene, nms_3d, write_example_scenario, multiview_cli, read_scenario)

CONFIGS = [(4, 6), (4, 12), (8, 6), (8, 12), (16, 6), (16, 12)]


@pytest.fixture(scope="module")
def objects():
    return make_object_set()


@pytest.fixture(scope="module")
def problem_set(objects):
    "The 20 problems of the issue: 4, 8 and 16 views, 6 and 12 objects; with each prediction and its evaluation."
    out = []
    for s in range(20):
        V, O = CONFIGS[s % 6]
        p = make_problem(V, O, seed=s, objects=objects)
        pr = predict_scene(p.candidates, p.K, objects)
        out.append((p, pr, evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)))
    return out


def test_objects_found_exactly_once(problem_set):
    "Every object seen in two views or more found exactly once, nothing spurious, in at least 19 of 20 problems."
    ok = [ev["missing"] == 0 and ev["duplicate"] == 0 and ev["spurious"] == 0 for _, _, ev in problem_set]
    assert sum(ok) >= 19, [(i, {k: ev[k] for k in ("missing", "duplicate", "spurious")}) for i, (_, _, ev) in enumerate(problem_set)]


def test_scene_better_than_candidates(problem_set):
    "The median ADD-S of the reprojected scene is below that of the single-view inlier candidates in 19 of 20 problems."
    ok = [ev["median_scene"] < ev["median_cand"] for _, _, ev in problem_set]
    assert sum(ok) >= 19, [(ev["median_scene"], ev["median_cand"]) for _, _, ev in problem_set]


def test_reprojection_accuracy_regression(problem_set):
    "Per-view reprojections within 0.1 diameter (ADD-S): at least 90% on average, 80% in every problem."
    fr = np.array([ev["frac_ok"] for _, _, ev in problem_set])
    assert fr.mean() >= 0.90 and fr.min() >= 0.80, fr.round(2)


def test_solves_19_of_20(problem_set):
    """The full criterion of the issue: solved (every object seen twice found exactly once, 95% of per-view
    reprojections within 0.1 d, scene median ADD-S below the candidates') in 19 of 20. ADD-S over a dense
    sampling of the surfaces (`surface_points`). Measured: 20/20 here, 39/40 on seeds 100-139, 587/600 on
    held-out seeds 200-319, 500-559, 1000-1119, 3000-3059, 5000-5119, 7000-7119; a pixel-reprojection-only
    bundle adjustment, as the original's, solves 6/20 here."""
    assert sum(ev["solved"] for _, _, ev in problem_set) >= 19, [round(ev["frac_ok"], 3) for _, _, ev in problem_set]


def test_held_out_range_regression(objects):
    """60 problems of another seed range (1000-1059, the same cycle of configurations): measured 60/60 (59/60
    before view registration checked orientations: seed 1010, see below). Guards the solved rate against
    regressions; the issue's 19 of 20 is asserted above."""
    solved, fails = 0, []
    for s in range(1000, 1060):
        V, O = CONFIGS[s % 6]
        p = make_problem(V, O, seed=s, objects=objects)
        pr = predict_scene(p.candidates, p.K, objects)
        ev = evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)
        solved += ev["solved"]
        if not ev["solved"]:
            fails.append((s, ev["missing"], ev["duplicate"], ev["spurious"], round(ev["frac_ok"], 3)))
    assert solved >= 58, fails


@pytest.mark.parametrize("seed, missing", [(7045, 2), (288, 1)])
def test_left_out_objects_form_new_objects(objects, seed, missing):
    """4 views: an object seen by two views that share only it with each other (each view registered through
    other objects) is left out by the matching; once the cameras are refined, its two candidates agree and
    form a new object. Without that step (`join=False`) the objects are missing."""
    V, O = CONFIGS[seed % 6]
    p = make_problem(V, O, seed=seed, objects=objects)
    ev = [evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)
          for pr in (predict_scene(p.candidates, p.K, objects, join=j) for j in (True, False))]
    assert (ev[0]["missing"], ev[0]["duplicate"], ev[0]["spurious"]) == (0, 0, 0) and ev[0]["solved"]
    assert ev[1]["missing"] == missing


def test_view_registration_checks_orientation(objects, monkeypatch):
    """Seed 1010 (8 views): stage 2 leaves view 4 out; placed against the scene by its symmetric object alone,
    the camera may turn about that object's axis, and a half turn brings the view's two boxes onto each other's
    centres. The orientation test of `register_views` rejects that proposal: the scene is solved. Without it
    (20 degrees -> 180) the view lands ~177 degrees off and two reprojections fail."""
    import functools
    from cosypose_nb.multiview import predictor as mv
    from cosypose_nb.geometry.rotations import rotation_angle
    p = make_problem(8, 6, seed=1010, objects=objects)
    def view4_error(pr):
        rel, gt = invert_T(pr.T_WC[0]) @ pr.T_WC[4], invert_T(p.T_WC[0]) @ p.T_WC[4]
        return math.degrees(float(rotation_angle(rel[:3, :3], gt[:3, :3])))
    pr = predict_scene(p.candidates, p.K, objects)
    assert evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)["solved"] and view4_error(pr) < 10
    monkeypatch.setattr(mv, "register_views", functools.partial(mv.register_views, rot_threshold_deg=180.0))
    pr = predict_scene(p.candidates, p.K, objects)
    assert not evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)["solved"] and view4_error(pr) > 90


def test_prediction_outputs(problem_set):
    "Shapes, rigid poses, reprojections = inv(T_WC) @ T_WO, scores = mean candidate score, n_cand/n_views consistent."
    for p, pr, _ in problem_set[:6]:
        O, V = pr.n_objects, len(pr.K)
        assert pr.T_WO.shape == (O, 4, 4) and pr.T_WC.shape == (V, 4, 4) and len(pr.labels) == O
        check_poses(pr.T_WO); check_poses(pr.T_WC)
        rep = pr.reprojected()
        assert len(rep) == O * int(pr.view_ok.sum())
        for k in range(len(rep)):
            o = k % O
            assert rep.labels[k] == pr.labels[o] and float(rep.scores[k]) == float(pr.scores[o])
            assert torch.allclose(rep.T_CO[k], invert_T(pr.T_WC[rep.view_ids[k]]) @ pr.T_WO[o])
        for o in range(O):
            m = pr.cand_obj == o
            assert int(m.sum()) == int(pr.n_cand[o]) >= 2
            assert int(p.candidates.view_ids[m].unique().numel()) == int(pr.n_views[o]) >= 2
            assert abs(float(p.candidates.scores[m].mean()) - float(pr.scores[o])) < 1e-12
            assert all(p.candidates.labels[i] == pr.labels[o] for i in m.nonzero().flatten().tolist())


def test_known_cameras(objects):
    """With known cameras the world frame and the cameras are theirs (held as given, every view placed) and the
    objects are found. Seed 9068: view 1 shares one object with the others; it used to be dropped and re-placed.
    Seed 258: no two views share three objects; the known cameras used to give an empty scene."""
    n_ok = 0
    for s, (V, O) in [(50, (8, 12)), (51, (16, 6)), (52, (16, 12)), (53, (4, 6)), (9068, (4, 6)), (258, (4, 6))]:
        p = make_problem(V, O, seed=s, objects=objects)
        pr = predict_scene(p.candidates, p.K, objects, T_WC=p.T_WC)
        assert pr.view_ok.all() and torch.equal(pr.T_WC, p.T_WC)
        ev = evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)
        n_ok += ev["missing"] == 0 and ev["duplicate"] == 0 and ev["spurious"] == 0
        # objects are in the cameras' world frame
        for s_, o in ev["pairs"].items():
            assert (pr.T_WO[s_, :3, 3] - p.T_WO[o, :3, 3]).norm() < 0.05
    assert n_ok >= 5
    # nothing to match (candidates in one view only): no object, the known cameras as given
    one = p.candidates[p.candidates.view_ids == 0]
    pr = predict_scene(one, p.K, objects, T_WC=p.T_WC)
    assert pr.n_objects == 0 and pr.view_ok.all() and torch.equal(pr.T_WC, p.T_WC)


def test_nms_3d():
    T = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    T[1, 0, 3] = 0.01; T[2, 0, 3] = 0.5; T[3, 0, 3] = 0.02
    into = nms_3d(["a", "a", "a", "b"], T, torch.tensor([3, 5, 2, 2]), torch.ones(4), 0.05)
    assert into.tolist() == [1, 1, 2, 3]          # 0 merged into 1 (more candidates); other label untouched


def _pose(g, n=1):
    return make_T(random_rotations(n, g), torch.tensor([[0.0, 0.0, 0.8]]).repeat(n, 1))


def test_predictor_edge_cases(objects):
    g = torch.Generator().manual_seed(0)
    K = torch.tensor([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]], dtype=torch.float64)
    # one view: an empty scene
    c = Candidates(torch.zeros(3, dtype=torch.long), ["obj_000001"] * 3, torch.ones(3, dtype=torch.float64), _pose(g, 3))
    pr = predict_scene(c, K[None], objects)
    assert pr.n_objects == 0 and (pr.cand_obj == -1).all() and len(pr.reprojected()) == 0
    # no consistent pair: an empty scene
    c = Candidates(torch.arange(3), ["obj_000001", "obj_000002", "obj_000003"], torch.ones(3, dtype=torch.float64), _pose(g, 3))
    assert predict_scene(c, K.repeat(3, 1, 1), objects).n_objects == 0
    # every candidate below the score threshold: empty
    p = make_problem(4, 6, seed=1, objects=objects)
    assert predict_scene(p.candidates, p.K, objects, score_threshold=2.0).n_objects == 0
    # all candidates of one label: no crash
    c = Candidates(p.candidates.view_ids, ["obj_000002"] * len(p.candidates), p.candidates.scores, p.candidates.T_CO)
    pr = predict_scene(c, p.K, objects)
    assert pr.T_WO.shape[0] == pr.n_objects
    # a label without a model, a NaN pose, wrong K: clear errors
    c = Candidates(torch.tensor([0, 1]), ["obj_000001", "obj_000042"], torch.ones(2, dtype=torch.float64), _pose(g, 2))
    with pytest.raises(InputError, match="obj_000042"):
        predict_scene(c, K.repeat(2, 1, 1), objects)
    T = _pose(g, 2); T[0, 1, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        predict_scene(Candidates(torch.tensor([0, 1]), ["obj_000001"] * 2, torch.ones(2, dtype=torch.float64), T), K.repeat(2, 1, 1), objects)
    with pytest.raises(InputError, match="K"):
        predict_scene(c, K.repeat(2, 1, 1)[:, :2], objects)
    with pytest.raises(InputError, match="view"):
        predict_scene(Candidates(torch.tensor([0, 3]), ["obj_000001"] * 2, torch.ones(2, dtype=torch.float64), _pose(g, 2)), K.repeat(2, 1, 1), objects)


# ---------------------------------------------------------------- the command and its files
@pytest.fixture(scope="module")
def default_db():
    from cosypose_nb.datasets.objects import load_default_objects
    return load_default_objects(n_points=500)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, default_db):
    p = make_problem(8, 6, seed=11, objects=default_db)
    folder = write_example_scenario(tmp_path_factory.mktemp("scn") / "example", p)
    return p, folder


def test_cli_example_scenario(scenario, default_db):
    from cosypose_nb.datasets.bop import read_results_csv
    p, folder = scenario
    assert multiview_cli([str(folder), "--ransac-iters", "500", "--nms-distance", "0.04"]) == 0
    js = json.loads((folder / "results" / "predicted_scene.json").read_text())
    assert set(js) == {"objects", "cameras"}
    im_ids = list(range(1, p.n_views + 1))
    for cam in js["cameras"]:
        assert set(cam) == {"view_id", "TWC", "K"} and cam["view_id"] in im_ids
        check_poses(torch.tensor(cam["TWC"], dtype=torch.float64))
        assert np.allclose(cam["K"], p.K[im_ids.index(cam["view_id"])].numpy())
    labels = [o["label"] for o in js["objects"]]
    T_WO = torch.tensor([o["TWO"] for o in js["objects"]], dtype=torch.float64).reshape(-1, 4, 4)
    for o in js["objects"]:
        assert set(o) == {"label", "score", "n_cand", "TWO"} and o["n_cand"] >= 2 and 0 < o["score"] <= 1
    check_poses(T_WO)
    # cameras back in view order; the scene is the problem's: every object seen twice found once, each with its own pose
    V = p.n_views
    T_WC = torch.eye(4, dtype=torch.float64).repeat(V, 1, 1)
    ok = torch.zeros(V, dtype=torch.bool)
    for cam in js["cameras"]:
        T_WC[im_ids.index(cam["view_id"])] = torch.tensor(cam["TWC"], dtype=torch.float64); ok[im_ids.index(cam["view_id"])] = True
    ev = evaluate_scene(p, labels, T_WO, T_WC, ok)
    assert ev["missing"] == 0 and ev["duplicate"] == 0 and ev["spurious"] == 0, ev
    assert ev["median_scene"] < ev["median_cand"]
    # scene_reprojected.csv: every object in every placed view, BOP units, the object's score
    df = read_results_csv(folder / "results" / "scene_reprojected.csv")
    assert len(df) == len(labels) * len(js["cameras"])
    assert set(df["scene_id"]) == {1}
    for r in df.to_dict("records"):
        v = im_ids.index(int(r["im_id"]))
        cands = [k for k in range(len(labels)) if labels[k] == r["label"]
                 and np.allclose(invert_T(T_WC[v]) @ T_WO[k], r["T_CO"], atol=1e-6)]
        assert cands and any(abs(js["objects"][k]["score"] - r["score"]) < 1e-9 for k in cands)


def test_cli_bad_inputs(scenario, tmp_path):
    import shutil
    p, folder = scenario
    def copy(name):
        d = tmp_path / name
        shutil.copytree(folder, d, ignore=shutil.ignore_patterns("results"))
        return d
    def edited(name, line, edit):
        "A copy of the scenario whose candidates.csv has `line` rewritten by `edit`."
        d = copy(name)
        lines = (d / "candidates.csv").read_text().splitlines()
        lines[line] = edit(lines[line])
        (d / "candidates.csv").write_text("\n".join(lines) + "\n")
        return d
    def set_field(k, value):
        return lambda l: ",".join(value if i == k else f for i, f in enumerate(l.split(",")))
    # a label without a mesh
    d = edited("nomesh", 1, set_field(2, "77"))
    with pytest.raises(InputError, match="obj_000077"):
        multiview_cli([str(d)])
    # a NaN pose
    d = edited("nan", 2, set_field(5, "nan 0 500"))
    with pytest.raises(InputError, match="candidates.csv"):
        multiview_cli([str(d)])
    # two scenes in one folder
    d = edited("twoscenes", 1, lambda l: "2" + l[l.index(","):])
    with pytest.raises(InputError, match="scene_id"):
        multiview_cli([str(d)])
    # a view without camera, a missing file, a bad option
    d = copy("nocam")
    cams = json.loads((d / "scene_camera.json").read_text()); cams.pop("1")
    (d / "scene_camera.json").write_text(json.dumps(cams))
    with pytest.raises(InputError, match="im_id"):
        multiview_cli([str(d)])
    d = copy("nofile"); (d / "scene_camera.json").unlink()
    with pytest.raises(InputError, match="scene_camera.json"):
        multiview_cli([str(d)])
    with pytest.raises(InputError, match="ransac-threshold"):
        multiview_cli([str(folder), "--ransac-threshold", "-1"])
    with pytest.raises(InputError, match="known-cameras"):
        multiview_cli([str(folder), "--known-cameras"])
    # with cam_R_w2c / cam_t_w2c and --known-cameras, the cameras written are the given ones, every view placed
    from cosypose_nb.datasets.bop import write_scene_camera
    d = copy("known")
    write_scene_camera(d / "scene_camera.json", {v + 1: {"K": p.K[v].numpy(), "T_CW": invert_T(p.T_WC[v]).numpy()}
                                                 for v in range(p.n_views)})
    assert multiview_cli([str(d), "--known-cameras"]) == 0
    js = json.loads((d / "results" / "predicted_scene.json").read_text())
    assert [c["view_id"] for c in js["cameras"]] == list(range(1, p.n_views + 1))
    TWC = torch.tensor([c["TWC"] for c in js["cameras"]], dtype=torch.float64)
    assert (TWC - p.T_WC).abs().max() < 1e-9
    # the objects are in the given world frame: each lies within 5 cm of a true object of its label
    assert len(js["objects"]) == int((p.visible.sum(0) >= 2).sum())
    for o in js["objects"]:
        d = [float((torch.tensor(o["TWO"])[:3, 3] - p.T_WO[k, :3, 3]).norm()) for k in range(p.n_objects)
             if p.obj_labels[k] == o["label"]]
        assert min(d) < 0.05
    # one view only: an empty scene is written, no crash
    d = copy("oneview")
    lines = (d / "candidates.csv").read_text().splitlines()
    keep = [lines[0]] + [l for l in lines[1:] if l.split(",")[1] == "1"]
    (d / "candidates.csv").write_text("\n".join(keep) + "\n")
    assert multiview_cli([str(d)]) == 0
    js = json.loads((d / "results" / "predicted_scene.json").read_text())
    assert js["objects"] == [] and js["cameras"] == []


def test_cli_files_and_options(scenario, tmp_path, capsys):
    """Inputs found by fuzzing the command: each gives a one-line error naming the path or option (exit 2 from the
    `cosypose-nb` entry point, no traceback), or is read correctly; nothing half-written is left."""
    import shutil
    from cosypose_nb.cli import main
    p, folder = scenario
    def copy(name):
        d = tmp_path / name
        shutil.copytree(folder, d, ignore=shutil.ignore_patterns("results"))
        return d
    def fails(args, match):
        capsys.readouterr()
        assert main(["multiview", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and match in err, err
    ref = copy("ref")
    assert main(["multiview", str(ref)]) == 0
    # a byte-order mark (Excel's UTF-8 CSV) is read; the same scene comes out
    d = copy("bom")
    (d / "candidates.csv").write_bytes(b"\xef\xbb\xbf" + (folder / "candidates.csv").read_bytes())
    assert main(["multiview", str(d)]) == 0
    assert json.loads((d / "results/predicted_scene.json").read_text())["objects"] == \
        json.loads((ref / "results/predicted_scene.json").read_text())["objects"]
    d = copy("latin1"); (d / "candidates.csv").write_bytes(b"\xff\xfe" + (folder / "candidates.csv").read_bytes())
    fails([d], "not UTF-8")
    d = copy("csvdir"); (d / "candidates.csv").unlink(); (d / "candidates.csv").mkdir()
    fails([d], "not a file")
    d = copy("dupkeys")
    cams = json.loads((d / "scene_camera.json").read_text()); cams["01"] = cams["1"]
    (d / "scene_camera.json").write_text(json.dumps(cams))
    fails([d], "given more than once")
    d = copy("bigid")
    lines = (d / "candidates.csv").read_text().splitlines()
    lines[1] = str(2 ** 70) + lines[1][lines[1].index(","):]
    (d / "candidates.csv").write_text("\n".join(lines) + "\n")
    fails([d], "scene_id")
    d = copy("noinfo"); (d / "models/models_info.json").unlink()
    fails([d], "models_info.json")
    # a candidate behind the camera (z <= 0): the line is named
    d = copy("behind")
    lines = (d / "candidates.csv").read_text().splitlines()
    f = lines[2].split(","); t = f[5].split(); t[2] = "-" + t[2]; f[5] = " ".join(t); lines[2] = ",".join(f)
    (d / "candidates.csv").write_text("\n".join(lines) + "\n")
    fails([d], "line 3: t: the object is not in front of the camera")
    # rows repeated exactly count once: the same scene, and a note says how many were left out
    d = copy("dups")
    lines = (d / "candidates.csv").read_text().splitlines()
    (d / "candidates.csv").write_text("\n".join(lines + lines[1:4]) + "\n")
    capsys.readouterr()
    assert main(["multiview", str(d)]) == 0
    assert "3 row(s) repeating an earlier row exactly were left out" in capsys.readouterr().err
    assert json.loads((d / "results/predicted_scene.json").read_text()) == \
        json.loads((ref / "results/predicted_scene.json").read_text())
    # -0 and 0 are the same number
    f = lines[1].split(",")
    extra = [",".join(f[:4] + [R] + f[5:]) for R in ("1 0 0 0 1 0 0 0 1", "1 -0 0 -0 1 0 0 0 1")]
    (d / "candidates.csv").write_text("\n".join(lines + extra) + "\n")
    assert main(["multiview", str(d)]) == 0
    assert "1 row(s) repeating an earlier row exactly were left out" in capsys.readouterr().err
    # outputs that cannot be written: said before the reconstruction, nothing written
    d = copy("resfile"); (d / "results").write_text("not a folder")
    fails([d], "is not a folder")
    d = copy("csvfolder"); (d / "results/scene_reprojected.csv").mkdir(parents=True)
    fails([d], "is not a file")
    assert not (d / "results/predicted_scene.json").exists()
    for opt, val in (("--depth-factor", "nan"), ("--depth-factor", "inf"), ("--n-continuous", "100000"),
                     ("--seed", str(2 ** 70))):
        fails([folder, opt, val], opt)
    # a failed write keeps the previous results whole (both files renamed into place only once both are written)
    d = copy("keep"); assert main(["multiview", str(d)]) == 0
    before = {n: (d / "results" / n).read_bytes() for n in ("predicted_scene.json", "scene_reprojected.csv")}
    from cosypose_nb.datasets import bop as bop
    orig = bop.write_results_csv
    try:
        bop.write_results_csv = lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device", "x"))
        assert main(["multiview", str(d)]) == 2
    finally:
        bop.write_results_csv = orig
    assert {n: (d / "results" / n).read_bytes() for n in before} == before
    assert [q.name for q in (d / "results").iterdir() if q.name.startswith(".")] == []


def test_predictor_argument_checks(objects):
    "Bad arguments of `predict_scene` raise `InputError` naming the argument (they used to give an empty scene)."
    p = make_problem(4, 6, seed=0, objects=objects)
    c = p.candidates
    for kw, name in ((dict(score_threshold=float("nan")), "score_threshold"), (dict(depth_factor=float("inf")), "depth_factor"),
                     (dict(sigma_lat=0.0), "sigma_lat"), (dict(outlier_px=-1.0), "outlier_px"),
                     (dict(nms_distance=float("nan")), "nms_distance"), (dict(n_ransac_iter=0), "n_ransac_iter"),
                     (dict(n_min_inliers=0), "n_min_inliers"), (dict(n_ba_iters=-1), "n_ba_iters"),
                     (dict(n_continuous=100000), "n_continuous")):
        with pytest.raises(InputError, match=name):
            predict_scene(c, p.K, objects, **kw)
    with pytest.raises(InputError, match="objects"):
        predict_scene(c, p.K, None)
    with pytest.raises(InputError, match="view_ids"):
        predict_scene(Candidates(c.view_ids.double(), c.labels, c.scores, c.T_CO), p.K, objects)
    K = p.K.clone(); K[1, 2, 2] = -1
    with pytest.raises(InputError, match="K"):
        predict_scene(c, K, objects)
    T = c.T_CO.clone(); T[3, 2, 3] = -T[3, 2, 3]                   # behind the camera
    with pytest.raises(InputError, match="candidate 3 is not in front of its camera"):
        predict_scene(Candidates(c.view_ids, c.labels, c.scores, T), p.K, objects)


def test_register_views_chunks_give_the_same_placement(objects):
    "`register_views` scores its hypotheses in chunks (bounded memory): any chunk size gives the same cameras."
    from cosypose_nb.multiview.predictor import register_views
    from cosypose_nb.multiview.matching import symmetric_centres
    p = make_problem(8, 12, seed=5, objects=objects)
    c = p.candidates
    ok = torch.ones(8, dtype=torch.bool); ok[[2, 5]] = False
    T_WC = p.T_WC.clone(); T_WC[[2, 5]] = torch.eye(4, dtype=torch.float64)
    pts, syms = objects.points(p.obj_labels), objects.symmetries(p.obj_labels, n_continuous=32)
    cpts, csyms = objects.points(c.labels), objects.symmetries(c.labels, n_continuous=32)
    th = torch.clamp(0.25 * objects.diameters(p.obj_labels), min=0.05) * 1.5
    args = (c.view_ids, c.labels, c.T_CO, symmetric_centres(cpts, csyms), ok, T_WC, p.obj_labels, p.T_WO, syms,
            symmetric_centres(pts, syms), th)
    outs = [register_views(*args, max_elems=m) for m in (2_000_000, 5_000, 1)]
    assert outs[0][1].all()
    for T, o in outs[1:]:
        assert torch.equal(o, outs[0][1]) and torch.equal(T, outs[0][0])


def test_read_scenario(scenario):
    p, folder = scenario
    sc = read_scenario(folder)
    assert sc.im_ids == list(range(1, p.n_views + 1)) and sc.scene_id == 1 and sc.T_WC is None
    assert torch.allclose(sc.K, p.K) and sc.candidates.labels == p.candidates.labels
    assert torch.allclose(sc.candidates.T_CO, p.candidates.T_CO, atol=1e-9)
    assert (sc.candidates.view_ids == p.candidates.view_ids).all()


def test_register_views_places_a_left_out_view(objects):
    """A view left out by stage 2 is placed against the scene objects (ground truth here): coarsely, from its best
    single candidate (its 2-5 degree error moves a camera a metre away by up to ~10 cm); the pose-space refinement
    of the predictor then refines it with every candidate."""
    from cosypose_nb.multiview.predictor import register_views
    from cosypose_nb.multiview.matching import symmetric_centres
    from cosypose_nb.geometry.rotations import rotation_angle
    for seed in range(6):
        p = make_problem(4, 6, seed=seed, objects=objects, outlier_frac=0.2)
        c = p.candidates
        ok = torch.ones(4, dtype=torch.bool); ok[2] = False
        T_WC = p.T_WC.clone(); T_WC[2] = torch.eye(4, dtype=torch.float64)
        pts, syms = objects.points(p.obj_labels), objects.symmetries(p.obj_labels, n_continuous=32)
        cpts, csyms = objects.points(c.labels), objects.symmetries(c.labels, n_continuous=32)
        th = torch.clamp(0.25 * objects.diameters(p.obj_labels), min=0.05) * 1.5
        T2, ok2 = register_views(c.view_ids, c.labels, c.T_CO, symmetric_centres(cpts, csyms), ok, T_WC,
                                 p.obj_labels, p.T_WO, syms, symmetric_centres(pts, syms), th)
        assert ok2.all() and torch.equal(T2[[0, 1, 3]], p.T_WC[[0, 1, 3]])
        assert (T2[2, :3, 3] - p.T_WC[2, :3, 3]).norm() < 0.2
        assert rotation_angle(T2[2, :3, :3], p.T_WC[2, :3, :3]) < np.deg2rad(10)
    # nothing to match: the view stays out
    T3, ok3 = register_views(c.view_ids, ["obj_nothing"] * len(c), c.T_CO, symmetric_centres(cpts, csyms), ok, T_WC,
                             p.obj_labels, p.T_WO, syms, symmetric_centres(pts, syms), th)
    assert not ok3[2] and torch.equal(T3, T_WC)
