"""Multi-view benchmark: stage 2 (candidate matching) and stage 3 (object-level bundle adjustment).

For (views, objects) = (4, 6), (8, 6), (8, 12), (16, 12) it generates seeded synthetic problems
(`cosypose_nb.synthetic.mvproblems.make_problem`), times stage 2 (`cosypose_nb.multiview.matching.match_candidates`) and
stage 3 (`initialize_scene` + `bundle_adjust`) -- warm-up first, medians over repeats and seeds, on
the CPU with 2 threads, or with `--device cuda` on a GPU -- and, in the same run but after all of these
timings (its large autograd graphs churn the allocator and the caches), the reference: a dense-autograd
Levenberg-Marquardt built the way the paper's implementation is (`bundle_adjust_dense_autograd`), from
the same start, timed in interleaved rounds with `bundle_adjust` (each round: `--ba-block` back-to-back calls of
`bundle_adjust`, their median, then one call of the reference; the speed-up is the median of the
rounds' ratios -- the steady state of a call, as in a pipeline; the first call of each round, right
after the reference has swept the caches, is reported too, as the 'cold' speed-up); and the whole predictor (`predict_scene`: stages 2 and 3
with view registration, re-matching and the pose-space refinement) with its solved rate.
Errors are against the ground truth: the scene's pose of every object in every view where it was
detected (T_CO = T_WC^-1 T_WO) versus the true one, as a symmetric reprojection distance (px) and
a symmetric 3D distance (mm), next to the same errors of the single-view candidates.

    .venv/bin/python benchmarks/bench_multiview.py [--seeds 5] [--ref-seeds 3] [--device cpu] [--out benchmarks/results]

Without stage 2 (`match_candidates` missing) stage 3 runs on the ground-truth associations."""
from __future__ import annotations
import argparse, dataclasses, math, statistics, sys, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cosypose_nb.core import atomic_write, get_device
from cosypose_nb.geometry.transforms import invert_T
from cosypose_nb.geometry.symmetries import symmetric_distance, symmetric_reprojection_distance
from cosypose_nb.synthetic.mvproblems import make_problem
try:
    from cosypose_nb.synthetic.mvproblems import evaluate_scene
except ImportError:
    evaluate_scene = None
from cosypose_nb.multiview.bundle_adjustment import initialize_scene, bundle_adjust, bundle_adjust_dense_autograd
from cosypose_nb.multiview.predictor import predict_scene
from cosypose_nb.multiview.matching import symmetric_centres

try:
    from cosypose_nb.multiview.matching import match_candidates
except ImportError:                      # stage 2 not there yet: ground-truth associations
    match_candidates = None

CONFIGS = [(4, 6), (8, 6), (8, 12), (16, 12)]


SYNC = lambda: None                      # torch.cuda.synchronize on a GPU: a timing waits for the device's work


def timed(fn, repeats: int):
    "Run `fn` `repeats` times; return (median seconds, last result)."
    ts, out = [], None
    for _ in range(repeats):
        SYNC()
        t = time.perf_counter()
        out = fn()
        SYNC()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def on_device(pb, dev):
    "The problem with its inputs (candidates, K) on `dev`; the ground truth stays on the CPU for the errors."
    return dataclasses.replace(pb, candidates=pb.candidates.to(dev), K=pb.K.to(dev))


def cpu(x):
    "Tensors (in tuples/lists) moved back to the CPU for the error measures."
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, (tuple, list)):
        return type(x)(cpu(v) for v in x)
    return x


