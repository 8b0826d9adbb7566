"""The package's layering, read from the source: data flows one way through the book's parts.

Parts in order: core -> geometry -> structures -> datasets -> rendering -> synthetic -> singleview -> multiview ->
evaluation -> experiments -> viz -> demo -> cli. A module may import a module of an earlier part, or of its own part
when that module's notebook comes earlier (the NN of `nbs/<part>/NN_x.ipynb`, read from the notebooks'
`#| default_exp`). Module-level and function-level imports both count (a lazy import is still a dependency), and
so do `importlib.import_module("...")` calls with a constant name. No cycles, and no private name (`_x`) of another
module: neither imported (`from .m import _x`) nor reached through the module (`m._x`).
"""
from __future__ import annotations

import ast, json
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = "cosypose_nb"
PARTS = ["core", "geometry", "structures", "datasets", "rendering", "synthetic", "singleview", "multiview",
         "evaluation", "experiments", "viz", "demo", "cli"]
NOT_FROM_NOTEBOOKS = {f"{PKG}._modidx"}          # nbdev's index of the exported names

# Known violations on main in parts other helpers are editing ((check, module) -> who fixes it; strict: the entry
# must go when the fix is merged).
XFAIL: dict[tuple[str, str], str] = {}


def _part(module: str) -> str:
    return module.split(".")[1]


@lru_cache(None)
def notebook_modules() -> dict[str, tuple[int, str]]:
    "Module name -> (the notebook's NN, the notebook's path), from every `#| default_exp` in nbs/."
    out = {}
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts: continue
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] != "code": continue
            for line in "".join(cell["source"]).splitlines():
                if line.replace(" ", "").startswith("#|default_exp"):
                    name = f"{PKG}.{line.split('default_exp', 1)[1].strip()}"
                    assert name not in out, f"{nb}: {name} is also the default_exp of {out[name][1]}"
                    out[name] = (int(nb.name.split("_", 1)[0]), str(nb.relative_to(ROOT)))
    return out


@lru_cache(None)
def package_modules() -> dict[str, Path]:
    "Module name -> file, for every module of the package (packages' `__init__` excluded)."
    out = {}
    for f in sorted((ROOT / PKG).rglob("*.py")):
        if f.name == "__init__.py": continue
        out[".".join(f.relative_to(ROOT).with_suffix("").parts)] = f
    return out


def rank(module: str) -> tuple[int, int, str]:
    "(part, NN, notebook file name): nbdev's order of the notebooks within a part (two chapters may share an NN)."
    nn, path = notebook_modules()[module]
    return PARTS.index(_part(module)), nn, Path(path).name


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    "The absolute module name of `from X import ...` in `importer`."
    if not node.level: return node.module or ""
    base = importer.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


@lru_cache(None)
def imports(module: str) -> tuple[tuple[int, str, tuple[str, ...]], ...]:
    file = package_modules()[module]
    return parse_imports(module, file.read_text(), set(package_modules()), str(file))


def parse_imports(module: str, source: str, mods: set[str], filename="<src>") -> tuple:
    """Every import of a package module in the source of `module`: (line, imported module, private names taken
    from it). Private names: `from m import _x`, and `alias._x` where `alias` is bound to the module `m`."""
    tree = ast.parse(source, filename)
    found, aliases = [], {}

    def add(line, target, private=()):
        if target.startswith(PKG + ".") and target != module: found.append((line, target, tuple(private)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(node.lineno, a.name)
                if a.asname: aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node)
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in mods:                       # `from pkg import module`
                    add(node.lineno, sub); aliases[a.asname or a.name] = sub
                else:
                    private = [a.name] if a.name.startswith("_") and not a.name.startswith("__") else []
                    add(node.lineno, src, private)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.lineno, node.args[0].value)
    for node in ast.walk(tree):                       # `alias._x` through a module bound to a name
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            v = node.value
            target = aliases.get(v.id) if isinstance(v, ast.Name) else None
            if (isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr == "import_module"
                    and v.args and isinstance(v.args[0], ast.Constant)):
                target = v.args[0].value
            if target: add(node.lineno, target, [node.attr])
    return tuple(found)


