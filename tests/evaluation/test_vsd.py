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

