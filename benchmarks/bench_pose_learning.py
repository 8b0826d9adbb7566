"""Does the single-view stage work? Issue 15's criteria (a) and (b) on held-out recorded images.

(a) the refiner alone, from the ground-truth poses perturbed with the paper's noise (15 degrees per axis, 1 cm in x
    and y, 5 cm in depth; a fixed seed), `--iters` iterations: median ADD-S and the share of objects within
    ADD-S < 0.1 diameter, before and after each iteration (the issue asks for a 2x lower median and a doubled share);
(b) the coarse model from the ground-truth visible boxes, then the refiner: recall at ADD-S < 0.1 d, overall and by
    object, after each stage.

Both run through `singleview.inference.PosePredictor` with models read by `load_pose_model` (a run folder or
`data/checkpoints/{coarse,refiner}`), ADD-S is `evaluation.metrics.adi_batch`. Held-out data: a recording of another
seed with the YCB-Video camera, e.g.

    cosypose-nb record --scenes 200 --views 1 --objects-per-scene 1,3 --seed 2000 --resolution 480x640 \\
        --K 1066.778,1067.487,312.987,241.311 --out HELDOUT
    python benchmarks/bench_pose_learning.py --data HELDOUT --coarse data/checkpoints/coarse \\
        --refiner data/checkpoints/refiner --out results.json

Prints the tables (markdown) and writes them as JSON with `--out`.
"""
from __future__ import annotations
import argparse, json, math, os, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch


def adds(T: torch.Tensor, T_gt: torch.Tensor, labels: list, objects) -> torch.Tensor:
    "ADD-S (B,) metres of poses `T` against `T_gt` (B, 4, 4), one k-d tree per object model."
    from cosypose_nb.evaluation.metrics import adi_batch
    out = torch.zeros(len(labels), dtype=torch.float64)
    for l in sorted(set(labels)):
        m = torch.tensor([x == l for x in labels])
        pts = objects.points([l], dtype=torch.float64)[0]
        out[m] = adi_batch(T[m, :3, :3].double(), T[m, :3, 3].double(), T_gt[m, :3, :3].double(),
                           T_gt[m, :3, 3].double(), pts)
    return out


def summary(e: torch.Tensor, d: torch.Tensor, labels: list) -> dict:
    "Median and mean ADD-S (mm), share within 0.1 d, and that share by object."
    ok = (e < 0.1 * d).double()
    per = {l: round(float(ok[torch.tensor([x == l for x in labels])].mean()), 3) for l in sorted(set(labels))}
    return dict(median_mm=round(1e3 * float(e.median()), 2), mean_mm=round(1e3 * float(e.mean()), 2),
                share=round(float(ok.mean()), 3), by_object=per)


def load_heldout(folder, min_visib: float, max_objects: int):
    "Every object of the held-out folder with visible fraction >= min_visib (at most max_objects), unaugmented."
    from cosypose_nb.singleview.pose_data import PoseDataset, PoseDataConfig
    ds = PoseDataset([folder], PoseDataConfig(min_visib=min_visib), augment=False)
    idx = np.linspace(0, len(ds) - 1, min(len(ds), max_objects)).round().astype(int)
    return [ds[int(i)] for i in idx]


def record_heldout(prefix: str = "bench_pose_") -> str:
    "Record 40 held-out scenes (seed 2000, YCB-Video camera, 1-3 objects) into a temporary folder; returns it."
    import tempfile
    from cosypose_nb.cli import main as cli
    out = os.path.join(tempfile.mkdtemp(prefix=prefix), "heldout")
    rc = cli(["record", "--scenes", "40", "--views", "1", "--objects-per-scene", "1,3", "--seed", "2000",
              "--resolution", "480x640", "--K", "1066.778,1067.487,312.987,241.311", "--workers", "0",
              "--no-progress", "--out", out])
    if rc: raise SystemExit(f"recording the held-out images failed ({rc})")
    return out


