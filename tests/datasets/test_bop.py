"""BOP format: round trips of every file type written with our writers (random content, many cases),
the mm <-> m boundary, the dataset reader on a toy dataset, and every bad-input case raising an
InputError that names the file and the field."""
import json, shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import trimesh
from PIL import Image
from scipy.spatial.transform import Rotation

from cosypose_nb.datasets.bop import *
from cosypose_nb.datasets.bop import MM_TO_M
from cosypose_nb.core import InputError

RNG = np.random.default_rng(0)


def rand_T(n, rng=RNG, scale=0.5):
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = Rotation.random(n, random_state=int(rng.integers(2**31))).as_matrix()
    T[:, :3, 3] = rng.normal(0, scale, (n, 3))
    return T


def rand_K(rng=RNG):
    return np.array([[rng.uniform(300, 1200), rng.uniform(-1, 1), rng.uniform(100, 400)],
                     [0, rng.uniform(300, 1200), rng.uniform(100, 300)], [0, 0, 1.0]])


def raises(fn, *words):
    "Assert `fn()` raises InputError whose message holds every word (file name, field...)."
    with pytest.raises(InputError) as e:
        fn()
    for w in words:
        assert w in str(e.value), (str(e.value), w)
    return str(e.value)


def edit_json(path, fn):
    data = json.loads(Path(path).read_text())
    fn(data)
    Path(path).write_text(json.dumps(data))


# ---------------------------------------------------------------- labels, models

def test_labels_round_trip():
    for i in RNG.integers(0, 1_000_000, 1000).tolist():
        assert obj_id_from_label(label_from_obj_id(i)) == i
    for bad in [-1, 1_000_000, 1.0, "1", True]:
        raises(lambda: label_from_obj_id(bad))
    for bad in ["obj_1", "obj_0000001", "OBJ_000001", "", None, 5]:
        raises(lambda: obj_id_from_label(bad))


def rand_infos(n, rng):
    infos = {}
    for oid in rng.choice(np.arange(1, 500), n, replace=False).tolist():
        size = rng.uniform(0.01, 0.3, 3)
        S = rand_T(int(rng.integers(0, 4)), rng, scale=0.01)
        infos[oid] = {"diameter": float(np.linalg.norm(size)), **{f"min_{a}": float(-s / 2) for a, s in zip("xyz", size)},
                      **{f"size_{a}": float(s) for a, s in zip("xyz", size)}, "symmetries_discrete": S,
                      "symmetries_continuous": [{"axis": rng.normal(size=3), "offset": rng.normal(0, 0.01, 3)}
                                                for _ in range(int(rng.integers(0, 2)))]}
    return infos


def test_models_info_round_trip_and_units(tmp_path):
    rng = np.random.default_rng(1)
    for trial in range(20):
        infos = rand_infos(int(rng.integers(1, 8)), rng)
        p = write_models_info(tmp_path / "models", infos)
        raw = json.loads(p.read_text())
        back = read_models_info(tmp_path / "models" if trial % 2 else p)
        assert sorted(back) == sorted(infos)
        for oid, info in infos.items():
            b, f = back[oid], raw[str(oid)]
            assert abs(f["diameter"] - info["diameter"] * 1000) < 1e-9          # mm in the file
            for k in ["diameter", "min_x", "min_y", "min_z", "size_x", "size_y", "size_z"]:
                assert abs(b[k] - info[k]) < 1e-15
            assert b["symmetries_discrete"].shape == (len(info["symmetries_discrete"]), 4, 4)
            assert np.allclose(b["symmetries_discrete"], info["symmetries_discrete"], atol=1e-15)
            assert len(b["symmetries_continuous"]) == len(info["symmetries_continuous"])
            for c1, c2 in zip(b["symmetries_continuous"], info["symmetries_continuous"]):
                assert np.allclose(c1["axis"], c2["axis"]) and np.allclose(c1["offset"], c2["offset"], atol=1e-15)
            S = object_symmetries(b, n_continuous=16)
            assert torch.equal(S[0], torch.eye(4, dtype=torch.float64))
            n_c = 16 if b["symmetries_continuous"] else 1
            assert len(S) <= n_c * (1 + len(b["symmetries_discrete"]))
            # every symmetry is rigid and expressed in metres (translations are small here)
            assert (S[:, :3, 3].abs() < 0.2).all()


