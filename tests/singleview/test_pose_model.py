"Tests of cosypose_nb.singleview.pose_model: the update, the crops, the coarse initialisation, PoseModel and its bad input."
import dataclasses, json, math

import pytest
import torch

from cosypose_nb.core import get_device, InputError, ConfigError, config_from_dict, config_to_dict
from cosypose_nb.geometry.cameras import make_K, project_points, boxes_from_points, crop_images, crop_intrinsics
from cosypose_nb.geometry.rotations import random_rotations, perturb_poses, rot6d_to_matrix
from cosypose_nb.geometry.transforms import make_T
from cosypose_nb.singleview.pose_model import (POSE_MODEL_PRESETS, R_ZUP, PoseModel, PoseModelConfig, apply_update,
                                               crop_inputs, decode_outputs, head_from_original, original_outputs,
                                               poses_from_boxes, update_outputs)

YCBV_K = (1066.778, 1067.487, 312.987, 241.311)


def random_poses(B, g, z=(0.4, 1.2)):
    t = torch.cat([0.3 * torch.rand(B, 2, generator=g, dtype=torch.float64) - 0.15,
                   z[0] + (z[1] - z[0]) * torch.rand(B, 1, generator=g, dtype=torch.float64)], -1)
    return make_T(random_rotations(B, g), t)


@pytest.fixture(scope="module")
def scene(objects, renderer):
    "Six objects rendered at known poses on a noise background: images (6, 3, 480, 640) uint8, K, T_gt, labels."
    g = torch.Generator().manual_seed(0)
    labels = objects.labels[:6]
    K = make_K(*YCBV_K).expand(6, 3, 3)
    T_gt = random_poses(6, g, (0.5, 0.9))
    r = renderer.render(labels, T_gt, K, (480, 640), render_mask=True)
    bg = torch.rand(6, 3, 480, 640, generator=g)
    images = (torch.where(r.mask, r.rgb, bg) * 255).round().to(torch.uint8)
    return images, K, T_gt, labels


@pytest.mark.parametrize("scales", [(1.0, 1.0), (12.8, 0.1)])
def test_true_update_is_exact(scales):
    g = torch.Generator().manual_seed(1)
    T_gt = random_poses(256, g)
    T_in = perturb_poses(T_gt, math.radians(30), (0.02, 0.02, 0.1), g)
    K_crop = make_K(200 + 800 * torch.rand(256, generator=g, dtype=torch.float64),
                    200 + 800 * torch.rand(256, generator=g, dtype=torch.float64), 160.0, 120.0)
    o = update_outputs(T_in, T_gt, K_crop, *scales)
    assert (apply_update(T_in, K_crop, *decode_outputs(o, *scales)) - T_gt).abs().max() < 1e-12
    zero = apply_update(T_in, K_crop, *decode_outputs(torch.zeros(256, 9, dtype=torch.float64), *scales))
    assert (zero - T_in).abs().max() < 1e-15


def test_update_equations_by_hand():
    # rotation about z by 90 degrees (6D = first two columns), shift 10 px right at f' = 500, depth x 1.1
    T_in = make_T(torch.eye(3, dtype=torch.float64), torch.tensor([0.1, 0.0, 2.0], dtype=torch.float64))[None]
    K_crop = make_K(500.0, 400.0, 0.0, 0.0)[None]
    raw = torch.tensor([[0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 10.0, 0.0, 1.1]], dtype=torch.float64)   # the original's outputs
    cfg = PoseModelConfig()
    o = (raw - torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 1], dtype=torch.float64))
    assert torch.allclose(original_outputs(o, cfg), raw)
    T = apply_update(T_in, K_crop, *decode_outputs(o))
    Rz = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(T[0, :3, :3], Rz)
    z = 2.2
    assert torch.allclose(T[0, :3, 3], torch.tensor([(10 / 500 + 0.1 / 2.0) * z, 0.0, z], dtype=torch.float64))


def test_head_conversion_round_trip():
    cfg = PoseModelConfig(xy_scale=12.8, z_scale=0.1)
    w, b = torch.randn(9, 16, dtype=torch.float64), torch.randn(9, dtype=torch.float64)
    w2, b2 = head_from_original(w, b, cfg)
    f = torch.randn(5, 16, dtype=torch.float64)
    assert torch.allclose(original_outputs(f @ w2.T + b2, cfg), f @ w.T + b)


