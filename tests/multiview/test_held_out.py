"""The multi-view predictor gives the same scenes as an older checkout on the held-out problems (`benchmarks/held_out.py`).

Runs only with `COSYPOSE_NB_OLD` naming a checkout of the code to compare with (e.g. the tag `base-before-restructure`
in a worktree); `COSYPOSE_NB_HELD_OUT` problems (default 60, all 600 with `600`) are solved by both, each in its own
interpreter, and must agree: the same objects, cameras and candidates, poses within 1e-9."""
import os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("COSYPOSE_NB_OLD"), reason="COSYPOSE_NB_OLD: a checkout of the code to compare with")
def test_held_out_scenes_equal_to_the_old_code(tmp_path):
    n = os.environ.get("COSYPOSE_NB_HELD_OUT", "60")
    script = str(ROOT / "benchmarks" / "held_out.py")
    run = lambda path, *args: subprocess.run([sys.executable, script, "--first", n, *args], capture_output=True, text=True,
                                             env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})
    old = run(os.environ["COSYPOSE_NB_OLD"], "--save", str(tmp_path / "old.npz"))
    assert old.returncode == 0, old.stderr[-3000:]
    new = run(str(ROOT), "--save", str(tmp_path / "new.npz"), "--compare", str(tmp_path / "old.npz"))
    assert new.returncode == 0 and "identical objects, cameras and candidates in" in new.stdout, new.stdout + new.stderr[-3000:]
