"The experiment notebooks of book/experiments run under papermill with small parameters."
from pathlib import Path
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.parametrize("nb", sorted((ROOT / "book" / "experiments").glob("*.ipynb")), ids=lambda p: p.stem)
def test_experiment_runs(nb, tmp_path):
    out = tmp_path / nb.name
    params = {"n_problems": 1, "configs": [[4, 6]]} if nb.stem == "multiview_evaluation" else {}
    pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent), progress_bar=False, kernel_name="python3")
    executed = out.read_text()
    assert '"solved"' in executed or "solved" in executed
