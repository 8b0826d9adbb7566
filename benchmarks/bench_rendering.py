"""Renders per second of `BatchRenderer` at 240x320 (batches of 1, 8, 32 objects; 1 and 2 workers) next to the
bare floor of a plain pybullet getCameraImage loop in one process, all measured in the same run, interleaved.

The bare loop renders each object in a pybullet client that holds only that object (the cheapest possible
scene), moving it to its pose and calling getCameraImage with default flags; it returns pybullet's numpy
RGBA, nothing else. The batch renderer returns float32 RGB tensors (B, 3, H, W) in [0, 1] (black background).

Usage: python benchmarks/bench_rendering.py [--rounds 5] [--backend tiny]
"""
from __future__ import annotations
import argparse, os, statistics, sys, time

import numpy as np
import torch


def bare_loop(clients, labels, T_CO, K, H, W, R):
    import pybullet as pb
    V = R.bullet_matrix(R.view_matrix(np.eye(4)))
    P = R.bullet_matrix(R.projection_matrix(K, (H, W), backend="tiny"))
    for l, T in zip(labels, T_CO):
        c, b = clients[l]
        pos, q = R._pose_from_T(T)
        pb.resetBasePositionAndOrientation(b, pos, q, physicsClientId=c)
        out = pb.getCameraImage(W, H, V, P, renderer=pb.ER_TINY_RENDERER, physicsClientId=c)
        np.asarray(out[2])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="interleaved repetitions (the median is reported)")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--backend", default="tiny", choices=["tiny", "egl", "auto"])
    args = ap.parse_args(argv)
    import pybullet as pb
    from cosypose_nb.rendering import renderer as R
    from cosypose_nb.datasets.objects import load_default_objects
    from cosypose_nb.geometry.cameras import make_K
    from cosypose_nb.geometry.rotations import random_rotations
    from cosypose_nb.geometry.transforms import make_T

    H, W = 240, 320
    objects = load_default_objects()
    urdfs = R.object_urdfs(objects)
    batches = [int(b) for b in args.batches.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    gen = torch.Generator().manual_seed(0)
    nmax = max(batches)
    labels = [objects.labels[i] for i in torch.randint(len(objects.labels), (nmax,), generator=gen)]
    t = torch.stack([(torch.rand(nmax, generator=gen, dtype=torch.float64) - 0.5) * 0.04,
                     (torch.rand(nmax, generator=gen, dtype=torch.float64) - 0.5) * 0.04,
                     0.3 + torch.rand(nmax, generator=gen, dtype=torch.float64) * 0.1], -1)
    T_CO = make_T(random_rotations(nmax, gen), t)        # objects fill a good part of the 240x320 crop, as in the refiner
    K = make_K(300.0, 300.0, 159.5, 119.5)

    clients = {}
    for l in objects.labels:
        c = pb.connect(pb.DIRECT)
        clients[l] = (c, pb.loadURDF(urdfs[l], useFixedBase=True, physicsClientId=c))

    renderers = {}
    for w in workers:
        t0 = time.time()
        renderers[w] = R.BatchRenderer(objects, n_workers=w, backend=args.backend, device="cpu")
        print(f"# started {w} worker(s) in {time.time() - t0:.1f} s, backend {renderers[w].backend}", file=sys.stderr)
        renderers[w].render(labels[:2], T_CO[:2], K, (H, W))                      # warm-up
    bare_loop(clients, labels[:2], T_CO[:2].numpy(), K.numpy(), H, W, R)

    times = {(b, k): [] for b in batches for k in ["bare", *workers]}
    for _ in range(args.rounds):
        for b in batches:
            reps = max(1, 32 // b)                                                # ~32 renders per timing
            t0 = time.perf_counter()
            for _ in range(reps): bare_loop(clients, labels[:b], T_CO[:b].numpy(), K.numpy(), H, W, R)
            times[(b, "bare")].append((time.perf_counter() - t0) / (reps * b))
            for w in workers:
                t0 = time.perf_counter()
                for _ in range(reps): renderers[w].render(labels[:b], T_CO[:b], K, (H, W))
                times[(b, w)].append((time.perf_counter() - t0) / (reps * b))
    for r in renderers.values(): r.close()

    rate = {k: 1.0 / statistics.median(v) for k, v in times.items()}
    print(f"\nRenders per second at {H}x{W} (RGB), median of {args.rounds} interleaved rounds, {os.cpu_count()} CPU cores, "
          f"backend {args.backend}, torch {torch.__version__}")
    head = f"| batch | bare getCameraImage loop (1 process) | " + " | ".join(f"BatchRenderer {w} worker{'s' * (w > 1)}" for w in workers) \
        + " | " + " | ".join(f"{w}w / bare" for w in workers) + " |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for b in batches:
        cells = [f"{rate[(b, 'bare')]:.0f}"] + [f"{rate[(b, w)]:.0f}" for w in workers] + [f"{rate[(b, w)] / rate[(b, 'bare')]:.2f}x" for w in workers]
        print(f"| {b} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
