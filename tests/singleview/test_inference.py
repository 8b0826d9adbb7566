"Tests of cosypose_nb.singleview.inference: PosePredictor (from boxes, from poses, batching, empty and bad input) and load_pose_model."
import math

import pytest
import torch

from cosypose_nb.core import InputError, write_json
from cosypose_nb.geometry.cameras import make_K, boxes_from_masks
from cosypose_nb.geometry.rotations import random_rotations, perturb_poses
from cosypose_nb.geometry.transforms import make_T
from cosypose_nb.structures import Candidates, Detections
from cosypose_nb.singleview.inference import PosePredictor, PredictorConfig, load_pose_model
from cosypose_nb.singleview.pose_model import PoseModel, PoseModelConfig, save_pose_model

CPU_SMALL = dict(backbone="small", render_size=(48, 64), input_mean=0.5, input_std=0.25, xy_scale=6.4, z_scale=0.1)


@pytest.fixture(scope="module")
def views(objects, renderer):
    "3 views (480 x 640, uint8) of 2, 3 and 1 objects (pasted renders on noise); detections from their masks."
    g = torch.Generator().manual_seed(0)
    V, H, W = 3, 480, 640
    K = make_K(torch.tensor([1066.0, 900.0, 1000.0], dtype=torch.float64), 1067.0, 312.0, 241.0)
    view_ids = torch.tensor([0, 0, 1, 1, 1, 2])
    labels = [objects.labels[i] for i in (0, 7, 2, 5, 2, 9)]
    t = torch.cat([0.3 * torch.rand(6, 2, generator=g, dtype=torch.float64) - 0.15,
                   0.6 + 0.4 * torch.rand(6, 1, generator=g, dtype=torch.float64)], -1)
    T_CO = make_T(random_rotations(6, g), t)
    r = renderer.render(labels, T_CO, K[view_ids], (H, W), render_mask=True)
    images = torch.rand(V, 3, H, W, generator=g)
    for i, v in enumerate(view_ids.tolist()):
        images[v] = torch.where(r.mask[i], r.rgb[i], images[v])
    images = (images * 255).round().to(torch.uint8)
    det = Detections(view_ids, labels, torch.linspace(0.5, 1.0, 6), boxes_from_masks(r.mask[:, 0]).double())
    return images, K, det, T_CO


def random_model(seed, **kw):
    torch.manual_seed(seed)
    m = PoseModel(PoseModelConfig(**(CPU_SMALL | kw)))
    torch.nn.init.normal_(m.pose_fc.weight, std=0.02)          # untrained but not the identity
    return m


@pytest.fixture(scope="module")
def predictor(objects, renderer):
    return PosePredictor(random_model(0, init_mode="zup-autodepth"), random_model(1), objects, renderer,
                         PredictorConfig(n_refiner_iterations=2, batch_size=4))


def test_predict_shapes_and_determinism(views, predictor):
    images, K, det, T_CO = views
    est = predictor.run(images, K, det)
    c = est.candidates
    assert isinstance(c, Candidates) and len(c) == 6 and c.T_CO.shape == (6, 4, 4) and c.T_CO.dtype == torch.float64
    assert c.labels == det.labels and torch.equal(c.view_ids, det.view_ids) and torch.equal(c.scores, det.scores)
    c.validate(3)
    assert est.T_CO_init.shape == est.T_CO_coarse.shape == (6, 4, 4)
    assert not torch.equal(est.T_CO_coarse, est.T_CO_init) and not torch.equal(c.T_CO, est.T_CO_coarse)
    assert {"init", "crop", "render", "network", "total"} <= set(est.timings)
    assert torch.equal(predictor.predict(images, K, det).T_CO, c.T_CO)
    c.T_CO[0, 0, 3] = 1.0                                       # ordinary tensors (not inference tensors): writable


def test_every_iteration_is_kept(views, predictor):
    "`T_CO_iterations`: the pose from the box, each coarse and each refiner iteration, over the batch chunks."
    images, K, det, _ = views
    est = predictor.run(images, K, det, n_coarse=1, n_refiner=3)          # 6 objects in chunks of 4
    Ts = est.T_CO_iterations
    assert Ts.shape == (5, 6, 4, 4) and Ts.dtype == torch.float64
    assert torch.equal(Ts[0], est.T_CO_init) and torch.equal(Ts[1], est.T_CO_coarse) and torch.equal(Ts[-1], est.candidates.T_CO)
    assert all(not torch.equal(Ts[k], Ts[k + 1]) for k in range(4))     # each iteration moves the poses
    # the refiner's first two iterations are those of a run with two (the iterations do not depend on the count)
    two = predictor.run(images, K, det, n_coarse=1, n_refiner=2).T_CO_iterations
    assert two.shape == (4, 6, 4, 4) and (two - Ts[:4]).abs().max() < 1e-6
    none = predictor.run(images, K, det, n_coarse=0, n_refiner=0)
    assert none.T_CO_iterations.shape == (1, 6, 4, 4) and torch.equal(none.T_CO_iterations[0], none.candidates.T_CO)
    empty = predictor.run(images, K, det[[]], n_coarse=1, n_refiner=2)
    assert empty.T_CO_iterations.shape == (4, 0, 4, 4)


