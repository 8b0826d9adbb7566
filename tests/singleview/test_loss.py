"""Tests of cosypose_nb.singleview.loss: a case computed by hand, zero at the true update and at every symmetric copy,
the terms' independence, and equality with the original's formulation (written from its raw outputs, the input pose and
the crop's intrinsics, as the spec restates `loss_refiner_CO_disentangled`)."""
import math

import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.geometry.cameras import make_K
from cosypose_nb.geometry.rotations import random_rotations, perturb_poses, rot6d_to_matrix
from cosypose_nb.geometry.symmetries import make_symmetries, pad_symmetries
from cosypose_nb.geometry.transforms import make_T, transform_points
from cosypose_nb.singleview.loss import disentangled_poses, pose_loss, symmetric_l1
from cosypose_nb.singleview.pose_model import apply_update, decode_outputs, update_outputs

f64 = dict(dtype=torch.float64)


def test_by_hand():
    "Three points, a 2-element symmetry group (half-turn about z); every number worked out on paper."
    p = torch.tensor([[[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.3]]], **f64)
    half = make_T(torch.tensor([[-1.0, 0, 0], [0, -1, 0], [0, 0, 1]], **f64), torch.zeros(3, **f64))
    S = torch.stack([torch.eye(4, **f64), half])[None]
    T_gt = make_T(torch.eye(3, **f64), torch.tensor([0.0, 0.0, 1.0], **f64))[None]
    # prediction: the half-turn (a symmetric copy), 2 cm off in x, at 1.2 m depth
    T_pred = T_gt @ half
    T_pred[0, 0, 3] += 0.02
    T_pred[0, 2, 3] = 1.2
    L = pose_loss(T_pred, T_gt, p, S)
    # rot: rotation = the half-turn, translation true -> 0 with the symmetry, (0.2 + 0.4) / 9 without
    # xy: true rotation and depth, direction x/z = 0.02/1.2 -> x = 0.02/1.2 m on every point: 0.02/1.2 / 3
    # depth: true rotation and x, y; z = 1.2: 0.2 / 3
    assert L["rot"].item() == 0.0
    assert math.isclose(L["xy"].item(), 0.02 / 1.2 / 3, rel_tol=1e-12)
    assert math.isclose(L["depth"].item(), 0.2 / 3, rel_tol=1e-12)
    assert math.isclose(L["total"].item(), 0.02 / 1.2 / 3 + 0.2 / 3, rel_tol=1e-12)
    no_sym = pose_loss(T_pred, T_gt, p, S[:, :1])
    assert math.isclose(no_sym["rot"].item(), (0.2 + 0.4) / 9, rel_tol=1e-12)
    # the min is per term: here the xy and depth terms prefer the identity, the rotation term the half-turn
    assert math.isclose(no_sym["xy"].item(), L["xy"].item(), rel_tol=1e-12)


