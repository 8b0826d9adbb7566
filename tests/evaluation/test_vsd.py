"""Visible Surface Discrepancy (`evaluation.vsd`): equal to the values the BOP toolkit computed on stored inputs
(tests/evaluation/data/vsd.json, from the project's reference runs of bop_toolkit @ cea62d6), to cases made by hand,
and the batched torch version equal to the reference one; the projected bounding spheres and render windows.

Tolerances: VSD counts pixels: its `step` values are ratios of integers and must be equal."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from cosypose_nb.evaluation.metrics import project_pts
from cosypose_nb.evaluation.vsd import *

DATA = Path(__file__).parent / "data"
VSD = json.loads((DATA / "vsd.json").read_text())
T = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))


class _Stand_in:
    "A renderer giving the stored depth maps: first the estimate's, then the ground truth's (as the generator's)."
    def __init__(self, est, gt): self.maps = [np.array(est), np.array(gt)]
    def render_object(self, obj_id, R, t, fx, fy, cx, cy): return {"depth": self.maps.pop(0)}


@pytest.mark.parametrize("c", VSD["cases"], ids=lambda c: c["name"])
def test_vsd_equals_the_toolkit(c):
    args = (np.array(c["depth_test"]), np.array(c["K"]), c["delta"], c["taus"], c["normalized_by_diameter"], c["diameter"])
    e = vsd(np.eye(3), np.zeros(3), np.eye(3), np.zeros(3), *args, _Stand_in(c["depth_est"], c["depth_gt"]), 1, c["cost_type"])
    eb = vsd_batch(T(c["depth_test"])[None], T(c["depth_est"])[None], T(c["depth_gt"])[None], T(c["K"])[None], c["delta"],
                   c["taus"], c["normalized_by_diameter"], [c["diameter"]], c["cost_type"])[0].tolist()
    if c["cost_type"] == "step":              # ratios of pixel counts: equal
        assert e == c["expected"] and eb == c["expected"]
    else:
        assert np.allclose(e, c["expected"], rtol=1e-12) and np.allclose(eb, c["expected"], rtol=1e-12)


def test_vsd_visibility_is_decided_in_float32():
    "The reference case on the visibility boundary: a float64 difference would give 0.4338 instead of 0.3889."
    c = next(c for c in VSD["cases"] if c["name"] == "visibility_boundary_est_shift")
    d = [np.array(c[k]) for k in ("depth_test", "depth_est", "depth_gt")]
    e = vsd_depths(*d, np.array(c["K"]), c["delta"], c["taus"], True, c["diameter"])
    assert e == c["expected"] and e[0] == pytest.approx(0.3888888888888889)
    dt, de = (depth_im_to_dist_im(x, np.array(c["K"])) for x in d[:2])
    in64 = ((de - dt <= c["delta"]) | (dt == 0)) & (de > 0)
    in32 = ((de.astype(np.float32) - dt.astype(np.float32) <= c["delta"]) | (dt == 0)) & (de > 0)
    assert (in64 != in32).any()                # the case does sit on the boundary


def test_vsd_by_hand_threshold_is_inclusive():
    "A distance of exactly tau is a mismatch (the step cost is `>=`)."
    K = np.array([[100.0, 0, 2], [0, 100, 1], [0, 0, 1]])       # pixel (2, 1) lies on the optical axis: distance = depth
    test = np.zeros((3, 5))
    gt = np.zeros((3, 5)); gt[1, 2] = 500.0
    est = gt.copy(); est[1, 2] = 510.0                           # 10 mm = 0.1 of a 100 mm diameter
    assert vsd_depths(test, est, gt, K, 15, [0.1, 0.1000001], True, 100.0) == [1.0, 0.0]
    # test depth present and 20 mm in front of the model: hidden (beyond delta = 15), so nothing is visible -> 1
    test[1, 2] = 480.0
    assert vsd_depths(test, gt, gt, K, 15, [0.1], True, 100.0) == [1.0]
    test[1, 2] = 490.0                                           # 10 mm in front: within delta, visible
    assert vsd_depths(test, gt, gt, K, 15, [0.1], True, 100.0) == [0.0]


def test_vsd_window_equals_whole_image():
    rng = np.random.default_rng(3)
    H, W = 24, 32
    K = np.array([[60.0, 0, 15.5], [0, 61, 11.7], [0, 0, 1]])
    gt = np.zeros((H, W)); gt[5:15, 8:20] = rng.uniform(480, 520, (10, 12))
    est = np.zeros((H, W)); est[7:17, 10:22] = rng.uniform(480, 520, (10, 12))
    test = np.where(rng.random((H, W)) < 0.2, 0.0, rng.uniform(470, 530, (H, W)))
    full = vsd_depths(test, est, gt, K, 15, [0.05, 0.1, 0.3], True, 100.0)
    win = lambda a: a[4:18, 7:23]
    assert vsd_depths(win(test), win(est), win(gt), K, 15, [0.05, 0.1, 0.3], True, 100.0, origin=(7, 4)) == full
    b = vsd_batch(*(T(win(a))[None] for a in (test, est, gt)), T(K)[None], 15, [0.05, 0.1, 0.3], True, [100.0],
                  origin=torch.tensor([[7, 4]]))
    assert b[0].tolist() == full


def test_sphere_projections_by_hand():
    # centres 100 mm apart at 1 m: overlap iff 100 / 1000 < r * (1/1000 + 1/1000), i.e. r > 50
    assert not overlapping_sphere_projections(50.0, [0, 0, 1000], [100, 0, 1000])
    assert overlapping_sphere_projections(50.0001, [0, 0, 1000], [100, 0, 1000])
    assert not overlapping_sphere_projections(50.0, [0, 0, 0], [0, 0, 1000])
    b = overlapping_sphere_projections_batch(torch.tensor([50.0, 50.0001], dtype=torch.float64),
                                             torch.tensor([[0, 0, 1000.0]] * 2), torch.tensor([[100, 0, 1000.0]] * 2))
    assert b.tolist() == [False, True]


def test_projected_boxes_hold_the_projections():
    rng = np.random.default_rng(2)
    pts = T(rng.normal(0, 30, (50, 3)))
    R = T(Rotation.random(6, random_state=5).as_matrix()); t = T(rng.normal(0, 60, (6, 3)) + [0, 0, 600])
    K = T(np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]))[None].expand(6, 3, 3)
    box = projected_boxes(pts, R, t, K, (480, 640), margin=0)
    uv = torch.stack([T(project_pts(pts.numpy(), K[0].numpy(), R[b].numpy(), t[b].numpy())) for b in range(6)])
    inside = (uv[..., 0] >= 0) & (uv[..., 0] < 640) & (uv[..., 1] >= 0) & (uv[..., 1] < 480)
    for b in range(6):
        u = uv[b][inside[b]]
        assert (u[:, 0] >= box[b, 0]).all() and (u[:, 0] < box[b, 2]).all() and (u[:, 1] >= box[b, 1]).all() and (u[:, 1] < box[b, 3]).all()
    t_behind = t.clone(); t_behind[0, 2] = 10.0                   # points behind the camera: the whole image
    assert projected_boxes(pts, R, t_behind, K, (480, 640))[0].tolist() == [0, 0, 640, 480]


def test_vsd_batch_with_unsorted_taus():
    c = next(c for c in VSD["cases"] if c["name"] == "random_est_noise")
    taus = c["taus"][::-1]
    e = vsd_batch(T(c["depth_test"])[None], T(c["depth_est"])[None], T(c["depth_gt"])[None], T(c["K"])[None], c["delta"], taus,
                  True, [c["diameter"]])[0].tolist()
    assert e == c["expected"][::-1]



# The z-buffer ('raster' backend of DepthRenderer) against pybullet's renderings ('tiny', the renderer VSD used before).
# Tolerances, and why:
#  - silhouettes: at most 1e-4 of the silhouette pixels (+ 2) differ: a pixel centre lying on a triangle's edge to
#    within pybullet's float32 rounding may be covered by one renderer and not the other;
#  - interior depths (pixels whose 3 x 3 neighbourhood both renderers cover): |dz| <= 0.05 mm: pybullet's depth is its
#    float32 depth buffer linearised, about 0.006 mm a step at 1 m, a few steps of interpolation error;
#  - any pixel covered by both: at most 1e-3 of them beyond 0.05 mm: where two surfaces meet at a crease or the
#    silhouette, float32 and float64 may pick different triangles in the pixel.
from cosypose_nb.datasets.objects import load_default_objects


@pytest.fixture(scope="module")
def renderers():
    objs = load_default_objects(n_points=1)
    with DepthRenderer(objs, backend="tiny") as bullet, DepthRenderer(objs) as raster:
        yield objs, bullet, raster


def _poses(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.uniform(500, 1000, n)
    t = T(np.c_[rng.uniform(-0.25, 0.25, (n, 2)) * z[:, None], z])
    K = T([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]]).expand(n, 3, 3)
    return T(Rotation.random(n, random_state=seed).as_matrix()), t, K


def _interior(m):
    from scipy.ndimage import binary_erosion
    return binary_erosion(m, np.ones((3, 3), bool))


@pytest.mark.parametrize("name", ["duck", "soccerball", "mug"])       # closed (culled), many vertices, open (not culled)
def test_raster_equals_pybullet_renderings(renderers, name):
    objs, bullet, raster = renderers
    l = objs.by_name(name).label
    R, t, K = _poses(12, 7)
    boxes = projected_boxes(raster.mesh(l).vertices, R, t, K, (480, 640))
    a, b = (r.render_windows([l] * 12, R, t, K, boxes) for r in (bullet, raster))
    sil = sum(int((x > 0).sum()) for x in a)
    assert sum(int(((x > 0) != (y > 0)).sum()) for x, y in zip(a, b)) <= 1e-4 * sil + 2
    for x, y in zip(a, b):
        inner = _interior(x > 0) & _interior(y > 0)
        assert np.abs(x - y)[inner].max() <= 0.05
    both = np.concatenate([np.abs(x - y)[(x > 0) & (y > 0)] for x, y in zip(a, b)])
    assert (both > 0.05).sum() <= 1e-3 * len(both)
    assert raster.n_bullet == 0 and raster.mesh(l).closed == (name != "mug")


def test_raster_vsd_matches_pybullet_vsd(renderers):
    """VSD of estimates 3 degrees and 8 mm off, the test depth being the instance's pybullet rendering. Tolerance 0.005:
    an error is a count of pixels over the union of the visible masks (thousands of pixels); the renderings differ at a
    handful of edge pixels and at pixels within ~0.05 mm of a threshold (delta, tau x diameter), each moving it by 1 / union."""
    objs, bullet, raster = renderers
    labels = [l for l in objs.labels for _ in range(4)]
    n = len(labels)
    Rg, tg, K = _poses(n, 11)
    dR = T(Rotation.from_rotvec(np.random.default_rng(1).normal(size=(n, 3)) * np.deg2rad(3) / 3 ** 0.5).as_matrix())
    Re, te = dR @ Rg, tg + T(np.random.default_rng(2).normal(size=(n, 3)) * 8 / 3 ** 0.5)
    be = torch.cat([projected_boxes(raster.mesh(l).vertices, Re[[i]], te[[i]], K[[i]], (480, 640)) for i, l in enumerate(labels)])
    bg = torch.cat([projected_boxes(raster.mesh(l).vertices, Rg[[i]], tg[[i]], K[[i]], (480, 640)) for i, l in enumerate(labels)])
    U = torch.cat([torch.minimum(be[:, :2], bg[:, :2]), torch.maximum(be[:, 2:], bg[:, 2:])], 1)
    diam = T([objs[l].diameter * 1000 for l in labels])
    test = bullet.render_windows(labels, Rg, tg, K, U)
    errs = []
    for r in (bullet, raster):
        est, gt = r.render_windows(labels, Re, te, K, U), r.render_windows(labels, Rg, tg, K, U)
        errs.append(torch.cat([vsd_batch(T(test[i])[None], T(est[i])[None], T(gt[i])[None], K[[i]], 15, [0.05, 0.2, 0.5], True,
                                         diam[[i]], origin=U[[i], :2]) for i in range(n)]))
    assert (errs[0] - errs[1]).abs().max() <= 0.005
    assert errs[0].std() > 0.05                                     # the cases differ: the check is not on constants


def test_raster_by_hand_tilted_square():
    "A square in the plane z = 500 + 0.5 y (camera frame, mm): depth 500 / (1 - 0.5 (v - cy) / f), to float64 rounding."
    import trimesh
    sq = depth_mesh(trimesh.Trimesh([[-.05, -.05, -.025], [.05, -.05, -.025], [.05, .05, .025], [-.05, .05, .025]],
                                    [[0, 1, 2], [0, 2, 3]], process=False))
    assert not sq.closed
    K = T([[[500.0, 0, 64], [0, 500, 48], [0, 0, 1]]])
    d = rasterize_depth(sq, T(np.eye(3))[None], T([[0.0, 0, 500]]), K, torch.tensor([[0, 0, 128, 96]]))[0]
    v = torch.arange(96.0, dtype=torch.float64)[:, None].expand(96, 128)
    z = 500 / (1 - 0.5 * (v - 48) / 500)
    on = d > 0
    assert (d - z)[on].abs().max() < 1e-9
    # the square spans x in [-50, 50] mm: at row v = 48 (z = 500) columns 64 +- 50 (inclusive edges), nothing else
    assert on[48].nonzero().squeeze(1).tolist() == list(range(14, 115))


def test_culling_changes_nothing_on_closed_meshes(renderers):
    objs, _, raster = renderers
    for l in objs.labels:
        m = raster.mesh(l)
        if not m.closed: continue
        R, t, K = _poses(6, 3)
        boxes = projected_boxes(m.vertices, R, t, K, (480, 640))
        a = rasterize_depth(m, R, t, K, boxes, cull=torch.ones(6, dtype=torch.bool))
        b = rasterize_depth(m, R, t, K, boxes)
        assert all((x - y).abs().max() <= 1e-9 for x, y in zip(a, b))
    c = camera_outside(m, T(np.eye(3))[None].expand(2, 3, 3), T([[0.0, 0, 500], [0, 0, 0]]))
    assert c.tolist() == [True, False]


def test_pose_before_the_near_plane_goes_to_pybullet(renderers):
    objs, bullet, _ = renderers
    with DepthRenderer(objs) as raster:
        l = objs.by_name("block").label
        R, t, K = T(np.eye(3))[None], T([[0.0, 0, 20]]), T([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])[None]
        box = torch.tensor([[0, 0, 640, 480]])                     # the block (30 mm deep) reaches 5 mm from the camera
        a, b = raster.render_windows([l], R, t, K, box)[0], bullet.render_windows([l], R, t, K, box)[0]
        assert raster.n_bullet == 1 and np.array_equal(a, b)


def test_clipping_planes_are_pybullets():
    from cosypose_nb.rendering.bullet import NEAR, FAR
    from cosypose_nb.evaluation.vsd import NEAR_MM, FAR_MM
    assert (NEAR_MM, FAR_MM) == (NEAR * 1000.0, FAR * 1000.0)
