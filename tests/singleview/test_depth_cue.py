"""The learning-free probe of `benchmarks/bench_depth_cue.py` (chapter 35): its scale-and-shift search finds a known
depth factor and image shift between two renderings of one object at the same rotation, and its run on recorded
images gives the true outline's depth ratio and changes only the translation."""
import importlib.util
from pathlib import Path

import pytest
import torch

from cosypose_nb.geometry.cameras import make_K
from cosypose_nb.geometry.rotations import random_rotations
from cosypose_nb.geometry.transforms import make_T

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def search():
    return bench().scale_shift_search


def bench():
    spec = importlib.util.spec_from_file_location("bench_depth_cue", ROOT / "benchmarks" / "bench_depth_cue.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("depth_factor, shift_px", [(1.06, (0, 0)), (0.94, (4, -3)), (1.0, (-5, 2))])
def test_search_finds_depth_and_shift(search, objects, renderer, depth_factor, shift_px):
    "The rendering at z_gt * depth_factor, moved by -shift_px, against the one at T_gt: v_z = 1 / depth_factor, v_xy = shift_px."
    h, w, f, z = 64, 85, 110.0, 0.5
    labels = objects.labels[:4]
    B = len(labels)
    K = make_K(f, f, w / 2, h / 2).expand(B, 3, 3).float()          # the object's origin on the axis: the crop's centre
    R = random_rotations(B, torch.Generator().manual_seed(3)).float()
    sx, sy = shift_px
    T_gt = make_T(R, torch.tensor([sx * z / f, sy * z / f, z]).expand(B, 3))
    T_in = make_T(R, torch.tensor([0.0, 0.0, z * depth_factor]).expand(B, 3))
    crops = renderer.render(labels, T_gt, K, (h, w)).rgb
    renders = renderer.render(labels, T_in, K, (h, w)).rgb
    zooms = torch.linspace(0.85, 1.15, 31).tolist()        # the benchmark's grid: steps of 0.01
    v_z, v_xy = search(crops, renders, zooms, 8)
    step = zooms[1] - zooms[0]
    # within three grid steps (3 %, half the 6 % changes tested, so a search that ignores the size fails): the edge maps
    # are 64 x 85 px, and an object off the axis is seen from another direction, its outline changed besides its size
    assert (v_z - 1 / depth_factor).abs().max() <= 3.01 * step, v_z
    assert (v_xy - torch.tensor([float(sx), float(sy)])).abs().max() <= 1.0, v_xy


def test_probe_on_recorded_images(recorded_dataset, objects, renderer):
    "With the rotation exact, the true outline's area gives the depth ratio, and the search changes only the translation."
    m = bench()
    samples = m.load_heldout(recorded_dataset, 0.3, 40)
    zooms = torch.linspace(0.85, 1.15, 31).tolist()
    T_gt, T_in, T_out, v_area = m.probe(samples, objects, renderer, 0.0, (64, 85), zooms, 12, seed=0)
    assert len(samples) >= 5 and torch.allclose(T_in[:, :3, :3], T_gt[:, :3, :3])
    assert torch.equal(T_out[:, :3, :3], T_in[:, :3, :3])
    z_in_err = (T_in[:, 2, 3] / T_gt[:, 2, 3] - 1).abs().median()
    z_area_err = (v_area * T_in[:, 2, 3] / T_gt[:, 2, 3] - 1).abs().median()
    # areas of silhouettes of a few hundred px: their ratio's square root is within about 1 % of the depth ratio,
    # against the input's few per cent (5 cm of depth noise; 5.6 % here)
    assert z_area_err < 0.4 * z_in_err, (z_area_err, z_in_err)
