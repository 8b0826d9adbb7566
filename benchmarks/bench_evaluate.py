"""Time of `cosypose-nb evaluate` on 10,000 estimates, and where it goes, measured side by side in one run.

Dataset (made here, not timed): the default objects as a BOP models folder (453 to 6141 vertices; the torus has 630
symmetry transforms at the toolkit's step, the soccer ball 60), S scenes x I images x O objects in 640x480 views
(f = 600 px) at 0.5-1.0 m, empty test depth (every model pixel counts as visible: the renderings and the VSD formula
cost the same as with real depth), visible fractions in [0.1, 1]; results = the ground truth + 3 degrees and 8 mm of
noise, one estimate per instance: S x I x O estimates (default 100 x 20 x 5 = 10,000).

Measured:
  1. the parts of one pass over the scenes, new code with renderer --backend (default 'raster', the z-buffer of
     `evaluation.vsd`; pybullet backends with 1 rendering worker): reading and checks, pose errors (te, re, ADD, ADD-S,
     MSSD, MSPD, batched), renderings, the VSD formula (windows pasted, `vsd_batch`), scores;
  2. renders per second of the z-buffer and of pybullet ('tiny', 1 worker) on the same `--sample` estimates, in their
     windows and in whole 640x480 images;
  3. the whole `evaluate` (every metric), each run in its own process: the code of this checkout ("new", renderer
     --backend) and of the git revision --old ("old", default main, renderer --old-backend, default 'tiny'; its
     cosypose_nb taken with `git archive`) side by side on the same dataset, pybullet runs with each of --workers
     rendering processes, --repeat times in alternation; wall seconds, CPU seconds (the process and its rendering
     workers) and the ratios old / new; with --torchrun, 2 processes x 1 worker (new code).

The load average is printed before and after: on a shared machine the wall times follow the load, the CPU seconds
much less. To re-measure on a quiet machine: `python benchmarks/bench_evaluate.py` (about 5 minutes there).

Usage: python benchmarks/bench_evaluate.py [--scenes 100 --images 20 --objects 5] [--backend raster] [--workers 1,2]
                                           [--old main] [--old-backend tiny] [--repeat 1] [--torchrun] [--sample 200] [--no-parts]
"""
from __future__ import annotations
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def make_dataset(root: Path, n_scenes: int, n_images: int, n_objects: int, seed: int = 0) -> Path:
    from scipy.spatial.transform import Rotation
    from cosypose_nb.datasets.objects import write_default_objects
    from cosypose_nb.datasets.bop import (write_scene_camera, write_scene_gt, write_scene_gt_info, write_depth, write_targets,
                                          read_models_info, scene_dir_name)
    from cosypose_nb.evaluation.bop19 import targets_from_gt
    rng = np.random.default_rng(seed)
    write_default_objects(root / "models")
    obj_ids = sorted(read_models_info(root / "models"))
    K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
    zero = root / "zero_depth.png"
    write_depth(zero, np.zeros((480, 640)), 1.0)
    gts = []
    for s in range(n_scenes):
        d = root / "test" / scene_dir_name(s)
        (d / "depth").mkdir(parents=True)
        gt, info = {}, {}
        for i in range(n_images):
            z = rng.uniform(0.5, 1.0, n_objects)
            T = np.tile(np.eye(4), (n_objects, 1, 1))
            T[:, :3, :3] = Rotation.random(n_objects, random_state=int(rng.integers(2 ** 31))).as_matrix()
            T[:, :3, 3] = np.c_[rng.uniform(-0.25, 0.25, (n_objects, 2)) * z[:, None], z]
            oids = rng.choice(obj_ids, n_objects)
            gt[i] = [{"obj_id": int(o), "T_CO": t} for o, t in zip(oids, T)]
            info[i] = [{"bbox_obj": [0, 0, 1, 1], "bbox_visib": [0, 0, 1, 1], "visib_fract": float(v)} for v in rng.uniform(0.1, 1, n_objects)]
            gts += [(s, i, int(o), info[i][k]["visib_fract"]) for k, o in enumerate(oids)]
            os.symlink(zero, d / "depth" / f"{i:06d}.png")
        write_scene_camera(d, {i: {"K": K, "depth_scale": 1.0} for i in range(n_images)})
        write_scene_gt(d, gt); write_scene_gt_info(d, info)
    write_targets(root, targets_from_gt(pd.DataFrame(gts, columns=["scene_id", "im_id", "obj_id", "visib_fract"])))
    return root


