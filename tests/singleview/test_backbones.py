"""Tests of cosypose_nb.singleview.backbones: every backbone's interface, and the EfficientNet-B3 against numbers
computed once with the ORIGINAL CosyPose's vendored EfficientNet (ylabbe/cosypose c90a04f,
`cosypose/models/efficientnet.py`, `EfficientNet.from_name('efficientnet-b3', in_channels=6)`, float64, eval mode)
loaded with the seeded random weights of `random_original_state_dict` below, on two seeded random 6 x 240 x 320
inputs. No foreign code is imported here: the reference is held as numbers."""
import math

import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.singleview.backbones import (BACKBONES, Conv2dStaticSame, convert_efficientnet_state_dict,
                                              efficientnet_b3, efficientnet_original_name, efficientnet_signature,
                                              local_correlation, make_backbone, same_padding)

# sha256 of the sorted "name:[shape]" lines of the original's 572 backbone tensors
ORIGINAL_SIGNATURE = "d900156146c291dba81d93b8093e6e93098b305f7ff23260df4f63e433b7d158"
# the original's outputs on x = torch.rand(2, 6, 240, 320, generator=seed 1, float64)
ORIGINAL_MAP_SHAPE = (2, 1536, 7, 10)
ORIGINAL_POOLED_0 = [64.14823039156117, 15.075908419682213, 1.0392985947942959, 149.2035550658198,
                     112.64758433272353, 216.46068933832035]                      # features[0, :6]
ORIGINAL_POOLED_1 = [71.02637418973336, 325.23829812398014, 10.701562780822583]   # features[1, -3:]
ORIGINAL_COLUMN_9 = [68709.59675809281, 98889.97170190059, 115724.64072033421, 122462.83731850999,
                     115853.87956498007, 109683.83744617582, 89602.58837289941]   # map[0, :, :, 9].sum(0)
# pose_fc(features) with the random pose_fc of the same state dict (used by test_pose_model)
ORIGINAL_POSE_FC = [[93.75932968879641, 130.90001372962186, -109.54250958941422, -52.455269150582474,
                     -20.164653203644605, -296.3915542850533, -190.67817016190662, 40.18001235913861, -355.72509347534833],
                    [147.630452501425, 98.83058935629668, 171.88092637745473, -75.63526151882157, -118.50137319921123,
                     -190.95340512536245, -203.61674092580338, 31.274393110316772, -222.02775444984454]]


def random_original_state_dict(key_shapes: dict, seed: int = 0, gain: float = 1.8, bias: float = 0.03) -> dict:
    "Seeded float64 tensors, filled in sorted name order (the generator of the reference run)."
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in sorted(key_shapes.items()):
        shape = tuple(shape)
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(0); continue
        r = lambda: torch.randn(shape, generator=g, dtype=torch.float64)
        if k.endswith("running_var"): v = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
        elif k.endswith("running_mean") or k.endswith("bias"): v = bias * r()
        elif len(shape) == 1: v = 1 + 0.1 * r()
        else: v = r() * math.sqrt(gain / math.prod(shape[1:]))
        out[k] = v
    return out


def original_checkpoint_state(net) -> dict:
    "The original's full pose-network state dict (574 tensors) with the reference's random weights."
    shapes = {"backbone." + efficientnet_original_name(k): v.shape for k, v in net.state_dict().items()}
    shapes.update({"pose_fc.weight": (9, 1536), "pose_fc.bias": (9,)})
    return random_original_state_dict(shapes)


