"""Speed of the Mask R-CNN detector presets (CPU or GPU): inference and training-step time at a few input sizes,
all measured in one run, side by side.

Inference: `Detector.detect` (network + selection + masks as bool) on B random uint8 images, under inference mode.
Training step: `detector_step` (the five Mask R-CNN losses) + backward + Adam step, on B images with three objects
each (boxes and masks of random rectangles). Rounds are interleaved over the configurations (the median is
reported), so that a change of machine load hits all of them alike. Wall time and the process's CPU time (all
threads) are both printed; on a loaded shared machine the CPU time is the steadier number. Ratios: time of the
row / time of the `cpu` preset at 240x320 (the training recipe's), and images per second.

Usage: python benchmarks/bench_detector.py [--presets cpu,paper] [--sizes 240x320,480x640] [--batch 2]
       [--rounds 3] [--threads 1] [--device cpu]
Each preset's network resizes every image to its own min_size / max_size; here they are set to the image size,
so that a size is the size the network computes on. OMP_WAIT_POLICY=PASSIVE is set unless given.
"""
from __future__ import annotations
import argparse, dataclasses, os, statistics, time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch


def sync(dev):
    if dev.type == "cuda": torch.cuda.synchronize()


def timed(fn, dev):
    sync(dev); t, c = time.perf_counter(), time.process_time()
    fn(); sync(dev)
    return time.perf_counter() - t, time.process_time() - c


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def targets(B, hw, dev, g):
    H, W = hw
    out = []
    for _ in range(B):
        x1 = torch.randint(0, W // 2, (3,), generator=g); y1 = torch.randint(0, H // 2, (3,), generator=g)
        w = torch.randint(16, W // 3, (3,), generator=g); h = torch.randint(16, H // 3, (3,), generator=g)
        boxes = torch.stack([x1, y1, x1 + w, y1 + h], 1).float()
        masks = torch.zeros(3, H, W, dtype=torch.uint8)
        for k, (a, b, c, d) in enumerate(boxes.long().tolist()): masks[k, b:d, a:c] = 1
        out.append({"boxes": boxes.to(dev), "labels": torch.tensor([1, 2, 3], device=dev), "masks": masks.to(dev)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="cpu,paper")
    ap.add_argument("--sizes", default="240x320,480x640")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cosypose_nb.core import get_device
    from cosypose_nb.singleview.detector import DETECTOR_PRESETS, DetectorNet, DetectionBatch, detector_step
    from cosypose_nb.singleview.detection import Detector, DetectionConfig
    dev = get_device(args.device)
    labels = [f"obj_{k:06d}" for k in range(1, 11)]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    g = torch.Generator().manual_seed(0)
    setups = {}
    for name in args.presets.split(","):
        for hw in sizes:
            torch.manual_seed(0)
            cfg = dataclasses.replace(DETECTOR_PRESETS[name], min_size=min(hw), max_size=max(hw))
            net = DetectorNet(cfg, labels).to(dev)
            opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], 1e-4)
            ims = torch.randint(0, 256, (args.batch, 3, *hw), dtype=torch.uint8, generator=g)
            batch = DetectionBatch(list(ims), targets(args.batch, hw, "cpu", g), torch.zeros(args.batch), torch.zeros(args.batch),
                                   torch.zeros(args.batch)).to(dev)
            setups[name, hw] = (net, opt, ims, batch)

    def infer(net, ims):
        Detector(net, DetectionConfig(), dev).detect(ims)

    def train(net, opt, batch):
        net.train()
        loss = detector_step(net, batch)["total"]
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()

    print(f"{dev}, {args.threads} thread(s), batch {args.batch}, {load()}", flush=True)
    for (name, hw), (net, opt, ims, batch) in setups.items():          # warm-up (allocator, kernels)
        infer(net, ims); train(net, opt, batch)
    times = {}
    for r in range(args.rounds):
        for key, (net, opt, ims, batch) in setups.items():
            times.setdefault(key + ("infer",), []).append(timed(lambda: infer(net, ims), dev))
            times.setdefault(key + ("train",), []).append(timed(lambda: train(net, opt, batch), dev))
        print(f"  round {r + 1}/{args.rounds} done ({load()})", flush=True)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    ref = lambda what: med.get(("cpu", (240, 320), what))
    print(f"\n{'preset':7s} {'size':>8s} {'params':>7s} | {'inference':>10s} {'cpu':>8s} {'x ref':>6s} {'img/s':>6s} |"
          f" {'train step':>10s} {'cpu':>8s} {'x ref':>6s} {'img/s':>6s}")
    for (name, hw), (net, *_rest) in setups.items():
        n = sum(p.numel() for p in net.parameters()) / 1e6
        row = f"{name:7s} {hw[0]:>3d}x{hw[1]:<4d} {n:6.1f}M |"
        for what in ("infer", "train"):
            w, c = med[name, hw, what]
            r = ref(what)
            row += f" {1e3 * w:8.0f}ms {1e3 * c:6.0f}ms {(w / r[0] if r else float('nan')):6.1f} {args.batch / w:6.2f} |"
        print(row)
    print(f"\n(x ref: time / time of the cpu preset at 240x320; {load()})")


if __name__ == "__main__":
    main()