def gt_matching(pb):
    """Stage 2 replaced by the ground-truth associations: candidates keep their true object; each view
    pair sharing objects gets the relative pose T_C1C2 = T_C1O (T_C2O)^-1 of the shared candidate pair
    that agrees best with the others (symmetric distance), scored by the number of shared objects."""
    c, co = pb.candidates, pb.cand_gt_obj
    V = pb.n_views
    pairs, Ts, scores = [], [], []
    for a in range(V):
        for b in range(a + 1, V):
            ia = {int(co[i]): i for i in range(len(co)) if int(c.view_ids[i]) == a and co[i] >= 0}
            ib = {int(co[i]): i for i in range(len(co)) if int(c.view_ids[i]) == b and co[i] >= 0}
            shared = sorted(set(ia) & set(ib))
            if not shared:
                continue
            i1 = torch.tensor([ia[o] for o in shared]); i2 = torch.tensor([ib[o] for o in shared])
            labels = [pb.obj_labels[o] for o in shared]
            pts = pb.objects.points(labels, device=c.T_CO.device)
            syms = pb.objects.symmetries(labels, n_continuous=16, device=c.T_CO.device)
            # hypotheses T_C1O S (T_C2O)^-1 for every shared object and each of its symmetries S
            hyp = (c.T_CO[i1][:, None] @ syms @ invert_T(c.T_CO[i2])[:, None]).reshape(-1, 4, 4)
            d = torch.stack([symmetric_distance(c.T_CO[i1], h @ c.T_CO[i2], pts, syms) for h in hyp])   # (H, shared)
            key = (d < 0.05).sum(1) - d.clamp(max=0.05).sum(1)              # inliers, then the closest
            best = int(key.argmax())
            pairs.append((a, b)); Ts.append(hyp[best]); scores.append(float((d[best] < 0.05).sum()))
    vp = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    T = torch.stack(Ts) if Ts else torch.zeros(0, 4, 4, dtype=torch.float64)
    return vp, T, torch.tensor(scores, dtype=torch.float64), co.clone(), pb.n_objects


def stage2(pb):
    if match_candidates is None:
        return gt_matching(pb)
    m = match_candidates(pb.candidates, pb.objects, n_views=pb.n_views)
    return m.view_pairs, m.T_C1C2, m.pair_scores.to(torch.float64), m.cand_obj, m.n_objects


def scene_objects(pb, cand_obj, n_objects):
    "Label of each scene object (from its candidates) and its ground-truth object (majority vote, -1 if none)."
    labels, gt = [], []
    for o in range(n_objects):
        idx = (cand_obj == o).nonzero()[:, 0]
        labels.append(pb.candidates.labels[int(idx[0])] if len(idx) else pb.objects.labels[0])
        g = pb.cand_gt_obj[idx]
        g = g[g >= 0]
        gt.append(int(torch.mode(g).values) if len(g) else -1)
    return labels, torch.tensor(gt, dtype=torch.long)


def scene_models(pb, s2):
    """Model points, symmetries and symmetric centres of the scene objects of stage 2: constants of the object
    models, looked up once, outside the timings (as `predict_scene` does once per label)."""
    labels, _ = scene_objects(pb, s2[3], s2[4])
    pts, syms = pb.objects.points(labels), pb.objects.symmetries(labels, n_continuous=32)   # predict_scene's discretisation
    return pts, syms, symmetric_centres(pts, syms)


def run_stage3(pb, s2, ba_fn=bundle_adjust, init=None, models=None, **kw):
    "Stage 3: `initialize_scene` (unless `init` is given) then the Levenberg-Marquardt `ba_fn`."
    vp, Trel, ps, cand_obj, n_obj = s2
    c = pb.candidates
    pts, syms, cen = models if models is not None else scene_models(pb, s2)
    if init is None:
        init = initialize_scene(c.view_ids, cand_obj, c.T_CO, vp, Trel, ps, pb.n_views, n_obj, pts, syms, pb.K)
    T_WC0, T_WO0, ok = init
    root = int(ok.nonzero()[0, 0])
    res = ba_fn(c.view_ids, cand_obj, c.T_CO, pb.K, pts, syms, T_WC0, T_WO0, fixed_view=root, view_ok=ok, centres=cen, **kw)
    return res, ok, init


