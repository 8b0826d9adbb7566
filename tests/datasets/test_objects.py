"""Slower tests of cosypose_nb.datasets.objects: deterministic default-set build, textures rendered where they
belong, random mesh folders, symmetries of the default set in full, CLI, bad input."""
import math
import numpy as np
import pytest
import torch
import trimesh
from pathlib import Path

from cosypose_nb.core import InputError, get_device
from cosypose_nb.datasets.bop import read_models_info, write_models_info, MM_TO_M
from cosypose_nb.geometry.rotations import random_rotations
from cosypose_nb.geometry.symmetries import symmetric_distance
from cosypose_nb.datasets import objects as O
from cosypose_nb.datasets import models as M
from cosypose_nb.datasets.objects_command import objects_cli


def _render(model, size: int = 128, azimuth: float = 40.0, elevation: float = 30.0, fov: float = 40.0) -> dict:
    """`model` alone, drawn by the project's pybullet renderer from a camera at `azimuth`, `elevation` (degrees)
    around its origin: 'rgb' (size, size, 3), 'mask', 'depth' (m, 0 off the object), 'K', 'T_CO' (numpy)."""
    from cosypose_nb.geometry.cameras import look_at, make_K
    from cosypose_nb.rendering.bullet import BulletScene
    half = math.radians(fov) / 2
    d = 0.5 * model.diameter / math.sin(half) * 1.05
    az, el = math.radians(azimuth), math.radians(elevation)
    T_WC = look_at([d * math.cos(el) * math.cos(az), d * math.cos(el) * math.sin(az), d * math.sin(el)], [0.0, 0, 0]).numpy()
    f = size / 2 / math.tan(half)
    K = make_K(f, f, (size - 1) / 2, (size - 1) / 2).numpy()
    with BulletScene({model.label: model.urdf_path}) as scene:
        scene.set_objects([model.label], np.eye(4)[None])
        r = scene.render(np.linalg.inv(T_WC), K, (size, size), depth=True, environment=False)
    return {"rgb": r["rgb"], "mask": r["seg"] == 0, "depth": r["depth"], "K": K, "T_CO": np.linalg.inv(T_WC)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def db(cache):
    return O.load_default_objects(cache)


def test_default_build_is_deterministic(tmp_path, cache, db):
    a = O.build_default_objects(tmp_path / "a")
    ref = O.default_objects_dir(cache)
    for n in O.default_object_files():
        assert (a / n).read_bytes() == (ref / n).read_bytes(), n
    assert set(read_models_info(a)) == set(range(1, 11))


def test_cache_rebuilds_when_incomplete(tmp_path):
    d = O.default_objects_dir(tmp_path)
    before = (d / "obj_000003.ply").read_bytes()
    (d / "obj_000003.ply").unlink()
    d2 = O.default_objects_dir(tmp_path)
    assert d2 == d and (d / "obj_000003.ply").read_bytes() == before
    (d / ".complete").write_text("stale")                        # a build of another spec is rebuilt
    O.default_objects_dir(tmp_path)
    assert (d / ".complete").read_text() == O._default_spec_hash()


def test_env_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(O.CACHE_ENV, str(tmp_path / "envcache"))
    assert O.cache_root() == tmp_path / "envcache"
    assert O.cache_root(tmp_path / "x") == tmp_path / "x"


def _texture_agreement(model, render, reference):
    "Correlation of the chromaticity (colour / brightness) of rendered pixels with `reference`'s texture at the visible surface points."
    P, f, b = O.sample_surface_points(reference.mesh, 20000, seed=1, return_faces=True)
    C = O.surface_colors(reference.mesh, f, b).astype(float)
    pc = P @ render["T_CO"][:3, :3].T + render["T_CO"][:3, 3]
    uv = pc @ render["K"].T
    u, v = np.round(uv[:, 0] / uv[:, 2]).astype(int), np.round(uv[:, 1] / uv[:, 2]).astype(int)
    n = render["rgb"].shape[0]
    ok = (u >= 0) & (u < n) & (v >= 0) & (v < n)
    u, v, pc, C = u[ok], v[ok], pc[ok], C[ok]
    vis = np.abs(render["depth"][v, u] - pc[:, 2]) < 0.004 * model.diameter    # on the visible surface
    assert vis.sum() > 1000
    got, want = render["rgb"][v[vis], u[vis]].astype(float), C[vis]
    cg = got / np.maximum(got.sum(1, keepdims=True), 30)                         # shading-invariant colour
    cw = want / np.maximum(want.sum(1, keepdims=True), 30)
    return np.corrcoef((cg - cg.mean(0)).ravel(), (cw - cw.mean(0)).ravel())[0, 1]


@pytest.mark.parametrize("name", ["duck", "soccerball", "domino"])
def test_texture_rendered_in_place(db, name, tmp_path):
    "Rendered colours match the texture at the visible surface points; a URDF with flipped texture coordinates does not."
    m = db.by_name(name)
    mesh = m.mesh.copy(); uv = mesh.visual.uv.copy(); uv[:, 1] = 1 - uv[:, 1]
    mesh.visual = trimesh.visual.TextureVisuals(uv=uv, image=O.mesh_texture(m.mesh))
    broken = O.ObjectModel(m.label, m.obj_id, mesh, m.diameter, m.extents, m.points, m.symmetries, m.info,
                           urdf_dir=tmp_path / "broken")
    for az, el in [(30, 20), (150, -20), (-100, 60)]:
        good = _texture_agreement(m, _render(m, size=160, azimuth=az, elevation=el), m)
        bad = _texture_agreement(m, _render(broken, size=160, azimuth=az, elevation=el), m)
        assert good > 0.8 and bad < 0.5, (name, az, el, good, bad)


def test_vertex_colours_baked_into_texture(tmp_path):
    box = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    C = np.where(box.vertices[:, :1] > 0, [[255, 0, 0, 255]], [[0, 0, 255, 255]]).astype(np.uint8)
    box.visual = trimesh.visual.ColorVisuals(box, vertex_colors=C)
    box.export(tmp_path / "box.ply")
    m = O.MeshDatabase.from_folder(tmp_path, cache_dir=tmp_path / "c", units="m")["obj_000001"]
    assert (m.urdf_path.parent / "obj_000001.png").exists()
    r = _render(m, size=96, azimuth=0, elevation=10)       # looks at +x: red face
    px = r["rgb"][r["mask"]].astype(float).mean(0)
    assert px[0] > 3 * px[2], px
    r = _render(m, size=96, azimuth=180, elevation=10)     # -x: blue face
    px = r["rgb"][r["mask"]].astype(float).mean(0)
    assert px[2] > 3 * px[0], px


def test_untextured_colour_and_grey(tmp_path):
    trimesh.creation.icosphere(radius=0.05).export(tmp_path / "plain.obj")
    m = O.MeshDatabase.from_folder(tmp_path, cache_dir=tmp_path / "c")["obj_000001"]
    assert not m.has_texture
    r = _render(m, size=64)
    px = r["rgb"][r["mask"]].astype(float)
    assert '<color rgba="0.7 0.7 0.7 1"/>' in m.urdf_path.read_text()
    assert np.abs(px - px.mean(1, keepdims=True)).max() < 3 and px.mean() > 60      # grey, lit


def test_random_mesh_folders(tmp_path):
    rng = np.random.default_rng(0)
    for trial in range(6):
        folder = tmp_path / f"f{trial}"; folder.mkdir()
        unit = "mm" if trial % 2 else "m"
        s = 1000.0 if unit == "mm" else 1.0
        want = {}
        for i in range(int(rng.integers(1, 5))):
            kind = rng.integers(0, 3)
            e = rng.uniform(0.03, 0.25, size=3)
            if kind == 0:
                mesh = trimesh.creation.box(extents=e * s)
            elif kind == 1:
                mesh = trimesh.creation.cylinder(radius=e[0] * s / 2, height=e[1] * s, sections=24)
            else:
                mesh = trimesh.creation.icosphere(subdivisions=2, radius=e[0] * s / 2)
            T = np.eye(4); T[:3, :3] = random_rotations(1, torch.Generator().manual_seed(trial * 10 + i))[0].numpy()
            T[:3, 3] = rng.normal(size=3) * 0.05 * s
            mesh.apply_transform(T)
            ext = [".ply", ".obj", ".stl", ".off"][int(rng.integers(0, 4))]
            mesh.export(folder / f"m{i}{ext}")
            V = mesh.vertices / s
            want[f"m{i}"] = np.sqrt(((V[:, None] - V[None]) ** 2).sum(-1)).max()
        db = O.MeshDatabase.from_folder(folder, n_points=300, seed=trial, cache_dir=tmp_path / "c")
        assert db.labels == sorted(db.labels) and len(db) == len(want)
        for m in db:
            assert abs(m.diameter - want[m.name]) < 1e-6 * max(1, want[m.name]), (unit, m.name)
            assert O.surface_distance(m.mesh, m.points).max() < 1e-9
            assert np.sqrt(((m.points[:, None] - m.points[None]) ** 2).sum(-1)).max() <= m.diameter + 1e-9
        db2 = O.MeshDatabase.from_folder(folder, n_points=300, seed=trial, cache_dir=tmp_path / "c")
        assert torch.equal(db.points(db.labels), db2.points(db.labels))
        db3 = O.MeshDatabase.from_folder(db.to_bop_folder(tmp_path / f"bop{trial}"), n_points=300, seed=trial, cache_dir=tmp_path / "c")
        assert (db3.diameters(db.labels) - db.diameters(db.labels)).abs().max() < 1e-9
        assert (db3.points(db.labels) - db.points(db.labels)).abs().max() < 1e-7


def test_obj_id_from_file_names(tmp_path):
    for i in (3, 12):
        trimesh.creation.box(extents=(0.1, 0.05, 0.02)).export(tmp_path / f"obj_{i:06d}.ply")
    db = O.MeshDatabase.from_folder(tmp_path, cache_dir=tmp_path / "c")
    assert db.labels == ["obj_000003", "obj_000012"] and [m.obj_id for m in db] == [3, 12]


def test_default_symmetries_full(db):
    for m in db:
        if len(m.symmetries) == 1:
            continue
        geo = O.symmetry_errors(m.mesh, m.symmetries, n_points=500)
        col = O.color_symmetry_errors(m.mesh, m.symmetries, n_points=1000, n_ref=100_000)
        assert geo.max() < (0.015 if m.n_symmetries_continuous else 0.005), (m.name, geo.max())
        assert col.max() < 0.03, (m.name, col.max())
        # arbitrary angles about the continuous axes too
        for c in m.info["symmetries_continuous"]:
            from cosypose_nb.geometry.symmetries import continuous_symmetry_transforms
            T = continuous_symmetry_transforms(c["axis"], c["offset"], 7)[1:]
            assert O.symmetry_errors(m.mesh, T @ torch.from_numpy(np.array(O._rot_T("x", 2))), n_points=300).max() < 0.015


def test_random_rotations_are_not_symmetries(db):
    g = torch.Generator().manual_seed(1)
    T = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1); T[:, :3, :3] = random_rotations(4, g)
    for m in db:
        geo = O.symmetry_errors(m.mesh, T, n_points=150)
        col = O.color_symmetry_errors(m.mesh, T, n_points=1000, n_ref=50_000)
        # the soccer ball is nearly a sphere: only its colours tell random rotations apart
        assert ((geo > 0.05) | (col > 0.15)).all(), (m.name, geo, col)


