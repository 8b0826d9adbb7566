"The experiment notebooks of book/experiments run under papermill with small parameters."
from pathlib import Path
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[2]

@pytest.mark.parametrize("nb", sorted((ROOT / "book" / "experiments").glob("*.ipynb")), ids=lambda p: p.stem)
def test_experiment_runs(nb, tmp_path):
    out = tmp_path / nb.name
    params = {"n_problems": 1, "configs": [[4, 6]]} if nb.stem == "multiview_evaluation" else {}
    pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(nb.parent), progress_bar=False, kernel_name="python3")
    import nbformat
    nb_out = nbformat.read(out, as_version=4)
    outputs = [o for c in nb_out.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if nb.stem == "multiview_evaluation":
        # the summary table was computed: one row per (method, configuration), with its solve counts
        tables = [o["data"]["text/plain"] for o in outputs if "text/plain" in o.get("data", {}) and "frac_ok_mean" in o["data"]["text/plain"]]
        assert tables and "cosypose-nb" in tables[0] and "pixel reprojection BA only" in tables[0], tables