def scene_errors(pb, T_WC, T_WO, ok, cand_obj, n_obj):
    """Errors (px, mm) of the scene's T_CO for every detected (view, object) of the ground truth; a pair
    the scene misses (view not reconstructed, object not found) counts as missed, not in the means."""
    _, gt_of = scene_objects(pb, cand_obj, n_obj)
    vv, oo = pb.visible.nonzero(as_tuple=True)
    scene_of = torch.full((pb.n_objects,), -1, dtype=torch.long)
    for s, g in enumerate(gt_of.tolist()):
        if g >= 0 and scene_of[g] < 0:
            scene_of[g] = s
    m = (scene_of[oo] >= 0) & ok[vv].cpu()
    vv, oo = vv[m], oo[m]
    T = invert_T(T_WC[vv]) @ T_WO[scene_of[oo]]
    Tgt = pb.gt_T_CO()[vv, oo]
    L = [pb.obj_labels[o] for o in oo.tolist()]
    pts, syms = pb.objects.points(L), pb.objects.symmetries(L)
    px = symmetric_reprojection_distance(T, Tgt, pb.K[vv], pts, syms)
    mm = symmetric_distance(T, Tgt, pts, syms) * 1000
    return float(px.mean()), float(mm.mean()), 1 - float(m.float().mean())


def candidate_errors(pb):
    c, m = pb.candidates, pb.cand_gt_obj >= 0
    Tgt = pb.gt_T_CO()[c.view_ids[m], pb.cand_gt_obj[m]]
    L = [l for l, k in zip(c.labels, m.tolist()) if k]
    pts, syms = pb.objects.points(L), pb.objects.symmetries(L)
    px = symmetric_reprojection_distance(c.T_CO[m], Tgt, pb.K[c.view_ids[m]], pts, syms)
    return float(px.mean()), float(symmetric_distance(c.T_CO[m], Tgt, pts, syms).mean() * 1000)