def random_batch(B, g, objects=None):
    T_gt = make_T(random_rotations(B, g), torch.cat([0.2 * torch.rand(B, 2, generator=g, **f64) - 0.1,
                                                      0.5 + torch.rand(B, 1, generator=g, **f64)], -1))
    T_in = perturb_poses(T_gt, math.radians(15), (0.01, 0.01, 0.05), g)
    K_crop = make_K(300 + 900 * torch.rand(B, generator=g, **f64), 300 + 900 * torch.rand(B, generator=g, **f64), 160.0, 120.0)
    pts = 0.1 * torch.randn(B, 50, 3, generator=g, **f64)
    S = pad_symmetries([make_symmetries(), make_symmetries(continuous=[{"axis": [0, 0, 1.0], "offset": [0, 0, 0]}], n_continuous=16),
                        make_symmetries(discrete=torch.stack([make_T(torch.diag(torch.tensor([-1.0, 1, -1], **f64)), torch.zeros(3, **f64))]))] * (B // 3 + 1))[:B]
    return T_gt, T_in, K_crop, pts, S


def test_true_update_and_symmetric_copies_give_zero():
    g = torch.Generator().manual_seed(0)
    T_gt, T_in, K_crop, pts, S = random_batch(30, g)
    T_true = apply_update(T_in, K_crop, *decode_outputs(update_outputs(T_in, T_gt, K_crop, 12.8, 0.1), 12.8, 0.1))
    for T in (T_true, T_gt @ S[torch.arange(30), torch.randint(S.shape[1], (30,), generator=g)]):
        L = pose_loss(T, T_gt, pts, S, reduction="none")
        assert all(v.shape == (30,) and v.abs().max() < 1e-12 for v in L.values())


def original_formulation(T_possible, T_in, raw, K_crop, pts):
    "The original's loss restated from the spec (section 3): from raw outputs (B, 9), T_in and K_crop; summed terms (B,)."
    dR = rot6d_to_matrix(raw[:, :6]); v = raw[:, 6:9]
    T_gt = T_possible[:, 0]
    fxfy = torch.stack([K_crop[:, 0, 0], K_crop[:, 1, 1]], -1)
    z_in, z_gt = T_in[:, 2, 3:], T_gt[:, 2, 3:]
    T_orn = T_gt.clone(); T_orn[:, :3, :3] = dR @ T_in[:, :3, :3]
    T_xy = T_gt.clone(); T_xy[:, :2, 3] = (v[:, :2] / fxfy + T_in[:, :2, 3] / z_in) * z_gt
    T_z = T_gt.clone(); T_z[:, 2, 3] = v[:, 2] * z_in[:, 0]
    def sym(T):
        d = (transform_points(T, pts)[:, None] - transform_points(T_possible, pts[:, None])).abs().flatten(-2).mean(-1)
        return d.min(1).values
    return sym(T_orn) + sym(T_xy) + sym(T_z)


def test_equals_the_original_formulation():
    g = torch.Generator().manual_seed(1)
    T_gt, T_in, K_crop, pts, S = random_batch(60, g)
    o = 0.3 * torch.randn(60, 9, generator=g, **f64)
    T_pred = apply_update(T_in, K_crop, *decode_outputs(o))
    raw = o + torch.tensor([1.0, 0, 0, 0, 1, 0, 0, 0, 1], **f64)            # the original's outputs (scales 1)
    ref = original_formulation(T_gt[:, None] @ S, T_in, raw, K_crop, pts)
    assert torch.allclose(pose_loss(T_pred, T_gt, pts, S, reduction="none")["total"], ref, rtol=1e-10, atol=1e-14)


def test_gradients_reach_only_their_part():
    g = torch.Generator().manual_seed(2)
    T_gt, T_in, K_crop, pts, S = random_batch(12, g)
    o = (0.2 * torch.randn(12, 9, generator=g, **f64)).requires_grad_()
    T_pred = apply_update(T_in, K_crop, *decode_outputs(o))
    L = pose_loss(T_pred, T_gt, pts, S)
    parts = {"rot": slice(0, 6), "xy": slice(6, 8), "depth": slice(8, 9)}
    for term, own in parts.items():
        (grad,) = torch.autograd.grad(L[term], o, retain_graph=True)
        mask = torch.zeros(9, dtype=torch.bool); mask[own] = True
        assert grad[:, ~mask].abs().max() < 1e-12 and grad[:, mask].abs().max() > 1e-6, term


def test_disentangled_poses():
    g = torch.Generator().manual_seed(3)
    T_gt, T_pred = random_batch(5, g)[:2]
    T_rot, T_xy, T_z = disentangled_poses(T_pred, T_gt)
    assert torch.equal(T_rot[:, :3, :3], T_pred[:, :3, :3]) and torch.equal(T_rot[:, :3, 3], T_gt[:, :3, 3])
    assert torch.allclose(T_xy[:, :2, 3] / T_xy[:, 2:, 3][:, :1], T_pred[:, :2, 3] / T_pred[:, 2:, 3][:, :1])
    assert torch.equal(T_xy[:, 2, 3], T_gt[:, 2, 3]) and torch.equal(T_z[:, 2, 3], T_pred[:, 2, 3])
    assert torch.equal(T_z[:, :2, 3], T_gt[:, :2, 3])


def test_symmetric_l1_float32_and_padding():
    g = torch.Generator().manual_seed(4)
    T_gt, T_pred, _, pts, S = random_batch(9, g)
    d64 = symmetric_l1(T_pred, T_gt, pts, S)
    d32 = symmetric_l1(T_pred.float(), T_gt.float(), pts.float(), S.float())
    assert torch.allclose(d32.double(), d64, rtol=1e-5)
    padded = torch.cat([S, torch.eye(4, **f64).expand(9, 5, 4, 4)], 1)      # identity padding changes no minimum
    assert torch.equal(symmetric_l1(T_pred, T_gt, pts, padded), d64)


@pytest.mark.parametrize("bad", ["points", "symmetries", "T_gt", "reduction"])
def test_bad_input(bad):
    g = torch.Generator().manual_seed(5)
    T_gt, T_pred, _, pts, S = random_batch(6, g)
    kw = dict(T_pred=T_pred, T_gt=T_gt, points=pts, symmetries=S)
    kw |= {"points": dict(points=pts[:3]), "symmetries": dict(symmetries=S[:, :, :3]), "T_gt": dict(T_gt=T_gt[:, :3]),
           "reduction": dict(reduction="sum")}[bad]
    with pytest.raises(InputError):
        pose_loss(**kw)


def test_flow_of_a_depth_change_and_flow_loss():
    "render_flow: moving a plane at depth z to depth z' along the optical axis scales pixels about the principal point by z/z'; flow_loss is zero on its own target."
    from cosypose_nb.singleview.loss import flow_loss, pool_flow, render_flow
    h, w = 24, 32
    K = make_K(40.0, 40.0, 15.5, 11.5)[None].to(torch.float32)
    depth = torch.full((1, 1, h, w), 2.0); depth[..., :4, :] = 0                     # a fronto-parallel plane, one band empty
    T_in = torch.eye(4)[None]; T_to = torch.eye(4)[None].clone(); T_to[0, 2, 3] = -0.4   # the plane moves to z = 1.6
    flow, valid = render_flow(depth, K, T_in, T_to)
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    expected = torch.stack([(u - 15.5), (v - 11.5)]) * (2.0 / 1.6 - 1)
    assert valid.sum() == (h - 4) * w and (flow[0] - expected)[:, 4:].abs().max() < 1e-4 and flow[0, :, :4].abs().max() == 0
    target, _ = pool_flow(flow, valid, (6, 8))
    L = flow_loss([target], flow, valid)
    assert L["flow"] < 1e-5 and L["epe"] < 1e-5 and L["epe_zero"] > 1
    with pytest.raises(InputError): flow_loss([], flow, valid)
