"""The pipeline from images to a scene (`multiview.pipeline`) and the `predict` command: the plumbing with a tiny
untrained pose network on a recorded 2-view scene (shapes, files, errors), not the accuracy (the demo measures it)."""
from __future__ import annotations
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError, write_json
from cosypose_nb.multiview import pipeline as pl
from cosypose_nb.multiview import predict as pr
from cosypose_nb.singleview.config import PredictorConfig


@pytest.fixture(scope="module")
def scene_dir(recorded_dataset):
    "The first scene (2 views, 120 x 160) of the session's recording."
    return recorded_dataset / "train" / "000000"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    "An untrained small pose network saved as a model folder (config.json + model.safetensors)."
    from cosypose_nb.singleview.config import train_config
    from cosypose_nb.singleview.training import pose_model_config
    from cosypose_nb.singleview.pose_model import PoseModel, save_pose_model
    torch.manual_seed(0)
    model = PoseModel(pose_model_config(train_config("cpu", render_size=(48, 64))))
    return save_pose_model(model, tmp_path_factory.mktemp("tiny") / "tiny")


def predict(*args):
    from cosypose_nb.cli import main
    return main(["predict", *map(str, args), "--no-progress"])


def test_groups_and_config():
    assert pl.view_groups(5, 2) == [[0, 1], [2, 3], [4]] and pl.view_groups(0, None) == []
    with pytest.raises(InputError): pl.PipelineConfig(image_batch_size=0)


def test_run_pipeline_from_gt_boxes(scene_dir, tiny_run, default_objects):
    from cosypose_nb.singleview.inference import load_pose_model
    scene = pr.read_scene_images(scene_dir)
    gt = pr.gt_detections(scene)
    m = load_pose_model(tiny_run)
    cfg = pl.PipelineConfig(predictor=PredictorConfig(n_refiner_iterations=1), image_batch_size=1)
    res = pl.run_pipeline(scene.images, scene.K, default_objects, pl.Stage1Inputs(detections=gt, coarse=m, refiner=m), config=cfg,
                          progress=False)
    C = len(gt)
    assert C > 0 and len(res.candidates) == C and res.candidates.T_CO.shape == (C, 4, 4)
    assert res.T_CO_coarse.shape == (C, 4, 4) and sorted(res.candidates.view_ids.tolist()) == sorted(gt.view_ids.tolist())
    assert res.groups == [[0, 1]] and len(res.scenes) == 1 and res.scenes[0] is not None
    assert {"detection", "coarse", "refiner", "multiview", "total"} <= set(res.timings)
    # one view per group: no reconstruction, and it says why
    res1 = pl.run_pipeline(scene.images, scene.K, default_objects, pl.Stage1Inputs(detections=gt, coarse=m), progress=False,
                           config=pl.PipelineConfig(predictor=PredictorConfig(n_refiner_iterations=0), views_per_group=1))
    assert res1.scenes == [None, None] and all("one view" in r for r in res1.reasons)
    # no detection at all: an empty result that says why
    none = gt[torch.zeros(len(gt), dtype=torch.bool)]
    res0 = pl.run_pipeline(scene.images, scene.K, default_objects, pl.Stage1Inputs(detections=none, coarse=m, refiner=m),
                          progress=False)
    assert len(res0.candidates) == 0 and res0.n_objects == 0 and res0.reasons == ["no detection in any image"]


def test_predict_command_writes_the_results(scene_dir, tiny_run, tmp_path):
    out = tmp_path / "out"
    assert predict(scene_dir, "--gt-boxes", "--coarse", tiny_run, "--refiner", tiny_run, "--refiner-iters", "1", "--out", out) == 0
    names = {p.name for p in out.iterdir()}
    assert {"candidates.csv", "predicted_scene.json", "scene_reprojected.csv", "timings.json", "detections.json",
            "overlay_000000.jpg", "overlay_000001.jpg"} <= names
    assert not [n for n in names if n.startswith(".") and n != ".cosypose-nb.json"]          # no staging left
    from cosypose_nb.datasets.bop import read_results_csv
    df = read_results_csv(out / "candidates.csv")
    assert len(df) > 0 and set(df["im_id"]) <= {0, 1}
    t = json.loads((out / "timings.json").read_text())
    assert t["n_views"] == 2 and {"coarse", "refiner", "total"} <= set(t["timings_s"])
    # the scenario reads the candidates back: the multiview command runs on them
    # a rerun of the same command into its own folder is allowed
    assert predict(scene_dir, "--gt-boxes", "--coarse", tiny_run, "--refiner-iters", "0", "--out", out, "--no-figures") == 0


