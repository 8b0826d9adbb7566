"""Multi-view benchmark: stage 2 (matching), stage 3 (initialisation + bundle adjustment), the whole predictor.

Four parts, one run:

1. **Stages** on seeded problems of (views, objects) = (4, 6), (8, 6), (8, 12), (16, 12): stage 2, stage 3 and the
   predictor timed (warm-up first, medians over repeats and seeds), errors against the ground truth and the solved
   rate; then, after all of these (its large autograd graphs churn the allocator and the caches), the dense-autograd
   reference LM (`tests/multiview/reference.py`) against `bundle_adjust` from the same start, in interleaved rounds.
2. **Old and new side by side** (`--old PATH`, a checkout of the code before the restructure): the same problems'
   stage 2, stage 3 and predictor timed by that code and by this one, in alternating subprocesses, with the ratio.
3. **Scale**: V views x 24 objects (V = 4 ... 64; every object in view, 20% outliers: 998 candidates at 64 views)
   reconstructed by the predictor, each in a fresh subprocess: wall and CPU time, peak memory (the process's peak
   resident set during the call, Linux's VmHWM reset just before it, above its resident size then: torch's
   allocations are not seen by tracemalloc), solved or not.
4. **Threads**: the predictor at 1 and 2 torch threads, with the machine as it is and with a second process keeping
   a core busy, at 4 x 6, 16 x 12 and 64 x 24.

    .venv/bin/python benchmarks/bench_multiview.py [--old /work/wt/base] [--seeds 5] [--out benchmarks/results]

Timings on a shared machine vary from run to run; the load average is printed with each table, and CPU times (the
process's, which another process's load inflates less than wall time) are given next to wall times."""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

CONFIGS = [(4, 6), (8, 6), (8, 12), (16, 12)]
SCALE = [4, 8, 16, 32, 64]
HERE = Path(__file__).resolve().parent


def _load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def _api():
    "The functions of whichever layout is on the path (the subpackages, or the flat modules before the restructure)."
    try:
        from cosypose_nb.synthetic.mvproblems import make_problem, make_object_set
        from cosypose_nb.multiview.matching import match_candidates
        from cosypose_nb.geometry.symmetries import symmetric_centres
        from cosypose_nb.multiview.bundle_adjustment import SceneProblem, bundle_adjust
        from cosypose_nb.multiview.initialisation import initialize_scene
        from cosypose_nb.multiview.predictor import predict_scene

        def stage3(pb, m, pts, syms, cen):
            c = pb.candidates
            scene = SceneProblem(c.view_ids, m.cand_obj, c.T_CO, pb.K, pts, syms, cen)
            T_WC, T_WO, ok = initialize_scene(scene, m)
            return bundle_adjust(scene.moved(T_WC, T_WO), fixed_view=int(ok.nonzero()[0, 0]), view_ok=ok)
    except ImportError:
        from cosypose_nb.mvproblems import make_problem, make_object_set
        from cosypose_nb.matching import match_candidates, symmetric_centres
        from cosypose_nb.bundle_adjustment import bundle_adjust, initialize_scene
        from cosypose_nb.multiview import predict_scene

        def stage3(pb, m, pts, syms, cen):
            c = pb.candidates
            T_WC, T_WO, ok = initialize_scene(c.view_ids, m.cand_obj, c.T_CO, m.view_pairs, m.T_C1C2, m.pair_scores.double(),
                                              pb.n_views, m.n_objects, pts, syms, pb.K)
            return bundle_adjust(c.view_ids, m.cand_obj, c.T_CO, pb.K, pts, syms, T_WC, T_WO,
                                 fixed_view=int(ok.nonzero()[0, 0]), view_ok=ok, centres=cen)
    from held_out import scene_metric           # (this folder is on the path when the script runs)
    return make_problem, make_object_set, scene_metric(), match_candidates, symmetric_centres, stage3, predict_scene



def _timed(fn, repeats: int):
    """Median CPU seconds of the process over `repeats` calls after a warm-up (less inflated by other processes'
    load than wall time; the stages run on one thread), and the last result."""
    out = fn()
    ts = []
    for _ in range(repeats):
        t = time.process_time(); out = fn(); ts.append(time.process_time() - t)
    return statistics.median(ts), out


def _models(pb, m):
    "Points, symmetries and symmetric centres of stage 2's objects (constants of the models, outside the timings)."
    import torch
    *_, symmetric_centres, _, _ = _api()
    labels = [pb.candidates.labels[int((m.cand_obj == o).nonzero()[0, 0])] for o in range(m.n_objects)]
    pts, syms = pb.objects.points(labels), pb.objects.symmetries(labels, n_continuous=32)
    return pts, syms, symmetric_centres(pts, syms)


