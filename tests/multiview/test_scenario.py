"The custom-scenario files and the `cosypose-nb multiview` command: results, bad inputs, empty scenes, start time."
import json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.geometry.transforms import invert_T, check_poses
from cosypose_nb.synthetic.mvproblems import make_problem
from cosypose_nb.evaluation.metrics import evaluate_scene
from cosypose_nb.multiview.scenario import write_example_scenario, multiview_cli, read_scenario


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, default_db):
    p = make_problem(8, 6, seed=11, objects=default_db)
    folder = write_example_scenario(tmp_path_factory.mktemp("scn") / "example", p)
    return p, folder


def test_cli_example_scenario(scenario, default_db):
    from cosypose_nb.datasets.bop import read_results_csv
    p, folder = scenario
    assert multiview_cli([str(folder), "--ransac-iters", "500", "--nms-distance", "0.04"]) == 0
    js = json.loads((folder / "results" / "predicted_scene.json").read_text())
    assert set(js) == {"objects", "cameras"}
    im_ids = list(range(1, p.n_views + 1))
    for cam in js["cameras"]:
        assert set(cam) == {"view_id", "TWC", "K"} and cam["view_id"] in im_ids
        check_poses(torch.tensor(cam["TWC"], dtype=torch.float64))
        assert np.allclose(cam["K"], p.K[im_ids.index(cam["view_id"])].numpy())
    labels = [o["label"] for o in js["objects"]]
    T_WO = torch.tensor([o["TWO"] for o in js["objects"]], dtype=torch.float64).reshape(-1, 4, 4)
    for o in js["objects"]:
        assert set(o) == {"label", "score", "n_cand", "TWO"} and o["n_cand"] >= 2 and 0 < o["score"] <= 1
    check_poses(T_WO)
    # cameras back in view order; the scene is the problem's: every object seen twice found once, each with its own pose
    V = p.n_views
    T_WC = torch.eye(4, dtype=torch.float64).repeat(V, 1, 1)
    ok = torch.zeros(V, dtype=torch.bool)
    for cam in js["cameras"]:
        T_WC[im_ids.index(cam["view_id"])] = torch.tensor(cam["TWC"], dtype=torch.float64); ok[im_ids.index(cam["view_id"])] = True
    ev = evaluate_scene(p, labels, T_WO, T_WC, ok)
    assert ev["missing"] == 0 and ev["duplicate"] == 0 and ev["spurious"] == 0, ev
    assert ev["median_scene"] < ev["median_cand"]
    # scene_reprojected.csv: every object in every placed view, BOP units, the object's score
    df = read_results_csv(folder / "results" / "scene_reprojected.csv")
    assert len(df) == len(labels) * len(js["cameras"])
    assert set(df["scene_id"]) == {1}
    for r in df.to_dict("records"):
        v = im_ids.index(int(r["im_id"]))
        cands = [k for k in range(len(labels)) if labels[k] == r["label"]
                 and np.allclose(invert_T(T_WC[v]) @ T_WO[k], r["T_CO"], atol=1e-6)]
        assert cands and any(abs(js["objects"][k]["score"] - r["score"]) < 1e-9 for k in cands)


