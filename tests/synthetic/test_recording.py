"""The recorder: kill + resume through the command line, a two-process dask LocalCluster run, byte-identical
output for the same seed, a BOP dataset the reader loads back, the scene sampler, and refused bad input."""
from __future__ import annotations
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.datasets.bop import BOPDataset, read_rgb, read_mask, read_depth
from cosypose_nb.geometry.cameras import project_points
from cosypose_nb.datasets.objects import load_default_objects
from cosypose_nb.synthetic import recording as rec

SMALL = ["--scenes", "14", "--views", "2", "--resolution", "120x160", "--seed", "3", "--objects-per-scene", "2,4", "--no-progress"]


def tree(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def complete_scenes(out: Path) -> list[str]:
    d = out / "train"
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


def run_cli(args, **kw):
    code = f"import sys; from cosypose_nb.synthetic.recording import record_cli; sys.exit(record_cli({args!r}))"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted recording on a dask LocalCluster of two worker processes."
    out = tmp_path_factory.mktemp("rec") / "ref"
    t0 = time.time()
    res = rec.record(out, n_scenes=14, n_views=2, resolution=(120, 160), seed=3, objects_per_scene=(2, 4), workers=2,
                     progress=False)
    assert res["recorded"] == 14 and res["images"] == 28, res
    print(f"dask 2 workers: {time.time() - t0:.1f} s")
    return out


def test_kill_and_resume_matches_uninterrupted(tmp_path, reference):
    out = tmp_path / "killed"
    args = [*SMALL, "--out", str(out), "--workers", "1"]
    p = run_cli(args, start_new_session=True)                 # its own process group: the dask workers too
    t0 = time.time()
    try:
        while len(complete_scenes(out)) < 3 and p.poll() is None and time.time() - t0 < 240:
            time.sleep(0.05)
        done_at_kill = len(complete_scenes(out))
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        p.wait()
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
    assert 3 <= done_at_kill < 14, f"the kill should land mid-way (complete scenes: {done_at_kill})"
    time.sleep(0.5)
    p2 = run_cli(args)
    log = p2.communicate(timeout=300)[0]
    assert p2.returncode == 0, log
    assert "already complete" in log
    # complete: every scene and image, nothing left over, every file decodes
    assert complete_scenes(out) == [f"{i:06d}" for i in range(14)]
    assert not list((out / "train").glob(".tmp_*")) and not list(out.glob(".tmp_*"))
    ds = BOPDataset(out, split="train", load_depth=True, load_masks=True)
    assert len(ds) == 28 and len(set(zip(ds.frame_index.scene_id, ds.frame_index.im_id))) == 28
    for r in ds:
        assert r.rgb.shape == (120, 160, 3) and r.depth.shape == (120, 160) and len(r.objects) >= 2
    for sdir in (out / "train").iterdir():
        assert len(list((sdir / "rgb").iterdir())) == 2 and len(list((sdir / "depth").iterdir())) == 2
    # identical to the uninterrupted two-worker dask run, byte for byte (annotations, images, masks, models)
    a, b = tree(out), tree(reference)
    assert a.keys() == b.keys()
    differ = [k for k in a if a[k] != b[k] and not k.endswith("recording.json")]
    assert not differ, differ[:5]
    ja, jb = json.loads(a["recording.json"]), json.loads(b["recording.json"])
    assert {k: v for k, v in ja.items() if k != "objects"} == {k: v for k, v in jb.items() if k != "objects"}


def test_dataset_content(reference):
    "The reader loads back what was written, consistent with the geometry and across the views of a scene."
    objects = load_default_objects()
    ds = BOPDataset(reference, split="train", load_depth=True, load_masks=True)
    info = json.loads((reference / "train" / "000000" / "scene_gt_info.json").read_text())
    assert set(info["0"][0]) >= {"bbox_obj", "bbox_visib", "px_count_all", "px_count_visib", "visib_fract", "px_count_valid"}
    cam = json.loads((reference / "train" / "000000" / "scene_camera.json").read_text())
    assert set(cam["1"]) >= {"cam_K", "cam_R_w2c", "cam_t_w2c", "depth_scale"}
    assert (reference / "models" / "models_info.json").exists() and len(list((reference / "models").glob("obj_*.ply"))) == 10
    n_vis = 0
    for scene_id, idx in ds.scenes().items():
        views = [ds[i] for i in idx]
        assert len(views) == 2
        T_WO = [np.stack([np.linalg.inv(v.T_CW) @ o.T_CO for o in v.objects]) for v in views]
        assert np.abs(T_WO[0] - T_WO[1]).max() < 1e-4, "a static scene: the same world poses in every view"
        assert [o.label for o in views[0].objects] == [o.label for o in views[1].objects]
        assert len({o.label for o in views[0].objects}) == len(views[0].objects), "a random subset, no repeats"
        for v in views:
            for o in v.objects:
                assert not (o.mask_visib & ~o.mask).any()
                if o.mask.sum() == 0: continue
                n_vis += o.visib_fract > 0.5
                uv = project_points(objects.points([o.label]), torch.as_tensor(v.K)[None], torch.as_tensor(o.T_CO)[None])[0]
                u, w = uv[:, 0].round().long(), uv[:, 1].round().long()
                ok = (u >= 0) & (u < 160) & (w >= 0) & (w < 120)
                md = torch.nn.functional.max_pool2d(torch.as_tensor(o.mask)[None, None].float(), 3, 1, 1)[0, 0] > 0
                if ok.sum() > 10: assert md[w[ok], u[ok]].float().mean() > 0.999
                ys, xs = np.nonzero(o.mask)
                x1, y1, x2, y2 = o.bbox_obj
                assert x1 <= xs.min() and y1 <= ys.min() and x2 >= xs.max() + 1 and y2 >= ys.max() + 1
                if xs.min() > 0 and ys.min() > 0 and xs.max() < 159 and ys.max() < 119:   # not truncated: the exact box
                    assert np.allclose(o.bbox_obj, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                if o.visib_fract > 0:
                    assert (v.depth[o.mask_visib] > 0).all()
    assert n_vis > 20
    Ks = {tuple(np.round(r.K.ravel(), 6)) for r in ds}
    assert len(Ks) == len(ds), "random intrinsics: one K per image"


def test_scene_sampler_statistics():
    "Both modes occur; dropped objects rest on the plane; floating ones do not overlap; cameras stay in the room and see the scene."
    objects = load_default_objects()
    settings, db = rec.make_settings("default", n_views=3, resolution=(120, 160), seed=0, objects_per_scene=(3, 6))
    labels = settings["labels"]
    diam = {l: float(db[l].diameter) for l in labels}
    urdfs = {l: str(db[l].urdf_path) for l in labels}
    modes = []
    for i in range(12):
        spec = rec.sample_scene(rec.scene_rng(0, i), labels, diam, {l: False for l in labels}, settings, urdfs)
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
        m = rec.ROOM_SIZE
        for T_WC, K in zip(spec["T_WC"], spec["K"]):
            eye = T_WC[:3, 3]
            assert (np.abs(eye[:2]) < m).all() and 0 < eye[2] < 2 * m
            centre = np.linalg.inv(T_WC) @ np.r_[T_WO[:, :3, 3].mean(0), 1]
            u, v = (K @ centre[:3])[:2] / centre[2]
            assert centre[2] > 0 and 0 <= u < 160 and 0 <= v < 120               # the scene centre is in view
    assert {"drop", "float"} <= set(modes)
    # scene i depends only on (seed, i)
    s1 = rec.sample_scene(rec.scene_rng(0, 5), labels, diam, {l: False for l in labels}, settings, urdfs)
    s2 = rec.sample_scene(rec.scene_rng(0, 5), labels, diam, {l: False for l in labels}, settings, urdfs)
    assert np.array_equal(s1["T_WO"], s2["T_WO"]) and np.array_equal(s1["T_WC"], s2["T_WC"]) and s1["labels"] == s2["labels"]


def test_bad_input_is_refused_and_nothing_is_overwritten(tmp_path, reference):
    before = tree(reference)
    common = dict(n_scenes=14, n_views=2, resolution=(120, 160), seed=3, objects_per_scene=(2, 4), workers=0, progress=False)
    for kw in [dict(seed=4), dict(n_views=1), dict(resolution=(60, 80)), dict(mode="drop"), dict(labels=["obj_000001", "obj_000002"]),
               dict(labels=["obj_999999"]), dict(labels=[]), dict(resolution=(0, 160)), dict(resolution=(120, -1)),
               dict(K=np.zeros((3, 3))), dict(K=np.array([[100.0, 0, 80], [0, 0, 60], [0, 0, 1]])), dict(n_scenes=0)]:
        with pytest.raises(InputError):
            rec.record(reference, **(common | kw))
    empty = tmp_path / "empty_models"; empty.mkdir()
    with pytest.raises(InputError):
        rec.record(tmp_path / "x", objects=empty, **common)
    with pytest.raises(InputError):
        rec.record(tmp_path / "y", objects=tmp_path / "no_such_folder", **common)
    foreign = tmp_path / "foreign"; foreign.mkdir(); (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError):
        rec.record(foreign, **common)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # the same settings: nothing to do, nothing changes
    res = rec.record(reference, **common)
    assert res["recorded"] == 0 and res["skipped"] == 14
    assert tree(reference) == before
    with pytest.raises(InputError):
        rec.record_cli(["--out", str(tmp_path / "z"), "--resolution", "0x10", "--scenes", "1"])
    with pytest.raises(InputError):
        rec.record_cli(["--out", str(tmp_path / "z"), "--K", "0,0,1,1", "--scenes", "1"])


@pytest.mark.parametrize("kw", [dict(seed=-1), dict(seed=2 ** 70), dict(split="models"), dict(split="recording.json"),
                                dict(split="camera.json"), dict(resolution=(4_800_000_000_000, 64)),
                                dict(resolution=(50_000, 50_000)), dict(n_scenes=10 ** 18), dict(scheduler="notanaddress"),
                                dict(workers=10 ** 6)])
def test_settings_checked_before_anything_is_written(tmp_path, kw):
    "Bad settings found late used to leave recording.json behind (and then refuse the corrected command)."
    out = tmp_path / "rec"
    args = dict(n_scenes=1, n_views=1, resolution=(48, 64), seed=0, workers=0, progress=False) | kw
    with pytest.raises(InputError):
        rec.record(out, **args)
    assert not out.exists() or not any(p.name != ".lock" for p in out.iterdir()), sorted(p.name for p in out.iterdir())


def test_malformed_n_scenes_in_recording_json(tmp_path, reference):
    import shutil
    out = tmp_path / "copy"; shutil.copytree(reference, out)
    js = json.loads((out / "recording.json").read_text()); js["n_scenes"] = "x"
    (out / "recording.json").write_text(json.dumps(js))
    with pytest.raises(InputError, match="n_scenes"):
        rec.record(out, n_scenes=14, n_views=2, resolution=(120, 160), seed=3, objects_per_scene=(2, 4), workers=0, progress=False)


def test_mesh_folder_objects(tmp_path):
    "--objects takes a folder of meshes; models/ is written as a BOP models folder of that object set."
    import trimesh
    src = tmp_path / "meshes"; src.mkdir()
    trimesh.creation.box(extents=(0.06, 0.04, 0.03)).export(src / "box.ply")
    trimesh.creation.cylinder(radius=0.03, height=0.08).export(src / "can.ply")
    trimesh.creation.icosphere(radius=0.035).export(src / "ball.ply")
    out = tmp_path / "out"
    assert rec.record_cli(["--objects", str(src), "--out", str(out), "--scenes", "2", "--views", "1", "--resolution", "60x80",
                           "--workers", "0", "--no-progress", "--split", "val"]) == 0
    ds = BOPDataset(out, split="val", load_masks=True)
    assert len(ds) == 2 and ds.models_info is not None and len(ds.models_info) == 3
    assert all(1 <= len(r.objects) <= 3 for r in ds)
