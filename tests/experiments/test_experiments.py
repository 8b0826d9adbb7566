"""The experiments of book/experiments run through the runner into run folders: small parameters, the same
numbers when run again with the same parameters and seed, a finished run not run again."""
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from cosypose_nb.core import InputError
from cosypose_nb.experiments.runner import experiment_cli, experiment_parameters, list_experiments, run_experiment

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "book" / "experiments"
SMALL = {"multiview_evaluation": {"n_problems": 1, "configs": [[4, 6]]}}


def outputs(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


@pytest.mark.parametrize("name", sorted(list_experiments(EXPERIMENTS)))
def test_experiment_declares_its_parameters(name):
    params = experiment_parameters(EXPERIMENTS / f"{name}.ipynb")
    assert {"seed", "results_dir"} <= set(params)
    assert name in SMALL, f"give {name} small parameters in SMALL to test it"
    assert set(SMALL[name]) <= set(params)


def test_multiview_evaluation_reproduces(tmp_path):
    a = run_experiment("multiview_evaluation", tmp_path / "a", parameters=SMALL["multiview_evaluation"], seed=5,
                       experiments=EXPERIMENTS, progress=False)
    b = run_experiment("multiview_evaluation", tmp_path / "b", parameters=SMALL["multiview_evaluation"], seed=5,
                       experiments=EXPERIMENTS, progress=False)
    assert not a.skipped and not b.skipped and a.folder.name == b.folder.name != "multiview_evaluation"
    for r in (a, b):
        assert sorted(p.name for p in r.folder.iterdir()) == ["environment.json", "finished.json", "multiview_evaluation.ipynb",
                                                             "parameters.json", "results"]
        assert not [o for o in outputs(r.notebook) if o.get("output_type") == "error"]
    env = json.loads((a.folder / "environment.json").read_text())
    assert env["seed"] == 5 and env["device"] == "cpu" and env["packages"]["torch"] and "commit" in env["git"]
    params = json.loads((a.folder / "parameters.json").read_text())
    assert params["seed"] == 5 and params["n_problems"] == 1 and params["configs"] == [[4, 6]]
    # the numbers: the same parameters and seed give the same table (wall times aside); same machine and
    # threads, so nothing but rounding could differ
    pa, pb = (pd.read_csv(r.folder / "results" / "problems.csv") for r in (a, b))
    assert len(pa) == 2 and set(pa.method) == {"cosypose-nb", "pixel reprojection BA only"}
    num = ["solved", "missing", "duplicate", "spurious", "frac_ok", "median_scene_mm", "median_cand_mm"]
    assert ((pa[num].astype(float) - pb[num].astype(float)).abs().to_numpy() < 1e-9).all()
    # the executed notebook shows the summary table and the figure
    outs = outputs(a.notebook)
    assert any("frac_ok_mean" in o.get("data", {}).get("text/html", "") for o in outs)
    assert any("image/png" in o.get("data", {}) for o in outs)
    # a finished run is not run again
    mtime = a.notebook.stat().st_mtime_ns
    again = run_experiment("multiview_evaluation", tmp_path / "a", parameters=SMALL["multiview_evaluation"], seed=5,
                           experiments=EXPERIMENTS, progress=False)
    assert again.skipped and again.results == a.results and a.notebook.stat().st_mtime_ns == mtime


def test_command_line(tmp_path, capsys):
    assert experiment_cli(["--list", "--experiments", str(EXPERIMENTS)]) == 0
    assert "multiview_evaluation: n_problems=" in capsys.readouterr().out
    with pytest.raises(InputError, match="unknown parameter"):
        experiment_cli(["multiview_evaluation", "-p", "n_problem=1", "--out", str(tmp_path), "--experiments", str(EXPERIMENTS)])
    with pytest.raises(InputError, match="not found"):
        experiment_cli(["no_such_experiment", "--out", str(tmp_path), "--experiments", str(EXPERIMENTS)])
    with pytest.raises(InputError, match="one experiment"):
        experiment_cli(["a", "b", "--name", "x", "--out", str(tmp_path), "--experiments", str(EXPERIMENTS)])
    assert not list(tmp_path.iterdir())                                  # nothing written before the checks