def test_batched_accessors(db):
    dev = get_device()
    labels = ["obj_000005", "obj_000001", "obj_000005"]
    S = db.symmetries(labels, n_continuous=16, device=dev, dtype=torch.float32)
    assert S.shape == (3, 32, 4, 4) and S.dtype == torch.float32 and S.device.type == dev.type
    assert torch.equal(S[1, 1:], torch.eye(4, device=dev).expand(31, 4, 4))     # identity padding
    assert torch.allclose(S[0], S[2])
    assert db.points(labels).shape == (3, O.DEFAULT_N_POINTS, 3)
    assert torch.allclose(db.diameters(labels, device="cpu"), torch.tensor([0.13, 0.12, 0.13], dtype=torch.float64), atol=1e-6)
    with pytest.raises(InputError, match="obj_000099.*obj_000001 \\(duck\\)"):
        db.points(["obj_000099"])
    assert "obj_000001" in db and "duck" not in db and 1 not in db
    with pytest.raises(InputError, match="no object named"):
        db.by_name("giraffe")


def test_bop_folder_symmetries_and_errors(tmp_path):
    box = trimesh.creation.box(extents=(0.1, 0.06, 0.02))
    from cosypose_nb.datasets.bop import write_model_mesh
    write_model_mesh(tmp_path / "obj_000002.ply", box)
    info = O.model_info(box, symmetries_discrete=[O._rot_T("z", 2)])
    write_models_info(tmp_path, {2: info})
    db = O.MeshDatabase.from_folder(tmp_path, cache_dir=tmp_path / "c")
    assert len(db["obj_000002"].symmetries) == 2 and db.labels == ["obj_000002"]
    with pytest.raises(InputError, match="millimetres"):
        O.MeshDatabase.from_folder(tmp_path, units="m")
    write_models_info(tmp_path, {2: info, 5: info})
    with pytest.raises(InputError, match="obj_000005.ply"):
        O.MeshDatabase.from_folder(tmp_path)
    (tmp_path / "models_info.json").write_text("{")
    with pytest.raises(InputError, match="models_info.json"):
        O.MeshDatabase.from_folder(tmp_path)


