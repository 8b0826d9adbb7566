"""Speed of the single-view pose networks (CPU or GPU): forward and training-step time of each backbone at each input
resolution and batch size, and one refiner iteration split into crop, render and network, all measured in one run.

Part 1 (network only): `PoseModel.net` on random 6-channel inputs; forward in eval mode under inference_mode; a
training step = forward in train mode + loss + backward + Adam step. Rounds are interleaved over the configurations
(the median is reported) so that a change of machine load hits all of them alike. Ratios: time of EfficientNet-B3
(the paper's) at the same resolution and batch / time of the row, and training samples per second.

With `--precisions float32,bfloat16` each network also runs with its backbone in bfloat16 (`PoseModelConfig.precision`;
column "x f32": the float32 step's time / the row's). Then the `correlation` backbone's local correlation as computed
(one matrix product per row shift) against the 49 shifted products it replaced.

Part 2 (one iteration of `PoseModel.forward`, the `paper` preset, the same with ResNet-18, and the `cpu` preset):
objects of the default set at random poses in 480 x 640 uint8 images;
the iteration's own timings (crop = DeepIM boxes + roi_align + K_crop, render = BatchRenderer, network) and their
shares. Rendering must not dominate.

Usage: python benchmarks/bench_singleview.py [--backbones ...] [--sizes 240x320,96x128] [--batches 1,8]
       [--rounds 3] [--threads 2] [--device cpu] [--iteration-batches 8,32] [--workers 1,2] [--precisions float32,bfloat16]
OMP_WAIT_POLICY=PASSIVE is set unless given: on a loaded machine spinning OpenMP threads slow 2-thread runs 5-10x.
"""
from __future__ import annotations
import argparse, dataclasses, os, statistics, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def time_forward(model, x, dev):
    model.eval()
    with torch.inference_mode():
        sync(dev); t = time.perf_counter(); model.net(x); sync(dev)
    return time.perf_counter() - t


def time_step(model, opt, x, dev):
    model.train()
    sync(dev); t = time.perf_counter()
    loss = model.net(x).square().mean()
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    sync(dev)
    return time.perf_counter() - t


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def part_networks(args, dev):
    from cosypose_nb.singleview.pose_model import PoseModel, PoseModelConfig
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    precisions = args.precisions.split(",")
    models = {}
    for name in args.backbones.split(","):
        for hw in sizes:
            for prec in precisions:
                m = PoseModel(PoseModelConfig(backbone=name, render_size=hw, precision=prec)).to(dev)
                torch.nn.init.normal_(m.pose_fc.weight, std=0.01)
                models[name, hw, prec] = (m, torch.optim.Adam(m.parameters(), 3e-4))
    g = torch.Generator().manual_seed(0)
    xs = {(hw, b): torch.rand(b, 6, *hw, generator=g).to(dev) for hw in sizes for b in batches}
    times = {}
    for (name, hw, prec), (m, opt) in models.items():                 # warm-up (allocator, kernels, thread pool)
        for b in batches:
            time_forward(m, xs[hw, b], dev); time_step(m, opt, xs[hw, b], dev)
    for r in range(args.rounds):
        for (name, hw, prec), (m, opt) in models.items():
            for b in batches:
                times.setdefault((name, hw, prec, b, "fwd"), []).append(time_forward(m, xs[hw, b], dev))
                times.setdefault((name, hw, prec, b, "step"), []).append(time_step(m, opt, xs[hw, b], dev))
        print(f"  round {r + 1}/{args.rounds} done ({load()})", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{'backbone':16s} {'size':>8s} {'precision':>9s} {'batch':>5s} {'params':>7s} {'forward':>9s} {'x B3':>6s} "
          f"{'train step':>10s} {'x B3':>6s} {'x f32':>6s} {'samples/s':>9s}")
    ratio = lambda ref, t: f"{ref / t:6.2f}" if ref else "     -"
    for (name, hw, prec), (m, _) in models.items():
        n = sum(p.numel() for p in m.parameters()) / 1e6
        for b in batches:
            f, s = med[name, hw, prec, b, "fwd"], med[name, hw, prec, b, "step"]
            ref_f, ref_s = med.get(("efficientnet-b3", hw, prec, b, "fwd")), med.get(("efficientnet-b3", hw, prec, b, "step"))
            print(f"{name:16s} {hw[0]:>3d}x{hw[1]:<4d} {prec:>9s} {b:5d} {n:6.2f}M {1e3 * f:7.1f}ms {ratio(ref_f, f)} "
                  f"{1e3 * s:8.1f}ms {ratio(ref_s, s)} {ratio(med.get((name, hw, 'float32', b, 'step')), s)} {b / s:9.1f}")


def shifted_products(a, b, d):
    "local_correlation as 49 shifted products summed over the channels (its earlier form), for comparison."
    import torch.nn.functional as F
    h, w = a.shape[-2:]
    pa, nb = F.pad(F.normalize(a, dim=1), (d, d, d, d)), F.normalize(b, dim=1)
    return torch.cat([(pa[:, :, dy:dy + h, dx:dx + w] * nb).sum(1, keepdim=True)
                      for dy in range(2 * d + 1) for dx in range(2 * d + 1)], 1)