def test_models_info_bad_input(tmp_path):
    good = {"1": {"diameter": 100.0, "symmetries_discrete": [np.eye(4).reshape(-1).tolist()],
                  "symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]}}
    p = tmp_path / "models_info.json"
    cases = [
        (lambda d: d["1"].pop("diameter"), "1.diameter"),
        (lambda d: d["1"].update(diameter=-3), "1.diameter"),
        (lambda d: d["1"].update(diameter="big"), "1.diameter"),
        (lambda d: d["1"].update(size_x=-1), "1.size_x"),
        (lambda d: d["1"]["symmetries_discrete"][0].pop(), "1.symmetries_discrete[0]"),
        (lambda d: d["1"]["symmetries_discrete"][0].__setitem__(0, 2.0), "1.symmetries_discrete[0]"),
        (lambda d: d["1"]["symmetries_continuous"][0].update(axis=[0, 0, 0]), "1.symmetries_continuous[0].axis"),
        (lambda d: d["1"]["symmetries_continuous"][0].update(axis=[0, 1]), "1.symmetries_continuous[0].axis"),
        (lambda d: d["1"]["symmetries_continuous"][0].update(offset=[0, 1]), "1.symmetries_continuous[0].offset"),
        (lambda d: d.update({"x7": d["1"]}), "x7"),
        (lambda d: d["1"].update(symmetries_discrete={"a": 1}), "1.symmetries_discrete"),
    ]
    for edit, field in cases:
        d = json.loads(json.dumps(good)); edit(d)
        p.write_text(json.dumps(d))
        raises(lambda: read_models_info(p), "models_info.json", field)
    p.write_text("{not json")
    raises(lambda: read_models_info(p), "models_info.json", "malformed JSON")
    raises(lambda: read_models_info(tmp_path / "nowhere"), "nowhere", "not found")


def test_model_mesh_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    for i in range(5):
        m = trimesh.creation.icosphere(subdivisions=2, radius=rng.uniform(0.02, 0.2))
        m.apply_translation(rng.normal(0, 0.05, 3))
        cols = rng.integers(0, 256, (len(m.vertices), 4)).astype(np.uint8); cols[:, 3] = 255
        m.visual.vertex_colors = cols
        p = write_model_mesh(tmp_path / f"obj_{i:06d}.ply", m)
        b = read_model_mesh(p)
        assert np.abs(b.vertices - m.vertices).max() < 1e-7 and (b.faces == m.faces).all()
        assert (np.asarray(b.visual.vertex_colors)[:, :3] == cols[:, :3]).all()
        raw = trimesh.load(p, process=False)                    # the file itself is in millimetres
        assert np.allclose(raw.vertices, m.vertices * 1000, atol=1e-3)
    # a texture survives, with its image written next to the mesh
    m = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
    uv = rng.random((len(m.vertices), 2))
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8))
    m.visual = trimesh.visual.TextureVisuals(uv=uv, image=img)
    b = read_model_mesh(write_model_mesh(tmp_path / "tex" / "obj_000009.ply", m))
    assert (tmp_path / "tex" / "obj_000009.png").exists()
    assert b.visual.kind == "texture" and np.abs(b.visual.uv - uv).max() < 1e-6
    assert (np.asarray(b.visual.material.image.convert("RGB")) == np.asarray(img)).all()


def test_bop_style_ascii_ply_in_mm(tmp_path):
    "A hand-written ASCII PLY like BOP's (mm, normals, colours): read in metres."
    p = tmp_path / "obj_000001.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                 "property float nx\nproperty float ny\nproperty float nz\nproperty uchar red\nproperty uchar green\n"
                 "property uchar blue\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
                 "0 0 0 0 0 1 255 0 0\n100 0 0 0 0 1 0 255 0\n0 50 0 0 0 1 0 0 255\n3 0 1 2\n")
    m = read_model_mesh(p)
    assert np.allclose(m.vertices, [[0, 0, 0], [0.1, 0, 0], [0, 0.05, 0]])
    assert (np.asarray(m.visual.vertex_colors)[:, :3] == np.eye(3) * 255).all()
    p.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n")
    raises(lambda: read_model_mesh(p), "obj_000001.ply")
    p.write_text("garbage")
    raises(lambda: read_model_mesh(p), "obj_000001.ply")
    raises(lambda: read_model_mesh(tmp_path / "missing.ply"), "missing.ply", "not found")


# ---------------------------------------------------------------- scene files

