"""Synthetic scenes: both modes occur, dropped objects rest on the plane, floating ones do not crowd, cameras stay in
the room and see the scene, a scene depends on (seed, index) alone; the scene settings check themselves."""
from __future__ import annotations

import numpy as np
import pytest

from cosypose_nb.core import InputError
from cosypose_nb.datasets.objects import load_default_objects
from cosypose_nb.synthetic.config import SceneConfig
from cosypose_nb.synthetic.scenes import sample_scene, scene_rng, ROOM_SIZE


def test_scene_sampler_statistics():
    "Both modes occur; dropped objects rest on the plane; floating ones do not overlap; cameras stay in the room and see the scene."
    db = load_default_objects()
    config = SceneConfig(n_views=3, resolution=(120, 160), objects_per_scene=(3, 6))
    labels = list(db.labels)
    diam = {l: float(db[l].diameter) for l in labels}
    urdfs = {l: str(db[l].urdf_path) for l in labels}
    modes = []
    for i in range(12):
        spec = sample_scene(scene_rng(0, i), labels, diam, {l: False for l in labels}, config, urdfs)
        modes.append(spec["mode"])
        assert 3 <= len(spec["labels"]) <= 6 and len(set(spec["labels"])) == len(spec["labels"])
        T_WO = spec["T_WO"]
        for l, T in zip(spec["labels"], T_WO):
            V = np.asarray(db[l].mesh.vertices) @ T[:3, :3].T + T[:3, 3]
            if spec["mode"] == "drop":
                assert -0.01 < V[:, 2].min() < 0.01, (i, l, V[:, 2].min())          # resting on z = 0
        if spec["mode"] == "float":
            c = T_WO[:, :3, 3]
            d = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(len(c)) * 9
            r = np.array([diam[l] / 2 for l in spec["labels"]])
            assert (d >= 0.69 * (r[:, None] + r[None])).all()
        m = ROOM_SIZE
        for T_WC, K in zip(spec["T_WC"], spec["K"]):
            eye = T_WC[:3, 3]
            assert (np.abs(eye[:2]) < m).all() and 0 < eye[2] < 2 * m
            centre = np.linalg.inv(T_WC) @ np.r_[T_WO[:, :3, 3].mean(0), 1]
            u, v = (K @ centre[:3])[:2] / centre[2]
            assert centre[2] > 0 and 0 <= u < 160 and 0 <= v < 120               # the scene centre is in view
    assert {"drop", "float"} <= set(modes)
    # scene i depends only on (seed, i)
    s1 = sample_scene(scene_rng(0, 5), labels, diam, {l: False for l in labels}, config, urdfs)
    s2 = sample_scene(scene_rng(0, 5), labels, diam, {l: False for l in labels}, config, urdfs)
    assert np.array_equal(s1["T_WO"], s2["T_WO"]) and np.array_equal(s1["T_WC"], s2["T_WC"]) and s1["labels"] == s2["labels"]


@pytest.mark.parametrize("bad", [dict(n_views=0), dict(mode="sky"), dict(objects_per_scene=(4, 2)), dict(objects_per_scene=(0, 2)),
                                 dict(objects_per_scene=(3,)), dict(objects_per_scene="x"), dict(resolution=(0, 10)),
                                 dict(K=np.zeros((3, 3))), dict(K=np.eye(4))])
def test_scene_config_refuses(bad):
    with pytest.raises(InputError):
        SceneConfig(**bad)
