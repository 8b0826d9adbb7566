"""The experiments of book/experiments run through the runner into run folders: small parameters, the same
numbers when run again with the same parameters and seed (each experiment), a finished run not run again."""
import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from cosypose_nb.core import InputError
from cosypose_nb.experiments.runner import experiment_cli, experiment_parameters, list_experiments, run_experiment

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "book" / "experiments"
SMALL = {"multiview_evaluation": {"n_problems": 1, "configs": [[4, 6]]},
         "record_dataset": {"n_scenes": 2},
         "train_network": {"n_steps": 2, "record_scenes": 1},
         "singleview_evaluation": {"n_scenes": 1, "views_per_scene": 1, "n_refiner": 1},
         "figures": {"n_views": 4, "n_objects": 4, "timed_views": [3]},
         "singleview_vs_multiview": {"n_scenes": 1, "views_per_scene": 2, "group_sizes": [1, 2], "ablations": False}}


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


# -- the other experiments: each run twice with small parameters and the same seed gives the same numbers
def numbers_equal(a, b, tol=1e-9):
    "Two JSON-like values equal, floats within `tol` (relative to their size)."
    if isinstance(a, dict): return isinstance(b, dict) and a.keys() == b.keys() and all(numbers_equal(a[k], b[k], tol) for k in a)
    if isinstance(a, list): return isinstance(b, list) and len(a) == len(b) and all(numbers_equal(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return (a == b) or (abs(a - b) <= tol * max(1.0, abs(a), abs(b)))   # inf == inf, nan fails
    return a == b


def csv_equal(pa, pb, columns=None, tol=1e-6):
    a, b = pd.read_csv(pa), pd.read_csv(pb)
    cols = columns or [c for c in a.columns if pd.api.types.is_numeric_dtype(a[c])]
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    return all(numbers_equal(a[c].astype(float).tolist(), b[c].astype(float).tolist(), tol) for c in cols)


def same_numbers(name, ra, rb):
    "The result numbers of two runs of `name` agree (same machine and threads: nothing but rounding could differ; wall times aside)."
    A, B = ra.folder / "results", rb.folder / "results"
    read = lambda p: json.loads(p.read_text())
    if name == "record_dataset":        # the recording is deterministic: the same annotations and images, byte for byte
        files = sorted(p.relative_to(A) for p in (A / "dataset" / "train").rglob("*") if p.is_file())
        assert files and files == sorted(p.relative_to(B) for p in (B / "dataset" / "train").rglob("*") if p.is_file())
        return read(A / "summary.json") == read(B / "summary.json") and all(ra.results[f.as_posix()] == rb.results[f.as_posix()] for f in files)
    if name == "train_network":         # one thread, the same data order and noise: the same losses (not the samples/s)
        cols = [c for c in pd.read_csv(A / "run" / "log.csv").columns if c.startswith("loss_") or c in ("step", "lr", "grad_norm")]
        return csv_equal(A / "run" / "log.csv", B / "run" / "log.csv", cols) and numbers_equal(read(A / "summary.json"), read(B / "summary.json"), 1e-6)
    if name == "singleview_evaluation":
        return (all(csv_equal(A / k / "eval" / "errors.csv", B / k / "eval" / "errors.csv") for k in ("box", "coarse", "refiner"))
                and numbers_equal(read(A / "summary.json"), read(B / "summary.json"), 1e-6))
    if name == "figures":
        return numbers_equal(read(A / "scene.json"), read(B / "scene.json"), 1e-9)
    raise AssertionError(f"{name}: no comparison of its numbers")


@pytest.mark.parametrize("name", ["record_dataset", "train_network", "singleview_evaluation", "figures"])
def test_experiment_reproduces(tmp_path, name):
    runs = [run_experiment(name, tmp_path / k, parameters=SMALL[name], seed=3, experiments=EXPERIMENTS, progress=False) for k in "ab"]
    for r in runs:
        assert not r.skipped and {"environment.json", "finished.json", f"{name}.ipynb", "parameters.json", "results"} <= {p.name for p in r.folder.iterdir()}
        assert not [o for o in outputs(r.notebook) if o.get("output_type") == "error"]
        assert any("image/png" in o.get("data", {}) for o in outputs(r.notebook)), f"{name}: no figure"
    assert same_numbers(name, *runs)