def run_chunks(samples, fn, chunk: int = 32):
    "Apply `fn(images, K, view_ids, labels, rows)` -> (n, 4, 4) to the samples in chunks; concatenated."
    out = []
    for s in range(0, len(samples), chunk):
        part = samples[s:s + chunk]
        images = torch.stack([p["rgb"] for p in part]); K = torch.stack([p["K"] for p in part])
        out.append(fn(images, K, torch.arange(len(part)), [p["label"] for p in part], slice(s, s + len(part))))
    return torch.cat(out)


def watch_hidden(model) -> dict | None:
    """Which units of the hidden layer of a 'flatten' or 'flatten_bn' head fire (> 0) while `model` runs (a forward hook): the
    returned dict fills as it runs; `hidden_report` reads it. None for a model without a hidden layer."""
    if model is None or getattr(model, "hidden", None) is None: return None
    stats = {"ever": None, "active": 0.0, "n": 0}
    def hook(module, inputs, out):
        on = out.detach() > 0
        stats["ever"] = on.any(0) if stats["ever"] is None else stats["ever"] | on.any(0)
        stats["active"] += float(on.float().mean(1).sum()); stats["n"] += len(on)
    model.hidden.register_forward_hook(hook)
    return stats


def hidden_report(stats: dict | None) -> dict | None:
    "{'ever_active': units that fired at least once, 'units': width, 'mean_active': mean share firing per sample}."
    if not stats or stats["ever"] is None: return None
    return dict(ever_active=int(stats["ever"].sum()), units=int(stats["ever"].numel()),
                mean_active=round(stats["active"] / max(1, stats["n"]), 3))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="held-out BOP split folder (recorded with another seed); default: record 40 "
                    "scenes (seed 2000, YCB-Video camera, 1-3 objects) into a temporary folder")
    ap.add_argument("--coarse", default="data/checkpoints/coarse", help="coarse model: run or checkpoint folder ('' : none)")
    ap.add_argument("--refiner", default="data/checkpoints/refiner", help="refiner model: run or checkpoint folder ('' : none)")
    ap.add_argument("--objects", default="default")
    ap.add_argument("--iters", type=int, default=4, help="refiner iterations")
    ap.add_argument("--min-visib", type=float, default=0.3, help="objects at least this visible")
    ap.add_argument("--max-objects", type=int, default=400)
    ap.add_argument("--seed", type=int, default=12345, help="seed of the input noise of (a)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--precision", default="float32", choices=("float32", "bfloat16"), help="the networks' backbones at inference: float32 or bfloat16")
    ap.add_argument("--out", help="write the results as JSON")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from cosypose_nb.synthetic.recording import load_objects
    from cosypose_nb.rendering.batch import BatchRenderer
    from cosypose_nb.singleview.inference import PosePredictor, load_pose_model
    from cosypose_nb.singleview.training import paper_pose_noise, keep_in_front
    from cosypose_nb.structures import Candidates, Detections
    objects = load_objects(a.objects)
    if a.data is None: a.data = record_heldout()
    samples = load_heldout(a.data, a.min_visib, a.max_objects)
    labels = [p["label"] for p in samples]
    T_gt = torch.stack([p["T_CO"] for p in samples]).double()
    d = objects.diameters(labels, dtype=torch.float64)
    coarse = load_pose_model(a.coarse, "cpu", a.precision) if a.coarse else None
    refiner = load_pose_model(a.refiner, "cpu", a.precision) if a.refiner else None
    renderer = BatchRenderer(objects, n_workers=1)
    pred = PosePredictor(coarse, refiner, objects, renderer)
    watched = {"coarse": watch_hidden(coarse), "refiner": watch_hidden(refiner)}
    res = dict(data=str(a.data), n_objects=len(samples), min_visib=a.min_visib, load=os.getloadavg()[0], precision=a.precision)
    t0 = time.time()

    def refine_from(T_start, name):
        T = T_start
        for k in range(a.iters):
            T = run_chunks(samples, lambda im, K, v, l, sl: pred.refine(
                im, K, Candidates(v, l, torch.ones(len(l)), T[sl]), n_iterations=1).T_CO.double())
            res[f"{name}_refiner{k + 1}"] = summary(adds(T, T_gt, labels, objects), d, labels)

    try:
        if refiner is not None:
            g = torch.Generator().manual_seed(a.seed)
            T_in = keep_in_front(paper_pose_noise(T_gt, 15.0, (0.01, 0.01, 0.05), generator=g), T_gt)   # depth >= 0.5 x the true one, as in training
            res["a_input"] = summary(adds(T_in, T_gt, labels, objects), d, labels)
            refine_from(T_in, "a")
        if coarse is not None:
            boxes = torch.stack([p["box"] for p in samples]).double()
            init, after = [], []
            def run_coarse(im, K, v, l, sl):
                est = pred.run(im, K, Detections(v, l, torch.ones(len(l)), boxes[sl]), n_coarse=1, n_refiner=0)
                init.append(est.T_CO_init.double()); return est.T_CO_coarse.double()
            T_c = run_chunks(samples, run_coarse)
            res["b_init"] = summary(adds(torch.cat(init), T_gt, labels, objects), d, labels)
            res["b_coarse"] = summary(adds(T_c, T_gt, labels, objects), d, labels)
            if refiner is not None: refine_from(T_c, "b")
    finally:
        renderer.close()
    res["seconds"] = round(time.time() - t0, 1)
    res["hidden_units"] = {k: hidden_report(v) for k, v in watched.items() if hidden_report(v)}
    print_tables(res, objects)
    if a.out:
        with open(a.out, "w") as f: json.dump(res, f, indent=1)
    return res