def test_bad_mesh_files(tmp_path):
    (tmp_path / "a.obj").write_text("v 0 0 0\nv 1 0 0\n")        # no face
    with pytest.raises(InputError, match="a.obj"):
        O.MeshDatabase.from_folder(tmp_path)
    with pytest.raises(InputError, match="unknown objects"):
        (tmp_path / "a.obj").unlink(); trimesh.creation.box().export(tmp_path / "b.ply")
        O.MeshDatabase.from_folder(tmp_path, symmetries={"zzz": {}})
    with pytest.raises(InputError, match="not a folder"):
        O.MeshDatabase.from_folder(tmp_path / "b.ply")


@pytest.mark.parametrize("bad", [9, 3, -1])
def test_face_index_out_of_range(tmp_path, bad):
    "A face naming a vertex the file lacks: an error naming the file and the index, in a mesh folder and a BOP folder."
    ply = (b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
           b"element face 2\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n0 10 0\n0 0 10\n3 0 1 2\n3 0 1 %d\n" % bad)
    plain = tmp_path / "plain"; plain.mkdir()
    (plain / "tri.ply").write_bytes(ply)
    with pytest.raises(InputError, match=rf"tri.ply: faces: a face refers to vertex {bad}, but the mesh has 3 vertices"):
        O.MeshDatabase.from_folder(plain, units="mm")
    bop = tmp_path / "bop"; bop.mkdir()
    (bop / "obj_000001.ply").write_bytes(ply)
    write_models_info(bop, {1: {"diameter": 0.015, "min_x": 0, "min_y": 0, "min_z": 0, "size_x": 0.001, "size_y": 0.01, "size_z": 0.01}})
    with pytest.raises(InputError, match=rf"obj_000001.ply: faces: a face refers to vertex {bad}"):
        O.MeshDatabase.from_folder(bop)