def test_scene_camera_round_trip_and_bad_input(tmp_path):
    rng = np.random.default_rng(3)
    cams = {}
    for im in rng.choice(2000, 50, replace=False).tolist():
        cams[im] = {"K": rand_K(rng), "depth_scale": float(rng.choice([0.1, 1.0, 0.25])),
                    "T_CW": rand_T(1, rng)[0] if rng.random() < 0.7 else None}
    p = write_scene_camera(tmp_path, cams)
    back = read_scene_camera(p)
    assert list(back) == sorted(cams)
    raw = json.loads(p.read_text())
    for im, c in cams.items():
        assert np.array_equal(back[im]["K"], c["K"]) and back[im]["depth_scale"] == c["depth_scale"]
        if c["T_CW"] is None:
            assert back[im]["T_CW"] is None and "cam_R_w2c" not in raw[str(im)]
        else:
            assert np.abs(back[im]["T_CW"] - c["T_CW"]).max() < 1e-14
            assert np.allclose(raw[str(im)]["cam_t_w2c"], c["T_CW"][:3, 3] * 1000)      # mm in the file
    im0 = str(next(i for i, c in cams.items() if c["T_CW"] is not None))
    cases = [(lambda d: d[im0].update(cam_K=d[im0]["cam_K"][:8]), f"{im0}.cam_K"),
             (lambda d: d[im0].update(cam_K=[1, 0, 0, 0, 1, 0, 0, 1, 1]), f"{im0}.cam_K"),
             (lambda d: d[im0].update(cam_K=[-5, 0, 0, 0, 5, 0, 0, 0, 1]), f"{im0}.cam_K"),
             (lambda d: d[im0].pop("cam_K"), f"{im0}.cam_K"),
             (lambda d: d[im0].update(depth_scale=0), f"{im0}.depth_scale"),
             (lambda d: d[im0].update(depth_scale=-1.0), f"{im0}.depth_scale"),
             (lambda d: d[im0].update(cam_R_w2c=d[im0]["cam_R_w2c"][:8]), f"{im0}.cam_R_w2c"),
             (lambda d: d[im0].update(cam_R_w2c=[2, 0, 0, 0, 1, 0, 0, 0, 1]), f"{im0}.cam_R_w2c"),
             (lambda d: d[im0].update(cam_R_w2c=[-1, 0, 0, 0, 1, 0, 0, 0, 1]), f"{im0}.cam_R_w2c"),
             (lambda d: d[im0].update(cam_t_w2c=[1, 2]), f"{im0}.cam_t_w2c"),
             (lambda d: d[im0].update(cam_t_w2c=[1, "a", 2]), f"{im0}.cam_t_w2c"),
             (lambda d: d[im0].pop("cam_t_w2c"), "cam_t_w2c"),
             (lambda d: d.update({"-3": d[im0]}), "-3")]
    for edit, field in cases:
        write_scene_camera(tmp_path, cams); edit_json(p, edit)
        raises(lambda: read_scene_camera(tmp_path), "scene_camera.json", field)
    # NaN in a file (json.dumps writes NaN)
    write_scene_camera(tmp_path, cams); edit_json(p, lambda d: d[im0]["cam_K"].__setitem__(2, float("nan")))
    raises(lambda: read_scene_camera(tmp_path), "scene_camera.json", f"{im0}.cam_K", "NaN")
    raises(lambda: write_scene_camera(tmp_path, {1: {"K": np.eye(4)}}), "K", "(3, 3)")


