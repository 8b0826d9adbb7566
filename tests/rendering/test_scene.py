"""`rendering.scene`: visible masks and full silhouettes of whole scenes; `render_preview`."""
from __future__ import annotations
import math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from cosypose_nb.core import InputError
from cosypose_nb.geometry.cameras import make_K, project_points, look_at
from cosypose_nb.geometry.transforms import make_T, invert_T
from cosypose_nb.geometry.rotations import random_rotations
from cosypose_nb.rendering.scene import SceneRenderer, render_preview


def test_scene_renderer_visibility(objects):
    "Visible masks are inside full masks, and at each pixel the visible object is the nearest one (per-object depth)."
    gen = torch.Generator().manual_seed(4)
    with SceneRenderer(objects, background="room", backend="tiny") as sr:
        for trial in range(4):
            n = 6
            labels = [objects.labels[i] for i in torch.randperm(len(objects.labels), generator=gen)[:n]]
            T_WO = make_T(random_rotations(n, gen), torch.cat([(torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 0.2,
                                                               torch.full((n, 1), 0.08, dtype=torch.float64)], 1))
            T_WC = look_at(torch.tensor([0.3 * math.cos(trial), 0.3 * math.sin(trial) - 0.6, 0.5], dtype=torch.float64), torch.tensor([0.0, 0.0, 0.05], dtype=torch.float64))
            K = make_K(200.0, 200.0, 79.5, 59.5)
            view = sr.render(labels, T_WO, T_WC, K, (120, 160), masks=True)
            T_CW = invert_T(T_WC).numpy()
            alone = []
            for i in range(n):
                d = sr.scene.render(T_CW, K, (120, 160), rgb=False, depth=True, only=[i], environment=False, far=16.0)["depth"]
                alone.append(np.where(d > 0, d, np.inf))
            alone = np.stack(alone)
            nearest = np.where(np.isfinite(alone.min(0)), alone.argmin(0), -1)
            assert (view.seg == nearest).mean() > 0.995
            for i in range(n):
                assert not (view.mask_visib(i) & ~view.masks[i]).any()
                assert (view.masks[i] == np.isfinite(alone[i])).all()


def test_scene_renderer_bad_input(objects):
    with pytest.raises(InputError): SceneRenderer(objects, background="sky")
    with SceneRenderer(objects, background=None, backend="tiny") as sr:
        with pytest.raises(InputError): sr.render([objects.labels[0]], torch.eye(4)[None], torch.zeros(4, 4), make_K(100.0, 100.0, 40.0, 30.0), (60, 80))
        with pytest.raises(InputError): sr.render(["nope"], torch.eye(4)[None], torch.eye(4), make_K(100.0, 100.0, 40.0, 30.0), (60, 80))


@pytest.mark.parametrize("az,el", [(40, 30), (200, -20), (-100, 70)])
def test_render_preview_geometry(objects, agreement, az, el):
    "The preview's K and T_CO describe its image: projected model points on the mask, the origin at the centre, depth on the object."
    for label in objects.labels:
        p = render_preview(objects, label, size=96, azimuth=az, elevation=el)
        assert p.rgb.shape == (96, 96, 3) and p.rgb.dtype == np.uint8 and p.mask.shape == (96, 96) and p.mask.any()
        K, T = torch.as_tensor(p.K)[None], torch.as_tensor(p.T_CO)[None]
        on, near = agreement(p.mask[None], [label], T, K, objects, 96, 96)
        assert on > 0.93 and near > 0.995, (label, on, near)
        assert torch.allclose(project_points(torch.zeros(1, 1, 3, dtype=torch.float64), K, T)[0, 0], torch.tensor([47.5, 47.5], dtype=torch.float64))
        d = float(np.linalg.norm(p.T_CO[:3, 3]))
        assert ((p.depth > 0) == p.mask).all() and np.abs(p.depth[p.mask] - d).max() < objects[label].diameter / 2 + 1e-3
        assert (p.rgb[~p.mask] == 255).all()                                        # white background
        # the camera is where azimuth and elevation put it (world z up)
        eye = -p.T_CO[:3, :3].T @ p.T_CO[:3, 3]
        a, e = math.radians(az), math.radians(el)
        assert np.allclose(eye / d, [math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)], atol=1e-9)


def test_render_preview_colours_and_errors(objects, tmp_path):
    "A cube red on +x and blue on -x: the face towards the camera shows; unknown labels are refused."
    import trimesh
    from cosypose_nb.datasets.objects import MeshDatabase
    box = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    C = np.where(box.vertices[:, :1] > 0, [[255, 0, 0, 255]], [[0, 0, 255, 255]]).astype(np.uint8)
    box.visual = trimesh.visual.ColorVisuals(box, vertex_colors=C)
    box.export(tmp_path / "box.ply")
    db = MeshDatabase.from_folder(tmp_path, cache_dir=tmp_path / "c", units="m")
    px = [render_preview(db, "obj_000001", size=64, azimuth=az, elevation=10) for az in (0, 180)]
    red, blue = (p.rgb[p.mask].astype(float).mean(0) for p in px)
    assert red[0] > 3 * red[2] and blue[2] > 3 * blue[0], (red, blue)
    with pytest.raises(InputError): render_preview(objects, "obj_999999")
    with pytest.raises(InputError): render_preview(objects, objects.labels[0], distance=-1.0)