def test_cli(tmp_path, capsys, cache):
    assert objects_cli(["default", "--out", str(tmp_path / "d"), "--cache-dir", str(cache), "--urdf"]) == 0
    out = capsys.readouterr().out
    assert "soccerball" in out and "obj_000010" in out and "wrote 10 objects" in out and ".urdf" in out
    folder = tmp_path / "m"; folder.mkdir()
    trimesh.creation.box(extents=(100, 50, 30)).export(folder / "brick.stl")
    assert objects_cli([str(folder), "--out", str(tmp_path / "bop"), "--units", "mm", "--cache-dir", str(cache)]) == 0
    info = read_models_info(tmp_path / "bop")
    assert abs(info[1]["diameter"] - math.sqrt(0.1 ** 2 + 0.05 ** 2 + 0.03 ** 2)) < 1e-6
    with pytest.raises(InputError):
        objects_cli([str(folder), "--out", str(folder)])
    with pytest.raises(SystemExit):
        objects_cli([str(folder), "--units", "cm"])


def _tex_ply(folder, png: bytes | None):
    "A BOP models folder with one textured PLY whose texture is `png` (None: missing)."
    folder.mkdir()
    ply = (b"ply\nformat ascii 1.0\ncomment TextureFile obj_000001.png\nelement vertex 3\nproperty float x\nproperty float y\n"
           b"property float z\nproperty float texture_u\nproperty float texture_v\nelement face 1\n"
           b"property list uchar int vertex_indices\nend_header\n0 0 0 0 0\n0 10 0 0 1\n0 0 10 1 0\n3 0 1 2\n")
    (folder / "obj_000001.ply").write_bytes(ply)
    if png is not None:
        (folder / "obj_000001.png").write_bytes(png)
    write_models_info(folder, {1: {"diameter": 0.015, "min_x": 0, "min_y": 0, "min_z": 0, "size_x": 0.0, "size_y": 0.01, "size_z": 0.01}})
    return folder