def test_scene_gt_round_trip_and_bad_input(tmp_path):
    rng = np.random.default_rng(4)
    gts = {im: [{"obj_id": int(rng.integers(1, 30)), "T_CO": T} for T in rand_T(int(rng.integers(0, 6)), rng)]
           for im in range(40)}
    gts[5] = [{"label": "obj_000007", "T_CO": rand_T(1, rng)[0]}]
    p = write_scene_gt(tmp_path, gts)
    back = read_scene_gt(p)
    for im, objs in gts.items():
        assert len(back[im]) == len(objs)
        for o, b in zip(objs, back[im]):
            oid = o.get("obj_id") or obj_id_from_label(o["label"])
            assert b["obj_id"] == oid and b["label"] == label_from_obj_id(oid)
            assert b["T_CO"].dtype == np.float64 and np.abs(b["T_CO"] - o["T_CO"]).max() < 1e-14
    raw = json.loads(p.read_text())
    assert np.allclose(raw["5"][0]["cam_t_m2c"], gts[5][0]["T_CO"][:3, 3] * 1000)
    known = {i: {} for i in range(1, 30)}
    read_scene_gt(p, known)
    cases = [(lambda d: d["5"][0].update(obj_id=99), "5[0].obj_id", "99"),
             (lambda d: d["5"][0].update(obj_id="7"), "5[0].obj_id"),
             (lambda d: d["5"][0].pop("cam_t_m2c"), "5[0].cam_t_m2c"),
             (lambda d: d["5"][0].update(cam_R_m2c=d["5"][0]["cam_R_m2c"][:6]), "5[0].cam_R_m2c"),
             (lambda d: d["5"][0].update(cam_R_m2c=(np.eye(3) * 1.1).reshape(-1).tolist()), "5[0].cam_R_m2c"),
             (lambda d: d["5"][0].update(cam_t_m2c=[1, 2, 3, 4]), "5[0].cam_t_m2c"),
             (lambda d: d.update({"5": {"obj_id": 1}}), "5")]
    for edit, *words in cases:
        write_scene_gt(tmp_path, gts); edit_json(p, edit)
        raises(lambda: read_scene_gt(tmp_path, known), "scene_gt.json", *words)
    bad_T = np.eye(4); bad_T[0, 0] = 3
    raises(lambda: write_scene_gt(tmp_path, {1: [{"obj_id": 1, "T_CO": bad_T}]}), "scene_gt[1][0].T_CO")
    raises(lambda: write_scene_gt(tmp_path, {1: [{"obj_id": 1, "label": "obj_000002", "T_CO": np.eye(4)}]}), "does not match")


