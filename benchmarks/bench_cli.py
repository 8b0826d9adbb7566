"""How fast the commands start: every `cosypose-nb SUB --help`, `import cosypose_nb.<module>` of each module, and
(where this checkout has it) the `multiview` command on a 4 x 6 scenario.

Each run is a fresh interpreter (what a user waits for), `--repeats` times; the tables give the median wall time,
its CPU time (user + system: less sensitive to other processes' load than the wall time) and the heavy packages the
run imported (read from `python -X importtime`). With `--old PATH`, another checkout runs alternately with this one
(`PYTHONPATH=PATH`) and the ratio of the medians is printed.

    .venv/bin/python benchmarks/bench_cli.py [--old /work/wt/base] [--repeats 5] [--no-modules]

Target (issue 14, a quiet 2-core machine): `--help` under 0.5 s. The load average is printed with the tables: on a
loaded machine every start is slower, and the CPU time and the ratios are what carries over."""
from __future__ import annotations
import argparse, os, resource, statistics, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLI = "import sys; from cosypose_nb.cli import main; sys.exit(main(sys.argv[1:]))"
HEAVY = ("torch", "torchvision", "roma", "timm", "trimesh", "scipy", "pandas", "matplotlib", "pybullet", "plotly",
         "dask", "distributed", "papermill", "ipywidgets", "IPython")


def run(code: str, args: list[str], pythonpath: str, importtime: bool = False) -> tuple[float, float, str]:
    "(wall s, CPU s, stderr) of `python -c code args` in a fresh interpreter with `pythonpath` first on the path."
    env = {**os.environ, "PYTHONPATH": pythonpath}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code, *args],
                       capture_output=True, text=True, env=env,
                       cwd=tempfile.gettempdir())      # (`-c` puts the working folder first on the path: not a checkout)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode: raise RuntimeError(f"{args}: {r.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), r.stderr


def heavy_imports(stderr: str) -> str:
    "The packages of HEAVY that a `-X importtime` run imported, with their cumulative import time."
    out = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line: continue
        _, cum, name = (x.strip() for x in line.split(":", 1)[1].split("|"))
        if name in HEAVY and cum.isdigit(): out[name] = int(cum) / 1e6
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(out.items(), key=lambda kv: -kv[1])) or "-"


def subcommands(pythonpath: str) -> list[str]:
    code = "from cosypose_nb.cli import SUBCOMMANDS; print(' '.join(SUBCOMMANDS))"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": pythonpath}, cwd=tempfile.gettempdir()).stdout.split()


def modules(root: Path) -> list[str]:
    pkg = root / "cosypose_nb"
    return sorted(".".join(f.relative_to(root).with_suffix("").parts) for f in pkg.rglob("*.py")
                  if f.name not in ("__init__.py", "_modidx.py"))


def scenario(folder: Path) -> Path | None:
    "A 4-view, 6-object scenario folder on the default objects (seed 2), or None when this checkout cannot write one."
    sys.path.insert(0, str(HERE.parent))
    try:
        from cosypose_nb.datasets.objects import load_default_objects
        from cosypose_nb.synthetic.mvproblems import make_problem
        try: from cosypose_nb.multiview.scenario import write_example_scenario
        except ImportError: from cosypose_nb.multiview.predictor import write_example_scenario
    except ImportError:
        return None
    return write_example_scenario(folder, make_problem(4, 6, seed=2, objects=load_default_objects(n_points=500)))


def table(title: str, cases: dict[str, tuple[str, list[str]]], codes: dict[str, str], repeats: int,
          missing: set = frozenset()) -> None:
    "Time each case with each checkout of `codes` (but the (case, checkout) pairs in `missing`: shown as '-')."
    times = {(c, k): [] for c in cases for k in codes}
    for _ in range(repeats):                               # alternating: both checkouts see the same state of the machine
        for c, (code, args) in cases.items():
            for k, path in codes.items():
                if (c, k) not in missing: times[(c, k)].append(run(code, args, path)[:2])
    heavy = {c: heavy_imports(run(code, args, codes["new"], importtime=True)[2]) for c, (code, args) in cases.items()}
    print(f"\n{title}: load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {repeats} runs each; "
          "median wall s (median CPU s)")
    head = [f"{k} wall (CPU)" for k in codes] + (["new / old"] if "old" in codes else []) + ["heavy imports of new (cumulative s)"]
    print("| run | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for c in cases:
        med = {k: (statistics.median(w for w, _ in times[(c, k)]), statistics.median(u for _, u in times[(c, k)]))
               for k in codes if times[(c, k)]}
        cells = [f"{med[k][0]:.2f} ({med[k][1]:.2f})" if k in med else "-" for k in codes]
        if "old" in codes: cells.append(f"{med['new'][0] / med['old'][0]:.2f}" if "old" in med else "-")
        print(f"| {c} | " + " | ".join(cells) + f" | {heavy[c]} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", default=None, help="an older checkout to time side by side")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-modules", action="store_true", help="skip the import time of every module")
    a = ap.parse_args(argv)
    codes = {"new": str(HERE.parent)} | ({"old": a.old} if a.old else {})
    subs = [s for s in subcommands(codes["new"]) if not a.old or s in subcommands(a.old)]
    cases = {"cosypose-nb --help": (CLI, ["--help"])} | {f"{s} --help": (CLI, [s, "--help"]) for s in subs}
    tmp = Path(tempfile.mkdtemp(prefix="bench_cli."))
    folder = scenario(tmp / "scenario")
    if folder is not None:
        cases["multiview 4 x 6 scenario"] = (CLI, ["multiview", str(folder)])
    table("Commands", cases, codes, a.repeats)
    if not a.no_modules:
        mods = modules(HERE.parent)                        # a module the old checkout lacks: timed with this one only
        new_only = {(m.removeprefix("cosypose_nb."), "old") for m in mods if a.old and m not in modules(Path(a.old))}
        table("import cosypose_nb.<module>", {m.removeprefix("cosypose_nb."): (f"import {m}", []) for m in mods},
              codes, max(1, a.repeats // 2), new_only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