def test_textures_models_and_sizes_checked(tmp_path, capsys):
    "A texture the PLY names but that is missing or unreadable, coordinates beyond 1e7, a huge --n-points: clear errors."
    import io
    from PIL import Image
    with pytest.raises(InputError, match=r"texture: obj_000001.png: the texture the file names is not there"):
        O.MeshDatabase.from_folder(_tex_ply(tmp_path / "missing", None))
    with pytest.raises(InputError, match=r"texture: obj_000001.png: cannot read the image"):
        O.MeshDatabase.from_folder(_tex_ply(tmp_path / "garbage", b"not a png"))
    buf = io.BytesIO(); Image.new("RGB", (4, 4), (200, 10, 10)).save(buf, "PNG")
    db = O.MeshDatabase.from_folder(_tex_ply(tmp_path / "good", buf.getvalue()), n_points=20)
    assert len(db) == 1                                       # a flat model (size_x 0) is a valid model
    assert objects_cli([str(tmp_path / "good"), "--out", str(tmp_path / "good_out")]) == 0
    assert read_models_info(tmp_path / "good_out")[1]["size_x"] == 0.0
    O.MeshDatabase.from_folder(tmp_path / "good_out", n_points=20)    # what it writes, it reads back
    huge = tmp_path / "huge"; huge.mkdir()
    trimesh.creation.box(extents=(1e20, 1, 1)).export(huge / "a.ply")
    with pytest.raises(InputError, match=r"a.ply: vertex: coordinates up to 5e\+19"):
        O.MeshDatabase.from_folder(huge, units="m")
    with pytest.raises(InputError, match="n_points must lie in"):
        O.MeshDatabase.from_folder(tmp_path / "good", n_points=10 ** 11)
    # --out given as the source folder through its models_info.json: refused, the source untouched
    before = {p.name: p.read_bytes() for p in (tmp_path / "good").iterdir()}
    with pytest.raises(InputError, match="another folder than the source"):
        objects_cli([str(tmp_path / "good" / "models_info.json"), "--out", str(tmp_path / "good")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "good").iterdir()} == before