def test_init_poses_refiner_only(scene_dir, tmp_path, recorded_dataset):
    "Initial poses with 0 refiner iterations come back unchanged (and need no network)."
    from cosypose_nb.datasets.bop import read_scene_gt, write_results_csv, read_results_csv
    import pandas as pd
    gt = read_scene_gt(scene_dir)
    rows = [dict(scene_id=0, im_id=im, label=o["label"], score=1.0, T_CO=o["T_CO"]) for im, objs in gt.items() for o in objs]
    write_results_csv(tmp_path / "init.csv", pd.DataFrame(rows))
    assert predict(scene_dir, "--init-poses", tmp_path / "init.csv", "--refiner-iters", "0", "--out", tmp_path / "o", "--no-figures") == 0
    back = read_results_csv(tmp_path / "o" / "candidates.csv")
    assert len(back) == len(rows)
    a = np.stack(sorted(back["T_CO"], key=lambda T: tuple(T[:3, 3]))); b = np.stack(sorted([r["T_CO"] for r in rows], key=lambda T: tuple(T[:3, 3])))
    assert np.allclose(a, b, atol=1e-6)                   # the CSV stores mm with 6 decimals at most


def test_bad_input(scene_dir, tiny_run, tmp_path, capsys):
    out = tmp_path / "o"
    assert predict(scene_dir, "--coarse", tiny_run, "--refiner", tiny_run, "--out", out) == 2        # no source
    assert "give one of" in capsys.readouterr().err
    assert predict(scene_dir, "--gt-boxes", "--out", out) == 2                                       # no coarse model
    # a folder of images: a file that is not an image, a camera file that misses an image
    imgs = tmp_path / "imgs"; imgs.mkdir()
    from cosypose_nb.datasets.bop import read_rgb, write_rgb
    write_rgb(imgs / "000001.png", read_rgb(next((scene_dir / "rgb").iterdir())))
    (imgs / "000002.png").write_text("not an image")
    write_json(tmp_path / "cam.json", {"cam_K": [150, 0, 80, 0, 150, 60, 0, 0, 1]})
    assert predict(imgs, "--camera", tmp_path / "cam.json", "--gt-boxes", "--coarse", tiny_run, "--refiner-iters", "0", "--out", out) == 2
    assert "000002.png" in capsys.readouterr().err
    (imgs / "000002.png").unlink()
    write_json(tmp_path / "cam2.json", {"5": {"cam_K": [150, 0, 80, 0, 150, 60, 0, 0, 1], "depth_scale": 1.0}})
    assert predict(imgs, "--camera", tmp_path / "cam2.json", "--detections", tmp_path / "none.json", "--coarse", tiny_run,
                   "--refiner-iters", "0", "--out", out) == 2
    assert "cam2.json: no camera for 1 image" in capsys.readouterr().err
    # a checkpoint of another kind
    other = tmp_path / "other"; other.mkdir()
    write_json(other / "config.json", {"kind": "detector", "labels": ["obj_000001"]})
    assert predict(scene_dir, "--gt-boxes", "--coarse", other, "--refiner-iters", "0", "--out", out) == 2
    assert "a detector network, not a coarse one" in capsys.readouterr().err
    assert not out.exists()                                                                          # nothing written
    # an output folder holding other files is refused before any work
    busy = tmp_path / "busy"; busy.mkdir(); (busy / "mine.txt").write_text("x")
    assert predict(scene_dir, "--gt-boxes", "--coarse", tiny_run, "--refiner-iters", "0", "--out", busy) == 2
    assert sorted(p.name for p in busy.iterdir()) == ["mine.txt"]


