"""Fixtures of the rendering tests: the default objects, an in-process scene, random poses and intrinsics, and the
mask-vs-projected-points agreement."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cosypose_nb.datasets.objects import load_default_objects
from cosypose_nb.geometry.cameras import make_K, project_points
from cosypose_nb.geometry.rotations import random_rotations
from cosypose_nb.geometry.transforms import make_T
from cosypose_nb.rendering.bullet import BulletScene


@pytest.fixture(scope="session")
def objects():
    return load_default_objects()


@pytest.fixture(scope="module")
def scene(objects):
    s = BulletScene(objects)
    yield s
    s.close()


def _random_poses(n, gen, dist=(0.25, 0.7), lateral=0.08):
    "Random T_CO (n, 4, 4) in front of the camera."
    t = torch.stack([(torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2 * lateral,
                     (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2 * lateral,
                     dist[0] + torch.rand(n, generator=gen, dtype=torch.float64) * (dist[1] - dist[0])], -1)
    return make_T(random_rotations(n, gen), t)


def _random_K(n, gen, H, W):
    "Random intrinsics (n, 3, 3) for images H x W."
    u = lambda a, b: a + torch.rand(n, generator=gen, dtype=torch.float64) * (b - a)
    return make_K(u(0.6, 1.4) * W, u(0.6, 1.4) * W, u(0.4, 0.6) * W, u(0.4, 0.6) * H)


def _agreement(masks, labels, T_CO, K, objects, H, W):
    "(fraction of projected model points on their mask, fraction within 1 px)."
    uv = project_points(objects.points(labels), K, T_CO).round().long()
    on = near = tot = 0
    for i in range(len(labels)):
        m = torch.as_tensor(np.asarray(masks[i]))
        md = torch.nn.functional.max_pool2d(m[None, None].float(), 3, 1, 1)[0, 0] > 0
        u, v = uv[i, :, 0], uv[i, :, 1]
        ok = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        on += m[v[ok], u[ok]].sum().item(); near += md[v[ok], u[ok]].sum().item(); tot += ok.sum().item()
    return on / tot, near / tot


@pytest.fixture
def random_poses(): return _random_poses


@pytest.fixture
def random_K(): return _random_K


@pytest.fixture
def agreement(): return _agreement
