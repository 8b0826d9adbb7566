"""`watch_hidden` / `hidden_report` of `benchmarks/bench_pose_learning.py` (chapter 35): how many units of a pose
network's 'flatten' head fire, counted by a forward hook while the model runs."""
import importlib.util
from pathlib import Path

import torch

from cosypose_nb.singleview.pose_model import PoseModel, PoseModelConfig

ROOT = Path(__file__).resolve().parents[2]


def bench():
    spec = importlib.util.spec_from_file_location("bench_pose_learning", ROOT / "benchmarks" / "bench_pose_learning.py")
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_hidden_units_counted():
    b = bench()
    m = PoseModel(PoseModelConfig(backbone="small", render_size=(32, 40), head="flatten", head_hidden=8)).eval()
    assert b.watch_hidden(PoseModel(PoseModelConfig(backbone="small", render_size=(32, 40)))) is None   # 'mean' head
    stats = b.watch_hidden(m)
    assert b.hidden_report(stats) is None                         # nothing ran yet
    with torch.no_grad():
        m.hidden[1].weight.zero_()
        m.hidden[1].bias.copy_(torch.tensor([1.0, -1, 1, -1, -1, -1, -1, -1]))   # units 0 and 2 always fire
        for _ in range(2): m.net(torch.rand(3, 6, 32, 40))
    assert b.hidden_report(stats) == dict(ever_active=2, units=8, mean_active=0.25)
    with torch.no_grad():                                         # a sample where unit 5 fires too: ever 3, mean grows
        m.hidden[1].bias[5] = 1.0
        m.net(torch.rand(2, 6, 32, 40))
    r = b.hidden_report(stats)
    assert r["ever_active"] == 3 and abs(r["mean_active"] - (6 * 0.25 + 2 * 0.375) / 8) < 1e-3
