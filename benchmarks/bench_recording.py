"""Images per second of the synthetic-data recorder at 640x480 (single-view scenes of the default objects) in this
process and on dask LocalClusters of 1 and 2 worker processes, measured in the same run; with `--baseline DIR`,
the same for the checkout in DIR (e.g. an older commit), interleaved, side by side, with the ratios.

Two rates per row: end to end (wall time of `record`, cluster start and object loading included) and steady
state (scenes completed after the first one, divided by the time from the first to the last completion); for
the in-process rows also the CPU time of `record` (what load from other processes changes least).
Each recording runs in a fresh process (PYTHONPATH = its checkout); the versions alternate, round after round.

Usage: python benchmarks/bench_recording.py [--scenes 24] [--workers 0,1,2] [--rounds 1] [--baseline DIR]
"""
from __future__ import annotations
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from cosypose_nb.{module} import record
if __name__ == "__main__":
    out, n, w, H, W = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    c0 = time.process_time()
    r = record(out, n_scenes=n, n_views=1, resolution=(H, W), seed=0, workers=w, progress=False)
    print(json.dumps(dict(images=r["images"], seconds=r["seconds"], done_at=r["done_at"], cpu=time.process_time() - c0)))
"""


def run(root: Path, out: Path, n: int, w: int, H: int, W: int) -> dict:
    "Record in a fresh process with the library of checkout `root`; its result."
    module = "synthetic.recording" if (root / "cosypose_nb" / "synthetic" / "recording.py").exists() else "recording"
    script = out.parent / f"child_{module}.py"
    script.write_text(CHILD.format(module=module))
    p = subprocess.run([sys.executable, str(script), str(out), str(n), str(w), str(H), str(W)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(root)), cwd=root)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines: raise RuntimeError(f"recording with {root} failed:\n{p.stderr[-2000:]}")
    shutil.rmtree(out)
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--workers", default="0,1,2", help="0: in the recording process (no dask)")
    ap.add_argument("--resolution", default="480x640")
    ap.add_argument("--rounds", type=int, default=1, help="repetitions (the median is reported)")
    ap.add_argument("--baseline", default=None, help="a checkout of another version to measure side by side")
    args = ap.parse_args(argv)
    H, W = (int(v) for v in args.resolution.split("x"))
    versions = {"this": Path(__file__).resolve().parents[1]}
    if args.baseline: versions["baseline"] = Path(args.baseline).resolve()
    workers = [int(x) for x in args.workers.split(",")]
    res: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench_rec_"))
    try:
        for k in range(args.rounds):
            for w in workers:
                for name in (list(versions) if k % 2 == 0 else list(versions)[::-1]):
                    r = run(versions[name], tmp / f"{name}_w{w}", args.scenes, w, H, W)
                    d = r["done_at"]
                    steady = (len(d) - 1) / (d[-1] - d[0]) if len(d) > 1 and d[-1] > d[0] else float("nan")
                    res.setdefault((name, w), []).append((r["images"], r["seconds"], r["images"] / r["seconds"], steady, r["cpu"]))
                    print(f"# {name} workers={w}: {r['seconds']:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = {k: [statistics.median(x[i] for x in v) for i in range(5)] for k, v in res.items()}
    print(f"\nRecorder throughput at {H}x{W}, {args.scenes} single-view scenes (3-6 objects, depth, masks), median of "
          f"{args.rounds} round(s), {os.cpu_count()} CPU cores, TinyRenderer, load average {os.getloadavg()[0]:.1f} at the end")
    print("| workers | version | images | wall (s) | CPU (s, in-process) | images/s end to end | images/s steady | steady vs in-process |"
          + (" end to end: this / baseline | steady: this / baseline | CPU: baseline / this |" if args.baseline else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|---|---|" if args.baseline else ""))
    for w in workers:
        for name in versions:
            n, s, e2e, st, cpu = med[(name, w)]
            base = med.get((name, 0), med[(name, workers[0])])[3]
            row = (f"| {'in-process (no dask)' if w == 0 else f'dask LocalCluster, {w}'} | {name} | {n:.0f} | {s:.1f} | "
                   f"{f'{cpu:.1f}' if w == 0 else '-'} | {e2e:.2f} | {st:.2f} | {st / base:.2f}x |")
            if args.baseline:
                o = med[("baseline", w)]
                row += (f" {e2e / o[2]:.2f}x | {st / o[3]:.2f}x | {f'{o[4] / cpu:.2f}x' if w == 0 else '-'} |" if name == "this" else " | | |")
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
