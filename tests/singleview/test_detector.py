"""Tests of cosypose_nb.singleview.detector and .detection: the network's shapes and label mapping, the original's
checkpoints (against numbers computed once with the ORIGINAL network: torchvision 0.4.2's Python sources, the
version CosyPose used, building `DetectorMaskRCNN(input_resize=(240, 320), n_classes=4)` in float64, eval mode,
with the seeded weights of `random_state_dict` filled in sorted order of its 307 names, on a seeded random image;
no foreign code is imported here), the training data, a tiny training run through the runner and its command
line, inference (thresholds, top-k, empty results, bad images), BOP detection files and the COCO metrics."""
from __future__ import annotations
import dataclasses, hashlib, json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cosypose_nb.core import InputError, config_from_dict, config_to_dict
from cosypose_nb.datasets.bop import make_toy_dataset, mask_bbox, read_mask, mask_name
from cosypose_nb.singleview import detector as dt
from cosypose_nb.singleview import detection as dn
from cosypose_nb.singleview.pose_data import PoseDataConfig
from cosypose_nb.structures import Detections

LABELS3 = ["obj_000001", "obj_000002", "obj_000003"]
SMALL = dataclasses.replace(dt.DETECTOR_PRESETS["cpu"], min_size=120, max_size=160)   # the toy data's 160 x 120 images

ORIGINAL_SIGNATURE = "86eb460f6dbf7baaf9b7ff02f41a7f0115e21b8f399a3624a7d61bf9b7bbef30"
ORIGINAL_FEATURE_MEANS = [1.825175161660809, 1.7620510722266582, 1.685635191357595, 0.9797272942694765, 0.964560506219299]
ORIGINAL_TOP_SCORES = [0.9912272491273155, 0.9888931014276505, 0.9876089347483661, 0.9874631664906858, 0.9872479430806995]
ORIGINAL_TOP_BOXES = [[0.0, 74.5161964401636, 144.079616495653, 88.34498619727638],
                      [144.44480620119475, 209.7474051600823, 250.65153946734563, 234.68687485683202],
                      [315.9330652102283, 213.37764153243168, 318.3544680723411, 223.2723466075993]]
ORIGINAL_MASK_SUMS = [895.0819855303293, 1249.5852755266153, 18.153960800684565, 224.87819238218367, 1374.734466636577]
ORIGINAL_N_DETECTIONS = 100
CONFIG_YAML = ("!!python/object:argparse.Namespace\ninput_resize: !!python/tuple\n- 240\n- 320\nlabel_to_category_id:\n"
               "  background: 0\n  obj_000001: 1\n  obj_000002: 2\n  obj_000005: 3\nlr: 0.04\n")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", n_scenes=3, n_images=4, n_objects=3, split="train")


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    "A legacy-format (torch 1.3) checkpoint.pth.tar with the original's 307 names and shapes, and its config.yaml."
    net = dt.DetectorNet(dt.DETECTOR_PRESETS["paper"], ["a", "b", "c"])
    names = dt.original_detector_names(net)
    shapes = {names[k]: v.shape for k, v in net.state_dict().items()}
    d = tmp_path_factory.mktemp("original")
    # float32 in the file: the network's own type (the reference's float64 weights pass through float32 anyway)
    torch.save({"state_dict": {k: v.float() for k, v in dt.random_state_dict(shapes).items()}, "epoch": 599},
               d / "checkpoint.pth.tar", _use_new_zipfile_serialization=False)
    (d / "config.yaml").write_text(CONFIG_YAML)
    return d / "checkpoint.pth.tar", shapes


def toy_task_config(toy, **kw):
    return dt.detector_train_config("cpu", data=(str(toy / "train"),), min_size=120, max_size=160, batch_size=2,
                                    num_workers=0, warmup_steps=2, log_every=1, checkpoint_every=4,
                                    objects=str(toy / "models"), data_config=PoseDataConfig(min_visib=0.1), **kw)


