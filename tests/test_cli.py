"""The `cosypose-nb` dispatcher starts fast: `SUB --help` of a command imports none of the heavy packages (the
command's options come from torch-free config modules; the computing modules are imported when it runs). The
times themselves are measured by `benchmarks/bench_cli.py`, not here."""
from __future__ import annotations
import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "roma", "timm", "trimesh", "scipy", "pandas", "matplotlib", "pybullet", "plotly",
         "dask", "distributed", "papermill", "ipywidgets", "IPython")
# the commands whose --help is light on main; multiview (its scenario module), train and convert-checkpoint join
# when their parts' config modules are merged
LIGHT = ("objects", "download", "record", "evaluate", "experiment", "demo", "train", "convert-checkpoint", "predict")


@pytest.mark.parametrize("sub", LIGHT)
def test_help_imports_no_heavy_package(sub):
    code = f"""
import contextlib, io, sys
from cosypose_nb.cli import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out): main([{sub!r}, "--help"])
except SystemExit as e: assert e.code == 0, e.code
assert "usage: cosypose-nb {sub}" in out.getvalue(), out.getvalue()[:300]
heavy = sorted(set({HEAVY!r}) & set(sys.modules))
assert not heavy, heavy
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT.parent)
    assert r.returncode == 0, r.stderr[-2000:]
