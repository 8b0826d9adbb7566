"""`rendering.batch`: the worker pool gives the in-process pixels in batch order, refuses bad input, and leaves no process behind."""
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
from cosypose_nb.rendering.batch import BatchRenderer, _render_chunk


def test_pool_matches_in_process_and_keeps_order(scene, objects, random_poses, random_K):
    "The pool returns exactly the in-process pixels, in batch order, for odd batch sizes split across workers."
    gen = torch.Generator().manual_seed(2)
    H, W = 60, 80
    n = 7
    labels = [objects.labels[i] for i in torch.randint(len(objects.labels), (n,), generator=gen)]
    T_CO, K = random_poses(n, gen), random_K(n, gen, H, W)
    ref = _render_chunk(scene, labels, T_CO.numpy(), K.numpy(), (H, W), True, True, None, (0, 0, 0))
    for workers in (1, 2, 3):
        with BatchRenderer(objects, n_workers=workers, backend="tiny", device="cpu") as r:
            out = r.render(labels, T_CO, K, (H, W), render_depth=True, render_mask=True)
            single = r.render(labels[3:4], T_CO[3:4], K[3], (H, W))
        assert torch.equal((out.rgb * 255).round().to(torch.uint8), torch.from_numpy(ref["rgb"]))
        assert torch.equal(out.depth[:, 0], torch.from_numpy(ref["depth"]))
        assert torch.equal(out.mask[:, 0], torch.from_numpy(ref["mask"]))
        assert torch.equal(single.rgb[0], out.rgb[3])
        assert out.rgb.dtype == torch.float32 and 0 <= out.rgb.min() and out.rgb.max() <= 1


def test_bad_input(objects):
    with BatchRenderer(objects, n_workers=1, backend="tiny") as r:
        T = torch.eye(4, dtype=torch.float64)[None].clone(); T[0, 2, 3] = 0.5
        K = make_K(100.0, 100.0, 40.0, 30.0)
        good = dict(labels=[objects.labels[0]], T_CO=T, K=K, resolution=(60, 80))
        bad = [dict(labels=["nope"]), dict(labels=[]), dict(K=torch.zeros(3, 3)), dict(K=torch.tensor([[0.0, 0, 40], [0, 100.0, 30], [0, 0, 1]])),
               dict(K=torch.ones(2, 3, 3)), dict(resolution=(0, 80)), dict(resolution=(-60, 80)), dict(resolution="60x"),
               dict(T_CO=torch.zeros(1, 4, 4)), dict(T_CO=T.repeat(2, 1, 1))]
        for kw in bad:
            with pytest.raises(InputError):
                r.render(**(good | kw))
        assert r.render(**good).rgb.shape == (1, 3, 60, 80)     # still usable after refused calls
    with pytest.raises(InputError): BatchRenderer({}, n_workers=1)
    with pytest.raises(InputError): BatchRenderer(objects, n_workers=0)
    with pytest.raises(InputError): BatchRenderer({"x": "/no/such.urdf"})


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        import psutil
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:
        return True


def test_pool_shutdown_and_worker_death(objects):
    r = BatchRenderer(objects, n_workers=2, backend="tiny")
    pids = [p.pid for p in r._procs]
    os.kill(pids[1], signal.SIGKILL)
    time.sleep(0.2)
    T = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1); T[:, 2, 3] = 0.5
    with pytest.raises(RuntimeError):
        r.render([objects.labels[0]] * 4, T, make_K(100.0, 100.0, 40.0, 30.0), (60, 80))
    r.close(); r.close()
    assert not any(_alive(p) for p in pids)
    with pytest.raises(RuntimeError):
        r.render([objects.labels[0]], T[:1], make_K(100.0, 100.0, 40.0, 30.0), (60, 80))


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    "SIGKILL of the process that owns a pool: its workers notice the closed pipe and exit (no orphans)."
    script = textwrap.dedent("""
        import sys, time
        from cosypose_nb.datasets.objects import load_default_objects
        from cosypose_nb.rendering.batch import BatchRenderer
        if __name__ == "__main__":
            r = BatchRenderer(load_default_objects(), n_workers=2, backend="tiny")
            print(" ".join(str(p.pid) for p in r._procs), flush=True)
            time.sleep(120)
    """)
    f = tmp_path / "owner.py"; f.write_text(script)
    p = subprocess.Popen([sys.executable, str(f)], stdout=subprocess.PIPE, text=True, start_new_session=False)
    try:
        line = ""
        t0 = time.time()
        while not line.strip() and time.time() - t0 < 120:
            line = p.stdout.readline()
            if "build time" in line: line = ""
        pids = [int(x) for x in line.split()]
        assert len(pids) == 2 and all(_alive(q) for q in pids)
    finally:
        p.kill(); p.wait()
    t0 = time.time()
    while any(_alive(q) for q in pids) and time.time() - t0 < 15:
        time.sleep(0.2)
    assert not any(_alive(q) for q in pids), "orphaned renderer workers"