def test_configs():
    for cfg in dt.DETECTOR_PRESETS.values():
        assert config_from_dict(dt.DetectorConfig, config_to_dict(cfg)) == cfg
    paper = dt.detector_train_config("paper", data=("x",))
    assert (paper.n_steps, paper.warmup_steps, paper.lr_milestones, paper.lr, paper.batch_size) == (46800, 3900, (19500, 35100), 0.04, 2)
    assert config_from_dict(dt.DetectorTrainConfig, config_to_dict(paper)) == paper
    for bad in (dict(backbone="resnet18"), dict(anchor_sizes=(16, 32, 64)), dict(norm="group"), dict(max_size=100),
                dict(box_score_thresh=1.5), dict(fpn_channels=128)):
        with pytest.raises(InputError):
            dt.DetectorConfig(**bad)
    for bad in (dict(kind="refiner"), dict(n_steps=0), dict(optimizer="lbfgs"), dict(min_area=-1.0)):
        with pytest.raises(InputError):
            dt.detector_train_config("cpu", **bad)


def test_network_shapes_and_torchvision_keys():
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    paper = dt.DetectorNet(dt.DETECTOR_PRESETS["paper"], LABELS3)
    tv = MaskRCNN(resnet_fpn_backbone(backbone_name="resnet50", weights=None), num_classes=4,
                  rpn_anchor_generator=AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5))
    assert {k: v.shape for k, v in paper.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items()}
    assert sum(p.requires_grad for p in paper.backbone.body.parameters()) < len(list(paper.backbone.body.parameters()))  # conv1, layer1 frozen
    torch.manual_seed(0)
    net = dt.DetectorNet(SMALL, LABELS3)
    img = torch.rand(3, 120, 160)
    target = {"boxes": torch.tensor([[10.0, 20, 60, 70]]), "labels": torch.tensor([2]), "masks": torch.zeros(1, 120, 160, dtype=torch.uint8)}
    target["masks"][0, 20:70, 10:60] = 1
    losses = net.train()([img, img], [target, target])
    assert sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_mask", "loss_objectness", "loss_rpn_box_reg"]
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        out = net.eval()([img, torch.rand(3, 100, 150)])
    n = len(out[1]["scores"])
    assert out[1]["boxes"].shape == (n, 4) and out[1]["masks"].shape == (n, 1, 100, 150) and n <= SMALL.detections_per_img


def test_label_mapping(toy):
    net = dt.DetectorNet(SMALL, LABELS3)
    assert net.classes(["obj_000003", "obj_000001"]).tolist() == [3, 1]
    assert net.labels_of(torch.tensor([1, 2, 3])) == LABELS3
    with pytest.raises(InputError, match="obj_000009"):
        net.classes(["obj_000009"])
    for bad in ([], ["a", "a"], ["background"], [3]):
        with pytest.raises(InputError):
            dt.check_labels(bad)
    # the run's classes are the sorted labels of the object set, stored with the weights
    task = dt.make_detector_task(toy_task_config(toy))
    assert task.model.labels == tuple(LABELS3) and task.info["labels"] == LABELS3
    # data with an object the object set does not have
    with pytest.raises(InputError, match="not in the object set"):
        dt.DetectionDataset(toy / "train", ["obj_000001"])
    det = dn.Detector(net)
    det.check_objects(LABELS3 + ["obj_000004"])
    with pytest.raises(InputError, match="obj_000003"):
        det.check_objects(LABELS3[:2])