def same_label_pairs(pb) -> int:
    "Candidate pairs of equal label in different views: what stage 2's hypotheses grow with."
    c = pb.candidates
    lab = {l: i for i, l in enumerate(sorted(set(c.labels)))}
    li = torch.tensor([lab[l] for l in c.labels])
    return int(((li[:, None] == li[None]) & (c.view_ids[:, None] < c.view_ids[None])).sum())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="problems per configuration")
    ap.add_argument("--ref-seeds", type=int, default=3, help="problems per configuration also solved by the dense reference")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per problem (after one warm-up)")
    ap.add_argument("--ref-repeats", type=int, default=3, help="interleaved (bundle_adjust block, reference) rounds per problem")
    ap.add_argument("--ba-block", type=int, default=5, help="back-to-back bundle_adjust calls per round (their median is timed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default=",".join(f"{v}x{o}" for v, o in CONFIGS), help="e.g. 4x6,8x6")
    ap.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda' or 'auto': where stages 2 and 3 run")
    ap.add_argument("--out", default="benchmarks/results",
                    help="folder for bench_multiview.md / .csv (bench_multiview_cuda.* on a GPU; '' = none)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    global SYNC
    if dev.type == "cuda":
        SYNC = lambda: torch.cuda.synchronize(dev)
    configs = [tuple(int(x) for x in s.split("x")) for s in a.configs.split(",")]
    print(f"torch {torch.__version__}, device {dev}"
          + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
          + f", {a.threads} CPU threads, float64, stage 2: "
          f"{'match_candidates' if match_candidates else 'ground-truth associations (match_candidates not found)'}")
    # pass 1: stages 2 and 3 and the predictor, every size, before any call of the reference (its large
    # autograd graphs churn the memory allocator and the caches, which slowed the next timings by up to 40%)
    results = []
    for V, O in configs:
        acc = {k: [] for k in ("C", "pairs", "t2", "t3", "tref", "cand_px", "cand_mm", "px", "mm", "miss",
                               "ref_px", "ref_mm", "ba_px_r", "ba_mm_r", "t3_r", "iters", "ref_iters", "solved", "t_init", "ratio", "ratio_cold", "t_pred", "pred_solved")}
        states = []
        for seed in range(a.seeds):
            pb0 = make_problem(V, O, seed=seed)
            pb = on_device(pb0, dev)
            acc["C"].append(len(pb.candidates)); acc["pairs"].append(same_label_pairs(pb0))
            stage2(pb)                                                       # warm-up
            t2, s2 = timed(lambda: stage2(pb), a.repeats)
            models = tuple(m.to(dev) for m in scene_models(pb0, cpu(s2)))
            run_stage3(pb, s2, models=models)
            t3, (res, ok, init) = timed(lambda: run_stage3(pb, s2, models=models), a.repeats)
            if seed < a.ref_seeds:                    # the initialisation's share of stage 3, in the same state of the machine
                acc["t_init"].append(max(t3 - timed(lambda: run_stage3(pb, s2, init=init, models=models), a.repeats)[0], 0.0))
            px, mm, miss = scene_errors(pb0, *cpu((res.T_WC, res.T_WO, ok, s2[3])), s2[4])
            cpx, cmm = candidate_errors(pb0)
            if evaluate_scene is not None:
                acc["solved"].append(float(evaluate_scene(pb0, scene_objects(pb0, cpu(s2[3]), s2[4])[0], *cpu((res.T_WO, res.T_WC, ok)))["solved"]))
            # the whole predictor (stages 2 + 3 with view registration, re-matching and pose-space refinement)
            predict_scene(pb.candidates, pb.K, pb.objects)
            t_pred, pred = timed(lambda: predict_scene(pb.candidates, pb.K, pb.objects), a.repeats)
            acc["t_pred"].append(t_pred)
            acc["pred_solved"].append(float(evaluate_scene(pb0, pred.labels, *cpu((pred.T_WO, pred.T_WC, pred.view_ok)))["solved"]))
            for k, v in zip(("t2", "t3", "px", "mm", "miss", "cand_px", "cand_mm", "iters"),
                            (t2, t3, px, mm, miss, cpx, cmm, res.n_iters)):
                acc[k].append(v)
            states.append((pb0, pb, s2, models, init, ok))
            print(f"  {V}x{O} seed {seed}: stage2 {t2 * 1e3:.1f} ms, stage3 {t3 * 1e3:.1f} ms, BA {px:.2f} px {mm:.1f} mm", flush=True)
        results.append((V, O, acc, states))
    # pass 2: the reference LM against bundle_adjust alone, from the same start, on the first --ref-seeds problems:
    # interleaved rounds (a block of bundle_adjust calls, one reference call): both see the same state of the
    # machine; the block's median is a call's steady state, its first call the cold one
    for V, O, acc, states in results:
        for seed, (pb0, pb, s2, models, init, ok) in enumerate(states[:a.ref_seeds]):
            tb, tb_cold, tr = [], [], []
            for _ in range(a.ref_repeats):
                blk = []
                for _ in range(max(a.ba_block, 1)):
                    t, (res_b, _, _) = timed(lambda: run_stage3(pb, s2, init=init, models=models), 1); blk.append(t)
                tb.append(statistics.median(blk)); tb_cold.append(blk[0])
                t, (res_r, _, _) = timed(lambda: run_stage3(pb, s2, bundle_adjust_dense_autograd, init=init, models=models), 1)
                tr.append(t)
            t_ba, t_ref = statistics.median(tb), statistics.median(tr)
            acc["ratio"].append(statistics.median([r_ / b_ for r_, b_ in zip(tr, tb)]))
            acc["ratio_cold"].append(statistics.median([r_ / b_ for r_, b_ in zip(tr, tb_cold)]))
            rpx, rmm, _ = scene_errors(pb0, *cpu((res_r.T_WC, res_r.T_WO, ok, s2[3])), s2[4])
            bpx, bmm, _ = scene_errors(pb0, *cpu((res_b.T_WC, res_b.T_WO, ok, s2[3])), s2[4])
            for k, v in zip(("tref", "t3_r", "ref_px", "ref_mm", "ba_px_r", "ba_mm_r", "ref_iters"),
                            (t_ref, t_ba, rpx, rmm, bpx, bmm, res_r.n_iters)):
                acc[k].append(v)
            print(f"  {V}x{O} seed {seed}: bundle_adjust {t_ba * 1e3:.2f} ms, reference {t_ref * 1e3:.0f} ms "
                  f"({acc['ratio'][-1]:.1f}x), {bpx:.2f} / {rpx:.2f} px", flush=True)
    rows = []
    for V, O, acc, _ in results:
        r = dict(views=V, objects=O)
        med = {k: statistics.median(v) if v else float("nan") for k, v in acc.items()}
        mean = {k: float(np.mean(v)) if v else float("nan") for k, v in acc.items()}
        r.update({
            "candidates": med["C"], "same-label pairs": med["pairs"],
            "stage 2 ms": med["t2"] * 1e3, "stage 3 ms": med["t3"] * 1e3, "2+3 ms": (med["t2"] + med["t3"]) * 1e3,
            "BA iters": med["iters"],
            "reference ms": med["tref"] * 1e3, "ref iters": med["ref_iters"],
            "BA ms": statistics.median(acc["t3_r"]) * 1e3 if acc["t3_r"] else float("nan"),
            "LM speed-up vs ref": statistics.median(acc["ratio"]) if acc["ratio"] else float("nan"),
            "LM speed-up, cold": statistics.median(acc["ratio_cold"]) if acc["ratio_cold"] else float("nan"),
            "stage 3 speed-up vs ref": statistics.median([(t + i) / (b + i) for t, b, i in zip(acc["tref"], acc["t3_r"], acc["t_init"])])
                                       if acc["tref"] else float("nan"),
            "cand px": mean["cand_px"], "BA px": mean["px"], "ref px (BA px)": f"{mean['ref_px']:.2f} ({mean['ba_px_r']:.2f})",
            "cand mm": mean["cand_mm"], "BA mm": mean["mm"], "ref mm (BA mm)": f"{mean['ref_mm']:.1f} ({mean['ba_mm_r']:.1f})",
            "missed": mean["miss"], "solved (2+3 only)": mean["solved"],
            "predictor ms": med["t_pred"] * 1e3, "predictor solved": mean["pred_solved"],
            "2+3 us / (VxO)": (med["t2"] + med["t3"]) * 1e6 / (V * O),
            "2+3 us / pair": (med["t2"] + med["t3"]) * 1e6 / max(med["pairs"], 1),
        })
        rows.append(r)
    df = pd.DataFrame(rows)
    if len(df) > 1:                        # growth: log-log slope of the time against V x O and against the pairs
        x1, x2, y = np.log(df["views"] * df["objects"]), np.log(df["same-label pairs"]), np.log(df["2+3 ms"])
        growth = (f"growth of stage 2+3 time: exponent {np.polyfit(x1, y, 1)[0]:.2f} in V x O, "
                  f"{np.polyfit(x2, y, 1)[0]:.2f} in same-label candidate pairs "
                  f"(stage 3 alone: {np.polyfit(x1, np.log(df['stage 3 ms']), 1)[0]:.2f} in V x O)")
    else:
        growth = ""
    table = df.to_markdown(index=False, floatfmt=".2f")
    print()
    print(table)
    print(growth)
    print("stage 3 = initialize_scene + bundle_adjust; 'BA ms' and 'reference ms': the Levenberg-Marquardt alone "
          "(bundle_adjust, the dense-autograd reference) from the same start on the first --ref-seeds problems; "
          "'LM speed-up': the median over problems of the median ratio of interleaved timings (bundle_adjust: the median "
          "of a block of --ba-block back-to-back calls; 'cold': the block's first call, right after a reference call); 'stage 3 speed-up': with the same initialisation added to both; "
          "'ref px (BA px)': the errors of both on those problems. Errors: mean over the detected (view, object) "
          "pairs of the ground truth; 'missed': the share of them the scene does not reconstruct.")
    if a.out:
        out = Path(a.out)
        name = "bench_multiview" + ("" if dev.type == "cpu" else f"_{dev.type}")   # a GPU run keeps the CPU record
        with atomic_write(out / f"{name}.md") as f:
            f.write(f"device: {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
                    + f", torch {torch.__version__}, {a.threads} CPU threads\n\n" + table + "\n\n" + growth + "\n")
        with atomic_write(out / f"{name}.csv") as f:
            df.to_csv(f, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