def test_crops_match_the_renders(scene, objects, renderer):
    "At the true pose the crop and the rendering with the crop's K coincide on the object (one pixel convention)."
    images, K, T_gt, labels = scene
    pts = objects.points(labels)
    crops, boxes, K_crop = crop_inputs(images, K, T_gt, pts, (120, 160))
    assert crops.dtype == torch.float32 and crops.shape == (6, 3, 120, 160) and 0 <= crops.min() and crops.max() <= 1
    r = renderer.render(labels, T_gt, K_crop, (120, 160), render_mask=True)
    m = r.mask.expand(-1, 3, -1, -1)
    assert (crops - r.rgb).abs()[m].median() < 0.02
    # the crop box is centred on the projected origin, 4:3, and holds the projected points
    c = project_points(torch.zeros(6, 1, 3, dtype=torch.float64), K, T_gt)[:, 0] + 0.5
    assert torch.allclose((boxes[:, :2] + boxes[:, 2:]) / 2, c)
    assert torch.allclose((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]), torch.full((6,), 4 / 3, dtype=torch.float64))
    pb = boxes_from_points(project_points(pts, K, T_gt))
    assert ((pb[:, :2] >= boxes[:, :2]) & (pb[:, 2:] <= boxes[:, 2:])).all()
    # with image_ids: the same crops from the images indexed per object
    ids = torch.tensor([2, 2, 0])
    c2, _, _ = crop_inputs(images, K[ids], T_gt[ids], pts[ids], (120, 160), image_ids=ids)
    c3, _, _ = crop_inputs(images[ids], K[ids], T_gt[ids], pts[ids], (120, 160))
    assert torch.equal(c2, c3)


