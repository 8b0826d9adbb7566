"""`cosypose-nb demo --out DIR` follows the output-folder rule (core.claim_output_dir): its own folder is resumed
(recording, predictions kept), a folder holding a user's file is refused before anything is written, `--overwrite`
writes there and keeps the file. The networks here are tiny and untrained (`--detector/--coarse/--refiner`): the
plumbing, not the accuracy."""
import pandas as pd
import pytest
import torch

from cosypose_nb.cli import main

SMALL = ["--scenes", "1", "--views", "2", "--resolution", "60x80", "--no-progress"]


@pytest.fixture(scope="module")
def nets(tmp_path_factory, default_objects):
    from cosypose_nb.singleview.config import DETECTOR_PRESETS, train_config
    from cosypose_nb.singleview.detector import DetectorNet, save_detector
    from cosypose_nb.singleview.pose_model import PoseModel, save_pose_model
    from cosypose_nb.singleview.training import pose_model_config
    d = tmp_path_factory.mktemp("nets")
    torch.manual_seed(0)
    save_detector(DetectorNet(DETECTOR_PRESETS["cpu"], default_objects.labels), d / "det")
    save_pose_model(PoseModel(pose_model_config(train_config("cpu", render_size=(48, 64)))), d / "pose")
    return ["--detector", str(d / "det"), "--coarse", str(d / "pose"), "--refiner", str(d / "pose")]


def test_demo_resumes_its_folder_and_refuses_others(tmp_path, capsys, nets):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL, *nets]) == 0
    first = pd.read_csv(out / "summary.csv")
    assert list(first["method"]) == ["single-view", "multi-view", "scene only", "multi-view, true cameras"]
    assert (out / "predict" / "000000" / "candidates.csv").is_file()
    capsys.readouterr()
    assert main(["demo", "--out", str(out), *SMALL, *nets]) == 0                  # its own folder: resumed
    o = capsys.readouterr().out
    assert "0 new images (1 scenes already there)" in o and "0 scenes predicted, 1 kept" in o
    again = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(first, again)

    mine = tmp_path / "mine"; mine.mkdir(); (mine / "keep.txt").write_text("a user's file")
    assert main(["demo", "--out", str(mine), *SMALL, *nets]) == 2
    assert "keep.txt" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]                      # refused: nothing written
    assert main(["demo", "--out", str(mine), *SMALL, *nets, "--overwrite"]) == 0
    assert (mine / "keep.txt").read_text() == "a user's file" and (mine / "summary.csv").exists()


def test_gt_boxes_ablation(tmp_path, capsys, nets):
    "`--gt-boxes`: one candidate per object of the ground truth at least 10 % visible in a view; a run with other boxes predicts again."
    import json
    from cosypose_nb.datasets.bop import read_results_csv, read_scene_gt_info
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL, *nets, "--gt-boxes"]) == 0
    assert "ground truth's visible boxes" in capsys.readouterr().out
    scene = out / "heldout_ycbv" / "train" / "000000"
    info = read_scene_gt_info(scene)
    want = {im: sum(i["visib_fract"] >= 0.1 for i in objs) for im, objs in info.items()}
    cand = read_results_csv(out / "predict" / "000000" / "candidates.csv")
    assert sum(want.values()) > 0 and cand.groupby("im_id").size().reindex(list(want), fill_value=0).to_dict() == want
    assert json.loads((out / "summary.json").read_text())["boxes"] == "ground truth"
    assert main(["demo", "--out", str(out), *SMALL, *nets]) == 0                  # the detector's boxes: predicted again
    assert "1 scenes predicted, 0 kept" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["boxes"] == "detector"


def test_a_network_of_another_kind_is_refused(tmp_path, capsys, nets):
    swapped = nets[:]
    swapped[3] = nets[1]                                  # --coarse DETECTOR_RUN
    assert main(["demo", "--out", str(tmp_path / "d"), *SMALL, *swapped]) == 2
    assert "not a coarse one" in capsys.readouterr().err


def test_networks_trained_when_not_shipped(tmp_path, monkeypatch, recorded_dataset):
    "Without shipped checkpoints the demo trains each network into OUT/runs/KIND (here 2 steps), then keeps it."
    from cosypose_nb import demo
    monkeypatch.setattr(demo, "shipped_checkpoints", lambda: tmp_path / "none")
    tiny = ("--config", "cpu", "--n-steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--num-workers", "0")
    monkeypatch.setattr(demo, "DEMO_TRAIN_ARGS", {"detector": tiny, "coarse": (*tiny, "--render-size", "48", "64"),
                                                  "refiner": (*tiny, "--render-size", "48", "64")})
    calls = []
    data = lambda: calls.append(1) or recorded_dataset / "train"
    nets = demo.demo_networks(tmp_path / "out", train=False, train_data=data, progress=False)
    assert {k: h for k, (_, h) in nets.items()} == {"detector": "trained", "coarse": "trained", "refiner": "trained"}
    assert all(demo.run_done(p) for p, _ in nets.values()) and calls == [1]
    again = demo.demo_networks(tmp_path / "out", train=False, train_data=data, progress=False)     # done: kept
    assert again == nets and calls == [1]
