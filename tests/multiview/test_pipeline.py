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
