"""Property-based tests (hypothesis) of the BOP readers and writers: any input gives a result or an
`InputError`, never another exception, and a writer that refuses its input leaves nothing behind.

Fast by default (a few seconds); more examples with `COSYPOSE_NB_FUZZ_EXAMPLES=2000 pytest tests/datasets/test_fuzz_readers.py`."""
import json, os, tempfile, warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cosypose_nb.core import InputError
from cosypose_nb.datasets.bop_format import (BOPWarning, read_models_info, read_scene_camera, read_scene_gt,
                                             read_scene_gt_info, write_scene_gt, write_scene_camera)
from cosypose_nb.datasets.files import read_model_mesh
from cosypose_nb.datasets.results import read_results_csv, read_targets, write_results_csv

N_EXAMPLES = int(os.environ.get("COSYPOSE_NB_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, database=None, derandomize=N_EXAMPLES <= 100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ------------------------------------------------------------------ strategies

numbers = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10) | st.floats(-1.5, 1.5)
ROT = [np.eye(3), np.diag([1.0, 1, -1]), 1.004 * np.eye(3), 1.3 * np.eye(3), np.zeros((3, 3)),
       np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])]
rotations = st.sampled_from([R.ravel().tolist() for R in ROT]) | st.lists(numbers, min_size=8, max_size=10)
scalars = st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | numbers | st.text(max_size=4)
json_any = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
                        max_leaves=12)
keys = st.sampled_from(["0", "1", "2", "01", "-1", "x", " 3", "2147483648"])


def maybe(value):
    "A strategy giving `value` mostly, and sometimes anything."
    return value | json_any


def vec(n):
    return st.lists(numbers, min_size=n - 1, max_size=n + 1) | st.lists(st.floats(-1e3, 1e3), min_size=n, max_size=n)


gt_entry = st.fixed_dictionaries({}, optional={"obj_id": maybe(st.integers(-1, 30)), "cam_R_m2c": maybe(rotations),
                                               "cam_t_m2c": maybe(vec(3))})
camera_entry = st.fixed_dictionaries({}, optional={"cam_K": maybe(vec(9) | st.just([500.0, 0, 320, 0, 500, 240, 0, 0, 1])),
                                                   "depth_scale": maybe(numbers), "cam_R_w2c": maybe(rotations),
                                                   "cam_t_w2c": maybe(vec(3))})
info_entry = st.fixed_dictionaries({}, optional={"bbox_obj": maybe(vec(4)), "bbox_visib": maybe(vec(4)),
                                                 "px_count_all": maybe(numbers), "visib_fract": maybe(numbers)})
model_entry = st.fixed_dictionaries({}, optional={
    "diameter": maybe(numbers), "min_x": maybe(numbers), "size_x": maybe(numbers),
    "symmetries_discrete": maybe(st.lists(vec(16) | st.just(np.eye(4).ravel().tolist()), max_size=3)),
    "symmetries_continuous": maybe(st.lists(st.fixed_dictionaries({}, optional={"axis": maybe(vec(3)), "offset": maybe(vec(3))}),
                                            max_size=2))})


def per_key(entry, listed: bool):
    return st.dictionaries(keys, st.lists(entry, max_size=3) if listed else entry, max_size=3) | json_any


def read_or_refuse(fn, path: Path):
    "Call the reader `fn(path)`: a result or an InputError; the folder of `path` is left as it was."
    before = sorted(p.name for p in path.parent.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BOPWarning)
        try:
            out = fn(path)
        except InputError:
            out = None
    assert sorted(p.name for p in path.parent.iterdir()) == before
    return out


def write_text(data, name: str) -> Path:
    d = Path(tempfile.mkdtemp())
    p = d / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p

# ------------------------------------------------------------------ JSON readers

@FUZZ
@given(per_key(gt_entry, listed=True))
def test_scene_gt(data):
    out = read_or_refuse(lambda p: read_scene_gt(p, models_info={1: {}, 2: {}}), write_text(data, "scene_gt.json"))
    for objs in (out or {}).values():
        for o in objs:
            R = o["T_CO"][:3, :3]
            assert np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.linalg.det(R) > 0 and np.isfinite(o["T_CO"]).all()


@FUZZ
@given(per_key(camera_entry, listed=False))
def test_scene_camera(data):
    out = read_or_refuse(read_scene_camera, write_text(data, "scene_camera.json"))
    for cam in (out or {}).values():
        assert cam["K"].shape == (3, 3) and cam["K"][0, 0] > 0 and cam["K"][1, 1] > 0


@FUZZ
@given(per_key(info_entry, listed=True))
def test_scene_gt_info(data):
    read_or_refuse(read_scene_gt_info, write_text(data, "scene_gt_info.json"))


@FUZZ
@given(st.dictionaries(keys, model_entry, max_size=3) | json_any)
def test_models_info(data):
    out = read_or_refuse(read_models_info, write_text(data, "models_info.json"))
    for info in (out or {}).values():
        assert info["diameter"] > 0 and info["symmetries_discrete"].shape[1:] == (4, 4)


@FUZZ
@given(st.lists(st.fixed_dictionaries({}, optional={k: maybe(st.integers(-1, 5)) for k in ("scene_id", "im_id", "obj_id", "inst_count")}),
                max_size=4) | json_any)
def test_targets(data):
    read_or_refuse(read_targets, write_text(data, "test_targets_bop19.json"))


