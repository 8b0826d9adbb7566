"""Images per second of the synthetic-data recorder at 640x480 (single-view scenes of the default objects) in this
process and on dask LocalClusters of 1 and 2 worker processes, measured in the same run.

Two rates per row: end to end (wall time of `record`, cluster start and object loading included) and steady
state (scenes completed after the first one, divided by the time from the first to the last completion).

Usage: python benchmarks/bench_recording.py [--scenes 24] [--workers 0,1,2]
"""
from __future__ import annotations
import argparse, os, shutil, sys, tempfile, time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--workers", default="0,1,2", help="0: in this process (no dask)")
    ap.add_argument("--resolution", default="480x640")
    args = ap.parse_args(argv)
    from cosypose_nb.synthetic.recording import record
    from cosypose_nb.rendering.bullet import check_resolution
    import torch
    H, W = check_resolution(args.resolution)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_rec_"))
    try:
        for w in [int(x) for x in args.workers.split(",")]:
            out = tmp / f"w{w}"
            r = record(out, n_scenes=args.scenes, n_views=1, resolution=(H, W), seed=0, workers=w, progress=False)
            d = r["done_at"]
            steady = (len(d) - 1) / (d[-1] - d[0]) if len(d) > 1 and d[-1] > d[0] else float("nan")
            rows.append((w, r["images"], r["seconds"], r["images"] / r["seconds"], steady))
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nRecorder throughput at {H}x{W}, {args.scenes} single-view scenes (3-6 objects, depth, masks), "
          f"{os.cpu_count()} CPU cores, TinyRenderer, torch {torch.__version__}")
    print("| workers | images | wall (s) | images/s end to end | images/s steady | steady vs in-process |")
    print("|---|---|---|---|---|---|")
    base = next((r[4] for r in rows if r[0] == 0), rows[0][4])
    for w, n, s, e2e, st in rows:
        name = "in-process (no dask)" if w == 0 else f"dask LocalCluster, {w}"
        print(f"| {name} | {n} | {s:.1f} | {e2e:.2f} | {st:.2f} | {st / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