def test_batching_equals_one_by_one(views, predictor):
    images, K, det, _ = views
    full = predictor.predict(images, K, det)                   # chunks of 4 objects over 3 views
    for i in range(len(det)):
        one = predictor.predict(images, K, det[[i]])
        # float32 network, summation order depends on the batch size: differences ~1e-7 of the outputs
        assert (one.T_CO[0] - full.T_CO[i]).abs().max() < 1e-4
    # the images of one view alone give the same poses for its objects
    m = det.view_ids == 1
    sub = det[m]
    alone = predictor.predict(images[1:2], K[1:2], Detections(sub.view_ids * 0, sub.labels, sub.scores, sub.boxes))
    assert (alone.T_CO - full.T_CO[m]).abs().max() < 1e-4


def test_paper_init_and_stages(views, objects, renderer):
    images, K, det, _ = views
    p = PosePredictor(random_model(2), None, objects, renderer)
    est = p.run(images, K, det, n_coarse=1, n_refiner=0)
    assert torch.allclose(est.T_CO_init[:, 2, 3], torch.ones(6, dtype=torch.float64))    # the paper's z = 1 m
    assert torch.equal(est.candidates.T_CO, est.T_CO_coarse)
    with pytest.raises(InputError, match="no refiner"):
        p.predict(images, K, det, n_refiner=1)
    with pytest.raises(InputError):
        p.predict(images, K, det, n_coarse=-1)


def test_refine_from_poses(views, predictor):
    images, K, det, T_CO = views
    T_in = perturb_poses(T_CO, math.radians(10), 0.01, torch.Generator().manual_seed(1))
    cand = Candidates(det.view_ids, det.labels, det.scores, T_in)
    out = predictor.refine(images, K, cand, n_iterations=3)
    assert out.T_CO.shape == (6, 4, 4) and out.labels == cand.labels and not torch.equal(out.T_CO, T_in)
    assert torch.equal(predictor.refine(images, K, cand, n_iterations=0).T_CO, T_in)
    one = predictor.refine(images, K, cand[[4]], n_iterations=3)
    assert (one.T_CO[0] - out.T_CO[4]).abs().max() < 1e-4
    bad = Candidates(det.view_ids, det.labels, det.scores, T_in.clone()); bad.T_CO[2, 1, 3] = float("nan")
    with pytest.raises(InputError):
        predictor.refine(images, K, bad)


def test_empty(views, predictor):
    images, K, det, _ = views
    for out in (predictor.predict(images, K, det[[]]),
                predictor.refine(images, K, Candidates(det.view_ids[:0], [], det.scores[:0], torch.zeros(0, 4, 4, dtype=torch.float64)))):
        assert len(out) == 0 and out.T_CO.shape == (0, 4, 4)


@pytest.mark.parametrize("case", ["K size", "K shape", "label", "view id", "box outside", "box empty", "score", "images"])
def test_bad_input(views, predictor, case):
    images, K, det, _ = views
    d = Detections(det.view_ids.clone(), list(det.labels), det.scores.clone(), det.boxes.clone())
    kw = dict(images=images, K=K.clone(), detections=d)
    if case == "K size": kw["K"][1, 0, 2] = 1500.0                    # a K of a larger image
    if case == "K shape": kw["K"] = K[:2]
    if case == "label": d.labels[3] = "obj_000077"
    if case == "view id": d.view_ids[0] = 3
    if case == "box outside": d.boxes[5] = torch.tensor([-50.0, 10, -1, 40])
    if case == "box empty": d.boxes[5, 2] = d.boxes[5, 0]
    if case == "score": d.scores[1] = float("inf")
    if case == "images": kw["images"] = images[:, :2]
    with pytest.raises(InputError):
        predictor.predict(**kw)


def test_load_pose_model(tmp_path):
    m = random_model(3)
    run = save_pose_model(m, tmp_path / "run")
    same = lambda a: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), m.state_dict().values()))
    assert same(load_pose_model(run)) and same(load_pose_model(run / "model.safetensors"))
    assert not load_pose_model(run).training
    torch.save({"model": m.state_dict(), "optimizer": {}, "step": 3}, run / "ckpt.pt")
    assert same(load_pose_model(run / "ckpt.pt"))
    torch.save(m.state_dict(), run / "plain.pt")
    assert same(load_pose_model(run / "plain.pt"))
    # a training configuration holding the model's under "model"
    write_json(run / "config.json", {"kind": "refiner", "model": dict(CPU_SMALL)})
    assert same(load_pose_model(run))


@pytest.mark.parametrize("case", ["missing", "other backbone", "unknown setting", "no config", "not tensors", "garbage"])
def test_load_pose_model_bad(tmp_path, case):
    run = save_pose_model(random_model(4), tmp_path / "run")
    path = run
    if case == "missing": path = tmp_path / "nothing"
    if case == "other backbone": write_json(run / "config.json", {"backbone": "resnet18"})
    if case == "unknown setting": write_json(run / "config.json", dict(CPU_SMALL, n_layers=3))
    if case == "no config": (run / "config.json").unlink()
    if case == "not tensors":
        import collections
        torch.save({"model": collections.Counter(a=1)}, run / "x.pt"); path = run / "x.pt"
    if case == "garbage": (run / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError):
        load_pose_model(path)