def parts(results, root, sample: int, backend: str) -> dict:
    "One pass over the scenes with the pieces of `evaluate` timed (renderer `backend`; pybullet ones: 1 worker)."
    from cosypose_nb.evaluation.evaluate import prepare, EvaluateConfig
    from cosypose_nb.evaluation.pairs import scene_pairs, pair_pose_errors, pair_vsd_errors, compute_scores, read_depth_mm
    from cosypose_nb.evaluation.vsd import DepthRenderer
    from cosypose_nb.datasets.objects import MeshDatabase
    from cosypose_nb.datasets.bop import scene_dir_name

    class Timed(DepthRenderer):
        seconds = 0.0
        def render_windows(self, *a, **kw):
            t = time.perf_counter(); out = super().render_windows(*a, **kw); Timed.seconds += time.perf_counter() - t
            return out

    t = {}
    torch.set_num_threads(1)                              # as evaluate (EvaluateConfig.threads)
    t0 = time.perf_counter(); inp = prepare(results, root, EvaluateConfig(progress=False)); t["read, check, models"] = time.perf_counter() - t0
    t0 = time.perf_counter(); rend = Timed(MeshDatabase.from_folder(inp.models_dir, n_points=1), n_workers=1, backend=backend)
    t["renderer start"] = time.perf_counter() - t0
    t["pose errors"] = t["VSD (renderings + formula)"] = 0.0
    all_pairs = []
    for s in sorted(set(inp.targets["scene_id"])):
        sel = lambda d: d[d["scene_id"] == s]
        e, g, tg, ims = sel(inp.ests), sel(inp.gts), sel(inp.targets), sel(inp.images)
        Ks = dict(zip(zip(ims["scene_id"], ims["im_id"]), ims["K"]))
        t0 = time.perf_counter()
        p = pair_pose_errors(scene_pairs(e, g, tg), e, g, Ks, inp.models)
        t1 = time.perf_counter()
        sd = root / "test" / scene_dir_name(s)
        p = pair_vsd_errors(p, e, g, Ks, lambda a, b: read_depth_mm(sd, b, 1.0), inp.models, rend, inp.bop)
        t["pose errors"] += t1 - t0; t["VSD (renderings + formula)"] += time.perf_counter() - t1
        all_pairs.append(p.assign(im_width=640))
    t["of which renderings"] = Timed.seconds
    t0 = time.perf_counter()
    compute_scores(pd.concat(all_pairs, ignore_index=True), inp.ests, inp.gts, inp.targets, inp.models, inp.bop)
    t["scores"] = time.perf_counter() - t0
    stats = {"renders": rend.n_renders, "pixels per render": rend.n_pixels / max(rend.n_renders, 1)}
    # windows vs whole images, on the first `sample` estimates
    e = inp.ests.iloc[:sample]
    from cosypose_nb.evaluation.vsd import projected_boxes
    R = torch.as_tensor(np.stack([T[:3, :3] for T in e["T_CO"]])); tt = torch.as_tensor(np.stack([T[:3, 3] * 1000 for T in e["T_CO"]]))
    K = torch.as_tensor(np.stack([inp.images.K.iloc[0]] * len(e)))
    labels = [f"obj_{o:06d}" for o in e["obj_id"]]
    boxes = torch.cat([projected_boxes(inp.models[o].pts, R[[k]], tt[[k]], K[[k]], (480, 640)) for k, o in enumerate(e["obj_id"])])
    full = torch.tensor([[0, 0, 640, 480]] * len(e))
    with DepthRenderer(rend.objects, n_workers=1, backend="tiny") as bullet:
        for r, bk in ((rend, backend), (bullet, "tiny")):
            for name, b in (("windows", boxes), ("whole images", full)):
                t0 = time.perf_counter(); r.render_windows(labels, R, tt, K, b); stats[(bk, name)] = len(e) / (time.perf_counter() - t0)
    rend.close()
    return t, stats


