"""The single-view settings (`singleview.config`, torch-free) and commands (`singleview.commands`): the options keep
their names and presets, and the settings module imports neither torch nor torchvision."""
import subprocess, sys
from pathlib import Path

import pytest

from cosypose_nb.core import InputError
from cosypose_nb.singleview import commands as cmd
from cosypose_nb.singleview.config import detector_train_config, train_config

ROOT = Path(__file__).resolve().parents[2]


def test_settings_module_is_torch_free():
    code = "import sys, cosypose_nb.singleview.config, cosypose_nb.singleview.commands; print(sorted({'torch', 'torchvision', 'PIL'} & set(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_presets_and_options():
    cfg, a = cmd.parse_detector_train_args(["--data", "d", "--out", "o", "--config", "paper", "--min-visib", "0.3"])
    assert cfg.n_steps == detector_train_config("paper").n_steps and cfg.data_config.min_visib == 0.3 and a.out == "o"
    cfg, _ = cmd.parse_train_args(["coarse", "--data", "d", "--out", "o", "--n-steps", "7"])
    assert cfg == train_config("cpu", kind="coarse", data=("d",), n_steps=7)
    with pytest.raises(InputError, match="--batch-size"):
        cmd.parse_train_args(["refiner", "--data", "d", "--out", "o", "--batch-size", "0"])


def test_convert_checkpoint_options():
    with pytest.raises(InputError, match="--labels"):
        cmd.convert_checkpoint_command(["--labels", "a,b", "x.pth", "out"])
    with pytest.raises(InputError):                       # no such file: the loader names it
        cmd.convert_checkpoint_command(["--kind", "detector", "--labels", "a", str(ROOT / "no-such.pth"), str(ROOT / "nowhere")])
    assert not (ROOT / "nowhere").exists()