def test_objects_out_is_all_or_nothing(tmp_path, monkeypatch):
    "A failure while writing the models folder (a full disk, a folder in the way) leaves --out as it was."
    from cosypose_nb.datasets import bop as bop
    src = tmp_path / "src"; src.mkdir()
    trimesh.creation.box(extents=(0.1, 0.05, 0.03)).export(src / "a.ply")
    trimesh.creation.box(extents=(0.2, 0.05, 0.03)).export(src / "b.ply")
    out = tmp_path / "out"; out.mkdir(); (out / "mine.txt").write_text("keep")
    calls = []
    real = M.write_model_mesh
    def failing(path, mesh):                      # the second model file fails, as on a full disk
        calls.append(path)
        if len(calls) == 2: raise OSError(28, "No space left on device", str(path))
        return real(path, mesh)
    monkeypatch.setattr(M, "write_model_mesh", failing)
    with pytest.raises(InputError, match="mine.txt; choose another folder, or give --overwrite"):
        objects_cli([str(src), "--out", str(out), "--units", "m"])      # the user's file: refused
    with pytest.raises(OSError):
        objects_cli([str(src), "--out", str(out), "--units", "m", "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.staging")]
    monkeypatch.setattr(M, "write_model_mesh", real)
    (out / "obj_000002.ply").mkdir()                # a folder where a model file goes
    with pytest.raises(InputError, match="obj_000002.ply: is a folder"):
        objects_cli([str(src), "--out", str(out), "--units", "m", "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "obj_000002.ply"]
    (out / "obj_000002.ply").rmdir()
    assert objects_cli([str(src), "--out", str(out), "--units", "m", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".cosypose-nb.json", "mine.txt", "models_info.json", "obj_000001.ply", "obj_000002.ply"]
    with pytest.raises(InputError, match="mine.txt"):                      # the user's file is still there: refused again
        objects_cli([str(src), "--out", str(out), "--units", "m"])
    (out / "mine.txt").unlink()                                            # only its own files: redone
    assert objects_cli([str(src), "--out", str(out), "--units", "m"]) == 0
    assert objects_cli(["default", "--out", str(tmp_path / "d")]) == 0 and (tmp_path / "d" / "models_info.json").exists()


def test_zero_area_mesh_names_its_file(tmp_path):
    (tmp_path / "line.obj").write_text("v 0 0 0\nv 1 0 0\nv 2 0 0\nf 1 2 3\n")
    with pytest.raises(InputError, match=r"line.obj: .*no triangle of non-zero area"):
        O.MeshDatabase.from_folder(tmp_path, units="m")


def test_object_sizes_checked_with_their_units(tmp_path, capsys):
    "A 160 m mug (millimetres read as metres) or a 0.1 mm one is an error naming the file, the size and the units."
    (tmp_path / "m").mkdir()
    trimesh.creation.cylinder(radius=50, height=120).export(tmp_path / "m" / "mug.stl")     # a mug in mm: 160 mm across
    with pytest.raises(InputError, match=r"mug.stl: the object is 1\d\d(\.\d+)? m across when read in m"):
        objects_cli([str(tmp_path / "m"), "--units", "m", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()                                   # refused before anything was written
    assert objects_cli([str(tmp_path / "m"), "--units", "mm"]) == 0 and "mug" in capsys.readouterr().out
    (tmp_path / "s").mkdir()
    trimesh.creation.icosphere(radius=0.00005).export(tmp_path / "s" / "dust.ply")
    with pytest.raises(InputError, match=r"dust.ply: the object is 0.0001 m across when read in m"):
        O.MeshDatabase.from_folder(tmp_path / "s", units="m")
    # a BOP models folder whose models_info.json says 50 km
    db = O.MeshDatabase.from_folder(tmp_path / "m", units="mm", cache_dir=tmp_path / "c")
    db.to_bop_folder(tmp_path / "bop")
    info = read_models_info(tmp_path / "bop"); info[1]["diameter"] = 5e4
    write_models_info(tmp_path / "bop", info)
    with pytest.raises(InputError, match=r"models_info.json: the object is 5e\+04 m across"):
        O.MeshDatabase.from_folder(tmp_path / "bop")
