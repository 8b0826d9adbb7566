"""evaluation.runners: view groups (the paper's k-view groups: a partition of each scene, reproducible, a scene's groups
its own), single-view and multi-view runs over a toy BOP dataset with tiny untrained pose networks (the plumbing, not
the accuracy), resuming, the single-view candidates added below the multi-view predictions, the stage-3 ablation, and
the bad inputs: a folder holding other settings, a group whose view left the dataset, a split without the ground truth
the boxes need, a detection file of unknown objects."""
import dataclasses, json, shutil

import numpy as np
import pandas as pd
import pytest
import torch
from fastcore.test import test_eq as equals, test_fail as fails     # (aliases: pytest would collect test_*)

from cosypose_nb.core import InputError
from cosypose_nb.datasets.bop import make_toy_dataset, read_results_csv, read_scene_gt
from cosypose_nb.evaluation.runners import (RunnerConfig, run_predictions, view_groups, view_predictions, candidates_table,
                                            group_file, MV_SCORE_OFFSET)
from cosypose_nb.singleview.pose_model import PoseModel, PoseModelConfig
from cosypose_nb.structures import Candidates, Detections


def tiny_model(seed, **kw):
    torch.manual_seed(seed)
    return PoseModel(PoseModelConfig(backbone="small", render_size=(48, 64), input_mean=0.5, input_std=0.25, xy_scale=6.4,
                                     z_scale=0.1, **kw))


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    "2 scenes x 5 views, 3 box objects each."
    return make_toy_dataset(tmp_path_factory.mktemp("runners") / "toy", n_scenes=2, n_images=5, n_objects=3)


@pytest.fixture(scope="module")
def nets():
    return dict(coarse=tiny_model(0, init_mode="zup-autodepth"), refiner=tiny_model(1))


SV = RunnerConfig(n_refiner_iterations=1, progress=False)


@pytest.fixture(scope="module")
def sv_run(toy, nets, tmp_path_factory):
    return run_predictions(toy, tmp_path_factory.mktemp("sv") / "run", SV, **nets)


def test_view_groups_partition_each_scene():
    ims = pd.DataFrame({"scene_id": [3] * 9 + [5] * 8, "im_id": list(range(9)) + list(range(10, 18))})
    for k in (1, 4, 5, 8):
        g = view_groups(ims, k, seed=2)
        for sid, ids in ims.groupby("scene_id")["im_id"]:
            groups = g[g.scene_id == sid]["im_ids"].tolist()
            equals(sorted(sum(groups, [])), sorted(ids))                               # each image in exactly one group
            equals([len(x) for x in groups], [min(k, len(ids) - i) for i in range(0, len(ids), k)])   # only the last is short
        equals(g["group_id"].tolist(), list(range(len(g))))
    a, b = view_groups(ims, 4, seed=0), view_groups(ims, 4, seed=1)
    equals(view_groups(ims, 4, seed=0)["im_ids"].tolist(), a["im_ids"].tolist())       # reproducible
    assert a["im_ids"].tolist() != b["im_ids"].tolist()                                 # the seed orders the views
    equals(view_groups(ims[ims.scene_id == 5], 4, seed=0)["im_ids"].tolist(), a[a.scene_id == 5]["im_ids"].tolist())
    equals(view_groups(ims, 1)["im_ids"].tolist()[:3], [[0], [1], [2]])
    fails(lambda: view_groups(ims, 0), contains="n_views")


def test_single_view_run(toy, sv_run):
    s = sv_run
    equals((s.n_groups, s.n_computed), (10, 10))
    r = read_results_csv(s.results)
    n_vis = sum(1 for d in sorted((toy / "test").iterdir()) for objs in read_scene_gt(d).values() for _ in objs)
    assert 0 < len(r) <= n_vis and len(r) == s.counts["n_candidates"] == s.counts["n_detections"]
    equals(set(r["score"]), {1.0})                                                     # ground-truth boxes score 1
    assert (r.groupby(["scene_id", "im_id"])["time"].nunique() == 1).all() and (r["time"] > 0).all()
    cfg = json.loads((s.out / "runner.json").read_text())
    equals(cfg["settings"]["n_refiner_iterations"], 1)
    t = json.loads((s.out / "timings.json").read_text())
    assert {"single_view", "total"} <= set(t["seconds"]) and len(t["groups"]) == 10


