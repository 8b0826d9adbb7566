"""The package's dependencies as pyproject.toml declares them: every third-party import of cosypose_nb/ is a runtime
dependency or in an extra, and with only the runtime dependencies installed every module imports, or says which
extra it needs (`core.MissingExtra`), never a bare ModuleNotFoundError; a command that needs a missing extra ends
with one line naming it."""
from __future__ import annotations
import ast, importlib.metadata, json, os, re, subprocess, sys, tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def dist_name(requirement: str) -> str:
    "The normalised distribution name of a requirement ('Pillow>=9' -> 'pillow')."
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


def declared() -> tuple[set[str], dict[str, set[str]]]:
    "(runtime distributions, extra -> its own distributions), self-references (cosypose-nb[...]) left out."
    runtime = {dist_name(r) for r in PROJECT["dependencies"]}
    extras = {k: {dist_name(r) for r in v if dist_name(r) != "cosypose-nb"}
              for k, v in PROJECT["optional-dependencies"].items()}
    return runtime, extras


def third_party_imports() -> dict[str, set[str]]:
    "Top-level import name -> the package modules importing it (module level or in functions)."
    out = {}
    for f in sorted((ROOT / "cosypose_nb").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for n in names:
                top = n.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("cosypose_nb", "__future__"):
                    out.setdefault(top, set()).add(str(f.relative_to(ROOT)))
    return out


def distributions_of(import_name: str) -> set[str]:
    return {dist_name(d) for d in importlib.metadata.packages_distributions().get(import_name, [])}


def test_every_import_is_declared():
    runtime, extras = declared()
    known = runtime | set().union(*extras.values())
    missing = {name: sorted(users) for name, users in third_party_imports().items()
               if not distributions_of(name) & known}
    assert not missing, f"imported but not in pyproject.toml's dependencies or extras: {missing}"


def test_extras_are_installed_by_make_setup():
    "`make setup` installs `.[all]`, and `all` names every other extra."
    assert '".[all]"' in (ROOT / "ci" / "setup.sh").read_text()
    all_ = PROJECT["optional-dependencies"]["all"]
    named = set(re.search(r"\[(.*)\]", all_[0]).group(1).split(","))
    assert named == set(PROJECT["optional-dependencies"]) - {"all"}


@pytest.fixture(scope="module")
def blocked_extras() -> list[str]:
    "The import names of the extras' packages that no runtime dependency provides."
    runtime, extras = declared()
    names = set()
    for name, dists in importlib.metadata.packages_distributions().items():
        ds = {dist_name(d) for d in dists}
        if ds & set().union(*extras.values()) and not ds & runtime and name.isidentifier():
            names.add(name)
    assert {"matplotlib", "plotly", "ipywidgets", "dask", "papermill"} <= names
    return sorted(names)


def run_without(blocked: list[str], code: str) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter in which the `blocked` packages cannot be imported (as if not installed)."
    prelude = f"import sys\nfor _n in {blocked!r}: sys.modules[_n] = None\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, env=env, timeout=600)


def test_modules_import_with_the_runtime_dependencies_only(blocked_extras):
    mods = sorted(".".join(f.relative_to(ROOT).with_suffix("").parts) for f in (ROOT / "cosypose_nb").rglob("*.py")
                  if f.name not in ("__init__.py", "_modidx.py"))
    code = f"""
import importlib, json
from cosypose_nb.core import MissingExtra
out = {{}}
for m in {mods!r}:
    try: importlib.import_module(m); out[m] = "ok"
    except MissingExtra as e: out[m] = "extra: " + str(e)
    except Exception as e: out[m] = f"{{type(e).__name__}}: {{e}}"
print(json.dumps(out))
"""
    r = run_without(blocked_extras, code)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    bad = {m: v for m, v in out.items() if v != "ok" and not v.startswith("extra: ")}
    assert not bad, f"modules failing with a bare error without the extras: {bad}"
    needing = {m: v for m, v in out.items() if v != "ok"}
    assert set(needing) <= {"cosypose_nb.viz.figures", "cosypose_nb.viz.explorer"}, needing   # the figures' part only
    assert out["cosypose_nb.cli"] == out["cosypose_nb.demo"] == "ok"


def test_a_command_names_the_missing_extra(blocked_extras, tmp_path):
    r = run_without(blocked_extras, f"from cosypose_nb.cli import main; sys.exit(main(['demo', '--out', {str(tmp_path / 'd')!r}]))")
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        "cosypose-nb demo: error: matplotlib is not installed (it comes with the 'viz' extra): pip install 'cosypose-nb[viz]'"]
    assert not (tmp_path / "d").exists()                       # refused before anything was written