def test_folder_of_images_with_one_camera(scene_dir, tmp_path):
    from cosypose_nb.datasets.bop import read_rgb, write_rgb
    imgs = tmp_path / "imgs"; imgs.mkdir()
    for k, p in enumerate(sorted((scene_dir / "rgb").iterdir())): write_rgb(imgs / f"view_{k}.png", read_rgb(p))
    write_json(tmp_path / "cam.json", {"cam_K": [150, 0, 80, 0, 150, 60, 0, 0, 1]})
    s = pr.read_scene_images(imgs, tmp_path / "cam.json")
    assert s.images.shape == (2, 3, 120, 160) and s.im_ids == [1, 2] and torch.allclose(s.K[1, 0, 0], torch.tensor(150.0, dtype=torch.float64))


def test_box_detections_one_rule():
    "Ground-truth boxes (--gt-boxes and the runners): kept when visible enough, with a finite box of positive size."
    rows = [(0, "a", [1, 2, 5, 6], 0.5), (0, "b", [1, 2, 1, 6], 0.9), (1, "c", [0, 0, float("nan"), 3], 0.9),
            (1, "d", [0, 0, 4, 4], 0.05), (1, "e", [0, 0, 4, 4], 0.1)]
    d = pr.box_detections(rows, 0.1)
    assert d.labels == ["a", "e"] and d.view_ids.tolist() == [0, 1] and d.boxes.tolist() == [[1, 2, 5, 6], [0, 0, 4, 4]]
    assert len(pr.box_detections([], 0.1)) == 0


def _scene_copy(scene_dir, tmp_path, size=None):
    "A copy of the scene; `size` (W, H): its images resized (the camera file unchanged)."
    import shutil
    from PIL import Image
    s = tmp_path / "000000"; shutil.copytree(scene_dir, s)
    for p in (s / "rgb").iterdir():
        if size is not None: Image.open(p).resize(size).save(p)
    return s


def _subset_models(recorded_dataset, tmp_path, labels):
    "A BOP models folder of the recording's objects `labels` only."
    import shutil
    m = tmp_path / "models"; m.mkdir()
    info = json.loads((recorded_dataset / "models" / "models_info.json").read_text())
    ids = [str(int(l.split("_")[-1])) for l in labels]
    for i in ids:
        for f in (recorded_dataset / "models").glob(f"obj_{int(i):06d}.*"): shutil.copy(f, m)
    write_json(m / "models_info.json", {i: info[i] for i in ids})
    return m


def _pose_run(tiny_run, tmp_path, **change):
    "A copy of the tiny pose network whose config.json is changed: `labels`/`kind` at the top, other keys in the model."
    import shutil
    r = tmp_path / "run"; shutil.copytree(tiny_run, r)
    model = json.loads((r / "config.json").read_text())
    top = {k: change.pop(k) for k in ("labels", "kind") if k in change}
    model.update(change)
    write_json(r / "config.json", {"kind": "refiner", "model": model, **top} if top else model)
    return r


def _bare_weights(tiny_run, tmp_path):
    "The tiny network's weights alone in a folder, without their config.json."
    import shutil
    (tmp_path / "alone").mkdir(); return shutil.copy(tiny_run / "model.safetensors", tmp_path / "alone")