def reference_input():
    return torch.rand(2, 6, 240, 320, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.fixture(scope="module")
def b3():
    return efficientnet_b3().double().eval()


def test_same_padding_rule():
    # TF: output ceil(n / s); the original fixes the pads computed at n = 300
    for n in range(5, 40):
        for k in (1, 3, 5):
            for s in (1, 2):
                lo, hi = same_padding(n, k, s)
                assert hi - lo in (0, 1)
                assert (n + lo + hi - k) // s + 1 == math.ceil(n / s)
    assert [same_padding(300, k, 2) for k in (3, 5)] == [(0, 1), (1, 2)]


def test_original_key_set(b3):
    sd = b3.state_dict()
    assert len(sd) == 572 and efficientnet_signature(b3) == ORIGINAL_SIGNATURE
    assert len({efficientnet_original_name(k) for k in sd}) == 572
    bn = b3.body.bn1
    assert bn.momentum == 0.01 and bn.eps == 1e-3


def test_reproduces_the_original(b3):
    state = original_checkpoint_state(b3)
    b3.load_state_dict(convert_efficientnet_state_dict({k[9:]: v for k, v in state.items() if k.startswith("backbone.")}, b3))
    with torch.no_grad():
        fmap = b3.feature_map(reference_input())
    assert tuple(fmap.shape) == ORIGINAL_MAP_SHAPE
    pooled = fmap.mean((-2, -1))
    # float64 on both sides; only the summation order differs (threads, BLAS): 1e-9 relative is ample
    rel = lambda a, ref: ((a - torch.tensor(ref, dtype=torch.float64)).abs().max() / max(map(abs, ref))).item()
    assert rel(pooled[0, :6], ORIGINAL_POOLED_0) < 1e-9
    assert rel(pooled[1, -3:], ORIGINAL_POOLED_1) < 1e-9
    assert rel(fmap[0, :, :, 9].sum(0), ORIGINAL_COLUMN_9) < 1e-9
    out = pooled @ state["pose_fc.weight"].T + state["pose_fc.bias"]
    assert rel(out.flatten(), sum(ORIGINAL_POSE_FC, [])) < 1e-9


def test_dynamic_padding_would_differ(b3):
    # timm's own tf_efficientnet_b3 pads the stage-6 stride-2 conv dynamically: 8 rows instead of 7 at 240 x 320
    import timm
    plain = timm.create_model("tf_efficientnet_b3", pretrained=False, in_chans=6, num_classes=0, global_pool="").eval()
    with torch.no_grad():
        assert plain.forward_features(torch.zeros(1, 6, 240, 320)).shape[-2:] == (8, 10)
        assert b3.float().feature_map(torch.zeros(1, 6, 240, 320)).shape[-2:] == (7, 10)
    b3.double()
    replaced = [n for n, m in b3.body.named_modules() if isinstance(m, Conv2dStaticSame)]
    assert replaced == ["conv_stem", "blocks.1.0.conv_dw", "blocks.2.0.conv_dw", "blocks.3.0.conv_dw", "blocks.5.0.conv_dw"]


def test_converter_rejects_mismatches(b3):
    state = {efficientnet_original_name(k): v for k, v in b3.state_dict().items()}
    missing = dict(state); missing.pop("_blocks.3._bn1.weight")
    with pytest.raises(InputError, match="missing"):
        convert_efficientnet_state_dict(missing, b3, "ckpt.pth")
    extra = dict(state, **{"_fc.weight": torch.zeros(1000, 1536)})
    with pytest.raises(InputError, match="unexpected"):
        convert_efficientnet_state_dict(extra, b3)
    wrong = dict(state, **{"_conv_stem.weight": torch.zeros(40, 3, 3, 3)})    # a 3-channel stem
    with pytest.raises(InputError, match="_conv_stem.weight.*shape"):
        convert_efficientnet_state_dict(wrong, b3, "ckpt.pth")
    with pytest.raises(InputError, match="EfficientNet-B3"):
        convert_efficientnet_state_dict(state, make_backbone("small"))


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("in_channels", [6, 3])
def test_backbones(name, in_channels):
    if name == "correlation" and in_channels == 3:      # crop and rendering (6), + their edge maps (8) only
        with pytest.raises(InputError, match="6 channels"):
            make_backbone(name, in_channels)
        in_channels = 8
    net = make_backbone(name, in_channels).eval()
    x = torch.rand(2, in_channels, 64, 96)
    with torch.no_grad():
        f, m = net(x), net.feature_map(x)
    assert f.shape == (2, net.n_features) and m.shape[:2] == (2, net.n_features)
    assert torch.allclose(f, m.mean((-2, -1)))
    assert not torch.allclose(f[0], f[1])                         # depends on the input
    with pytest.raises(InputError):
        net(torch.rand(2, in_channels + 1, 64, 96))


def correlation_loops(a, b, d):
    """Slow reference of local_correlation: one cosine similarity per cell and displacement (dy slower, then dx);
    the float64 twin of the chapter's (32_backbones) reference."""
    B, C, h, w = a.shape
    out = torch.zeros(B, (2 * d + 1) ** 2, h, w, dtype=a.dtype)
    shifts = [(dy, dx) for dy in range(-d, d + 1) for dx in range(-d, d + 1)]
    for k, (dy, dx) in enumerate(shifts):
        for y in range(max(0, -dy), min(h, h - dy)):
            for x in range(max(0, -dx), min(w, w - dx)):
                out[:, k, y, x] = torch.nn.functional.cosine_similarity(a[:, :, y + dy, x + dx], b[:, :, y, x], dim=1)
    return out


@pytest.mark.parametrize("seed,d", [(0, 1), (1, 3), (2, 0)])
def test_local_correlation(seed, d):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, 4, 5, 9, generator=g, dtype=torch.float64), torch.randn(2, 4, 5, 9, generator=g, dtype=torch.float64)
    c = local_correlation(a, b, d)
    assert c.shape == (2, (2 * d + 1) ** 2, 5, 9)
    # float64, the same sums in another order: 1e-12
    torch.testing.assert_close(c, correlation_loops(a, b, d), atol=1e-12, rtol=0)
    assert c.abs().max() <= 1 + 1e-12
    with pytest.raises(InputError):
        local_correlation(a, b[:, :, :4], d)