def stage_times(configs, seeds: int, repeats: int, threads: int) -> list[dict]:
    "Stage 2, stage 3 and the predictor of this code (whichever is on the path) on the problems of `configs`."
    import torch
    torch.set_num_threads(threads)
    make_problem, make_object_set, evaluate_scene, match_candidates, _, stage3, predict_scene = _api()
    objects = make_object_set()
    rows = []
    for V, O in configs:
        for seed in range(seeds):
            pb = make_problem(V, O, seed=seed, objects=objects)
            t2, m = _timed(lambda: match_candidates(pb.candidates, objects, V), repeats)
            models = _models(pb, m)
            t3, _ = _timed(lambda: stage3(pb, m, *models), repeats)
            tp, pr = _timed(lambda: predict_scene(pb.candidates, pb.K, objects), repeats)
            solved = evaluate_scene(pb, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)["solved"]
            rows.append(dict(views=V, objects=O, seed=seed, candidates=len(pb.candidates), t2=t2, t3=t3, tp=tp, solved=bool(solved)))
    return rows


def reference_ratio(configs, seeds: int, rounds: int, block: int) -> list[dict]:
    """`bundle_adjust` against the dense-autograd reference from the same start (stage 2's objects, the
    initialisation's start): interleaved rounds of `block` back-to-back calls and one reference call."""
    import torch
    sys.path.insert(0, str(HERE.parent / "tests" / "multiview"))
    from reference import bundle_adjust_dense_autograd
    from cosypose_nb.synthetic.mvproblems import make_problem, make_object_set
    from cosypose_nb.multiview.matching import match_candidates
    from cosypose_nb.multiview.bundle_adjustment import SceneProblem, bundle_adjust
    from cosypose_nb.multiview.initialisation import initialize_scene
    objects, rows = make_object_set(), []
    for V, O in configs:
        for seed in range(seeds):
            pb = make_problem(V, O, seed=seed, objects=objects)
            m = match_candidates(pb.candidates, objects, V)
            pts, syms, cen = _models(pb, m)
            c = pb.candidates
            scene = SceneProblem(c.view_ids, m.cand_obj, c.T_CO, pb.K, pts, syms, cen)
            T_WC, T_WO, ok = initialize_scene(scene, m)
            scene, root = scene.moved(T_WC, T_WO), int(ok.nonzero()[0, 0])
            ratios, tb, tr = [], [], []
            for _ in range(rounds):
                blk = []
                for _ in range(block):
                    t = time.perf_counter(); r_b = bundle_adjust(scene, fixed_view=root, view_ok=ok); blk.append(time.perf_counter() - t)
                t = time.perf_counter(); r_r = bundle_adjust_dense_autograd(scene, fixed_view=root, view_ok=ok); t_r = time.perf_counter() - t
                tb.append(statistics.median(blk)); tr.append(t_r); ratios.append(t_r / tb[-1])
            rows.append(dict(views=V, objects=O, seed=seed, ba_ms=1e3 * statistics.median(tb), ref_ms=1e3 * statistics.median(tr),
                             speedup=statistics.median(ratios), cost_ba=r_b.costs[-1], cost_ref=r_r.costs[-1]))
    return rows


def _status_kb(key: str) -> int:
    "A size (kB) from /proc/self/status: VmRSS (resident now), VmHWM (the peak)."
    return int(next(l.split()[1] for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key + ":")))


def scale_point(V: int, threads: int | None, seed: int = 0) -> dict:
    "The predictor on V views x 24 objects in this process: wall and CPU seconds, peak memory above the start (MB), solved."
    import torch
    from cosypose_nb.synthetic.mvproblems import make_problem, make_object_set
    from cosypose_nb.evaluation.metrics import evaluate_scene
    from cosypose_nb.multiview.config import MultiviewConfig
    from cosypose_nb.multiview.predictor import predict_scene
    objects = make_object_set()
    pb = make_problem(V, 24, seed=seed, objects=objects, visibility=1.0)          # outliers: the default 20%
    predict_scene(pb.candidates[torch.arange(min(20, len(pb.candidates)))], pb.K, objects)       # warm-up (small)
    rss0 = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")         # Linux: the peak resident size (VmHWM) starts again from now
    t, c = time.perf_counter(), time.process_time()
    pr = predict_scene(pb.candidates, pb.K, objects, MultiviewConfig(threads=threads))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak = _status_kb("VmHWM")
    ev = evaluate_scene(pb, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)
    from cosypose_nb.multiview.predictor import threads_for
    return dict(views=V, objects=24, candidates=len(pb.candidates), threads=threads or threads_for(len(pb.candidates)), wall_s=wall,
                cpu_s=cpu, peak_mb=max(peak - rss0, 0) / 1024, solved=bool(ev["solved"]), matching_s=pr.timings["matching"])


def _subprocess(args: list[str], pythonpath: str | None = None) -> object:
    "Run this script with `args` in a fresh interpreter (with `pythonpath` first on the path); its JSON output."
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    if pythonpath: env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode: raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


class Busy:
    "A second process keeping one core busy while the block runs."
    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"]); time.sleep(0.5); return self
    def __exit__(self, *a):
        self.p.kill(); self.p.wait()


def _table(rows: list[dict], cols: list[str]) -> str:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] +
                     ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows])