def test_cli_bad_inputs(scenario, tmp_path):
    import shutil
    p, folder = scenario
    def copy(name):
        d = tmp_path / name
        shutil.copytree(folder, d, ignore=shutil.ignore_patterns("results"))
        return d
    def edited(name, line, edit):
        "A copy of the scenario whose candidates.csv has `line` rewritten by `edit`."
        d = copy(name)
        lines = (d / "candidates.csv").read_text().splitlines()
        lines[line] = edit(lines[line])
        (d / "candidates.csv").write_text("\n".join(lines) + "\n")
        return d
    def set_field(k, value):
        return lambda l: ",".join(value if i == k else f for i, f in enumerate(l.split(",")))
    # a label without a mesh
    d = edited("nomesh", 1, set_field(2, "77"))
    with pytest.raises(InputError, match="obj_000077"):
        multiview_cli([str(d)])
    # a NaN pose
    d = edited("nan", 2, set_field(5, "nan 0 500"))
    with pytest.raises(InputError, match="candidates.csv"):
        multiview_cli([str(d)])
    # two scenes in one folder
    d = edited("twoscenes", 1, lambda l: "2" + l[l.index(","):])
    with pytest.raises(InputError, match="scene_id"):
        multiview_cli([str(d)])
    # a view without camera, a missing file, a bad option
    d = copy("nocam")
    cams = json.loads((d / "scene_camera.json").read_text()); cams.pop("1")
    (d / "scene_camera.json").write_text(json.dumps(cams))
    with pytest.raises(InputError, match="im_id"):
        multiview_cli([str(d)])
    d = copy("nofile"); (d / "scene_camera.json").unlink()
    with pytest.raises(InputError, match="scene_camera.json"):
        multiview_cli([str(d)])
    with pytest.raises(InputError, match="ransac-threshold"):
        multiview_cli([str(folder), "--ransac-threshold", "-1"])
    with pytest.raises(InputError, match="known-cameras"):
        multiview_cli([str(folder), "--known-cameras"])
    # with cam_R_w2c / cam_t_w2c and --known-cameras, the cameras written are the given ones, every view placed
    from cosypose_nb.datasets.bop import write_scene_camera
    d = copy("known")
    write_scene_camera(d / "scene_camera.json", {v + 1: {"K": p.K[v].numpy(), "T_CW": invert_T(p.T_WC[v]).numpy()}
                                                 for v in range(p.n_views)})
    assert multiview_cli([str(d), "--known-cameras"]) == 0
    js = json.loads((d / "results" / "predicted_scene.json").read_text())
    assert [c["view_id"] for c in js["cameras"]] == list(range(1, p.n_views + 1))
    TWC = torch.tensor([c["TWC"] for c in js["cameras"]], dtype=torch.float64)
    assert (TWC - p.T_WC).abs().max() < 1e-9
    # the objects are in the given world frame: each lies within 5 cm of a true object of its label
    assert len(js["objects"]) == int((p.visible.sum(0) >= 2).sum())
    for o in js["objects"]:
        d = [float((torch.tensor(o["TWO"])[:3, 3] - p.T_WO[k, :3, 3]).norm()) for k in range(p.n_objects)
             if p.obj_labels[k] == o["label"]]
        assert min(d) < 0.05
    # one view only: an empty scene is written, no crash
    d = copy("oneview")
    lines = (d / "candidates.csv").read_text().splitlines()
    keep = [lines[0]] + [l for l in lines[1:] if l.split(",")[1] == "1"]
    (d / "candidates.csv").write_text("\n".join(keep) + "\n")
    assert multiview_cli([str(d)]) == 0
    js = json.loads((d / "results" / "predicted_scene.json").read_text())
    assert js["objects"] == [] and js["cameras"] == [] and js["reason"].startswith("needs at least 2 views with candidates")