RUN = """
import json, resource, sys, threading, time
from pathlib import Path
import psutil
from cosypose_nb.evaluation.evaluate import evaluate, EvaluateConfig
results, root, out, workers, backend = sys.argv[1:6]
seen, stop = {}, threading.Event()
def watch():                                    # CPU seconds of every process started below this one (rendering workers)
    while not stop.is_set():
        for c in psutil.Process().children(recursive=True):
            try: seen[c.pid] = sum(c.cpu_times()[:2])
            except psutil.Error: pass
        stop.wait(0.2)
w = threading.Thread(target=watch, daemon=True); w.start()
t0 = time.perf_counter()
evaluate(results, root, out, EvaluateConfig(n_workers=int(workers), progress=False, backend=backend))
wall = time.perf_counter() - t0
stop.set(); w.join()
r = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": wall, "code": str(Path(sys.modules["cosypose_nb"].__file__).parent),
                  "cpu_main": r.ru_utime + r.ru_stime, "cpu_workers": sum(seen.values())}))
"""

def whole(results, root, workers: int, code: Path | None = None, backend: str = "tiny") -> tuple[float, float, float, float]:
    """(wall seconds of `evaluate`, CPU seconds of its process and rendering workers, of the process alone (imports
    included), of the rendering workers), run in a new process with the package of folder `code` (None: this
    checkout) first on the path."""
    out = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    env = {**os.environ, "PYTHONPATH": str(code or Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", RUN, str(results), str(root), str(out), str(workers), backend], env=env, check=True,
                       capture_output=True, text=True, cwd=tempfile.gettempdir())
    shutil.rmtree(out, ignore_errors=True)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    if code is not None and not d["code"].startswith(str(code)): raise RuntimeError(f"the old run imported {d['code']}")
    return d["wall"], d["cpu_main"] + d["cpu_workers"], d["cpu_main"], d["cpu_workers"]

def old_code(rev: str, into: Path) -> Path:
    "The package `cosypose_nb` of git revision `rev` of this checkout, extracted under `into`."
    repo = Path(__file__).resolve().parents[1]
    into.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["git", "-C", str(repo), "archive", rev, "cosypose_nb"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=tar, check=True)
    return into

def torchrun(results, root, backend: str) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench_eval_tr_"))
    bin_ = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([str(bin_ / "torchrun"), "--nproc-per-node", "2", "--no-python", str(bin_ / "cosypose-nb"), "evaluate", str(results),
                    "--dataset", str(root), "--out", str(out), "--no-progress", "--backend", backend], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    return dt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=100); ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--objects", type=int, default=5)
    ap.add_argument("--workers", default="1,2", help="rendering processes of the pybullet runs (comma-separated counts)")
    ap.add_argument("--backend", default="raster", help="renderer of the new code: 'raster' (z-buffer, no workers) or 'tiny' (pybullet)")
    ap.add_argument("--old-backend", default="tiny", help="renderer of the old code")
    ap.add_argument("--torchrun", action="store_true"); ap.add_argument("--sample", type=int, default=200)
    ap.add_argument("--old", default="main", help="git revision of the previous code (compared side by side); '' to skip")
    ap.add_argument("--repeat", type=int, default=1); ap.add_argument("--no-parts", action="store_true")
    args = ap.parse_args(argv)
    from cosypose_nb.evaluation.pairs import results_from_ground_truth
    from cosypose_nb.datasets.bop import write_results_csv
    tmp = Path(tempfile.mkdtemp(prefix="bench_eval_data_"))
    try:
        t0 = time.perf_counter()
        root = make_dataset(tmp / "bench", args.scenes, args.images, args.objects)
        results = root / "results.csv"
        write_results_csv(results, results_from_ground_truth(root, rot_noise_deg=3.0, trans_noise_mm=8.0, seed=1))
        n = args.scenes * args.images * args.objects
        print(f"dataset: {args.scenes} scenes x {args.images} images x {args.objects} objects = {n} estimates "
              f"(made in {time.perf_counter() - t0:.0f} s, not timed); load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if not args.no_parts:
            c0 = time.process_time()
            t, stats = parts(results, root, args.sample, args.backend)
            total = sum(v for k, v in t.items() if not k.startswith("of which"))
            print(f"\n1. one pass, new code, renderer {args.backend} (wall seconds, share of the pass)")
            for k, v in t.items():
                print(f"   {k:<28} {v:8.1f}  {100 * v / total:5.1f}%")
            print(f"   {'total':<28} {total:8.1f}   (CPU of this process: {time.process_time() - c0:.1f} s)")
            print(f"   renders: {stats['renders']}, {stats['pixels per render']:.0f} pixels each on average")
            print(f"\n2. renders per second, {args.sample} estimates, in windows and in whole 640x480 images (pybullet: 1 worker)")
            for bk in (args.backend, "tiny"):
                print(f"   {bk:<8} windows {stats[(bk, 'windows')]:7.0f}   whole images {stats[(bk, 'whole images')]:7.0f}")
            print(f"   {args.backend} / tiny, windows: x{stats[(args.backend, 'windows')] / stats[('tiny', 'windows')]:.1f}")
        print(f"\n3. the whole evaluate (bop19 + ycbv + mv): new code{' vs ' + args.old + ' (old)' if args.old else ''}, each in its own process")
        codes = {"new": None}
        if args.old: codes["old"] = old_code(args.old, tmp / "old")
        w = [int(x) for x in args.workers.split(",")]
        backends = {"new": args.backend, "old": args.old_backend}
        runs: dict = {}
        for _ in range(args.repeat):
            for name, code in codes.items():
                for k in (w if backends[name] != "raster" else [1]):           # the z-buffer has no rendering processes
                    runs.setdefault((name, backends[name], k), []).append(whole(results, root, k, code, backends[name]))
        if args.torchrun: runs[("new", args.backend, "torchrun 2x1")] = [(torchrun(results, root, args.backend),) + (float("nan"),) * 3]
        best = lambda name: min((x[0] for key, v in runs.items() if key[0] == name for x in v), default=float("nan"))
        print(f"   {'code, renderer, workers':<26} {'wall s':>7} {'CPU s':>7} {'process':>8} {'renderers':>9} {'estimates/s':>12} {'old/new (wall)':>15}")
        for (name, bk, k), v in runs.items():
            wall, cpu, main_, rend = (min(x[i] for x in v) for i in range(4))
            ratio = f"x{best('old') / wall:.2f}" if name == "new" and "old" in codes else ""
            print(f"   {name + ', ' + bk + ', ' + str(k):<26} {wall:7.1f} {cpu:7.1f} {main_:8.1f} {rend:9.1f} {n / wall:12.0f} {ratio:>15}")
        if "old" in codes:
            cpu_of = lambda name: min((x[1] for key, v in runs.items() if key[0] == name for x in v), default=float("nan"))
            print(f"   old/new CPU seconds (best runs): x{cpu_of('old') / cpu_of('new'):.2f}")
        print("   (CPU s = process + renderers: the evaluate process (imports included) and its rendering workers; on an idle "
              "machine of C cores the wall time is at least CPU s / C)")
        print(f"   load average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
