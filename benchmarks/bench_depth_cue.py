"""Can depth be read from a crop and a rendering when the rotation is wrong? A learning-free probe of the refiner's task.

The refiner corrects depth by comparing the apparent size of the object in the image crop with that of the rendering
at the current estimate (chapter 35). This probe does that comparison by search, with no network: the edge maps of
the crop and of the rendering (`pose_model.edge_maps`), the rendering's map zoomed as if the depth were multiplied by
each factor of a grid (`pose_model.zoom_maps`) and shifted by every offset of a window (+-12 px), the normalised
correlation of each with the crop's map; the best factor and offset make the update `v_z`, `v_xy`
(`pose_model.apply_update`, the rotation unchanged). Crops are made as the `cpu` preset's refiner makes them. It runs on held-out recorded images, from the ground-truth poses perturbed as the refiner's
inputs (`training.paper_pose_noise`: 1 cm in x and y, 5 cm in depth) with each rotation noise of `--rot-deg`, the
same draws scaled, so the rows differ only in the rotation error.

A second cue, one no image gives: the object's true outline. The rendering at the ground truth in the same crop
gives the true silhouette; the square root of the ratio of the silhouettes' areas (input / true) is the depth
ratio when the rotation is exact, and tells how well a size cue that ignores the rotation could do at best.

Columns: the median relative depth error |z_in / z_gt - 1| before and after the search, their ratio; the median
ADD-S and the share of objects within ADD-S < 0.1 d before and after; the depth error after the outline-area cue;
and 'exact x-y-z', the median ADD-S when the translation is set to the ground truth (what a perfect depth and x-y
correction could give at that rotation error).

    python benchmarks/bench_depth_cue.py --data HELDOUT [--rot-deg 0 3 6 10 15] [--size 64x85] [--max-objects 300]

Without `--data` it records 40 held-out scenes (seed 2000, YCB-Video camera, 1-3 objects) into a temporary folder,
as `bench_pose_learning.py` does.
"""
from __future__ import annotations
import argparse, os, sys, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pose_learning import adds, load_heldout, record_heldout                     # noqa: E402  (the same held-out samples)