def test_scene_gt_info_and_boxes(tmp_path):
    rng = np.random.default_rng(5)
    xywh = rng.integers(-1, 600, (500, 4)).astype(float)
    assert np.allclose(bbox_xyxy_to_xywh(bbox_xywh_to_xyxy(xywh))[(xywh[:, 2:] >= 0).all(1)], xywh[(xywh[:, 2:] >= 0).all(1)])
    assert np.isnan(bbox_xywh_to_xyxy([-1, -1, -1, -1])).all() and (bbox_xyxy_to_xywh(np.full(4, np.nan)) == -1).all()
    infos = {}
    for im in range(30):
        lst = []
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.integers(0, 500, 2); w, h = rng.integers(1, 100, 2)
            vis = rng.random() < 0.8
            lst.append({"bbox_obj": np.array([x, y, x + w, y + h], float),
                        "bbox_visib": np.array([x, y, x + w // 2, y + h], float) if vis else np.full(4, np.nan),
                        "px_count_all": int(w * h), "px_count_valid": int(w * h) - 3, "px_count_visib": int(w * h // 2) if vis else 0,
                        "visib_fract": (w * h // 2) / (w * h) if vis else 0.0})
        infos[im] = lst
    p = write_scene_gt_info(tmp_path, infos)
    back = read_scene_gt_info(p)
    raw = json.loads(p.read_text())
    for im, lst in infos.items():
        for j, (a, b) in enumerate(zip(lst, back[im])):
            for k in a:
                assert np.array_equal(np.asarray(a[k]), np.asarray(b[k]), equal_nan=True), k
            x1, y1, x2, y2 = a["bbox_obj"]
            assert raw[str(im)][j]["bbox_obj"] == [x1, y1, x2 - x1, y2 - y1]               # (x, y, w, h) in the file
    im0 = next(i for i, l in infos.items() if l)
    for edit, field in [(lambda d: d[str(im0)][0].update(bbox_obj=[1, 2, 3]), "bbox_obj"),
                        (lambda d: d[str(im0)][0].pop("bbox_visib"), "bbox_visib"),
                        (lambda d: d[str(im0)][0].update(visib_fract=1.5), "visib_fract"),
                        (lambda d: d[str(im0)][0].pop("visib_fract"), "visib_fract"),
                        (lambda d: d[str(im0)][0].update(px_count_all=-2), "px_count_all")]:
        write_scene_gt_info(tmp_path, infos); edit_json(p, edit)
        raises(lambda: read_scene_gt_info(tmp_path), "scene_gt_info.json", f"{im0}[0].{field}")
    raises(lambda: write_scene_gt_info(tmp_path, {0: [{"bbox_obj": [0.5, 0, 3, 3], "bbox_visib": [0, 0, 1, 1], "visib_fract": 1}]}),
           "bbox_obj", "integer")


# ---------------------------------------------------------------- images

def test_images_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    for trial in range(5):
        H, W = rng.integers(5, 60, 2)
        rgb = rng.integers(0, 256, (H, W, 3)).astype(np.uint8)
        assert np.array_equal(read_rgb(write_rgb(tmp_path / "a.png", rgb)), rgb)
        jpg = read_rgb(write_rgb(tmp_path / "a.jpg", rgb))
        assert jpg.shape == rgb.shape and jpg.dtype == np.uint8
        depth = rng.uniform(0.1, 3.0, (H, W)); depth[0, 0] = 0; depth[-1, -1] = np.nan
        for ds in [0.1, 1.0]:
            back = read_depth(write_depth(tmp_path / "d.png", depth, ds), ds)
            assert back.dtype == np.float32 and back[0, 0] == 0 and back[-1, -1] == 0
            ok = np.isfinite(depth)
            assert np.abs(back[ok] - depth[ok]).max() <= ds * MM_TO_M / 2 + 1e-6
            raw = np.asarray(Image.open(tmp_path / "d.png"))
            assert raw.dtype == np.uint16 and abs(raw[1, 0] * ds - depth[1, 0] * 1000) <= ds / 2 + 1e-6   # mm * 1/ds in the file
        mask = rng.random((H, W)) < 0.5
        assert np.array_equal(read_mask(write_mask(tmp_path / "m.png", mask), (H, W)), mask)
        raises(lambda: read_mask(tmp_path / "m.png", (H + 1, W)), "m.png", "mask")
    Image.fromarray(rng.integers(0, 256, (7, 9)).astype(np.uint8)).save(tmp_path / "g.png")
    g = read_rgb(tmp_path / "g.png")
    assert g.shape == (7, 9, 3) and (g[..., 0] == g[..., 2]).all()
    raises(lambda: read_depth(tmp_path / "d.png", 0), "d.png", "depth_scale")
    raises(lambda: read_depth(tmp_path / "d.png", -1.0), "d.png", "depth_scale")
    raises(lambda: write_depth(tmp_path / "x.png", np.full((2, 2), 7.0), 0.1), "x.png", "depth", "depth_scale")
    raises(lambda: write_depth(tmp_path / "x.png", -np.ones((2, 2))), "x.png", "negative")
    raises(lambda: write_rgb(tmp_path / "x.png", np.zeros((4, 4), np.uint8)), "x.png", "rgb")
    raises(lambda: write_rgb(tmp_path / "x.bmp", np.zeros((4, 4, 3), np.uint8)), "x.bmp")
    raises(lambda: read_rgb(tmp_path / "nope.png"), "nope.png", "not found")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    raises(lambda: read_rgb(tmp_path / "broken.png"), "broken.png")
    raises(lambda: find_image(tmp_path, 17), "000017")
    assert scene_dir_name(48) == "000048" and image_name(3) == "000003.png" and mask_name(3, 12) == "000003_000012.png"


# ---------------------------------------------------------------- targets, results

def test_targets_round_trip_and_bad_input(tmp_path):
    rng = np.random.default_rng(7)
    df = pd.DataFrame({"scene_id": rng.integers(0, 60, 100), "im_id": rng.integers(0, 2000, 100),
                       "obj_id": rng.integers(1, 22, 100), "inst_count": rng.integers(1, 4, 100)})
    p = write_targets(tmp_path, df)
    assert p.name == "test_targets_bop19.json"
    back = read_targets(tmp_path)
    assert (back[["scene_id", "im_id", "obj_id", "inst_count"]].values == df.values).all()
    assert (back.label == [label_from_obj_id(i) for i in df.obj_id]).all()
    for edit, field in [(lambda d: d[3].update(inst_count=0), "[3].inst_count"), (lambda d: d[4].pop("obj_id"), "[4].obj_id"),
                        (lambda d: d[5].update(im_id="x"), "[5].im_id"), (lambda d: d.append(7), "[100]")]:
        write_targets(tmp_path, df); edit_json(p, edit)
        raises(lambda: read_targets(p), "test_targets_bop19.json", field)


def rand_results(n, rng):
    rows = []
    times = {}
    for T in rand_T(n, rng, scale=0.3):
        s, i = int(rng.integers(0, 5)), int(rng.integers(0, 10))
        t = times.setdefault((s, i), float(rng.choice([-1.0, rng.uniform(0, 2)])))
        rows.append({"scene_id": s, "im_id": i, "obj_id": int(rng.integers(1, 30)), "score": float(rng.random()), "T_CO": T, "time": t})
    return pd.DataFrame(rows)


def test_results_csv_round_trip(tmp_path):
    rng = np.random.default_rng(8)
    for n in [0, 1, 17, 300]:
        df = rand_results(n, rng)
        p = write_results_csv(tmp_path / "r.csv", df)
        lines = p.read_text().splitlines()
        assert lines[0] == "scene_id,im_id,obj_id,score,R,t,time" and len(lines) == n + 1
        back = read_results_csv(p)
        assert list(back.columns) == ["scene_id", "im_id", "obj_id", "label", "score", "time", "T_CO"]
        assert len(back) == n
        if n:
            assert (back[["scene_id", "im_id", "obj_id"]].values == df[["scene_id", "im_id", "obj_id"]].values).all()
            assert (back.score.values == df.score.values).all() and (back.time.values == df.time.values).all()
            P, Q = poses_tensor(back), poses_tensor(df)
            assert P.shape == (n, 4, 4) and P.dtype == torch.float64
            assert (P - Q).abs().max() < 1e-15
            f = lines[1].split(",")
            assert len(f[4].split()) == 9 and len(f[5].split()) == 3
            assert np.allclose([float(x) for x in f[5].split()], df.T_CO[0][:3, 3] * 1000)   # mm in the file
    # labels instead of obj_ids, and no time column (-1)
    df = rand_results(5, rng).drop(columns=["time"])
    df["label"] = [label_from_obj_id(i) for i in df.pop("obj_id")]
    back = read_results_csv(write_results_csv(tmp_path / "r2.csv", df))
    assert (back.time == -1).all() and (back.label == df.label).all()
    assert poses_tensor(back, dtype=torch.float32).dtype == torch.float32


def test_results_csv_bad_input(tmp_path):
    p = tmp_path / "r.csv"
    good = "scene_id,im_id,obj_id,score,R,t,time\n1,2,3,0.5,1 0 0 0 1 0 0 0 1,10 20 300,0.1\n"
    cases = [("scene,im,obj\n", "line 1", "header"),
             (good + "1,2,3,0.5,1 0 0 0 1 0 0 0 1,10 20 300\n", "line 3", "7 fields"),
             (good + "1,2,3,0.5,1 0 0 0 1 0 0 0,10 20 300,0.1\n", "line 3", "R"),
             (good + "1,2,3,0.5,1 0 0 0 1 0 0 0 1,10 20,0.1\n", "line 3", "t"),
             (good + "1,2,3,0.5,1 0 0 0 1 0 0 0 1,10 x 20,0.1\n", "line 3", "t"),
             (good + "1,2,3,0.5,2 0 0 0 1 0 0 0 1,10 20 30,0.1\n", "line 3", "R"),
             (good + "1,2,3,high,1 0 0 0 1 0 0 0 1,10 20 30,0.1\n", "line 3", "score"),
             (good + "1,b,3,0.5,1 0 0 0 1 0 0 0 1,10 20 30,0.1\n", "line 3", "im_id"),
             (good + "1,2,-3,0.5,1 0 0 0 1 0 0 0 1,10 20 30,0.1\n", "line 3", "obj_id"),
             (good + "1,2,3,0.5,1 0 0 0 1 0 0 0 1,10 20 nan,0.1\n", "line 3", "t"),
             (good + "1,2,4,0.5,1 0 0 0 1 0 0 0 1,10 20 30,0.7\n", "time", "scene 1 image 2")]
    for text, *words in cases:
        p.write_text(text)
        raises(lambda: read_results_csv(p), "r.csv", *words)
    raises(lambda: read_results_csv(tmp_path / "none.csv"), "none.csv", "not found")
    # an estimate behind the camera: read (a scene reprojected into every view), unless `in_front` asks for detections
    p.write_text(good + "1,2,4,0.5,1 0 0 0 1 0 0 0 1,10 20 -30,0.1\n")
    assert len(read_results_csv(p)) == 2
    raises(lambda: read_results_csv(p, in_front=True), "r.csv", "line 3", "not in front of the camera")
    bad = np.eye(4); bad[:3, :3] *= 2
    raises(lambda: write_results_csv(p, pd.DataFrame([{"scene_id": 1, "im_id": 1, "obj_id": 1, "score": 1.0, "T_CO": bad}])),
           "row 0", "T_CO")
    raises(lambda: write_results_csv(p, pd.DataFrame([{"scene_id": 1, "im_id": 1, "obj_id": 1, "score": 1.0}])), "T_CO")
    df = pd.DataFrame([{"scene_id": 1, "im_id": 1, "obj_id": 1, "score": 1.0, "T_CO": np.eye(4), "time": t} for t in (1.0, 2.0)])
    raises(lambda: write_results_csv(p, df), "time")


# ---------------------------------------------------------------- writer + dataset

def test_toy_dataset_read_back(tmp_path):
    root = make_toy_dataset(tmp_path / "toy", n_scenes=3, n_images=4, n_objects=4, seed=3)
    ds = BOPDataset(root, load_depth=True, load_masks=True)
    assert len(ds) == 12 and list(ds.frame_index.columns) == ["scene_id", "im_id", "view_id"]
    assert ds.scenes() == {0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [8, 9, 10, 11]}
    assert ds.view_groups(3) == [[0, 1, 2], [3], [4, 5, 6], [7], [8, 9, 10], [11]]
    assert sorted(ds.models_info) == [1, 2, 3]
    for idx in ds.scenes().values():
        recs = [ds[i] for i in idx]
        T_WO = np.stack([np.linalg.inv(r.T_CW)[None] @ r.poses().numpy() for r in recs])
        assert np.abs(T_WO - T_WO[0]).max() < 1e-9
        assert all(r.labels == recs[0].labels for r in recs)
    for r in ds:
        assert r.rgb.dtype == np.uint8 and r.rgb.shape == (120, 160, 3) and r.depth.shape == (120, 160)
        assert r.K.shape == (3, 3) and r.T_CW.shape == (4, 4) and r.boxes().shape == (4, 4)
        for o in r.objects:
            assert o.mask.shape == (120, 160) and o.mask.dtype == bool
            assert np.array_equal(o.bbox_obj, mask_bbox(o.mask), equal_nan=True)
            assert np.array_equal(o.bbox_visib, mask_bbox(o.mask_visib), equal_nan=True)
            assert not (o.mask_visib & ~o.mask).any()
            assert abs(o.visib_fract - o.mask_visib.sum() / max(o.mask.sum(), 1)) < 1e-12
            # the projected model origin lies inside the silhouette box
            uv = r.K @ o.T_CO[:3, 3]; uv = uv[:2] / uv[2]
            assert o.bbox_obj[0] - 1 <= uv[0] <= o.bbox_obj[2] + 1 and o.bbox_obj[1] - 1 <= uv[1] <= o.bbox_obj[3] + 1
    assert ds[-1].im_id == 4
    with pytest.raises(IndexError):
        ds[12]
    tg = BOPDataset(root, targets=True)
    assert len(tg) == 12 and len(tg.targets) > 0
    # targets restrict the index
    t = read_targets(root); t = t[t.im_id <= 2]
    assert len(BOPDataset(root, targets=t)) == 6
    # gt_info counts computed from masks and depth
    info = read_scene_gt_info(root / "test" / "000000")
    for im, lst in info.items():
        for j, d in enumerate(lst):
            m = read_mask(root / "test" / "000000" / "mask" / mask_name(im, j))
            assert d["px_count_all"] == m.sum() and d["px_count_valid"] <= d["px_count_all"]
    assert not list(root.rglob("*.tmp"))                    # atomic writes leave no temporaries


def test_writer_appends_and_validates(tmp_path):
    d = tmp_path / "scene" / "000007"
    rgb = np.zeros((20, 30, 3), np.uint8)
    m = np.zeros((20, 30), bool); m[2:8, 3:9] = True
    K = rand_K()
    with BOPSceneWriter(d) as w:
        assert w.add_image(rgb, K, [{"obj_id": 2, "T_CO": rand_T(1)[0], "mask": m, "mask_visib": m}]) == 0
        assert w.add_image(rgb, K, [{"label": "obj_000003", "T_CO": rand_T(1)[0], "bbox_obj": [1, 1, 5, 5],
                                     "bbox_visib": [1, 1, 3, 5], "visib_fract": 0.5}]) == 1
    with BOPSceneWriter(d) as w:                              # reopening appends
        assert w.add_image(rgb, K, [], depth=np.ones((20, 30))) == 2
    ds = BOPDataset(tmp_path, split="scene", load_depth=False)
    assert len(ds) == 3 and ds[0].objects[0].obj_id == 2 and ds[1].objects[0].label == "obj_000003"
    assert np.array_equal(ds[1].objects[0].bbox_visib, [1, 1, 3, 5]) and ds[2].objects == []
    assert read_scene_camera(d)[2]["depth_scale"] == 0.1 and read_scene_camera(d)[0]["depth_scale"] is None
    w = BOPSceneWriter(d)
    n_files = len(list(d.rglob("*")))
    raises(lambda: w.add_image(rgb, K, [{"obj_id": 1, "T_CO": np.eye(4)}]), "object 0", "mask")
    raises(lambda: w.add_image(rgb, K, [{"obj_id": 1, "T_CO": np.eye(4), "mask": m[:5], "mask_visib": m}]), "mask", "shape")
    raises(lambda: w.add_image(rgb, np.eye(3) * -1, []), "K")
    raises(lambda: w.add_image(rgb, K, [], depth=np.ones((3, 3))), "depth")
    raises(lambda: w.add_image(rgb, K, [{"T_CO": np.eye(4), "mask": m, "mask_visib": m}]), "obj_id")
    assert len(list(d.rglob("*"))) == n_files and sorted(w.cameras) == [0, 1, 2]    # nothing written by failed calls


def test_dataset_bad_input(tmp_path):
    root = make_toy_dataset(tmp_path / "toy", n_scenes=1, n_images=3, n_objects=2, seed=4)
    sd = root / "test" / "000000"
    raises(lambda: BOPDataset(root, split="val"), "val", "split folder")
    # an object absent from models_info
    shutil.copy(sd / "scene_gt.json", tmp_path / "gt.json")
    edit_json(sd / "scene_gt.json", lambda d: d["2"][1].update(obj_id=42))
    ds = BOPDataset(root)
    raises(lambda: ds[1], "scene_gt.json", "2[1].obj_id", "42")
    assert len(BOPDataset(root, models_dir=None)) == 3
    shutil.copy(tmp_path / "gt.json", sd / "scene_gt.json")
    # a mask of the wrong size
    write_mask(sd / "mask_visib" / mask_name(3, 1), np.ones((10, 10), bool))
    raises(lambda: BOPDataset(root, load_masks=True)[2], "000003_000001.png", "mask")
    assert BOPDataset(root)[2].objects[1].mask is None            # masks not asked for: not read
    # gt_info not matching scene_gt
    edit_json(sd / "scene_gt_info.json", lambda d: d["1"].pop())
    raises(lambda: BOPDataset(root)[0], "scene_gt_info.json", "1")
    # depth without depth_scale, missing images, missing scene_gt
    edit_json(sd / "scene_camera.json", lambda d: d["2"].pop("depth_scale"))
    raises(lambda: BOPDataset(root, load_depth=True)[1], "scene_camera.json", "2.depth_scale")
    (sd / "rgb" / "000003.png").unlink()
    raises(lambda: BOPDataset(root)[2], "rgb", "000003")
    (sd / "scene_gt.json").unlink()
    raises(lambda: BOPDataset(root)[0], "scene_gt.json", "not found")
    (sd / "scene_gt_info.json").unlink()
    assert BOPDataset(root, require_gt=False)[0].objects == []
    # a malformed scene_camera.json fails at indexing, naming the file
    (sd / "scene_camera.json").write_text("{")
    raises(lambda: BOPDataset(root), "scene_camera.json", "malformed JSON")
    # a target that is not in the split
    shutil.rmtree(sd)
    raises(lambda: BOPDataset(root, targets=True), "test_targets_bop19.json", "scene 0")


@pytest.mark.parametrize("reader", ["read_model_mesh", "load_mesh"])
def test_missing_texture_is_one_error_without_trimesh_traceback(reader, tmp_path, caplog):
    "A PLY naming a texture that is not there: an `InputError` naming the file, and trimesh logs nothing (no traceback)."
    import logging
    from cosypose_nb.datasets import files, meshes
    p = tmp_path / "obj_000001.ply"
    p.write_bytes(b"ply\nformat ascii 1.0\ncomment TextureFile gone.png\nelement vertex 3\nproperty float x\nproperty float y\n"
                  b"property float z\nproperty float texture_u\nproperty float texture_v\nelement face 1\n"
                  b"property list uchar int vertex_indices\nend_header\n0 0 0 0 0\n0 10 0 1 0\n0 0 10 0 1\n3 0 1 2\n")
    fn = getattr(files, reader, None) or getattr(meshes, reader)
    with caplog.at_level(logging.DEBUG, logger="trimesh"), pytest.raises(InputError, match="obj_000001.ply: texture: gone.png"):
        fn(p)
    assert not [r for r in caplog.records if r.name.startswith("trimesh") and r.exc_info], caplog.text