BAD_PREDICT = {   # name: (make the arguments in tmp_path, exit status, what the error names)
    "K of another image size": (lambda c: [_scene_copy(c.scene, c.tmp, (40, 30)), "--gt-boxes"], 2,
                                "000000.jpg (its camera in scene_camera.json): principal point"),
    "a label without a mesh (--gt-boxes)": (lambda c: [c.scene, "--gt-boxes", "--objects", _subset_models(c.rec, c.tmp, c.labels[:1])],
                                            2, "scene_gt.json: image 0: ["),
    "a label without a mesh (--detections)": (lambda c: [c.scene, "--detections", c.dets([dict(category_id=99)])], 2,
                                              "det.json: [0].category_id: object 99"),
    "a box outside the image": (lambda c: [c.scene, "--detections", c.dets([{}, dict(bbox=[900, 20, 30, 30])])], 2,
                                "det.json: [1].bbox: [900.0, 20.0, 30.0, 30.0] lies outside the 160x120 image (scene 0, image 0)"),
    "an empty box list": (lambda c: [c.scene, "--detections", c.dets([])], 0, "no detection in any image"),
    "a NaN pose in --init-poses": (lambda c: [c.scene, "--init-poses", c.init("t", "nan nan nan")], 2, "init.csv: line 2: t: holds NaN"),
    "an --init-poses object without a mesh": (lambda c: [c.scene, "--init-poses", c.init("obj_id", "99")], 2,
                                              "init.csv: line 2: obj_id: no model of object 99"),
    "a pose run of other objects": (lambda c: [c.scene, "--gt-boxes", "--refiner-iters", "1", "--refiner",
                                               _pose_run(c.tiny, c.tmp, labels=["obj_000099"])], 2, "none is in the object set"),
    "a checkpoint that does not match its configuration": (lambda c: [c.scene, "--gt-boxes", "--refiner-iters", "1", "--refiner",
                                                                      _pose_run(c.tiny, c.tmp, head_hidden=128)], 2, "does not match"),
    "a weights file without its configuration": (lambda c: [c.scene, "--gt-boxes", "--refiner-iters", "1", "--refiner",
                                                            _bare_weights(c.tiny, c.tmp)], 2, "no config.json beside it"),
    "a coarse run given as --detector": (lambda c: [c.scene, "--detector", _pose_run(c.tiny, c.tmp, kind="coarse", labels=c.labels)], 2,
                                         "a coarse network, not a detector one"),
    "a detector run given as --refiner": (lambda c: [c.scene, "--gt-boxes", "--refiner-iters", "1", "--refiner",
                                                    _pose_run(c.tiny, c.tmp, kind="detector", labels=c.labels)], 2,
                                          "a detector network, not a refiner one"),
    "a detector of objects the set lacks": (lambda c: [c.scene, "--detector", _pose_run(c.tiny, c.tmp, kind="detector", labels=["obj_000099"])],
                                            2, "the detector predicts 1 labels the object set lacks"),
}


@pytest.mark.parametrize("name", list(BAD_PREDICT))
def test_predict_bad_input(name, scene_dir, recorded_dataset, tiny_run, tmp_path, capsys):
    """Issues 15-16, bad input through `cosypose-nb predict`: exit status 2 and one error line naming the file (and entry),
    no traceback, nothing written, a user's file kept; or (no box at all) an empty result counted in the summary."""
    from types import SimpleNamespace
    from cosypose_nb.datasets.bop import read_scene_gt, write_results_csv
    import pandas as pd
    gt = read_scene_gt(scene_dir)
    def dets(entries):
        base = dict(scene_id=0, image_id=0, category_id=int(gt[0][0]["obj_id"]), bbox=[10, 10, 40, 30], score=0.9)
        write_json(tmp_path / "det.json", [base | e for e in entries]); return tmp_path / "det.json"
    def init(field, value):
        rows = [dict(scene_id=0, im_id=im, label=o["label"], score=1.0, T_CO=o["T_CO"]) for im, objs in gt.items() for o in objs]
        write_results_csv(tmp_path / "init.csv", pd.DataFrame(rows))
        lines = (tmp_path / "init.csv").read_text().splitlines()
        f = lines[1].split(","); f[{"obj_id": 2, "t": 5}[field]] = value; lines[1] = ",".join(f)
        (tmp_path / "init.csv").write_text("\n".join(lines) + "\n"); return tmp_path / "init.csv"
    labels = sorted({o["label"] for o in gt[0]})
    assert len(labels) >= 2                                         # the label-without-mesh case needs two objects in image 0
    ctx = SimpleNamespace(scene=scene_dir, rec=recorded_dataset, tmp=tmp_path, tiny=tiny_run, labels=labels, dets=dets, init=init)
    make, status, message = BAD_PREDICT[name]
    args = make(ctx)
    out = tmp_path / "out"; out.mkdir(); (out / "mine.txt").write_text("a user's file")
    rc = predict(*args, *([] if "--init-poses" in args else ["--coarse", tiny_run]),
                 *([] if "--refiner" in args else ["--refiner-iters", "0"]), "--no-figures", "--overwrite", "--out", out)
    cap = capsys.readouterr()
    assert rc == status and "Traceback" not in cap.err, cap.err
    assert message in (cap.err if status else cap.err + cap.out), cap.err
    assert (out / "mine.txt").read_text() == "a user's file"
    if status: assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]                       # nothing half-written
    else: assert json.loads((out / "timings.json").read_text())["n_detections"] == 0              # counted in the summary
