"""`rendering.scene`: visible masks and full silhouettes of whole scenes; BOP's annotations of a view; `render_preview`."""
from __future__ import annotations
import json
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
from cosypose_nb.rendering.scene import SceneRenderer, render_preview, bop_gt_info
from cosypose_nb.geometry.rotations import pose_from_pybullet


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


def test_bop_gt_info_for_objects_cut_hidden_and_outside(tmp_path, objects):
    """scene_gt_info.json as the BOP toolkit computes it: px_count_all and bbox_obj over the whole silhouette on a
    canvas three times the image (checked against a render of that canvas), w = xmax - xmin, [-1]*4 when not visible."""
    from cosypose_nb.datasets.bop import BOPSceneWriter, read_scene_gt_info
    db = objects
    H, W = 96, 128
    K = np.array([[120.0, 0, 63.5], [0, 120, 47.5], [0, 0, 1]])
    rng = np.random.default_rng(0)
    placed = list(db.labels)
    checked = {"inside": 0, "cut": 0, "outside": 0, "hidden": 0}
    with SceneRenderer({l: db[l].urdf_path for l in placed}, background=None, backend="tiny") as sr:
        for trial in range(6):
            T = np.tile(np.eye(4), (len(placed), 1, 1))
            q = rng.normal(size=(len(placed), 4))
            T[:, :3, :3] = [pose_from_pybullet((0, 0, 0), qi)[:3, :3] for qi in q]
            z = rng.uniform(0.35, 1.2, len(placed))
            T[:, :3, 3] = np.c_[rng.uniform(-1.0, 1.0, len(placed)) * z, rng.uniform(-0.8, 0.8, len(placed)) * z, z]
            view = sr.render(placed, T, np.eye(4), K, (H, W), masks=True)
            w = BOPSceneWriter(tmp_path / f"s{trial}", rgb_ext=".png", append=False)
            objs = [{"label": l, "T_CO": T[i], "mask": view.masks[i], "mask_visib": view.seg == i} for i, l in enumerate(placed)]
            w.add_image(view.rgb, K, objs, im_id=0, depth=view.depth)
            w.gt_info[0] = [bop_gt_info(sr.scene, i, np.eye(4), K, view.masks[i], view.seg == i, view.depth, far=16.0) for i in range(len(placed))]
            w.flush()
            raw = json.loads((tmp_path / f"s{trial}" / "scene_gt_info.json").read_text())["0"]
            for i, e in enumerate(raw):
                big = sr.scene.render(np.eye(4), K + [[0, 0, W], [0, 0, H], [0, 0, 0]], (3 * H, 3 * W), rgb=False, only=[i],
                                      environment=False, far=16.0)["seg"] == i
                assert e["px_count_all"] == big.sum(), (trial, i)
                vis = (view.seg == i).sum()
                assert e["px_count_visib"] == vis and e["px_count_valid"] == (view.masks[i] & (view.depth > 0)).sum()
                assert e["visib_fract"] == (vis / big.sum() if big.sum() else 0.0)
                if vis == 0:
                    assert e["bbox_obj"] == [-1, -1, -1, -1] and e["bbox_visib"] == [-1, -1, -1, -1]
                    checked["outside" if not view.masks[i].any() and big.any() else "hidden"] += 1
                    continue
                ys, xs = np.nonzero(big)
                assert e["bbox_obj"] == [xs.min() - W, ys.min() - H, xs.max() - xs.min(), ys.max() - ys.min()]
                ys, xs = np.nonzero(view.seg == i)
                assert e["bbox_visib"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
                cut = big.sum() > view.masks[i].sum()
                checked["cut" if cut else "inside"] += 1
                if cut: assert e["visib_fract"] < vis / view.masks[i].sum()
            back = read_scene_gt_info(tmp_path / f"s{trial}")[0]                      # the reader: x2 = x + w, the last column
            for e, b in zip(raw, back):
                if e["bbox_obj"][2] >= 0: assert np.array_equal(b["bbox_obj"], [e["bbox_obj"][0], e["bbox_obj"][1], e["bbox_obj"][0] + e["bbox_obj"][2], e["bbox_obj"][1] + e["bbox_obj"][3]])
    assert all(n > 0 for n in checked.values()), checked