def test_poses_from_boxes_paper():
    g = torch.Generator().manual_seed(2)
    boxes = torch.tensor([[100.0, 50.0, 180.0, 170.0], [0.0, 0.0, 640.0, 480.0]], dtype=torch.float64)
    K = make_K(*YCBV_K).expand(2, 3, 3)
    T = poses_from_boxes(boxes, K, depth=1.0)
    assert torch.equal(T[:, :3, :3], torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    u = torch.tensor([(139.5 - YCBV_K[2]) / YCBV_K[0], (319.5 - YCBV_K[2]) / YCBV_K[0]], dtype=torch.float64)  # box centre - 1/2
    assert torch.allclose(T[:, 0, 3], u) and torch.allclose(T[:, 2, 3], torch.ones(2, dtype=torch.float64))
    # the box centre is where the object origin projects
    uv = project_points(torch.zeros(2, 1, 3, dtype=torch.float64), K, T)[:, 0] + 0.5
    assert torch.allclose(uv, (boxes[:, :2] + boxes[:, 2:]) / 2)


def test_poses_from_boxes_zup_autodepth(objects):
    labels = objects.labels
    B = len(labels)
    pts = objects.points(labels)
    K = make_K(*YCBV_K).expand(B, 3, 3)
    t = torch.tensor([0.05, -0.02, 40.0], dtype=torch.float64).expand(B, 3)     # far: the box is nearly orthographic
    T_true = make_T(torch.tensor(R_ZUP, dtype=torch.float64).expand(B, 3, 3), t)
    T = poses_from_boxes(boxes_from_points(project_points(pts, K, T_true)), K, pts, "zup-autodepth")
    assert torch.allclose(T[:, :3, :3], T_true[:, :3, :3])
    assert ((T[:, 2, 3] / 40.0 - 1).abs() < 0.005).all()
    # the canonical rotation shows object +z upwards in the image (-y of the camera), object -x away from it
    assert torch.allclose(T[0, :3, :3] @ torch.tensor([0.0, 0, 1], dtype=torch.float64), torch.tensor([0.0, -1, 0], dtype=torch.float64))
    assert torch.allclose(T[0, :3, :3] @ torch.tensor([-1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 0, 1], dtype=torch.float64))


@pytest.mark.parametrize("bad", [
    dict(boxes=torch.tensor([[650.0, 10, 700, 60]]), image_size=(480, 640)),      # right of the image
    dict(boxes=torch.tensor([[-90.0, -60, -10, -5]]), image_size=(480, 640)),     # above-left
    dict(boxes=torch.tensor([[10.0, 10, 10, 60]])),                               # empty
    dict(boxes=torch.tensor([[10.0, float("nan"), 30, 60]])),
    dict(boxes=torch.tensor([[10.0, 10, 30, 60]]), mode="zup-autodepth"),         # no points
    dict(boxes=torch.tensor([[10.0, 10, 30, 60]]), mode="random"),
])
def test_poses_from_boxes_bad_input(bad):
    with pytest.raises(InputError):
        poses_from_boxes(K=make_K(*YCBV_K)[None], **bad)


def test_config():
    for cfg in POSE_MODEL_PRESETS.values():
        assert config_from_dict(PoseModelConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    for bad in (dict(backbone="vgg16"), dict(render_size=(0, 320)), dict(render_size=(240.0, 320)),
                dict(lamb=0.0), dict(n_iterations=0), dict(input_std=-1.0), dict(z_scale=float("nan")),
                dict(head_init="xavier"), dict(init_mode="v0")):
        with pytest.raises(ConfigError):
            PoseModelConfig(**bad)


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    m = PoseModel(PoseModelConfig(backbone="small", render_size=(48, 64), input_mean=0.5, input_std=0.25,
                                  xy_scale=6.4, z_scale=0.1, **kw))
    return m


def test_identity_at_start(scene, objects, renderer):
    images, K, T_gt, labels = scene
    T_in = perturb_poses(T_gt, math.radians(15), 0.02, torch.Generator().manual_seed(3))
    m = small_model().eval()
    with torch.no_grad():
        its = m(images, K, T_in, labels, 3, renderer, objects)
    assert len(its) == 3 and all(torch.equal(it.model_outputs, torch.zeros(6, 9)) for it in its)
    assert all((it.T_CO_output - T_in).abs().max() < 1e-12 for it in its)
    # the original's initialisation gives a (small) random update
    m = small_model(head_init="pytorch").eval()
    with torch.no_grad():
        its = m(images, K, T_in, labels, 1, renderer, objects)
    assert (its[0].T_CO_output - T_in).abs().max() > 1e-4


def test_batch_of_several_labels(scene, objects, renderer):
    "Several objects per image, repeated labels: batched forward = one object at a time (float32 tolerance)."
    images, K, T_gt, labels = scene
    m = small_model().eval()
    torch.nn.init.normal_(m.pose_fc.weight, std=0.05)
    ids = torch.tensor([0, 0, 3, 3, 3, 5])
    lab = [labels[0], labels[1], labels[3], labels[3], labels[2], labels[5]]
    T_in = perturb_poses(T_gt[ids], math.radians(10), 0.01, torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = m(images, K[ids], T_in, lab, 2, renderer, objects, image_ids=ids, keep_inputs=True)
        one = [m(images[i:i + 1], K[i:i + 1], T_in[j:j + 1], [lab[j]], 2, renderer, objects)
               for j, i in enumerate(ids.tolist())]
    for k in range(2):
        ref = torch.cat([o[k].T_CO_output for o in one])
        # float32 network; batch-size dependent summation order: differences ~1e-7 of the outputs
        assert (full[k].T_CO_output - ref).abs().max() < 1e-4
    assert (full[1].T_CO_output - T_in).abs().max() > 1e-3
    assert full[0].images_crop.shape == (6, 3, 48, 64) and full[0].renders.shape == (6, 3, 48, 64)
    assert torch.equal(full[1].T_CO_input, full[0].T_CO_output)


def test_gradients_stop_between_iterations(scene, objects, renderer):
    images, K, T_gt, labels = scene
    m = small_model().train()
    torch.nn.init.normal_(m.pose_fc.weight, std=0.05)
    its = m(images, K, T_gt, labels, 2, renderer, objects)
    assert not its[1].T_CO_input.requires_grad and its[1].T_CO_output.requires_grad
    its[0].model_outputs.retain_grad()
    its[1].T_CO_output[:, :3, 3].sum().backward()
    assert its[0].model_outputs.grad is None                 # no path from iteration 2 back into iteration 1
    assert m.pose_fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["nan", "unknown label", "behind", "K", "shape", "labels", "image_ids", "n"])
def test_bad_input(scene, objects, renderer, case):
    images, K, T_gt, labels = scene
    m = small_model().eval()
    kw = dict(images=images[:2], K=K[:2], T_CO_init=T_gt[:2].clone(), labels=labels[:2], n_iterations=1,
              renderer=renderer, objects=objects)
    if case == "nan": kw["T_CO_init"][1, 0, 3] = float("nan")
    if case == "unknown label": kw["labels"] = [labels[0], "obj_000999"]
    if case == "behind": kw["T_CO_init"][0, 2, 3] = -0.5
    if case == "K": kw["K"] = K[:2] * torch.tensor([0.0, 1, 1])[:, None]
    if case == "shape": kw["images"] = images[:2, :, :, :, None]
    if case == "labels": kw["labels"] = labels[:3]
    if case == "image_ids": kw["image_ids"] = torch.tensor([0, 5])
    if case == "n": kw["n_iterations"] = 0
    with pytest.raises(InputError):
        m(**kw)


def test_empty_batch(scene, objects, renderer):
    images, K, T_gt, labels = scene
    its = small_model()(images[:0], K[:0], T_gt[:0], [], 2, renderer, objects)
    assert len(its) == 2 and its[0].T_CO_output.shape == (0, 4, 4) and its[0].model_outputs.shape == (0, 9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_paper_model_on_cuda(scene, objects):
    "The paper's network on the GPU: the same update as on the CPU (TF32 convolutions: 1e-3 of the update), and a training step."
    import copy
    from cosypose_nb.rendering.batch import BatchRenderer
    images, K, T_gt, labels = scene
    T_in = perturb_poses(T_gt, math.radians(10), 0.01, torch.Generator().manual_seed(6))
    torch.manual_seed(0)
    m = PoseModel(POSE_MODEL_PRESETS["paper"]).eval()
    torch.nn.init.normal_(m.pose_fc.weight, std=0.01)
    out = {}
    for dev in ("cpu", "cuda"):
        with BatchRenderer(objects, n_workers=1, backend="tiny", device=dev) as r, torch.no_grad():
            its = copy.deepcopy(m).to(dev)(images, K, T_in, labels, 2, r, objects)
        assert its[-1].T_CO_output.device.type == dev
        out[dev] = its[-1].T_CO_output.cpu()
    step = (out["cpu"] - T_in).abs().max()
    assert step > 1e-4 and (out["cuda"] - out["cpu"]).abs().max() < 1e-3 * step + 1e-6
    g = copy.deepcopy(m).to(get_device("cuda")).train()
    with BatchRenderer(objects, n_workers=1, backend="tiny", device="cuda") as r:
        its = g(images, K, T_in, labels, 1, r, objects)
    its[0].T_CO_output[:, :3, 3].sum().backward()
    assert g.pose_fc.weight.grad.abs().sum() > 0


def test_crop_windows_equal_whole_image_crops(scene, objects):
    """crop_inputs crops a window of each image: the same crops as roi_align on the whole image, to float32 rounding
    of the sample coordinates (shifted by the window's corner: 1e-4 is 1/40 of a grey level)."""
    from cosypose_nb.singleview.pose_model import crop_windows
    images, K, T_gt, labels = scene
    pts = objects.points(labels)
    crops, boxes, _ = crop_inputs(images, K, T_gt, pts, (64, 85), sampling_ratio=2)
    ref = crop_images(images.float() / 255, boxes.float(), (64, 85), sampling_ratio=2)
    assert (crops - ref).abs().max() < 1e-4
    # boxes partly or wholly outside the image, several objects per image
    bx = torch.tensor([[-40.0, -30.0, 100.0, 80.0], [600.0, 400.0, 700.0, 520.0], [700.0, 10.0, 800.0, 90.0]], dtype=torch.float64)
    ids = torch.tensor([0, 0, 3])
    ref = crop_images(images[ids].float() / 255, bx.float(), (16, 20), sampling_ratio=2)
    assert (crop_windows(images, bx, (16, 20), 2, ids) - ref).abs().max() < 1e-4


def test_cpu_preset_flow_heads(scene, objects, renderer):
    "The cpu preset's flow heads give flows (and the rendering's depth) in training only; the flow loss trains them."
    from cosypose_nb.singleview.loss import flow_loss, render_flow
    images, K, T_gt, labels = scene
    m = PoseModel(POSE_MODEL_PRESETS["cpu"]).train()
    T_in = perturb_poses(T_gt, math.radians(15), 0.02, torch.Generator().manual_seed(1))
    it = m(images, K, T_in, labels, 1, renderer, objects)[0]
    assert [tuple(f.shape) for f in it.flows] == [(6, 2, 16, 22), (6, 2, 8, 11)] and it.depth.shape == (6, 1, 64, 85)
    L = flow_loss(it.flows, *render_flow(it.depth, it.K_crop, it.T_CO_input, T_gt))
    L["flow"].backward()
    assert L["epe_zero"] > 0.5 and all(h[0].weight.grad.abs().sum() > 0 for h in m.flow_heads.heads)
    with torch.no_grad():
        it = m.eval()(images, K, T_in, labels, 1, renderer, objects)[0]
    assert it.flows is None and it.depth is None


def test_depth_zooms():
    "depth_zooms: checked, 2 k + 1 more input channels, and zoom_maps shrinks a disc by the factor (a farther object)."
    from cosypose_nb.singleview.pose_model import zoom_maps
    c = PoseModelConfig(backbone="small", render_size=(32, 40), edge_channels=True, head="flatten", depth_zooms=(0.95, 1.05))
    assert c.in_channels == 13 and PoseModelConfig().in_channels == 6
    assert PoseModel(c).eval().net(torch.rand(2, 6, 32, 40)).shape == (2, 9)
    for bad in (dict(depth_zooms=(3.0,)), dict(depth_zooms=(1.05,), edge_channels=False), dict(depth_zooms=[1.05])):
        with pytest.raises(ConfigError): PoseModelConfig(**{**dict(edge_channels=True), **bad})
    yy, xx = torch.meshgrid(torch.arange(40.0) - 19.5, torch.arange(50.0) - 24.5, indexing="ij")
    disc = ((yy ** 2 + xx ** 2) < 12 ** 2).float()[None, None]
    area = zoom_maps(disc, (1.2,)).sum() / disc.sum()
    assert abs(area - 1 / 1.44) < 0.02


def test_correlation_pose_model():
    "The 'correlation' backbone in a pose network: with or without edge channels, no depth zooms, no flow heads."
    c = PoseModelConfig(backbone="correlation", render_size=(64, 85), edge_channels=True, head="flatten", input_mean=0.5, input_std=0.25)
    m = PoseModel(c)
    assert c.in_channels == 8 and m.flow_heads is None
    o = m.net(torch.rand(3, 6, 64, 85))
    assert o.shape == (3, 9) and torch.count_nonzero(o) == 0           # the head starts at the identity update
    o.sum().backward()
    assert PoseModel(PoseModelConfig(backbone="correlation", render_size=(32, 40))).eval().net(torch.rand(2, 6, 32, 40)).shape == (2, 9)
    with pytest.raises(ConfigError, match="depth_zooms"):
        PoseModelConfig(backbone="correlation", edge_channels=True, depth_zooms=(0.95, 1.05))
    with pytest.raises(ConfigError, match="flow_stages"):
        PoseModelConfig(backbone="correlation", flow_stages=(1,))


def test_flatten_bn_head(tmp_path):
    "'flatten_bn': batch norm between the hidden layer and its ReLU, so that the units cannot all go negative."
    from cosypose_nb.singleview.pose_model import save_pose_model
    from cosypose_nb.singleview.inference import load_pose_model
    c = PoseModelConfig(backbone="small", render_size=(32, 40), edge_channels=True, head="flatten_bn", head_hidden=16)
    m = PoseModel(c)
    assert isinstance(m.hidden[2], torch.nn.BatchNorm1d) and m.pose_fc.in_features == 16
    with torch.no_grad():                   # a bias that pushes every unit below zero: 'flatten' dies, 'flatten_bn' not
        m.hidden[1].bias.fill_(-1e3)
        h = m.hidden(m.backbone.feature_map(torch.randn(8, c.in_channels, 32, 40)))
    assert (h > 0).any(0).float().mean() > 0.5
    plain = PoseModel(dataclasses.replace(c, head="flatten"))
    with torch.no_grad():
        plain.hidden[1].bias.fill_(-1e3)
        assert not (plain.hidden(plain.backbone.feature_map(torch.randn(8, c.in_channels, 32, 40))) > 0).any()
    m.eval()
    x = torch.rand(2, 6, 32, 40)
    with torch.no_grad(): m.hidden[1].bias.zero_(); m.pose_fc.weight.normal_(); o = m.net(x)
    back = load_pose_model(save_pose_model(m, tmp_path / "run"))
    with torch.no_grad(): assert torch.allclose(back.eval().net(x), o)       # the running statistics travel too
    with pytest.raises(ConfigError, match="head"):
        PoseModelConfig(head="flatten_ln")
    from cosypose_nb.singleview.config import TrainConfig
    with pytest.raises(ConfigError, match="batch_size"):               # batch norm in training needs 2 samples
        TrainConfig(head="flatten_bn", batch_size=1)
    with pytest.raises(ConfigError, match="head"):
        TrainConfig(head="flat")
    assert TrainConfig(head="flatten_bn", batch_size=2).head == "flatten_bn"


@pytest.mark.parametrize("backbone,head,flows", [("correlation", "flatten_bn", ()), ("small", "flatten", (1, 2)), ("resnet18", "mean", ())])
def test_bfloat16_backbone(backbone, head, flows):
    """precision='bfloat16': the backbone under autocast, the heads and the outputs float32, the weights and their
    gradients float32; the outputs those of the float32 model within bfloat16's precision."""
    from cosypose_nb.singleview import training as tr
    c = PoseModelConfig(backbone=backbone, render_size=(64, 85), edge_channels=backbone != "resnet18", head=head,
                        input_mean=0.5, input_std=0.25, flow_stages=flows)
    torch.manual_seed(0)
    m32 = PoseModel(c).eval()
    with torch.no_grad(): m32.pose_fc.weight.normal_(0, 0.1)
    m16 = PoseModel(dataclasses.replace(c, precision="bfloat16")).eval()
    m16.load_state_dict(m32.state_dict())
    x = torch.rand(4, 6, 64, 85, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(): o32, o16 = m32.net(x), m16.net(x)
    assert o16.dtype == torch.float32 and m16.features(x).dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa (relative steps of 2^-8 = 0.4 %) through a few layers: a few percent of the scale
    assert (o16 - o32).abs().max() <= 0.05 * o32.abs().max() and not torch.equal(o16, o32)
    m16.train()
    o = m16.net(x)
    loss = o.pow(2).sum() + (sum(f.pow(2).mean() for f in m16.flow_heads()) if flows else 0)
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in m16.parameters() if p.requires_grad and p.grad is not None)
    assert m16.pose_fc.weight.grad.abs().sum() > 0
    cfg = tr.train_config("cpu", kind="refiner", precision="bfloat16")
    assert tr.pose_model_config(cfg).precision == "bfloat16" and tr.pose_model_config(tr.train_config("cpu")).precision == "float32"
    for bad in (dict(precision="float16"), dict(precision=16)):
        with pytest.raises(ConfigError, match="precision"): PoseModelConfig(**bad)
        with pytest.raises(ConfigError, match="precision"): tr.train_config("cpu", **bad)


def test_loaded_model_runs_in_the_precision_asked(tmp_path):
    "A model trained in bfloat16 loads for inference in float32 unless asked (bfloat16 is fast only on some hardware)."
    from cosypose_nb.singleview.pose_model import save_pose_model
    from cosypose_nb.singleview.inference import load_pose_model
    m = PoseModel(PoseModelConfig(backbone="correlation", render_size=(32, 40), edge_channels=True, precision="bfloat16"))
    run = save_pose_model(m, tmp_path / "run")
    assert json.loads((run / "config.json").read_text())["precision"] == "bfloat16"
    assert load_pose_model(run).config.precision == "float32"
    back = load_pose_model(run, precision="bfloat16")
    assert back.config.precision == "bfloat16" and back.config.backbone == "correlation"
    with pytest.raises(InputError, match="precision"):
        load_pose_model(run, precision="half")
