"""A tiny but real training task for the runner's tests: a small CNN regresses the object position from the
pose samples of a BOP folder. Run as a script (plain python or under torchrun) to train it into a run folder:

    python tiny_task.py --data DIR --out RUN --steps 8 [--kill-at K] [--resume] [--workers W]

`--kill-at K` sends SIGKILL to this process during its K-th step (after the checkpoints before it).
Each process writes RUN/rank{r}.json: the sample indices it trained on and a checksum of its weights."""
from __future__ import annotations
import argparse, json, os, signal
from pathlib import Path

import torch

from cosypose_nb.singleview.pose_data import PoseDataConfig, PoseDataset, collate_poses
from cosypose_nb.singleview.training import TrainTask, init_distributed, run_training, train_config


class TinyPositionNet(torch.nn.Module):
    "Images (B, 3, H, W) uint8 -> object position (B, 3) m."
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                       torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                       torch.nn.Flatten(), torch.nn.Linear(16, 3), torch.nn.Dropout(0.1))

    def forward(self, images):
        return self.net(images.float() / 255)


def make_task(data, seed: int = 0, kill_at: int | None = None, seen: list | None = None, nan_at: int | None = None) -> TrainTask:
    torch.manual_seed(seed)
    calls = {"n": 0}

    def step(model, batch):
        calls["n"] += 1
        if kill_at is not None and calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if seen is not None:
            seen.extend(batch.indices.tolist())
        t = model(batch.images) + 0.01 * torch.randn(len(batch), 3, device=batch.images.device)   # randomness in a step
        t_gt = batch.T_CO[:, :3, 3].float()
        xy, z = (t[:, :2] - t_gt[:, :2]).abs().mean(), (t[:, 2] - t_gt[:, 2]).abs().mean()
        if nan_at is not None and calls["n"] == nan_at:
            z = z * float("nan")
        return {"xy": xy, "z": z, "total": xy + z}

    return TrainTask(TinyPositionNet(), PoseDataset(data, PoseDataConfig(), seed=seed), collate_poses, step,
                     info={"task": "tiny position regression"})


def tiny_config(data, steps: int = 8, **kw):
    base = dict(data=(str(data),), n_steps=steps, batch_size=4, lr=3e-3, warmup_steps=2, checkpoint_every=3, log_every=1,
                num_workers=0, deterministic=True)
    return train_config("cpu", **{**base, **kw})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--checkpoint-every", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--kill-at", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = tiny_config(a.data, a.steps, checkpoint_every=a.checkpoint_every, num_workers=a.workers)
    dist = init_distributed(cfg.device)
    seen: list = []
    task = make_task(a.data, cfg.seed, a.kill_at, seen)
    run_training(task, cfg, a.out, resume=a.resume, dist=dist, progress=False)
    model_sum = float(sum(p.detach().double().sum() for p in task.model.parameters()))   # (BatchNorm statistics are per process)
    Path(a.out, f"rank{dist.rank}.json").write_text(json.dumps({"indices": seen, "world_size": dist.world_size,
                                                                 "weights_sum": model_sum}))
    if dist.distributed:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