def _modules_checked():
    return sorted(m for m in package_modules() if m not in NOT_FROM_NOTEBOOKS)


def _params(check: str):
    def one(m):
        who = XFAIL.get((check, m))
        marks = [pytest.mark.xfail(reason=f"known violation: {who} fixes it", strict=True)] if who else []
        return pytest.param(m, marks=marks, id=m.removeprefix(PKG + "."))
    return [one(m) for m in _modules_checked()]


def test_every_module_comes_from_a_notebook():
    missing = [m for m in _modules_checked() if m not in notebook_modules()]
    stale = [f"{m} ({nb})" for m, (_, nb) in notebook_modules().items() if m not in package_modules()]
    assert not missing, f"modules with no notebook (default_exp): {missing}"
    assert not stale, f"notebooks whose module is not in {PKG}/ (run nbdev-export): {stale}"


def test_notebook_numbers_follow_the_parts():
    "The NN of the notebooks grow with the parts' order, so the book and the package read in the same order."
    order = sorted(notebook_modules(), key=lambda m: notebook_modules()[m][0])
    parts = [PARTS.index(_part(m)) for m in order]
    bad = [f"{a} before {b}" for a, b, pa, pb in zip(order, order[1:], parts, parts[1:]) if pb < pa]
    assert not bad, f"notebook numbers out of the parts' order: {bad}"


@pytest.mark.parametrize("module", _params("order"))
def test_imports_go_down_the_parts(module):
    me = rank(module)
    bad = [f"line {line}: {t} ({notebook_modules()[t][1]})" for line, t, _ in imports(module)
           if t in notebook_modules() and rank(t) >= me]
    unknown = [f"line {line}: {t}" for line, t, _ in imports(module)
               if t not in notebook_modules() and t not in package_modules()
               and not (ROOT / Path(*t.split("."))).is_dir()]
    assert not unknown, f"{module} imports modules that do not exist: {unknown}"
    assert not bad, (f"{module} ({notebook_modules()[module][1]}) imports later parts/chapters: {bad}\n"
                     f"order: {' -> '.join(PARTS)}; within a part, earlier notebooks only")


@pytest.mark.parametrize("module", _params("private"))
def test_no_private_name_from_another_module(module):
    bad = [f"line {line}: {t}.{name}" for line, t, private in imports(module) for name in private]
    assert not bad, f"{module} uses private names of other modules (make them public or move them): {bad}"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    "The cycles a depth-first search meets in `graph` (module -> imported modules), each as a closed path."
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1; stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1: cycles.append(stack[stack.index(t):] + [t])
            elif t not in state: visit(t)
        stack.pop(); state[m] = 2

    for m in sorted(graph):
        if m not in state: visit(m)
    return cycles


def test_no_cycles():
    graph = {m: {t for _, t, _ in imports(m) if t in package_modules()} for m in _modules_checked()}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_what_it_should():
    "The parser on a made-up module: relative, absolute, lazy, aliased and importlib imports, private names."
    src = ("from ..core import InputError, _private\n"
           "import cosypose_nb.geometry.cameras as cam\n"
           "def f():\n    from .. import structures\n    import importlib\n"
           "    return cam._hidden, structures.Detections, importlib.import_module('cosypose_nb.demo')\n")
    mods = set(package_modules())
    got = {(t, p) for _, t, p in parse_imports(f"{PKG}.viz.probe", src, mods)}
    assert got == {(f"{PKG}.core", ()), (f"{PKG}.core", ("_private",)), (f"{PKG}.geometry.cameras", ()),
                   (f"{PKG}.geometry.cameras", ("_hidden",)), (f"{PKG}.structures", ()), (f"{PKG}.demo", ())}
    # and the rules on it: viz (70s) may import core, geometry and structures, not the demo
    assert rank(f"{PKG}.demo") > rank(f"{PKG}.viz.figures") > rank(f"{PKG}.structures")