def _med(rows, key, **where):
    vals = [r[key] for r in rows if all(r[k] == v for k, v in where.items())]
    return statistics.median(vals) if vals else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="problems per configuration")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per problem (after one warm-up)")
    ap.add_argument("--ref-seeds", type=int, default=2, help="problems per configuration also solved by the dense reference")
    ap.add_argument("--old", default=None, help="a checkout of the code before the restructure, timed side by side")
    ap.add_argument("--rounds", type=int, default=3, help="alternating (old, new) subprocess rounds of part 2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of parts 1 and 2")
    ap.add_argument("--scale", default=",".join(map(str, SCALE)), help="views of part 3 (x 24 objects)")
    ap.add_argument("--skip", default="", help="parts to skip, e.g. 'reference,threads'")
    ap.add_argument("--out", default="benchmarks/results", help="folder for bench_multiview.md ('' = none)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:                                  # a subprocess of parts 2 and 3: print JSON
        w = json.loads(a.worker)
        res = stage_times(**w) if "configs" in w else scale_point(**w)
        print(json.dumps(res)); return 0
    skip, report = set(a.skip.split(",")), []
    def say(title, text):
        block = f"### {title}\n\n{_load()} (2 cores)\n\n{text}\n"
        print(block, flush=True); report.append(block)
    if "stages" not in skip:
        rows = stage_times(CONFIGS, a.seeds, a.repeats, a.threads)
        agg = [dict(views=V, objects=O, candidates=_med(rows, "candidates", views=V, objects=O),
                    stage2_ms=1e3 * _med(rows, "t2", views=V, objects=O), stage3_ms=1e3 * _med(rows, "t3", views=V, objects=O),
                    predictor_ms=1e3 * _med(rows, "tp", views=V, objects=O),
                    solved=f"{sum(r['solved'] for r in rows if (r['views'], r['objects']) == (V, O))}/{a.seeds}") for V, O in CONFIGS]
        say(f"1. Stages ({a.threads} thread; CPU ms, medians over {a.seeds} problems)", _table(agg, list(agg[0])))
    if "reference" not in skip:
        rr = reference_ratio(CONFIGS, a.ref_seeds, 3, 5)
        agg = [dict(views=V, objects=O, ba_ms=_med(rr, "ba_ms", views=V, objects=O), ref_ms=_med(rr, "ref_ms", views=V, objects=O),
                    speedup=_med(rr, "speedup", views=V, objects=O),
                    same_cost=all(abs(r["cost_ba"] - r["cost_ref"]) < 0.01 * r["cost_ref"] for r in rr if (r["views"], r["objects"]) == (V, O)))
               for V, O in CONFIGS]
        say("1b. bundle_adjust against the dense-autograd reference (same start)", _table(agg, list(agg[0])))
    if a.old and "old" not in skip:
        w = json.dumps(dict(configs=CONFIGS, seeds=a.seeds, repeats=a.repeats, threads=a.threads))
        runs = {"old": [], "new": []}
        for _ in range(a.rounds):
            runs["old"].append(_subprocess(["--worker", w], a.old))
            runs["new"].append(_subprocess(["--worker", w], str(HERE.parent)))
        agg = []
        for V, O in CONFIGS:
            r = dict(views=V, objects=O)
            for k, name in (("t2", "stage2"), ("t3", "stage3"), ("tp", "predictor")):
                old = min(_med(x, k, views=V, objects=O) for x in runs["old"]); new = min(_med(x, k, views=V, objects=O) for x in runs["new"])
                r.update({f"{name} old ms": 1e3 * old, f"{name} new ms": 1e3 * new, f"{name} new/old": new / old})
            r["solved old/new"] = (f"{sum(x['solved'] for x in runs['old'][0] if (x['views'], x['objects']) == (V, O))}/"
                                   f"{sum(x['solved'] for x in runs['new'][0] if (x['views'], x['objects']) == (V, O))}")
            agg.append(r)
        say(f"2. Old ({a.old}) and new side by side ({a.threads} thread; CPU ms, the better of {a.rounds} alternating rounds)",
            _table(agg, list(agg[0])))
    if "scale" not in skip:
        pts = [_subprocess(["--worker", json.dumps(dict(V=int(v), threads=None))], str(HERE.parent)) for v in a.scale.split(",")]
        say("3. Scale: V views x 24 objects, 20% outliers (fresh process each; the predictor's default threads)",
            _table(pts, ["views", "candidates", "threads", "wall_s", "cpu_s", "matching_s", "peak_mb", "solved"]))
    if "threads" not in skip:
        rows = []
        for V in (4, 16, 64):
            for busy in (False, True):
                for th in (1, 2):
                    with (Busy() if busy else _Nothing()):
                        r = _subprocess(["--worker", json.dumps(dict(V=V, threads=th))], str(HERE.parent))
                    rows.append(dict(views=V, candidates=r["candidates"], busy_process=busy, threads=th, wall_s=r["wall_s"], cpu_s=r["cpu_s"]))
        say("4. Threads: 1 and 2, with and without a second busy process (V x 24 objects)", _table(rows, list(rows[0])))
    if a.out:
        out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
        (out / "bench_multiview.md").write_text("\n".join(report))
    return 0


class _Nothing:
    def __enter__(self): return self
    def __exit__(self, *a): return False


if __name__ == "__main__":
    sys.exit(main())
