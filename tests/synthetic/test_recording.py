"""The recorder: kill + resume and Ctrl-C + resume through the command line, a two-process dask LocalCluster run,
byte-identical output for the same seed, a BOP dataset the reader loads back, the output-folder rule, the command's
options, and refused bad input."""
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
from cosypose_nb.synthetic.config import RecordingConfig
from cosypose_nb.synthetic.record_command import record_cli, record_parser

SMALL = ["--scenes", "14", "--views", "2", "--resolution", "120x160", "--seed", "3", "--objects-per-scene", "2,4", "--no-progress"]


def tree(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".lock"}


def complete_scenes(out: Path) -> list[str]:
    d = out / "train"
    return sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")) if d.is_dir() else []


def run_cli(args, **kw):
    code = f"import sys; from cosypose_nb.synthetic.record_command import record_cli; sys.exit(record_cli({args!r}))"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def signal_group_after(p, out: Path, n: int, sig) -> int:
    "Send `sig` to the process group of `p` once `out` holds `n` complete scenes; returns how many it held then."
    t0 = time.time()
    while len(complete_scenes(out)) < n and p.poll() is None and time.time() - t0 < 240:
        time.sleep(0.05)
    done = len(complete_scenes(out))
    os.killpg(p.pid, sig)
    return done


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
    try:
        done_at_kill = signal_group_after(p, out, 3, signal.SIGKILL)
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