def part_correlation(args, dev):
    "The `correlation` backbone's local correlation (d = 3, 64 channels at 16 x 22: a 64 x 85 crop): forward + backward."
    from cosypose_nb.singleview.backbones import local_correlation
    g = torch.Generator().manual_seed(2)
    print(f"\n{'local correlation':24s} {'dtype':>9s} {'batch':>5s} {'fwd+bwd':>9s} {'x shifted':>9s}")
    for dtype in (torch.float32, torch.bfloat16):
        for B in (8, 32):
            a, b = (torch.randn(B, 64, 16, 22, generator=g).to(dev, dtype).requires_grad_() for _ in range(2))
            med = {}
            for f in (shifted_products, local_correlation):
                def once():
                    sync(dev); t = time.perf_counter(); f(a, b, 3).float().square().sum().backward(); sync(dev)
                    return time.perf_counter() - t
                once()
                med[f] = statistics.median(once() for _ in range(max(3, args.rounds)))
            for f in (shifted_products, local_correlation):
                print(f"{f.__name__:24s} {str(dtype)[6:]:>9s} {B:5d} {1e3 * med[f]:7.1f}ms {med[shifted_products] / med[f]:9.2f}")


def part_iteration(args, dev):
    from cosypose_nb.datasets.objects import load_default_objects
    from cosypose_nb.rendering.batch import BatchRenderer
    from cosypose_nb.geometry.cameras import make_K
    from cosypose_nb.geometry.rotations import random_rotations
    from cosypose_nb.geometry.transforms import make_T
    from cosypose_nb.singleview.pose_model import PoseModel, POSE_MODEL_PRESETS
    objects = load_default_objects()
    g = torch.Generator().manual_seed(1)
    nmax = max(int(b) for b in args.iteration_batches.split(","))
    labels = [objects.labels[i] for i in torch.randint(len(objects.labels), (nmax,), generator=g)]
    t = torch.cat([0.2 * torch.rand(nmax, 2, generator=g, dtype=torch.float64) - 0.1,
                   0.5 + 0.5 * torch.rand(nmax, 1, generator=g, dtype=torch.float64)], -1)
    T = make_T(random_rotations(nmax, g), t)
    K = make_K(1066.778, 1067.487, 312.987, 241.311).expand(nmax, 3, 3)
    images = torch.randint(0, 256, (nmax, 3, 480, 640), generator=g, dtype=torch.uint8)
    paper, cpu = POSE_MODEL_PRESETS["paper"], POSE_MODEL_PRESETS["cpu"]
    configs = [paper, dataclasses.replace(paper, backbone="resnet18"), cpu]   # the presets (roi-align 4x4 / 2x2 samples)
    configs = [c for c in configs if c.backbone in args.backbones.split(",")] or configs[-1:]
    print(f"\n{'backbone':16s} {'size':>8s} {'batch':>5s} {'workers':>7s} {'crop':>8s} {'render':>8s} {'network':>9s} {'render share':>12s} {'ms/object':>9s}")
    for workers in (int(w) for w in args.workers.split(",")):
        with BatchRenderer(objects, n_workers=workers, backend="auto", device=dev) as renderer:
            for cfg in configs:
                name, hw = cfg.backbone, cfg.render_size
                model = PoseModel(cfg).to(dev).eval()
                for b in (int(v) for v in args.iteration_batches.split(",")):
                    run = lambda: model(images[:b], K[:b], T[:b], labels[:b], 1, renderer, objects)[0].timings
                    with torch.inference_mode():
                        run()
                        ts = [run() for _ in range(args.rounds)]
                    m = {k: statistics.median(t[k] for t in ts) for k in ("crop", "render", "network")}
                    tot = sum(m.values())
                    print(f"{name:16s} {hw[0]:>3d}x{hw[1]:<4d} {b:5d} {workers:7d} {1e3 * m['crop']:6.1f}ms {1e3 * m['render']:6.1f}ms "
                          f"{1e3 * m['network']:7.1f}ms {100 * m['render'] / tot:11.0f}% {1e3 * tot / b:9.1f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="efficientnet-b3,resnet18,resnet34,resnet10t,small,correlation")
    ap.add_argument("--sizes", default="240x320,96x128", help="input resolutions HxW")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iteration-batches", default="8,32")
    ap.add_argument("--workers", default="1,2", help="renderer worker processes")
    ap.add_argument("--precisions", default="float32,bfloat16", help="the backbone's arithmetic (PoseModelConfig.precision)")
    ap.add_argument("--skip-networks", action="store_true")
    ap.add_argument("--skip-iteration", action="store_true")
    args = ap.parse_args(argv)
    from cosypose_nb.core import get_device
    dev = get_device(args.device)
    torch.set_num_threads(args.threads)
    print(f"device {dev}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"torch {torch.__version__}; {load()} at the start")
    if not args.skip_networks: part_networks(args, dev); part_correlation(args, dev)
    if not args.skip_iteration: part_iteration(args, dev)
    print(f"\n{load()} at the end (the machine is shared: compare rows of one run, not runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