def test_resume_recomputes_only_missing_groups(toy, nets, sv_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(sv_run.out, out)
    equals(run_predictions(toy, out, SV, **nets).n_computed, 0)
    before = (out / "results.csv").read_text()
    group_file(out, 3).unlink()
    s = run_predictions(toy, out, SV, **nets)
    equals(s.n_computed, 1)
    a, b = read_results_csv(out / "results.csv"), pd.read_csv(pd.io.common.StringIO(before))
    equals(len(a), len(b))


def test_multi_view_run_keeps_every_single_view_candidate(toy, nets, sv_run, tmp_path):
    cfg = dataclasses.replace(SV, n_views=4)
    s = run_predictions(toy, tmp_path / "mv", cfg, **nets)
    equals(s.n_groups, 4)                                                              # 5 views: groups of 4 and 1 per scene
    r = read_results_csv(s.results)
    single = r[r["score"] <= 1.0]
    equals(len(single), s.counts["n_candidates"])
    assert (r[r["score"] > 1.0]["score"] >= MV_SCORE_OFFSET).all()
    groups = json.loads((s.out / "groups.json").read_text())
    equals(sorted(len(v[1]) for v in groups.values()), [1, 1, 4, 4])
    s2 = run_predictions(toy, tmp_path / "mv_only", dataclasses.replace(cfg, add_single_view=False), **nets)
    r2 = read_results_csv(s2.results)
    in_big = ~r2.set_index(["scene_id", "im_id"]).index.isin([(int(v[0]), v[1][0]) for v in groups.values() if len(v[1]) == 1])
    assert (r2["score"][in_big] > 1.0).all()                                            # groups of > 1 view: multi-view rows only


def test_view_predictions_scores_and_frames(default_objects):
    "A scene from exact candidates of 3 views: every object in every view, at the candidates' poses, above them."
    from cosypose_nb.multiview.predictor import predict_scene
    from cosypose_nb.geometry.transforms import make_T, invert_T
    from cosypose_nb.geometry.cameras import look_at, make_K
    from cosypose_nb.geometry.rotations import random_rotations
    g = torch.Generator().manual_seed(1)
    labels = default_objects.labels[:3]
    T_WO = make_T(random_rotations(3, g), torch.tensor([[0.0, 0, 0], [0.12, 0.05, 0], [-0.1, 0.08, 0]], dtype=torch.float64))
    T_WC = torch.stack([look_at(torch.tensor([0.7 * np.cos(a), 0.7 * np.sin(a), 0.5], dtype=torch.float64),
                                torch.zeros(3, dtype=torch.float64)) for a in (0.0, 0.9, 1.8)])
    T_CO = (invert_T(T_WC)[:, None] @ T_WO[None]).reshape(9, 4, 4)
    cands = Candidates(torch.arange(3).repeat_interleave(3), labels * 3, torch.full((9,), 0.8, dtype=torch.float64), T_CO)
    scene = predict_scene(cands, make_K(torch.full((3,), 600.0, dtype=torch.float64), 600.0, 320.0, 240.0), default_objects)
    vp = view_predictions(scene, cands, add_single_view=True)
    equals(len(vp), 18)
    assert torch.allclose(vp.scores[:9], torch.full((9,), 1.8, dtype=torch.float64)) and torch.equal(vp.scores[9:], cands.scores)
    mv = view_predictions(scene, cands, add_single_view=False)
    equals(len(mv), 9)
    for v, l, T in zip(mv.view_ids.tolist(), mv.labels, mv.T_CO):             # each at its candidate's pose (a symmetry apart)
        k = [i for i in range(9) if cands.view_ids[i] == v and cands.labels[i] == l][0]
        assert (T[:3, 3] - T_CO[k, :3, 3]).norm() < 1e-3
    tab = candidates_table(mv, 4, [7, 8, 9], 0.25)
    equals(sorted(set(tab["im_id"])), [7, 8, 9]); equals(set(tab["time"]), {0.25}); equals(set(tab["scene_id"]), {4})


def test_stage3_ablation_settings():
    c = RunnerConfig(stage3=False)
    equals((c.scene_config().ba.ba_iters, c.scene_config().pose_refine), (0, False))
    equals(RunnerConfig().scene_config(), RunnerConfig().multiview)


def test_other_settings_in_the_folder(toy, nets, sv_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(sv_run.out, out)
    fails(lambda: run_predictions(toy, out, dataclasses.replace(SV, n_refiner_iterations=2), **nets), contains="other settings")
    s = run_predictions(toy, out, dataclasses.replace(SV, n_refiner_iterations=0, overwrite=True), **nets)
    equals(s.n_computed, 10)                                                           # overwrite: started again


def test_a_view_of_a_group_left_the_dataset(toy, nets, sv_run, tmp_path):
    data, out = tmp_path / "toy", tmp_path / "run"
    shutil.copytree(toy, data)
    s = run_predictions(data, out, dataclasses.replace(SV, n_views=4), **nets)
    groups = json.loads((out / "groups.json").read_text())
    sid, ims = groups["0"]
    cam = data / "test" / f"{sid:06d}" / "scene_camera.json"
    d = json.loads(cam.read_text()); d.pop(str(ims[0])); cam.write_text(json.dumps(d))
    for name in ("scene_gt.json", "scene_gt_info.json"):
        f = data / "test" / f"{sid:06d}" / name
        d = json.loads(f.read_text()); d.pop(str(ims[0]), None); f.write_text(json.dumps(d))
    with pytest.raises(InputError, match=rf"group 0 \(scene {sid}.*image {ims[0]} is not in the dataset"):
        run_predictions(data, out, dataclasses.replace(SV, n_views=4), **nets)


def test_split_without_ground_truth_boxes(toy, nets, tmp_path):
    data = tmp_path / "toy"
    shutil.copytree(toy, data)
    (data / "test" / "000001" / "scene_gt_info.json").unlink()
    fails(lambda: run_predictions(data, tmp_path / "run", SV, **nets), contains="scene_gt_info.json")
    fails(lambda: run_predictions(data, tmp_path / "run2", dataclasses.replace(SV, split="val"), **nets), contains="split folder")


def test_detection_file_boxes_and_unknown_objects(toy, nets, tmp_path):
    from cosypose_nb.singleview.detection import write_bop_detections
    det = Detections(torch.tensor([0, 0]), ["obj_000001", "obj_000002"], torch.tensor([0.9, 0.4]),
                     torch.tensor([[30.0, 20, 90, 80], [60, 40, 120, 100]]))
    f = write_bop_detections(tmp_path / "det.json", det, [(0, 1)])
    s = run_predictions(toy, tmp_path / "run", dataclasses.replace(SV, boxes="file", detections=str(f)), **nets)
    r = read_results_csv(s.results)
    equals(sorted(r["score"].round(3).tolist()), [0.4, 0.9])
    equals(set(zip(r.scene_id, r.im_id)), {(0, 1)})
    bad = write_bop_detections(tmp_path / "bad.json", Detections(torch.tensor([0]), ["obj_000042"], torch.tensor([0.9]),
                                                                  torch.tensor([[30.0, 20, 90, 80]])), [(0, 1)])
    fails(lambda: run_predictions(toy, tmp_path / "run_bad", dataclasses.replace(SV, boxes="file", detections=str(bad)), **nets),
              contains="not in the object set")


def test_results_evaluate(toy, sv_run, tmp_path):
    "The runner's file goes through `evaluate` (every metric) as any method's would."
    from cosypose_nb.evaluation.evaluate import evaluate, EvaluateConfig
    s = evaluate(sv_run.results, toy, tmp_path / "eval", EvaluateConfig(progress=False, backend="tiny"))
    equals(s["counts"]["skipped"], {"unknown_object": 0, "unknown_scene": 0, "unknown_image": 0, "duplicate": 0})
    assert 0 <= s["bop19"]["bop19_average_recall"] <= 1 and 0 <= s["mv"]["mAP"] <= 1


def test_perturbed_ground_truth_poses(toy, tmp_path):
    "Stage 1 replaced by the ground truth with noise: no model needed, the noise of an image is the same for every k."
    cfg = RunnerConfig(poses="perturbed_gt", n_coarse_iterations=0, n_refiner_iterations=0, noise_rot_deg=5.0,
                       noise_trans=(0.0, 0.0, 0.02), progress=False)
    r1 = read_results_csv(run_predictions(toy, tmp_path / "k1", cfg).results)
    r4 = read_results_csv(run_predictions(toy, tmp_path / "k4", dataclasses.replace(cfg, n_views=4)).results)
    single = r4[r4["score"] <= 1.0].sort_values(["scene_id", "im_id", "obj_id"]).reset_index(drop=True)
    r1 = r1.sort_values(["scene_id", "im_id", "obj_id"]).reset_index(drop=True)
    equals(len(single), len(r1))
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(single["T_CO"], r1["T_CO"]))
    gt = {(int(d.name), im): objs for d in sorted((toy / "test").iterdir()) for im, objs in read_scene_gt(d).items()}
    dz = [min(abs(T[2, 3] - o["T_CO"][2, 3]) for o in gt[(s, i)] if o["obj_id"] == oid)
          for s, i, oid, T in zip(r1.scene_id, r1.im_id, r1.obj_id, r1.T_CO)]
    assert 0.002 < np.median(dz) < 0.05                                                # depth noise of 2 cm std
    fails(lambda: RunnerConfig(poses="perturbed_gt", boxes="file", detections="x"), contains="boxes='gt'")


def test_single_view_results_read_back(toy, nets, sv_run, tmp_path):
    "poses='results': a multi-view run on the single-view run's candidates equals one that computes them again."
    cfg = dataclasses.replace(SV, n_views=4)
    ref = read_results_csv(run_predictions(toy, tmp_path / "mv", cfg, **nets).results)
    s = run_predictions(toy, tmp_path / "reuse", dataclasses.replace(cfg, poses="results", pose_results=str(sv_run.results)))
    got = read_results_csv(s.results)
    equals(len(got), len(ref)); equals(s.counts["n_candidates"], sv_run.counts["n_candidates"])
    key = ["scene_id", "im_id", "obj_id", "score"]
    # (objects of one label in one image: ordered by their position too, in mm to 6 decimals)
    a, b = (d.assign(x=[round(1e3 * T[0, 3], 6) for T in d.T_CO]).sort_values([*key, "x"]).reset_index(drop=True) for d in (ref, got))
    equals(a[key].to_numpy().tolist(), b[key].to_numpy().tolist())
    # the CSV holds millimetres with 17 digits: the poses read back differ from the computed ones by rounding only
    assert all(np.allclose(x, y, atol=1e-9) for x, y in zip(a["T_CO"], b["T_CO"]))
    mv = run_predictions(toy, tmp_path / "mv", cfg, **nets)                          # finished: read back
    fails(lambda: run_predictions(toy, tmp_path / "from_mv", dataclasses.replace(cfg, poses="results", pose_results=str(mv.results))),
          contains="a multi-view prediction")
    fails(lambda: RunnerConfig(poses="results"), contains="pose_results")
    fails(lambda: RunnerConfig(pose_results="x.csv"), contains="pose_results")
    fails(lambda: run_predictions(toy, tmp_path / "none", dataclasses.replace(cfg, poses="results", pose_results=str(tmp_path / "no.csv"))),
          contains="no.csv")


@pytest.mark.parametrize("case,message", [
    ("image file", "rgb: image {im}: no file"),                        # a view of a group is missing
    ("annotation", "scene_gt.json: {im}: no annotation for this image"),
    ("scene_gt.json", "scene_gt.json: file not found: boxes='gt' needs the ground truth of split 'test'")])
def test_missing_view_or_ground_truth_refused_before_any_work(toy, nets, tmp_path, case, message):
    data, out = tmp_path / "toy", tmp_path / "run"
    shutil.copytree(toy, data)
    scene = data / "test" / "000001"
    im = sorted(int(k) for k in json.loads((scene / "scene_camera.json").read_text()))[2]
    if case == "image file": next((scene / "rgb").glob(f"{im:06d}.*")).unlink()
    elif case == "annotation":
        d = json.loads((scene / "scene_gt.json").read_text()); d.pop(str(im)); (scene / "scene_gt.json").write_text(json.dumps(d))
    else: (scene / "scene_gt.json").unlink()
    fails(lambda: run_predictions(data, out, dataclasses.replace(SV, n_views=4), **nets), contains=message.format(im=im))
    assert not out.exists()                                            # nothing written, not even the run's bookkeeping
