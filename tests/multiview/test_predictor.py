"The scene predictor (stages 2 + 3) on problems with ground truth."
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.geometry.transforms import invert_T, make_T, check_poses
from cosypose_nb.geometry.rotations import random_rotations
from cosypose_nb.structures import Candidates
from cosypose_nb.synthetic.mvproblems import make_problem
from cosypose_nb.evaluation.metrics import evaluate_scene
from cosypose_nb.multiview.config import MultiviewConfig, MatchingConfig, BundleAdjustConfig, PoseRefineConfig
from cosypose_nb.multiview.predictor import predict_scene, nms_3d, torch_threads
from helpers import CONFIGS


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
          for pr in (predict_scene(p.candidates, p.K, objects, MultiviewConfig(refine=PoseRefineConfig(join=j))) for j in (True, False))]
    assert (ev[0]["missing"], ev[0]["duplicate"], ev[0]["spurious"]) == (0, 0, 0) and ev[0]["solved"]
    assert ev[1]["missing"] == missing


def test_view_registration_checks_orientation(objects, monkeypatch):
    """Seed 1010 (8 views): stage 2 leaves view 4 out; placed against the scene by its symmetric object alone,
    the camera may turn about that object's axis, and a half turn brings the view's two boxes onto each other's
    centres. The orientation test of `register_views` rejects that proposal: the scene is solved. Without it
    (20 degrees -> 180) the view lands ~177 degrees off and two reprojections fail."""
    from cosypose_nb.multiview import predictor as mv
    from cosypose_nb.geometry.rotations import rotation_angle
    p = make_problem(8, 6, seed=1010, objects=objects)
    def view4_error(pr):
        rel, gt = invert_T(pr.T_WC[0]) @ pr.T_WC[4], invert_T(p.T_WC[0]) @ p.T_WC[4]
        return math.degrees(float(rotation_angle(rel[:3, :3], gt[:3, :3])))
    pr = predict_scene(p.candidates, p.K, objects)
    assert evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)["solved"] and view4_error(pr) < 10
    real = mv.register_views                      # the predictor's call: (candidates, centres, references, T_WC, view_ok, config)
    monkeypatch.setattr(mv, "register_views", lambda *a: real(*a[:5], replace(a[5], rot_threshold_deg=180.0)))
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
    assert predict_scene(p.candidates, p.K, objects, MultiviewConfig(score_threshold=2.0)).n_objects == 0
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


def test_predictor_argument_checks(objects):
    "Bad arguments of `predict_scene` raise `InputError` naming the argument (they used to give an empty scene)."
    p = make_problem(4, 6, seed=0, objects=objects)
    c = p.candidates
    for make, name in ((lambda: MultiviewConfig(score_threshold=float("nan")), "score_threshold"),
                       (lambda: MatchingConfig(depth_factor=float("inf")), "depth_factor"),
                       (lambda: PoseRefineConfig(sigma_lat=0.0), "sigma_lat"), (lambda: MultiviewConfig(outlier_px=-1.0), "outlier_px"),
                       (lambda: MultiviewConfig(nms_distance=float("nan")), "nms_distance"),
                       (lambda: MatchingConfig(ransac_iters=0), "ransac_iters"), (lambda: MatchingConfig(min_inliers=0), "min_inliers"),
                       (lambda: BundleAdjustConfig(ba_iters=-1), "ba_iters"), (lambda: MatchingConfig(n_continuous=100000), "n_continuous"),
                       (lambda: MultiviewConfig(threads=0), "threads")):
        with pytest.raises(InputError, match=name):
            predict_scene(c, p.K, objects, make())
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


def test_threads_are_set_around_the_stages_and_restored(objects, monkeypatch):
    """predict_scene runs with the threads of `config.threads` (default: `threads_for`, 1) and restores torch's number
    after, also when it raises; the result does not depend on them."""
    from cosypose_nb.multiview import predictor as mv
    p = make_problem(4, 6, seed=2, objects=objects)
    seen = []
    real = mv._stages
    monkeypatch.setattr(mv, "_stages", lambda run: (seen.append(torch.get_num_threads()), real(run))[1])
    before = torch.get_num_threads()
    with torch_threads(2):
        a = predict_scene(p.candidates, p.K, objects)
        b = predict_scene(p.candidates, p.K, objects, MultiviewConfig(threads=2))
        assert torch.get_num_threads() == 2
    assert seen == [1, 2] and torch.get_num_threads() == before
    assert a.labels == b.labels and (a.T_WO - b.T_WO).abs().max() < 1e-9       # summation order may differ: 1e-9
    monkeypatch.setattr(mv, "_stages", lambda run: 1 / 0)
    with torch_threads(2):
        with pytest.raises(ZeroDivisionError):
            predict_scene(p.candidates, p.K, objects)
        assert torch.get_num_threads() == 2
