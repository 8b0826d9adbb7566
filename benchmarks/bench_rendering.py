"""Renders per second of `BatchRenderer` at 240x320 (batches of 1, 8, 32 objects; 1 and 2 workers) next to the
bare floor of a plain pybullet getCameraImage loop in one process, all measured in the same run, interleaved;
with `--baseline DIR`, the same for the checkout in DIR (e.g. an older commit), side by side, with the ratios.

The bare loop renders each object in a pybullet client that holds only that object (the cheapest possible
scene), moving it to its pose and calling getCameraImage with default flags; it returns pybullet's numpy
RGBA, nothing else. The batch renderer returns float32 RGB tensors (B, 3, H, W) in [0, 1] (black background).
Each version runs in a process of its own (PYTHONPATH = its checkout); the parent asks them in turn, round
after round, so that both see the same load.

Usage: python benchmarks/bench_rendering.py [--rounds 5] [--backend tiny] [--baseline /path/to/old/checkout]
"""
from __future__ import annotations
import argparse, importlib, json, os, statistics, subprocess, sys, time
from pathlib import Path

import numpy as np

H, W = 240, 320


def _first(*names):
    "The first module of `names` that imports (the library's layout changed over time)."
    for n in names:
        try:
            return importlib.import_module(n)
        except ImportError:
            continue
    raise ImportError(names)


def _inputs(labels_all, nmax):
    "Random labels and poses T_CO (nmax, 4, 4) that fill a good part of the 240x320 crop, as in the refiner (numpy only)."
    from scipy.spatial.transform import Rotation
    rng = np.random.default_rng(0)
    labels = [labels_all[i] for i in rng.integers(len(labels_all), size=nmax)]
    T = np.tile(np.eye(4), (nmax, 1, 1))
    T[:, :3, :3] = Rotation.random(nmax, random_state=1).as_matrix()
    T[:, :3, 3] = np.c_[rng.uniform(-0.02, 0.02, (nmax, 2)), rng.uniform(0.3, 0.4, nmax)]
    K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    return labels, T, K


def _read_json(p) -> dict:
    "The next JSON line of a child's stdout (pybullet prints its build banner there on import)."
    while True:
        line = p.stdout.readline()
        if not line: raise RuntimeError(f"benchmark child {p.args} ended")
        if line.startswith("{"): return json.loads(line)


def child(args) -> int:
    "Serve timings of this checkout's renderers: read 'b' lines, answer JSON {name: seconds per image}."
    import pybullet as pb
    import torch
    torch.set_num_threads(1)
    batch = _first("cosypose_nb.rendering.batch", "cosypose_nb.rendering.renderer", "cosypose_nb.rendering")
    geo = _first("cosypose_nb.rendering.bullet", "cosypose_nb.rendering.renderer", "cosypose_nb.rendering")
    objects = _first("cosypose_nb.datasets.objects", "cosypose_nb.objects").load_default_objects()
    to_pb = getattr(_first("cosypose_nb.geometry.rotations"), "pose_to_pybullet", None) if "bullet" in geo.__name__ else geo._pose_from_T
    urdfs = geo.object_urdfs(objects)
    labels, T_CO, K = _inputs(objects.labels, 32)
    clients = {}
    for l in objects.labels:
        c = pb.connect(pb.DIRECT)
        clients[l] = (c, pb.loadURDF(urdfs[l], useFixedBase=True, physicsClientId=c))
    V = geo.bullet_matrix(geo.view_matrix(np.eye(4)))
    P = geo.bullet_matrix(geo.projection_matrix(K, (H, W), backend="tiny"))

    def bare(b):
        for l, T in zip(labels[:b], T_CO[:b]):
            c, body = clients[l]
            pos, q = to_pb(T)
            pb.resetBasePositionAndOrientation(body, pos, q, physicsClientId=c)
            np.asarray(pb.getCameraImage(W, H, V, P, renderer=pb.ER_TINY_RENDERER, physicsClientId=c)[2])

    workers = [int(w) for w in args.workers.split(",")]
    renderers = {w: batch.BatchRenderer(objects, n_workers=w, backend=args.backend, device="cpu") for w in workers}
    for r in renderers.values(): r.render(labels[:2], T_CO[:2], K, (H, W))                   # warm-up
    bare(2)
    print(json.dumps({"ready": batch.__name__, "backend": renderers[workers[0]].backend}), flush=True)
    for line in sys.stdin:
        b = int(line)
        reps = max(1, 32 // b)                                                              # ~32 renders per timing
        out = {}
        t0 = time.perf_counter()
        for _ in range(reps): bare(b)
        out["bare"] = (time.perf_counter() - t0) / (reps * b)
        for w, r in renderers.items():
            t0 = time.perf_counter()
            for _ in range(reps): r.render(labels[:b], T_CO[:b], K, (H, W))
            out[f"{w}w"] = (time.perf_counter() - t0) / (reps * b)
        print(json.dumps(out), flush=True)
    for r in renderers.values(): r.close()
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved repetitions (the median is reported)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--backend", default="tiny", choices=["tiny", "egl", "auto"])
    ap.add_argument("--baseline", default=None, help="a checkout of another version to measure side by side")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    versions = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline: versions["baseline"] = Path(args.baseline).resolve()
    procs = {}
    for name, root in versions.items():
        env = dict(os.environ, PYTHONPATH=str(root))
        procs[name] = subprocess.Popen([sys.executable, __file__, "--child", "--workers", args.workers, "--backend", args.backend],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        print(f"# {name}: {root}: {_read_json(procs[name])}", file=sys.stderr)
    batches = [int(b) for b in args.batches.split(",")]
    times: dict = {}
    for k in range(args.rounds):
        for b in batches:
            for name in (list(versions) if k % 2 == 0 else list(versions)[::-1]):          # alternate who goes first
                procs[name].stdin.write(f"{b}\n"); procs[name].stdin.flush()
                for key, t in _read_json(procs[name]).items():
                    times.setdefault((name, b, key), []).append(t)
    for p in procs.values():
        p.stdin.close(); p.wait()
    rate = {k: 1.0 / statistics.median(v) for k, v in times.items()}
    workers = [f"{w}w" for w in args.workers.split(",")]
    print(f"\nRenders per second at {H}x{W} (RGB), median of {args.rounds} interleaved rounds, {os.cpu_count()} CPU cores, "
          f"backend {args.backend}, load average {os.getloadavg()[0]:.1f} at the end")
    cols = ["bare"] + workers
    head = "| batch | " + " | ".join(f"{n}: {c}" for c in cols for n in versions)
    head += "".join(f" | {c}: this / baseline" for c in workers) if args.baseline else "".join(f" | this {c} / bare" for c in workers)
    print(head + " |")
    print("|" + "---|" * (head.count("|")))
    for b in batches:
        cells = [f"{rate[(n, b, c)]:.0f}" for c in cols for n in versions]
        if args.baseline: cells += [f"{rate[('this', b, c)] / rate[('baseline', b, c)]:.2f}x" for c in workers]
        else: cells += [f"{rate[('this', b, c)] / rate[('this', b, 'bare')]:.2f}x" for c in workers]
        print(f"| {b} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