def test_cli_files_and_options(scenario, tmp_path, capsys):
    """Inputs found by fuzzing the command: each gives a one-line error naming the path or option (exit 2 from the
    `cosypose-nb` entry point, no traceback), or is read correctly; nothing half-written is left."""
    import shutil
    from cosypose_nb.cli import main
    p, folder = scenario
    def copy(name):
        d = tmp_path / name
        shutil.copytree(folder, d, ignore=shutil.ignore_patterns("results"))
        return d
    def fails(args, match):
        capsys.readouterr()
        assert main(["multiview", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and match in err, err
    ref = copy("ref")
    assert main(["multiview", str(ref)]) == 0
    # a byte-order mark (Excel's UTF-8 CSV) is read; the same scene comes out
    d = copy("bom")
    (d / "candidates.csv").write_bytes(b"\xef\xbb\xbf" + (folder / "candidates.csv").read_bytes())
    assert main(["multiview", str(d)]) == 0
    assert json.loads((d / "results/predicted_scene.json").read_text())["objects"] == \
        json.loads((ref / "results/predicted_scene.json").read_text())["objects"]
    d = copy("latin1"); (d / "candidates.csv").write_bytes(b"\xff\xfe" + (folder / "candidates.csv").read_bytes())
    fails([d], "not UTF-8")
    d = copy("csvdir"); (d / "candidates.csv").unlink(); (d / "candidates.csv").mkdir()
    fails([d], "not a file")
    d = copy("dupkeys")
    cams = json.loads((d / "scene_camera.json").read_text()); cams["01"] = cams["1"]
    (d / "scene_camera.json").write_text(json.dumps(cams))
    fails([d], "given more than once")
    d = copy("bigid")
    lines = (d / "candidates.csv").read_text().splitlines()
    lines[1] = str(2 ** 70) + lines[1][lines[1].index(","):]
    (d / "candidates.csv").write_text("\n".join(lines) + "\n")
    fails([d], "scene_id")
    d = copy("noinfo"); (d / "models/models_info.json").unlink()
    fails([d], "models_info.json")
    # a candidate behind the camera (z <= 0): the line is named
    d = copy("behind")
    lines = (d / "candidates.csv").read_text().splitlines()
    f = lines[2].split(","); t = f[5].split(); t[2] = "-" + t[2]; f[5] = " ".join(t); lines[2] = ",".join(f)
    (d / "candidates.csv").write_text("\n".join(lines) + "\n")
    fails([d], "line 3: t: the object is not in front of the camera")
    # rows repeated exactly count once: the same scene, and a note says how many were left out
    d = copy("dups")
    lines = (d / "candidates.csv").read_text().splitlines()
    (d / "candidates.csv").write_text("\n".join(lines + lines[1:4]) + "\n")
    capsys.readouterr()
    assert main(["multiview", str(d)]) == 0
    assert "3 row(s) repeating an earlier row exactly were left out" in capsys.readouterr().err
    assert json.loads((d / "results/predicted_scene.json").read_text()) == \
        json.loads((ref / "results/predicted_scene.json").read_text())
    # -0 and 0 are the same number
    f = lines[1].split(",")
    extra = [",".join(f[:4] + [R] + f[5:]) for R in ("1 0 0 0 1 0 0 0 1", "1 -0 0 -0 1 0 0 0 1")]
    (d / "candidates.csv").write_text("\n".join(lines + extra) + "\n")
    assert main(["multiview", str(d)]) == 0
    assert "1 row(s) repeating an earlier row exactly were left out" in capsys.readouterr().err
    # outputs that cannot be written: said before the reconstruction, nothing written
    d = copy("resfile"); (d / "results").write_text("not a folder")
    fails([d], "is not a folder")
    d = copy("csvfolder"); (d / "results/scene_reprojected.csv").mkdir(parents=True)
    fails([d], "is not a file")
    assert not (d / "results/predicted_scene.json").exists()
    for opt, val in (("--depth-factor", "nan"), ("--depth-factor", "inf"), ("--n-continuous", "100000"),
                     ("--seed", str(2 ** 70))):
        fails([folder, opt, val], opt)
    # a failed write keeps the previous results whole (both files renamed into place only once both are written)
    d = copy("keep"); assert main(["multiview", str(d)]) == 0
    before = {n: (d / "results" / n).read_bytes() for n in ("predicted_scene.json", "scene_reprojected.csv")}
    from cosypose_nb.datasets import bop as bop
    orig = bop.write_results_csv
    try:
        bop.write_results_csv = lambda *a, **k: (_ for _ in ()).throw(OSError(28, "No space left on device", "x"))
        assert main(["multiview", str(d)]) == 2
    finally:
        bop.write_results_csv = orig
    assert {n: (d / "results" / n).read_bytes() for n in before} == before
    assert [q.name for q in (d / "results").iterdir() if q.name.startswith(".")] == []


def test_read_scenario(scenario):
    p, folder = scenario
    sc = read_scenario(folder)
    assert sc.im_ids == list(range(1, p.n_views + 1)) and sc.scene_id == 1 and sc.T_WC is None
    assert torch.allclose(sc.K, p.K) and sc.candidates.labels == p.candidates.labels
    assert torch.allclose(sc.candidates.T_CO, p.candidates.T_CO, atol=1e-9)
    assert (sc.candidates.view_ids == p.candidates.view_ids).all()


def copy_of(folder, d):
    import shutil
    shutil.copytree(folder, d, ignore=shutil.ignore_patterns("results"))
    return d


def test_empty_scenes_say_why(scenario, tmp_path, capsys):
    """Candidates in one view only, one camera, every score below --score-threshold, a header-only file: an empty
    scene, exit 0, and a one-line reason printed and stored in predicted_scene.json."""
    p, folder = scenario
    C = len(p.candidates)
    d = copy_of(folder, tmp_path / "one_camera")
    cams = json.loads((d / "scene_camera.json").read_text())
    (d / "scene_camera.json").write_text(json.dumps({"1": cams["1"]}))
    lines = (d / "candidates.csv").read_text().splitlines()
    (d / "candidates.csv").write_text("\n".join([lines[0]] + [l for l in lines[1:] if l.split(",")[1] == "1"]) + "\n")
    header = copy_of(folder, tmp_path / "header_only")
    (header / "candidates.csv").write_text(lines[0] + "\n")
    for d, args, reason in ((folder, ["--score-threshold", "2", "--out", str(tmp_path / "low")],
                             f"all {C} candidates below --score-threshold 2"),
                            (d, [], "needs at least 2 views ("), (header, [], "no candidates (")):
        capsys.readouterr()
        assert multiview_cli([str(d), *args]) == 0
        out = Path(args[-1]) if args else d / "results"
        js = json.loads((out / "predicted_scene.json").read_text())
        assert js["objects"] == [] and js["reason"].startswith(reason), js
        printed = capsys.readouterr().out
        assert js["reason"] in printed and len(js["reason"].splitlines()) == 1


def test_bad_option_names_the_option(scenario, capsys):
    "`--ba-iters -3` is answered by naming that one option (exit 2 from the entry point, one line, no traceback)."
    from cosypose_nb.cli import main
    _, folder = scenario
    for args, opt in ((["--ba-iters", "-3"], "--ba-iters"), (["--ransac-iters", "0"], "--ransac-iters"),
                      (["--sigma-lat", "0"], "--sigma-lat")):
        capsys.readouterr()
        assert main(["multiview", str(folder), *args]) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [err.strip()] and err.startswith(f"cosypose-nb multiview: error: {opt}:"), err
    with pytest.raises(SystemExit):                                   # a choice: argparse names it
        main(["multiview", str(folder), "--robust", "tukey"])
    assert "--robust" in capsys.readouterr().err


CLI = "import sys; from cosypose_nb.cli import main; sys.exit(main(sys.argv[1:]))"


def test_help_and_option_checks_import_neither_torch_nor_roma():
    "The command's parser and its checks come from the configs: `--help` runs without torch (the start is fast)."
    code = ("import sys; from cosypose_nb.multiview.scenario import _parser, config_from_cli; "
            "config_from_cli(_parser().parse_args(['x', '--ba-iters', '3'])); "
            "assert 'torch' not in sys.modules and 'roma' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    out = subprocess.run([sys.executable, "-c", CLI, "multiview", "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "--ba-iters" in out.stdout and "--no-pose-refine" in out.stdout


@pytest.mark.slow
def test_a_scenario_too_large_for_stage_2_is_refused(scenario, tmp_path):
    "200,000 candidates in 4 views: refused with an error that says the limit, no attempt at 40 GB."
    from cosypose_nb.cli import main
    p, folder = scenario
    d = copy_of(folder, tmp_path / "big")
    lines = (d / "candidates.csv").read_text().splitlines()
    rows = [l for l in lines[1:] if l.split(",")[1] in ("1", "2", "3", "4")]
    big = []
    for i in range(200_000):                                          # distinct rows (a repeated row would count once)
        f = rows[i % len(rows)].split(",")
        f[3] = f"{0.5 + i * 1e-6:.6f}"
        big.append(",".join(f))
    (d / "candidates.csv").write_text("\n".join([lines[0]] + big) + "\n")
    r = subprocess.run([sys.executable, "-c", CLI, "multiview", str(d)], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode == 2 and "max_pairs" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