@pytest.mark.parametrize("shape,d", [((1, 2, 2, 1), 3), ((2, 3, 3, 2), 3), ((1, 2, 1, 4), 2), ((2, 1, 4, 3), 1)])
def test_local_correlation_narrow_maps(shape, d):
    """Maps narrower than the window (w < 2d + 1, w = 1, h = 1), inputs that are not contiguous: the values of the
    reference, and gradients that pass torch's finite-difference check (the band is a strided view of a product)."""
    g = torch.Generator().manual_seed(sum(shape) + d)
    a = torch.randn(*shape, generator=g, dtype=torch.float64).transpose(2, 3).contiguous().transpose(2, 3)
    b = torch.randn(*shape[:3], 2 * shape[3], generator=g, dtype=torch.float64)[..., ::2]     # every other column
    torch.testing.assert_close(local_correlation(a, b, d), correlation_loops(a, b, d), atol=1e-12, rtol=0)
    a.requires_grad_(); bb = b.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: local_correlation(x, y, d), (a, bb))


def test_correlation_finds_the_shift():
    "b[y, x] = a[y + 2, x - 1]: the channel of displacement (dy, dx) = (2, -1) is 1 wherever both cells exist."
    a = torch.randn(1, 8, 10, 12, generator=torch.Generator().manual_seed(3))
    b = torch.roll(a, shifts=(-2, 1), dims=(2, 3))                # b[y, x] = a[y + 2, x - 1]
    c = local_correlation(a, b, 3)
    k = (2 + 3) * 7 + (-1 + 3)
    inside = c[0, :, :-2, 1:]
    assert torch.allclose(inside[k], torch.ones(1), atol=1e-6)
    assert (inside.argmax(0) == k).all()


def test_correlation_backbone_compares():
    "One stem for the crop and the rendering; the edge channels are used; the output depends on how the two differ."
    net = make_backbone("correlation", 8).eval()
    assert net.name == "correlation" and net.body.stem[0].in_channels == 2
    assert make_backbone("correlation", 6).body.stem[0].in_channels == 1
    x = torch.rand(2, 8, 64, 85, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        f = net(x)
        assert not torch.allclose(f, net(torch.cat([x[:, :6], x[:, 6:].flip(0)], 1)))    # the edge maps matter
        swapped = net(torch.cat([x[:, 3:6], x[:, 0:3], x[:, 7:8], x[:, 6:7]], 1))       # crop <-> rendering
        assert not torch.allclose(f, swapped)                                            # the order is seen


def test_backbone_trains():
    net = make_backbone("small")
    x = torch.rand(4, 6, 48, 64)
    net(x).square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("bad", ["resnet", "timm:", "timm:no_such_model", "", None])
def test_unknown_backbone(bad):
    with pytest.raises(InputError):
        make_backbone(bad)
    with pytest.raises(InputError):
        make_backbone("small", in_channels=0)


def test_original_checkpoint_end_to_end(tmp_path, b3):
    "A legacy (torch 1.3 format) checkpoint of the original -> convert-checkpoint -> load_pose_model: the original's outputs."
    from cosypose_nb.singleview.pose_model import convert_cosypose_checkpoint, original_outputs
    from cosypose_nb.singleview.inference import load_pose_model
    state = original_checkpoint_state(b3)
    ckpt = tmp_path / "tless-coarse" / "checkpoint.pth.tar"
    ckpt.parent.mkdir()
    torch.save({"state_dict": {k: v.float() for k, v in state.items()}, "epoch": 700}, ckpt,
               _use_new_zipfile_serialization=False)
    (ckpt.parent / "config.yaml").write_text("!!python/object:argparse.Namespace\ninit_method: z-up+auto-depth\nn_pose_dims: 9\n")
    from cosypose_nb.cli import main
    assert main(["convert-checkpoint", str(ckpt), str(tmp_path / "converted")]) == 0
    out = tmp_path / "converted"
    assert main(["convert-checkpoint", str(tmp_path / "nothing.pth.tar"), str(tmp_path / "x")]) == 2
    torch.save({"state_dict": {"backbone._conv_stem.weight": torch.zeros(40, 6, 3, 3)}}, tmp_path / "partial.pth")
    with pytest.raises(InputError, match="pose_fc"):
        convert_cosypose_checkpoint(tmp_path / "partial.pth", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()   # nothing half-written
    model = load_pose_model(out)
    assert model.config.init_mode == "zup-autodepth" and model.config.backbone == "efficientnet-b3"
    direct = load_pose_model(ckpt)                           # the original file, converted on the fly
    assert direct.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), model.state_dict().values()))
    with torch.no_grad():
        raw = original_outputs(model.net(reference_input().float()), model.config).double()
    # float32 weights and arithmetic: their rounding (6e-8) grows through the 26 blocks of this random network to
    # about 3e-4 of the largest output (measured); a wrong name mapping or head conversion is off by order 1
    ref = torch.tensor(ORIGINAL_POSE_FC, dtype=torch.float64)
    assert ((raw - ref).abs().max() / ref.abs().max()).item() < 3e-3