@FUZZ
@given(st.binary(max_size=64) | st.text(max_size=64))
def test_json_files_of_any_bytes(raw):
    for name, fn in (("scene_gt.json", read_scene_gt), ("scene_camera.json", read_scene_camera), ("models_info.json", read_models_info)):
        p = Path(tempfile.mkdtemp()) / name
        (p.write_bytes if isinstance(raw, bytes) else p.write_text)(raw)
        read_or_refuse(fn, p)

# ------------------------------------------------------------------ results CSV

fields = st.sampled_from(["1", "0", "-3", "2147483648", "x", "", "0.5", "nan", "inf", "1e400", "1 0 0 0 1 0 0 0 1",
                          "1.004 0 0 0 1.004 0 0 0 1.004", "1 0 0 0 1 0 0 0 -1", "10 20 300", "10 20", " 1 ", "-1"]) | st.text(max_size=6)
csv_row = st.lists(fields, min_size=5, max_size=8).map(lambda r: ",".join(r))


@FUZZ
@given(st.lists(csv_row, max_size=6), st.sampled_from(["scene_id,im_id,obj_id,score,R,t,time", "\ufeffscene_id,im_id,obj_id,score,R,t,time",
                                                      "scene_id,im_id,obj_id", ""]), st.booleans())
def test_results_csv(rows, header, in_front):
    p = write_text("\n".join([header, *rows]) + "\n", "results.csv")
    df = read_or_refuse(lambda q: read_results_csv(q, in_front=in_front), p)
    if df is not None:
        assert list(df.columns) == ["scene_id", "im_id", "obj_id", "label", "score", "time", "T_CO"]
        for T in df.T_CO:
            assert np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9) and (not in_front or T[2, 3] > 0)


@FUZZ
@given(st.binary(max_size=200))
def test_results_csv_of_any_bytes(raw):
    p = Path(tempfile.mkdtemp()) / "results.csv"
    p.write_bytes(b"scene_id,im_id,obj_id,score,R,t,time\n" + raw)
    read_or_refuse(read_results_csv, p)

# ------------------------------------------------------------------ PLY headers

prop = st.sampled_from(["property float x", "property float y", "property float z", "property double x", "property uchar red",
                        "property list uchar int vertex_indices", "property list uchar float vertex_indices",
                        "property float texture_u", "property int", "comment TextureFile missing.png", "obj_info x"])
element = st.tuples(st.sampled_from(["vertex", "face", "edge", "x"]), st.integers(-1, 5) | st.just(10 ** 9),
                    st.lists(prop, max_size=4))


@FUZZ
@given(st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian", "utf8"]), st.lists(element, max_size=3),
       st.binary(max_size=80) | st.text(alphabet="0123456789 .-\n", max_size=80).map(str.encode))
def test_ply_headers(fmt, elements, body):
    lines = ["ply", f"format {fmt} 1.0"]
    for name, n, props in elements:
        lines += [f"element {name} {n}", *props]
    p = Path(tempfile.mkdtemp()) / "obj_000001.ply"
    p.write_bytes(("\n".join(lines + ["end_header"]) + "\n").encode() + body)
    mesh = read_or_refuse(read_model_mesh, p)
    if mesh is not None:
        V, F = np.asarray(mesh.vertices), np.asarray(mesh.faces)
        assert np.isfinite(V).all() and (F.size == 0 or (F.min() >= 0 and F.max() < len(V)))

# ------------------------------------------------------------------ writers: all or nothing

poses = st.lists(numbers, min_size=16, max_size=16).map(lambda v: np.array(v, dtype=float).reshape(4, 4)) | \
    st.sampled_from([np.eye(4), np.diag([1.0, 1, -1, 1]), np.diag([2.0, 2, 2, 1])])


@FUZZ
@given(st.dictionaries(st.integers(0, 3), st.lists(st.fixed_dictionaries({"obj_id": st.integers(-1, 3) | st.none(), "T_CO": poses}),
                                                   max_size=3), max_size=3))
def test_scene_gt_writer(gts):
    d = Path(tempfile.mkdtemp())
    try:
        write_scene_gt(d, gts)
    except InputError:
        assert list(d.iterdir()) == []                                # refused: nothing written, no temporary file
        return
    back = read_scene_gt(d)
    assert sorted(back) == sorted(gts) and all(len(back[i]) == len(gts[i]) for i in gts)


@FUZZ
@given(st.lists(st.fixed_dictionaries({"scene_id": st.integers(0, 2), "im_id": st.integers(0, 2), "obj_id": st.integers(-1, 3),
                                       "score": numbers, "T_CO": poses, "time": numbers}), max_size=4))
def test_results_writer(rows):
    import pandas as pd
    d = Path(tempfile.mkdtemp())
    try:
        write_results_csv(d / "r.csv", pd.DataFrame(rows))
    except InputError:
        assert list(d.iterdir()) == []
        return
    assert len(read_results_csv(d / "r.csv")) == len(rows)


@FUZZ
@given(st.dictionaries(st.integers(0, 3), st.fixed_dictionaries({"K": st.lists(numbers, min_size=9, max_size=9).map(
    lambda v: np.array(v, dtype=float).reshape(3, 3)) | st.just(np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])),
    "depth_scale": st.none() | numbers, "T_CW": st.none() | poses}), max_size=3))
def test_scene_camera_writer(cams):
    d = Path(tempfile.mkdtemp())
    try:
        write_scene_camera(d, cams)
    except InputError:
        assert list(d.iterdir()) == []
        return
    assert sorted(read_scene_camera(d)) == sorted(cams)