def scale_shift_search(crops: torch.Tensor, renders: torch.Tensor, zooms, max_shift: int):
    """The best depth factor and image shift of `renders` (B, 3, h, w) against `crops` (B, 3, h, w), both in [0, 1]:
    the normalised correlation of their edge maps over the depth factors `zooms` (a list, no unit) x the shifts of
    at most `max_shift` crop px. Returns v_z (B,), no unit, and v_xy (B, 2) crop px (x, y)."""
    from cosypose_nb.singleview.pose_model import edge_maps, zoom_maps
    B, (h, w), Z, P = len(crops), crops.shape[-2:], len(zooms), max_shift
    ei, er = edge_maps(crops), zoom_maps(edge_maps(renders), zooms)      # (B, 1, h, w), (B, Z, h, w)
    er = er - er.mean((-2, -1), keepdim=True)
    er = er / er.flatten(2).norm(dim=-1)[..., None, None].clamp(min=1e-6)
    x = F.pad(ei, (P, P, P, P), mode="replicate")
    c = F.conv2d(x.expand(B, Z, *x.shape[-2:]).reshape(1, B * Z, *x.shape[-2:]), er.reshape(B * Z, 1, h, w),
                 groups=B * Z).reshape(B, Z, 2 * P + 1, 2 * P + 1)
    ones = x.new_ones(1, 1, h, w)                                        # / the norm of the crop's window, centred
    c = c / (F.conv2d(x.square(), ones) - F.conv2d(x, ones).square() / (h * w)).clamp(min=1e-12).sqrt()
    best = c.flatten(1).argmax(1)
    n = (2 * P + 1) ** 2
    dy, dx = (best % n) // (2 * P + 1) - P, (best % n) % (2 * P + 1) - P
    return crops.new_tensor(list(zooms))[best // n], torch.stack([dx, dy], -1).to(crops.dtype)


def probe(samples, objects, renderer, rot_deg: float, size, zooms, max_shift: int, seed: int, chunk: int = 32):
    """Poses (N, 4, 4) float64 of `samples`: ground truth, input (perturbed with `rot_deg`, the draws of `seed`),
    after the search; and the depth ratios v_z (N,) of the true outline's area. `size`: the crops' (h, w) px."""
    from cosypose_nb.singleview.pose_model import POSE_MODEL_PRESETS, crop_inputs, apply_update
    from cosypose_nb.singleview.training import paper_pose_noise, keep_in_front
    from cosypose_nb.singleview.config import TrainConfig
    cpu = POSE_MODEL_PRESETS["cpu"]                 # the crops of the cpu preset's refiner (its lambda and sampling)
    T_gt = torch.stack([p["T_CO"] for p in samples]).double()
    g = torch.Generator().manual_seed(seed)
    T_in = keep_in_front(paper_pose_noise(T_gt, rot_deg, TrainConfig().trans_noise, generator=g), T_gt)   # depth >= 0.5 x true
    out, v_area = [], []
    for s in range(0, len(samples), chunk):
        part, T = samples[s:s + chunk], T_in[s:s + chunk]
        labels = [p["label"] for p in part]
        images, K = torch.stack([p["rgb"] for p in part]), torch.stack([p["K"] for p in part]).float()
        crops, _, K_crop = crop_inputs(images, K, T.float(), objects.points(labels, dtype=torch.float32), size, cpu.lamb,
                                       cpu.crop_sampling_ratio)
        r = renderer.render(labels, T.float(), K_crop, size, render_depth=True)
        renders, area_in = r.rgb, (r.depth > 0).sum((1, 2, 3)).double()
        T_true = T_gt[s:s + chunk].float()
        area_gt = (renderer.render(labels, T_true, K_crop, size, render_depth=True).depth > 0).sum((1, 2, 3)).double()
        v_area.append((area_in / area_gt.clamp(min=1)).sqrt())
        v_z, v_xy = scale_shift_search(crops, renders, zooms, max_shift)
        eye = torch.eye(3, dtype=torch.float64).expand(len(part), 3, 3)
        out.append(apply_update(T, K_crop.double(), eye, v_xy.double(), v_z.double()))
    return T_gt, T_in, torch.cat(out), torch.cat(v_area)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="held-out BOP split folder; default: record 40 scenes into a temporary folder")
    ap.add_argument("--objects", default="default")
    ap.add_argument("--rot-deg", type=float, nargs="+", default=[0.0, 3.0, 6.0, 10.0, 15.0],
                    help="rotation noise per axis, degrees (the paper's: 15)")
    ap.add_argument("--size", help="crop and rendering size HxW (default: the cpu preset's render_size, 64x85)")
    ap.add_argument("--zoom-range", type=float, default=0.15, help="depth factors 1 +- this")
    ap.add_argument("--zoom-steps", type=int, default=31, help="depth factors in the grid (31: steps of 0.01)")
    ap.add_argument("--max-shift", type=int, default=12, help="crop px (1 cm is about 6 px at 1 m in a 64 x 85 crop)")
    ap.add_argument("--min-visib", type=float, default=0.3)
    ap.add_argument("--max-objects", type=int, default=300)
    ap.add_argument("--seed", type=int, default=12345, help="seed of the input noise (that of bench_pose_learning)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from cosypose_nb.synthetic.recording import load_objects
    from cosypose_nb.rendering.batch import BatchRenderer
    from cosypose_nb.singleview.pose_model import POSE_MODEL_PRESETS
    h, w = POSE_MODEL_PRESETS["cpu"].render_size if a.size is None else (int(v) for v in a.size.lower().split("x"))
    zooms = torch.linspace(1 - a.zoom_range, 1 + a.zoom_range, a.zoom_steps).tolist()
    objects = load_objects(a.objects)
    if a.data is None: a.data = record_heldout("bench_depth_")
    samples = load_heldout(a.data, a.min_visib, a.max_objects)
    labels = [p["label"] for p in samples]
    d = objects.diameters(labels, dtype=torch.float64)
    renderer = BatchRenderer(objects, n_workers=1)
    rows, t0 = [], time.time()
    try:
        for r in a.rot_deg:
            T_gt, T_in, T_out, v_area = probe(samples, objects, renderer, r, (h, w), zooms, a.max_shift, a.seed)
            T_exact = T_in.clone(); T_exact[:, :3, 3] = T_gt[:, :3, 3]
            zerr = lambda T: float((T[:, 2, 3] / T_gt[:, 2, 3] - 1).abs().median())
            z_area = float((v_area * T_in[:, 2, 3] / T_gt[:, 2, 3] - 1).abs().median())
            e_in, e_out, e_ex = (adds(T, T_gt, labels, objects) for T in (T_in, T_out, T_exact))
            share = lambda e: float((e < 0.1 * d).double().mean())
            rows.append(dict(rot_deg=r, z_in=zerr(T_in), z_out=zerr(T_out), adds_in=1e3 * float(e_in.median()),
                             adds_out=1e3 * float(e_out.median()), share_in=share(e_in), share_out=share(e_out),
                             z_area=z_area, adds_exact=1e3 * float(e_ex.median())))
    finally:
        renderer.close()
    print(f"held-out: {a.data}, {len(samples)} objects (visible >= {a.min_visib}); crops {h}x{w}; depth factors "
          f"{zooms[0]:.2f}-{zooms[-1]:.2f} ({a.zoom_steps}); shifts +-{a.max_shift} px; {time.time() - t0:.0f} s\n")
    print("| rotation noise (deg/axis) | depth error in -> out | out / in | median ADD-S in -> out (mm) | "
          "share < 0.1 d in -> out | depth error, true outline's area | median ADD-S, exact x-y-z (mm) |\n"
          "|---|---|---|---|---|---|---|")
    for q in rows:
        print(f"| {q['rot_deg']:g} | {q['z_in']:.4f} -> {q['z_out']:.4f} | {q['z_out'] / q['z_in']:.2f} | "
              f"{q['adds_in']:.1f} -> {q['adds_out']:.1f} | {q['share_in']:.3f} -> {q['share_out']:.3f} | {q['z_area']:.4f} | {q['adds_exact']:.1f} |")
    return rows


if __name__ == "__main__":
    main()