def print_tables(res: dict, objects) -> None:
    "The (a) and (b) tables in markdown."
    rows = [k for k in res if isinstance(res[k], dict) and "median_mm" in res[k]]
    print(f"held-out: {res['data']}, {res['n_objects']} objects (visible >= {res['min_visib']}), load {res['load']:.1f}")
    for k, h in res.get("hidden_units", {}).items():
        print(f"{k}: {h['ever_active']} of the {h['units']} hidden units of its head fired at least once; "
              f"{h['mean_active']:.1%} of them per sample on average")
    print("\n| stage | median ADD-S (mm) | share ADD-S < 0.1 d | mean ADD-S (mm) |\n|---|---|---|---|")
    for k in rows: print(f"| {k} | {res[k]['median_mm']} | {res[k]['share']} | {res[k]['mean_mm']} |")
    if "a_input" in res and "a_refiner1" in res:
        last = [k for k in rows if k.startswith("a_refiner")][-1]
        print(f"\n(a): median {res['a_input']['median_mm']} -> {res[last]['median_mm']} mm "
              f"({res['a_input']['median_mm'] / max(res[last]['median_mm'], 1e-9):.2f}x lower; the issue asks 2x), "
              f"share {res['a_input']['share']} -> {res[last]['share']} "
              f"({res[last]['share'] / max(res['a_input']['share'], 1e-9):.2f}x; the issue asks 2x)")
    b = [k for k in rows if k.startswith("b_")]
    if b:
        labs = sorted(res[b[0]]["by_object"])
        names = {l: getattr(objects, "names", {}).get(l, l) if isinstance(getattr(objects, "names", None), dict) else l for l in labs}
        print("\n(b) recall at ADD-S < 0.1 d by object\n\n| stage | all | " + " | ".join(names[l] for l in labs) + " |")
        print("|---" * (len(labs) + 2) + "|")
        for k in b: print(f"| {k} | {res[k]['share']} | " + " | ".join(str(res[k]["by_object"][l]) for l in labs) + " |")


if __name__ == "__main__":
    main()