def test_ctrl_c_with_dask_workers_prints_one_line_and_resumes(tmp_path, reference):
    "Ctrl-C (SIGINT to the whole process group, as a terminal sends it) during a two-worker run: one line, exit 130; the rerun completes it byte for byte."
    out = tmp_path / "interrupted"
    # 40 scenes, not the reference's 14: once the interrupt is sent (at 2 complete scenes) the workers have far more work
    # left than a loaded machine takes to deliver it, so it lands mid-way at any load; scene i depends on (seed, i)
    # alone, so scenes 0-13 are the reference's
    args = [*SMALL, "--out", str(out), "--workers", "2"]
    args[args.index("--scenes") + 1] = "40"
    # as launched from a terminal: Ctrl-C raises KeyboardInterrupt (a shell's background job, e.g. `make test &`,
    # starts with SIGINT ignored and its children inherit that; the test must not depend on how it was launched)
    code = (f"import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"from cosypose_nb.cli import main; sys.exit(main(['record', *{args!r}]))")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        done_at_sigint = signal_group_after(p, out, 2, signal.SIGINT)
        log = p.communicate(timeout=120)[0]
    finally:
        try: os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError: pass
        p.wait()
    lines = [l for l in log.splitlines() if l.strip() and not l.startswith("pybullet build time")]   # pybullet's import banner
    assert p.returncode == 130 and lines == ["cosypose-nb record: interrupted"], (p.returncode, log)
    assert 2 <= done_at_sigint < 40, f"the interrupt should land mid-way (complete scenes: {done_at_sigint})"
    assert len(complete_scenes(out)) < 40, "the recording should stop before its end"
    p2 = run_cli(args)
    log2 = p2.communicate(timeout=600)[0]
    assert p2.returncode == 0 and "already complete" in log2, log2
    assert len(complete_scenes(out)) == 40
    a, b = tree(out / "train"), tree(reference / "train")
    assert b and [k for k in b if a.get(k) != b[k]] == [], [k for k in b if a.get(k) != b[k]][:5]


def test_dataset_content(reference):
    "The reader loads back what was written, consistent with the geometry and across the views of a scene."
    objects = load_default_objects()
    ds = BOPDataset(reference, split="train", load_depth=True, load_masks=True)
    info = json.loads((reference / "train" / "000000" / "scene_gt_info.json").read_text())
    assert set(info["0"][0]) >= {"bbox_obj", "bbox_visib", "px_count_all", "px_count_visib", "visib_fract", "px_count_valid"}
    cam = json.loads((reference / "train" / "000000" / "scene_camera.json").read_text())
    assert set(cam["1"]) >= {"cam_K", "cam_R_w2c", "cam_t_w2c", "depth_scale"}
    assert (reference / "models" / "models_info.json").exists() and len(list((reference / "models").glob("obj_*.ply"))) == 10
    n_vis = n_cut = 0
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
                if o.visib_fract == 0:
                    assert np.isnan(o.bbox_obj).all() and np.isnan(o.bbox_visib).all()        # BOP's [-1, -1, -1, -1]
                    continue
                ys, xs = np.nonzero(o.mask)
                x1, y1, x2, y2 = o.bbox_obj                                                  # x2, y2: last column, row
                assert x1 <= xs.min() and y1 <= ys.min() and x2 >= xs.max() and y2 >= ys.max()
                if xs.min() > 0 and ys.min() > 0 and xs.max() < 159 and ys.max() < 119:   # not truncated: the exact box
                    assert np.array_equal(o.bbox_obj, [xs.min(), ys.min(), xs.max(), ys.max()])
                    assert o.visib_fract == o.mask_visib.sum() / o.mask.sum()
                else:
                    n_cut += 1
                    assert o.visib_fract <= o.mask_visib.sum() / o.mask.sum()
                if o.visib_fract > 0:
                    assert (v.depth[o.mask_visib] > 0).all()
    assert n_vis > 20 and n_cut > 0
    Ks = {tuple(np.round(r.K.ravel(), 6)) for r in ds}
    assert len(Ks) == len(ds), "random intrinsics: one K per image"


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
        record_cli(["--out", str(tmp_path / "z"), "--resolution", "0x10", "--scenes", "1"])
    with pytest.raises(InputError):
        record_cli(["--out", str(tmp_path / "z"), "--K", "0,0,1,1", "--scenes", "1"])


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
    assert record_cli(["--objects", str(src), "--out", str(out), "--scenes", "2", "--views", "1", "--resolution", "60x80",
                       "--workers", "0", "--no-progress", "--split", "val"]) == 0
    ds = BOPDataset(out, split="val", load_masks=True)
    assert len(ds) == 2 and ds.models_info is not None and len(ds.models_info) == 3
    assert all(1 <= len(r.objects) <= 3 for r in ds)


def test_folder_rule_and_overwrite(tmp_path, reference):
    "A foreign folder is refused unless --overwrite; a recording with other settings is replaced with --overwrite; other files stay."
    import shutil
    common = dict(n_scenes=2, n_views=1, resolution=(48, 64), seed=0, workers=0, progress=False)
    foreign = tmp_path / "foreign"; foreign.mkdir(); (foreign / "notes.txt").write_text("mine")
    (foreign / "train").mkdir(); (foreign / "train" / "000000").mkdir()              # looks like a complete scene
    with pytest.raises(InputError, match="overwrite"):
        rec.record(foreign, **common)
    res = rec.record(foreign, overwrite=True, **common)
    assert res["recorded"] == 2 and (foreign / "notes.txt").read_text() == "mine"
    assert (foreign / "train" / "000000" / "scene_gt.json").exists()                 # recorded, not taken as complete
    fresh = tmp_path / "fresh"
    rec.record(fresh, **common)
    assert tree(fresh) == {k: v for k, v in tree(foreign).items() if k != "notes.txt"}
    # a recording with other settings: refused, then replaced
    other = tmp_path / "other"; shutil.copytree(reference, other)
    with pytest.raises(InputError, match="different settings"):
        rec.record(other, **common)
    rec.record(other, overwrite=True, **common)
    assert tree(other) == tree(fresh)


def test_recording_json_format(reference, tmp_path):
    """recording.json keeps the keys (and order) of the first recordings; version 2 (BOP's scene_gt_info): a version-1
    recording is not extended with scenes annotated otherwise (a message says why), --overwrite replaces it."""
    import shutil
    js = json.loads((reference / "recording.json").read_text())
    assert list(js) == ["format", "version", "objects", "objects_fingerprint", "labels", "n_views", "resolution", "K", "seed",
                        "mode", "objects_per_scene", "split", "rgb_ext", "depth_scale", "backend", "n_scenes"]
    assert js["version"] == 2 and js["objects"] == "default" and js["resolution"] == [120, 160] and js["n_scenes"] == 14
    v1 = tmp_path / "v1"; shutil.copytree(reference, v1)
    (v1 / "recording.json").write_text(json.dumps(js | {"version": 1}, indent=2))
    common = dict(n_scenes=14, n_views=2, resolution=(120, 160), seed=3, objects_per_scene=(2, 4), workers=0, progress=False)
    with pytest.raises(InputError, match="version 1"):
        rec.record(v1, **common)
    assert rec.record(v1, overwrite=True, **common)["recorded"] == 14 and tree(v1) == tree(reference)
    # a setting added since (p_recolor) is written only when it differs from what the first recordings did
    plain = tmp_path / "plain"
    rec.record(plain, **(common | dict(n_scenes=1, p_recolor=0.0)))
    js0 = json.loads((plain / "recording.json").read_text())
    assert js0["p_recolor"] == 0.0 and list(js0)[-2:] == ["p_recolor", "n_scenes"]
    with pytest.raises(InputError, match="p_recolor"):
        rec.record(plain, **(common | dict(n_scenes=2)))           # the default, 0.8: other settings
    assert rec.record(plain, **(common | dict(n_scenes=2, p_recolor=0.0)))["recorded"] == 1


def test_command_options_from_the_config():
    "Every option of `record` has a help text with its default, taken from RecordingConfig; --workers says what 1 and 0 mean."
    import dataclasses
    p = record_parser()
    actions = {a.dest: a for a in p._actions if a.dest != "help"}
    fields = {f.name: f for f in dataclasses.fields(RecordingConfig)}
    assert set(actions) == set(fields) | {"out"}
    for name, a in actions.items():
        assert a.help and (name == "out" or "default" in a.help), name
        if name in fields:
            assert fields[name].metadata["help"] in a.help
    w = actions["workers"].help
    assert "(default: 1)" in w and "LocalCluster" in w and "0: record in this process" in w
    assert set(p._option_string_actions) >= {"--scenes", "--views", "--seed", "--rgb-ext", "--no-progress", "--overwrite"}
    a = p.parse_args(["--out", "x", "--scenes", "3", "--no-progress", "--rgb-ext", "png", "--resolution", "60x80"])
    assert (a.n_scenes, a.progress, a.rgb_ext, a.resolution) == ("3", False, "png", "60x80")


def test_recording_made_before_manifests_resumes(tmp_path, reference):
    """A recording without the folder manifest (made before it existed) resumes, byte for byte (also in a process that
    recorded with another seed before), and gets its manifest; a stranger's file is still refused."""
    import shutil
    from cosypose_nb.core import OUTPUT_MANIFEST
    rec.record(tmp_path / "warm", n_scenes=1, resolution=(48, 64), seed=0, workers=0, progress=False)   # this process's renderer, other seed
    old = tmp_path / "old"; shutil.copytree(reference, old)
    (old / OUTPUT_MANIFEST).unlink(); shutil.rmtree(old / "train" / "000005")
    res = rec.record(old, n_scenes=14, n_views=2, resolution=(120, 160), seed=3, objects_per_scene=(2, 4), workers=0, progress=False)
    assert res["recorded"] == 1 and tree(old) == tree(reference)
    (old / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        rec.record(old, n_scenes=14, n_views=2, resolution=(120, 160), seed=3, objects_per_scene=(2, 4), workers=0, progress=False)