def test_original_checkpoint_gives_the_original_outputs(original_checkpoint):
    path, shapes = original_checkpoint
    sig = hashlib.sha256("\n".join(sorted(f"{k}:{list(s)}" for k, s in shapes.items())).encode()).hexdigest()
    assert len(shapes) == 307 and sig == ORIGINAL_SIGNATURE
    net = dt.load_detector(path)
    assert net.labels == ("obj_000001", "obj_000002", "obj_000005") and (net.config.min_size, net.config.max_size) == (240, 320)
    net = net.double()
    x = torch.rand(3, 240, 320, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        means = [float(v.abs().mean()) for v in net.backbone(x[None]).values()]
        out = net([x])[0]
    # tolerances: the weights went through float32; float64 arithmetic after that
    assert np.allclose(means, ORIGINAL_FEATURE_MEANS, rtol=1e-6)
    assert len(out["scores"]) == ORIGINAL_N_DETECTIONS and out["labels"][:5].tolist() == [3] * 5
    assert torch.allclose(out["scores"][:5], torch.tensor(ORIGINAL_TOP_SCORES, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(out["boxes"][:3], torch.tensor(ORIGINAL_TOP_BOXES, dtype=torch.float64), atol=1e-2)
    assert torch.allclose(out["masks"][:5].sum((1, 2, 3)), torch.tensor(ORIGINAL_MASK_SUMS, dtype=torch.float64), rtol=1e-5)
    # today's epsilon in the frozen batch norms would not reproduce the original
    for m in net.modules():
        if hasattr(m, "eps") and type(m).__name__ == "FrozenBatchNorm2d": m.eps = 1e-5
    with torch.no_grad():
        means_eps = [float(v.abs().mean()) for v in net.backbone(x[None]).values()]
    assert not np.allclose(means_eps, ORIGINAL_FEATURE_MEANS, rtol=1e-6)


def test_original_checkpoint_refusals_and_conversion(original_checkpoint, tmp_path):
    path, _ = original_checkpoint
    lone = tmp_path / "lone" / "checkpoint.pth.tar"
    lone.parent.mkdir(); lone.symlink_to(path)
    with pytest.raises(InputError, match="labels"):
        dt.load_detector(lone)                                   # no config.yaml: the classes' labels are unknown
    with pytest.raises(InputError, match="3 object classes, but 2 labels"):
        dt.load_detector(lone, labels=["obj_000001", "obj_000002"])
    assert dt.load_detector(lone, labels=["x", "y", "z"]).config.min_size == 480      # no config.yaml: the paper size
    torch.save({"state_dict": {"pose_fc.weight": torch.zeros(9, 4)}, "epoch": 1}, tmp_path / "pose.pth.tar")
    with pytest.raises(InputError, match="not a Mask R-CNN"):
        dt.load_detector(tmp_path / "pose.pth.tar", labels=["a"])
    (tmp_path / "bad.yaml").write_text("label_to_category_id:\n  background: 1\n")
    with pytest.raises(InputError, match="background"):
        dt.read_original_detector_config(tmp_path / "bad.yaml")
    from cosypose_nb.cli import main
    assert main(["convert-checkpoint", "--kind", "detector", str(path), str(tmp_path / "conv")]) == 0
    a, b = dt.load_detector(path), dt.load_detector(tmp_path / "conv")
    assert a.labels == b.labels and a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert main(["convert-checkpoint", "--kind", "detector", str(lone), str(tmp_path / "c2")]) == 2   # InputError: exit 2
    assert not (tmp_path / "c2").exists()


def test_dataset_samples(toy):
    ds = dt.DetectionDataset(toy / "train", LABELS3, PoseDataConfig(min_visib=0.0), min_area=0.0, augment=False)
    s = ds[2]
    N = len(s["labels"])
    assert s["rgb"].shape == (3, 120, 160) and s["masks"].shape == (N, 120, 160) and s["boxes"].shape == (N, 4)
    part, frame, sid, im, n_obj, keep = ds.rows[2]
    for k, j in enumerate(keep[:, 0]):
        m = read_mask(ds.datasets[0].scene_dir(sid) / "mask_visib" / mask_name(im, int(j)))
        assert np.array_equal(s["boxes"][k].numpy(), mask_bbox(m).astype(np.float32))     # boxes of the visible masks
        assert np.array_equal(s["masks"][k].numpy() > 0, m)
    assert set(s["labels"].tolist()) <= {1, 2, 3}
    strict = dt.DetectionDataset(toy / "train", LABELS3, PoseDataConfig(min_visib=0.9), min_area=0.0)
    assert sum(len(r[5]) for r in strict.rows) < sum(len(r[5]) for r in ds.rows)
    aug = dt.DetectionDataset(toy / "train", LABELS3, PoseDataConfig(p_background=1.0), seed=3)
    assert torch.equal(aug[(1, 2)]["rgb"], aug[(1, 2)]["rgb"]) and not torch.equal(aug[(1, 2)]["rgb"], aug[(1, 3)]["rgb"])
    with pytest.raises(InputError, match="no image"):
        dt.DetectionDataset(toy / "train", LABELS3, min_area=1e6)
    b = dt.collate_detections([ds[0], ds[1]])
    assert len(b) == 2 and b.targets[0]["labels"].dtype == torch.long and b.to("cpu").images[1].dtype == torch.uint8


def test_tiny_training_learns_resumes_and_loads(toy, tmp_path):
    from cosypose_nb.singleview.training import run_training
    torch.set_num_threads(1)
    cfg = toy_task_config(toy, n_steps=16, lr=2e-3)
    torch.manual_seed(cfg.seed)
    task = dt.make_detector_task(cfg)
    step, calls = task.step, {"n": 0}
    def interrupted(model, batch):                               # stopped in step 11: the last checkpoint is step 8
        calls["n"] += 1
        if calls["n"] == 11: raise KeyboardInterrupt
        return step(model, batch)
    task.step = interrupted
    with pytest.raises(KeyboardInterrupt):
        run_training(task, cfg, tmp_path / "run", progress=False)
    res = dt.train_detector(cfg, tmp_path / "run", resume=True, progress=False)
    log = res.log
    assert res.steps == 16 and log.step.tolist() == list(range(1, 17))
    assert log.loss_total.iloc[-4:].mean() < 0.7 * log.loss_total.iloc[:4].mean()     # from chance: falls fast
    assert {"loss_objectness", "loss_classifier", "loss_mask", "loss_box_reg", "loss_rpn_box_reg"} <= set(log.columns)
    net = dt.load_detector(tmp_path / "run")
    assert net.labels == tuple(LABELS3) and net.config == SMALL
    from safetensors.torch import load_file
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())
    with pytest.raises(InputError, match="holds a training run"):
        dt.train_detector(cfg, tmp_path / "run", progress=False)
    pose_like = tmp_path / "pose"; pose_like.mkdir()
    (pose_like / "model.safetensors").write_bytes((tmp_path / "run" / "model.safetensors").read_bytes())
    cfg_json = json.loads((tmp_path / "run" / "config.json").read_text()); cfg_json["kind"] = "refiner"
    (pose_like / "config.json").write_text(json.dumps(cfg_json))
    with pytest.raises(InputError, match="not a detector"):
        dt.load_detector(pose_like)


def test_command_line(toy, tmp_path, capsys):
    from cosypose_nb.cli import main
    argv = ["train", "detector", "--data", str(toy / "train"), "--objects", str(toy / "models"), "--out", str(tmp_path / "r"),
            "--n-steps", "2", "--batch-size", "1", "--min-size", "120", "--max-size", "160", "--num-workers", "0", "--no-progress"]
    assert main(argv) == 0
    assert "2 steps" in capsys.readouterr().out
    assert main(argv) == 2                                      # the folder holds a run: --resume or another folder
    assert main(["train", "detector", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s"), "--no-progress"]) == 2
    with pytest.raises(SystemExit):
        main(["train", "detector", "--help"])
    assert "detector" in capsys.readouterr().out


def test_detector_inference_thresholds_topk_and_empty():
    torch.manual_seed(0)
    det = dn.Detector(dt.DetectorNet(SMALL, LABELS3))
    ims = torch.randint(0, 256, (2, 3, 120, 160), dtype=torch.uint8)
    d = det.detect(ims)
    assert len(d) > 0 and d.masks.shape == (len(d), 120, 160) and d.masks.dtype == torch.bool
    assert set(d.view_ids.tolist()) <= {0, 1} and set(d.labels) <= set(LABELS3)
    det.config = dn.DetectionConfig(top_k_per_label=1)
    d1 = det.detect(ims)
    pairs = list(zip(d1.view_ids.tolist(), d1.labels))
    assert len(pairs) == len(set(pairs)) and len(d1) <= 2 * 3
    for v, l in pairs:                                           # the best of each (view, label)
        best = max(s for s, vv, ll in zip(d.scores.tolist(), d.view_ids.tolist(), d.labels) if (vv, ll) == (v, l))
        assert max(s for s, vv, ll in zip(d1.scores.tolist(), d1.view_ids.tolist(), d1.labels) if (vv, ll) == (v, l)) == best
    det.config = dn.DetectionConfig(score_threshold=1.0)
    e = det.detect(ims)
    assert len(e) == 0 and e.boxes.shape == (0, 4) and e.masks.shape == (0, 120, 160) and e.view_ids.dtype == torch.long
    det.config = dn.DetectionConfig(masks=False)
    assert det.detect(ims[:1].permute(0, 2, 3, 1).numpy()).masks is None          # channels-last numpy
    for bad in (np.zeros((120, 160)), np.zeros((120, 160, 4), np.uint8), torch.full((3, 8, 8), float("nan")), "img.png",
                np.zeros((8, 8, 3), np.int32), torch.zeros(3, 0, 8)):
        with pytest.raises(InputError):
            det.detect(bad)


def test_bop_detection_files(tmp_path):
    masks = torch.zeros(3, 30, 40, dtype=torch.bool)
    masks[0, 2:10, 3:9] = True; masks[1, 5:25, 10:30] = True
    det = Detections(torch.tensor([0, 1, 1]), ["obj_000001", "obj_000003", "obj_000001"], torch.tensor([0.9, 0.8, 0.3]),
                     torch.tensor([[3.0, 2, 9, 10], [10, 5, 30, 25], [0, 0, 4, 4]]), masks)
    p = dn.write_bop_detections(tmp_path / "d.json", det, keys=[(5, 1), (5, 2)], times=[0.1, 0.2])
    raw = json.loads(p.read_text())
    assert raw[0]["bbox"] == [3.0, 2.0, 6.0, 8.0] and raw[1]["category_id"] == 3 and raw[2]["scene_id"] == 5
    rows = dn.read_bop_detections(p, LABELS3)
    assert [r["label"] for r in rows] == det.labels and np.allclose(rows[1]["box"], [10, 5, 30, 25])
    f = dn.DetectionFile(p, LABELS3)
    back = f.detect(torch.zeros(2, 3, 30, 40, dtype=torch.uint8), [(5, 1), (5, 2)])
    assert torch.equal(back.masks, masks) and back.labels == det.labels and torch.allclose(back.scores, det.scores)
    swapped = f.detect(torch.zeros(2, 3, 30, 40, dtype=torch.uint8), [(5, 2), (7, 7)])
    assert swapped.view_ids.tolist() == [0, 0] and swapped.labels == ["obj_000003", "obj_000001"]
    empty = f.detect(torch.zeros(1, 3, 30, 40, dtype=torch.uint8), [(9, 9)])
    assert len(empty) == 0 and empty.boxes.shape == (0, 4)
    f.config = dn.DetectionConfig(score_threshold=0.5, masks=False)
    assert len(f.detect(None, [(5, 1), (5, 2)])) == 2
    with pytest.raises(InputError, match=r"\[1\].category_id: object 3 \(obj_000003\) is not in the object set"):
        dn.DetectionFile(p, LABELS3[:2])
    with pytest.raises(InputError, match="obj_000003"):
        dn.DetectionFile(p).check_objects(LABELS3[:2])
    for k, v, msg in (("bbox", [1, 2, -3, 4], "bbox"), ("score", "high", "score"), ("category_id", 0, "category_id"),
                      ("segmentation", {"counts": 3}, "segmentation")):
        bad = json.loads(p.read_text()); bad[2][k] = v
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=rf"bad.json: \[2\]\.{msg}"):
            dn.read_bop_detections(tmp_path / "bad.json")
    bad = json.loads(p.read_text()); del bad[0]["bbox"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"\[0\]\.bbox: missing"):
        dn.read_bop_detections(tmp_path / "bad.json")


def test_metrics_on_known_answers(toy):
    gt, ids = dn.coco_ground_truth(toy / "train", LABELS3, min_visib=0.1)
    assert len(gt["images"]) == 12 and all(a["category_id"] in (1, 2, 3) for a in gt["annotations"])
    real = [a for a in gt["annotations"] if not a["iscrowd"]]
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0,
                "segmentation": a["segmentation"]} for a in real]
    m = dn.detection_metrics(gt, perfect)
    assert m["bbox_mAP"] > 0.999 and m["segm_AP50"] > 0.999 and m["recall50"] == 1.0 and m["n_gt"] == len(real)
    wrong = [dict(r, category_id=r["category_id"] % 3 + 1) for r in perfect]           # right boxes, wrong labels
    m2 = dn.detection_metrics(gt, wrong)
    assert m2["bbox_mAP"] < 0.3 and m2["recall50"] < 0.5
    assert dn.detection_metrics(gt, [])["recall50"] == 0.0
    with pytest.raises(InputError, match="not one the detector knows"):
        dn.coco_ground_truth(toy / "train", LABELS3[:2])
