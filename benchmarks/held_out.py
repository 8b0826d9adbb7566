"""The multi-view predictor on the 600 held-out problems: solve them, save the scenes, compare two runs.

The held-out problems of the multi-view issue: seeds 200-319, 500-559, 1000-1119, 3000-3059, 5000-5119 and
7000-7119, each of size `CONFIGS[seed % 6]` (views x objects), made by `make_problem(V, O, seed, objects=make_object_set())`.
Each problem is solved with `predict_scene`'s defaults and the scene is saved (labels, `T_WO`, `T_WC`, `view_ok`,
`cand_obj`, solved). Run it once with an older checkout first on the path and once with this one, then compare:

    PYTHONPATH=/work/wt/base .venv/bin/python benchmarks/held_out.py --save /tmp/old.npz
    PYTHONPATH=$PWD .venv/bin/python benchmarks/held_out.py --save /tmp/new.npz --compare /tmp/old.npz

The comparison prints the solved counts of both and the largest pose difference over the problems whose scenes have
the same objects (labels in order) and cameras placed; it exits 1 when a problem differs beyond `--atol` (1e-9)
or in its objects. It works with the flat layout of the code before the restructure (`cosypose_nb.multiview`,
`cosypose_nb.mvproblems`) and with the subpackages (`cosypose_nb.multiview.predictor`, `cosypose_nb.synthetic`,
`cosypose_nb.evaluation.metrics.evaluate_scene`)."""
from __future__ import annotations
import argparse, sys, time

import numpy as np

CONFIGS = [(4, 6), (4, 12), (8, 6), (8, 12), (16, 6), (16, 12)]
SEEDS = [*range(200, 320), *range(500, 560), *range(1000, 1120), *range(3000, 3060), *range(5000, 5120), *range(7000, 7120)]


def _api():
    "predict_scene, make_problem, make_object_set, evaluate_scene of whichever layout is on the path."
    try:
        from cosypose_nb.multiview.predictor import predict_scene
        from cosypose_nb.synthetic.mvproblems import make_problem, make_object_set
    except ImportError:
        from cosypose_nb.multiview import predict_scene
        from cosypose_nb.mvproblems import make_problem, make_object_set
    return predict_scene, make_problem, make_object_set, scene_metric()


def scene_metric():
    "`evaluate_scene` of whichever layout is on the path (evaluation.metrics; synthetic.mvproblems or mvproblems before)."
    try:
        from cosypose_nb.evaluation.metrics import evaluate_scene
    except ImportError:
        try:
            from cosypose_nb.synthetic.mvproblems import evaluate_scene
        except ImportError:
            from cosypose_nb.mvproblems import evaluate_scene
    return evaluate_scene


def solve_all(seeds, threads: int = 1, evaluate: bool = True) -> dict:
    """Solve the problems of `seeds`: a dict of arrays per seed ('s<seed>/<field>'); `solved` (`evaluate_scene`, about
    a second a problem: its dense ADD-S) only with `evaluate`."""
    import torch
    torch.set_num_threads(threads)
    predict_scene, make_problem, make_object_set, evaluate_scene = _api()
    objects = make_object_set()
    out = {}
    for s in seeds:
        V, O = CONFIGS[s % 6]
        p = make_problem(V, O, seed=s, objects=objects)
        pr = predict_scene(p.candidates, p.K, objects)
        if evaluate:
            out[f"s{s}/solved"] = np.array(bool(evaluate_scene(p, pr.labels, pr.T_WO, pr.T_WC, pr.view_ok)["solved"]))
        out.update({f"s{s}/labels": np.array(pr.labels, dtype=str), f"s{s}/T_WO": pr.T_WO.double().numpy(),
                    f"s{s}/T_WC": pr.T_WC.double().numpy(), f"s{s}/view_ok": pr.view_ok.numpy(),
                    f"s{s}/cand_obj": pr.cand_obj.numpy()})
    return out


def compare(a: dict, b: dict, seeds, atol: float = 1e-9) -> tuple[list, float]:
    "Problems that differ (seed, why) and the largest pose difference of the others."
    bad, worst = [], 0.0
    for s in seeds:
        k = lambda f: f"s{s}/{f}"
        if list(a[k("labels")]) != list(b[k("labels")]) or not np.array_equal(a[k("view_ok")], b[k("view_ok")]):
            bad.append((s, "objects or cameras differ")); continue
        if not np.array_equal(a[k("cand_obj")], b[k("cand_obj")]):
            bad.append((s, "candidate assignment differs")); continue
        d = max([float(np.abs(a[k(f)] - b[k(f)]).max()) for f in ("T_WO", "T_WC") if a[k(f)].size] + [0.0])
        worst = max(worst, d)
        if d > atol:
            bad.append((s, f"poses differ by {d:.3g}"))
    return bad, worst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--save", required=True, help="npz file for the scenes of this run")
    ap.add_argument("--compare", default=None, help="npz file of another run to compare with")
    ap.add_argument("--first", type=int, default=None, help="only the first N problems (a quick check)")
    ap.add_argument("--atol", type=float, default=1e-9)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    seeds = SEEDS[:a.first] if a.first else SEEDS
    t = time.perf_counter()
    new = solve_all(seeds, a.threads, evaluate=a.compare is None)
    np.savez_compressed(a.save, **new)
    import cosypose_nb
    print(f"{len(seeds)} problems solved by {cosypose_nb.__file__} in {time.perf_counter() - t:.0f} s "
          f"({a.threads} thread{'s' if a.threads > 1 else ''})")
    if a.compare is None:
        print(f"solved: {sum(bool(new[f's{s}/solved']) for s in seeds)}/{len(seeds)}")
        return 0
    old = dict(np.load(a.compare))
    bad, worst = compare(old, new, seeds, a.atol)
    n_old = sum(bool(old[f"s{s}/solved"]) for s in seeds)
    differ = {s for s, _ in bad}
    # a scene equal to the other run's solves the same problem; the others are evaluated here
    solved_new = sum(bool(old[f"s{s}/solved"]) for s in seeds if s not in differ)
    if differ:
        solved_new += sum(bool(v) for k, v in solve_all(sorted(differ), a.threads).items() if k.endswith("/solved"))
    print(f"solved: {n_old}/{len(seeds)} ({a.compare}) and {solved_new}/{len(seeds)} (this run); identical objects, "
          f"cameras and candidates in {len(seeds) - len([b for b in bad if 'poses' not in b[1]])}/{len(seeds)}; "
          f"largest pose difference {worst:.3g} (atol {a.atol:g})")
    for s, why in bad[:20]:
        print(f"  seed {s}: {why}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
