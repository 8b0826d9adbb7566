"""Property-based tests (hypothesis) of the `multiview` command's inputs: a scenario folder whose
`candidates.csv` and `scene_camera.json` are mangled in any way gives a result (exit 0, both result files
written and readable) or a clear error (exit 2, an `InputError` message), never another exception, and never a
partly written output folder.

Fast by default (a few seconds); more examples with `COSYPOSE_NB_FUZZ_EXAMPLES=500 pytest tests/multiview/test_fuzz_scenario.py`."""
import csv, io, json, os, tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from cosypose_nb.cli import main

N_EXAMPLES = int(os.environ.get("COSYPOSE_NB_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, database=None, derandomize=N_EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RESULTS = ("predicted_scene.json", "scene_reprojected.csv")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    "The example scenario (4 views x 6 objects): its folder, candidate rows and cameras."
    from cosypose_nb.datasets.objects import load_default_objects
    from cosypose_nb.multiview.scenario import write_example_scenario
    from cosypose_nb.synthetic.mvproblems import make_problem
    folder = tmp_path_factory.mktemp("fuzz") / "example"
    write_example_scenario(folder, make_problem(4, 6, seed=2, objects=load_default_objects(n_points=200)))
    rows = list(csv.reader(open(folder / "candidates.csv", newline="")))
    return folder, rows, json.loads((folder / "scene_camera.json").read_text())


junk = (st.text(max_size=6) | st.sampled_from(["nan", "inf", "-1", "0", "1e400", "", " ", "1 2", "x"])
        | st.floats(allow_nan=True, allow_infinity=True).map(repr) | st.integers(-3, 20).map(str))
row_edit = st.tuples(st.integers(0, 200), st.integers(0, 8), junk)          # (row, field, new text)
camera_value = (st.none() | st.just([]) | st.lists(st.floats(-2e3, 2e3) | st.just(float("nan")), min_size=8, max_size=10)
                | st.just([0.0] * 9) | st.text(max_size=3))


def mangle_rows(rows, drop, dup, edits, header):
    out = [list(r) for r in rows]
    body = [r for i, r in enumerate(out[1:]) if i not in drop]
    body += [list(body[i % len(body)]) for i in dup] if body else []
    for i, j, text in edits:
        if body:
            r = body[i % len(body)]
            r[j % len(r)] = text
    return [header(out[0])] + body


headers = st.sampled_from([lambda h: h, lambda h: h[:-1], lambda h: h[::-1], lambda h: [x.upper() for x in h],
                           lambda h: h + ["extra"], lambda h: []])


def run(folder: Path, out: Path) -> int:
    return main(["multiview", str(folder), "--out", str(out), "--n-points", "200"])


def check_outcome(rc: int, out: Path) -> None:
    assert rc in (0, 2), rc
    event("result" if rc == 0 else "refused")            # (pytest --hypothesis-show-statistics: both happen)
    if rc == 0:
        assert all((out / n).is_file() for n in RESULTS)
        json.loads((out / "predicted_scene.json").read_text())
        list(csv.reader(open(out / "scene_reprojected.csv", newline="")))
    else:                                        # refused: nothing of the results was written
        assert not any((out / n).exists() for n in RESULTS), sorted(p.name for p in out.iterdir())


@FUZZ
@given(drop=st.sets(st.integers(0, 30), max_size=30), dup=st.lists(st.integers(0, 30), max_size=3),
       edits=st.lists(row_edit, max_size=3), header=headers, cut=st.none() | st.integers(0, 3000))
def test_any_candidates_file(example, drop, dup, edits, header, cut):
    folder, rows, _ = example
    with tempfile.TemporaryDirectory() as tmp:
        scn = Path(tmp) / "scn"
        scn.mkdir()
        (scn / "models").symlink_to(folder / "models")
        (scn / "scene_camera.json").write_bytes((folder / "scene_camera.json").read_bytes())
        buf = io.StringIO()
        csv.writer(buf).writerows(mangle_rows(rows, drop, dup, edits, header))
        text = buf.getvalue()
        (scn / "candidates.csv").write_text(text if cut is None else text[:cut])
        out = Path(tmp) / "out"
        check_outcome(run(scn, out), out)


@FUZZ
@given(views=st.dictionaries(st.sampled_from(["1", "2", "3", "4", "5", "0", "x"]),
                             st.fixed_dictionaries({}, optional={"cam_K": camera_value, "cam_R_w2c": camera_value,
                                                                 "cam_t_w2c": camera_value, "depth_scale": camera_value}),
                             max_size=5),
       keep_real=st.sets(st.sampled_from(["1", "2", "3", "4"])))
def test_any_camera_file(example, views, keep_real):
    folder, _, cams = example
    merged = {k: cams[k] for k in keep_real} | views
    with tempfile.TemporaryDirectory() as tmp:
        scn = Path(tmp) / "scn"
        scn.mkdir()
        (scn / "models").symlink_to(folder / "models")
        (scn / "candidates.csv").write_bytes((folder / "candidates.csv").read_bytes())
        (scn / "scene_camera.json").write_text(json.dumps(merged))
        out = Path(tmp) / "out"
        check_outcome(run(scn, out), out)


def test_the_unmangled_example_is_solved(example, tmp_path):
    "The fuzz starts from a scenario the command solves (so that the mangled ones exercise the whole path)."
    folder, _, _ = example
    assert run(folder, tmp_path / "out") == 0
    scene = json.loads((tmp_path / "out" / "predicted_scene.json").read_text())
    assert scene, "empty result of the example"
