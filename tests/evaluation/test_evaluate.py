"""`evaluate` / `cosypose-nb evaluate` end to end: on the BOP toolkit's own test run (the fake YCB-V dataset of
tests/evaluation/data/bop19_scores.json written as a BOP folder: the MSSD and MSPD recalls of every threshold and the
per-pair errors equal the toolkit's), on toy datasets with results made from the ground truth (perfect and noisy),
resuming, sharding under torchrun (same scores as one process), and every bad input of the issue: unknown object,
scene or image, repeated and malformed rows, a split without ground truth, bad targets."""
import json, os, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosypose_nb.core import InputError
from cosypose_nb.datasets.bop import (make_toy_dataset, write_results_csv, write_scene_camera, write_scene_gt, write_scene_gt_info,
                                      write_models_info, write_targets, write_depth, read_results_csv, MM_TO_M)
from cosypose_nb.evaluation.bop19 import vsd_tau_column, BOP19_THRESHOLDS
from cosypose_nb.evaluation.pairs import *
from cosypose_nb.evaluation.evaluate import *

REF = json.loads((Path(__file__).parent / "data" / "bop19_scores.json").read_text())
REPO = Path(__file__).resolve().parents[2]
FAST = dict(progress=False)


def _ascii_ply(path, pts_mm):
    "A PLY with the points in full precision (double) and a few triangles (the renderer needs faces; the errors use the vertices)."
    n = len(pts_mm)
    faces = np.arange(30).reshape(-1, 3)
    lines = ["ply", "format ascii 1.0", f"element vertex {n}", "property double x", "property double y", "property double z",
             f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    lines += [" ".join(repr(float(v)) for v in p) for p in pts_mm] + [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def toolkit_dataset(tmp_path_factory):
    "The toolkit run's fake YCB-V dataset as a BOP folder (depth images empty: the VSD of the run is not comparable)."
    root = tmp_path_factory.mktemp("bop") / "ycbv"
    (root / "models").mkdir(parents=True)
    infos = {}
    for oid, m in REF["models"].items():
        _ascii_ply(root / "models" / f"obj_{int(oid):06d}.ply", np.array(m["pts_mm"]))
        i = m["info"]
        S = np.array(i.get("symmetries_discrete", []), dtype=float).reshape(-1, 4, 4); S[:, :3, 3] *= MM_TO_M
        infos[int(oid)] = {"diameter": i["diameter"] * MM_TO_M, "symmetries_discrete": S,
                           "symmetries_continuous": [{"axis": np.array(c["axis"], float), "offset": np.array(c["offset"], float) * MM_TO_M}
                                                     for c in i.get("symmetries_continuous", [])]}
    write_models_info(root / "models", infos)
    K = np.array(REF["K"]); W, H = REF["im_size"]
    for sid, ims in REF["scene_gt"].items():
        d = root / "test" / f"{int(sid):06d}"
        write_scene_camera(d, {int(i): {"K": K, "depth_scale": REF["depth_scale"]} for i in ims})
        T = lambda o: np.block([[np.array(o["cam_R_m2c"]), np.array(o["cam_t_m2c"]).reshape(3, 1) * MM_TO_M], [np.zeros((1, 3)), np.ones((1, 1))]])
        write_scene_gt(d, {int(i): [{"obj_id": o["obj_id"], "T_CO": T(o)} for o in objs] for i, objs in ims.items()})
        write_scene_gt_info(d, {int(i): [{"bbox_obj": [0, 0, 1, 1], "bbox_visib": [0, 0, 1, 1], "visib_fract": g["visib_fract"]}
                                         for g in REF["scene_gt_info"][sid][i]] for i in ims})
        for i in ims:
            write_depth(d / "depth" / f"{int(i):06d}.png", np.zeros((H, W)), REF["depth_scale"])
    write_targets(root, pd.DataFrame(REF["targets"]))
    (root / "results.csv").write_text(REF["results_csv"])     # (one estimate's time is 0.4 ms off its image's: accepted, as the toolkit)
    return root


@pytest.mark.parametrize("visib", ["-1", "0.1"])
def test_evaluate_equals_the_toolkit_on_its_own_run(toolkit_dataset, tmp_path, visib):
    s = evaluate(toolkit_dataset / "results.csv", toolkit_dataset, tmp_path, EvaluateConfig(visib_gt_min=float(visib), metrics=("bop19",), **FAST))
    ref = REF["per_threshold"]
    for k in ("mssd", "mspd"):
        (sign,) = ref[k]
        assert s["bop19"]["recalls"][k] == [r["recall"] for r in ref[k][sign][visib]], k
        assert s["bop19"]["targets_count"] == ref[k][sign][visib][0]["targets_count"]
    want = REF["average_recalls_by_visib_gt_min"][visib]
    assert s["bop19"]["bop19_average_recall_mssd"] == pytest.approx(want["bop19_average_recall_mssd"], rel=1e-15)
    assert s["bop19"]["bop19_average_recall_mspd"] == pytest.approx(want["bop19_average_recall_mspd"], rel=1e-15)
    assert s["bop19"]["bop19_average_time_per_image"] == pytest.approx(REF["scores_bop19_json"]["bop19_average_time_per_image"], rel=1e-12)
    # the errors of every pair, against the toolkit's error files
    pairs = pd.read_csv(tmp_path / "errors.csv")
    p = pairs[pairs.bop19 & (pairs.gt_id >= 0)].set_index(["scene_id", "im_id", "obj_id", "est_id", "gt_id"])
    n = 0
    for k in ("mssd", "mspd"):
        (sign,) = [s_ for s_ in REF["errors_files"] if s_.startswith(f"error={k}")]
        for f in REF["errors_files"][sign].values():
            for e in f:
                for g, (v,) in e["errors"].items():
                    got = p.loc[(e["scene_id"], e["im_id"], e["obj_id"], e["est_id"], int(g)), k]
                    assert got == v if np.isinf(v) else got == pytest.approx(v, rel=1e-9), (k, e, g)
                    n += 1
    assert n == 2 * sum(len(e["errors"]) for f in REF["errors_files"]["error=mssd_ntop=-1"].values() for e in f) and len(p) == n // 2


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = make_toy_dataset(tmp_path_factory.mktemp("toy") / "toy", n_scenes=3, n_images=2, n_objects=3, size=(320, 240), seed=3)
    write_results_csv(root / "perfect.csv", results_from_ground_truth(root, rot_noise_deg=0.0, trans_noise_mm=0.0, seed=1))
    write_results_csv(root / "noisy.csv", results_from_ground_truth(root, rot_noise_deg=3.0, trans_noise_mm=8.0, seed=2))
    write_results_csv(root / "noisier.csv", results_from_ground_truth(root, rot_noise_deg=10.0, trans_noise_mm=30.0, seed=2))
    return root


def test_perfect_and_noisy_results(toy, tmp_path):
    s = evaluate(toy / "perfect.csv", toy, tmp_path / "p", EvaluateConfig(**FAST))
    b = s["bop19"]
    assert b["bop19_average_recall_mssd"] == 1.0 and b["bop19_average_recall_mspd"] == 1.0
    pairs = pd.read_csv(tmp_path / "p" / "errors.csv")
    own = pairs[(pairs.te < 1e-6) & pairs.bop19]
    vsd = own[[vsd_tau_column(t) for t in BOP19_THRESHOLDS]].to_numpy()
    assert len(own) == b["estimates_count"] and np.isin(vsd, [0.0, 1.0]).all()     # same rendering twice: 0 (or 1 when nothing is visible)
    assert (own[["add", "adi", "mssd", "mspd", "re"]].fillna(0).abs() < 1e-6).all().all()
    assert s["mv"]["mAP"] == 1.0 and s["ycbv"]["ADD"]["AUC/objects/mean"] > 0
    noisy = evaluate(toy / "noisy.csv", toy, tmp_path / "n", EvaluateConfig(**FAST))
    noisier = evaluate(toy / "noisier.csv", toy, tmp_path / "m", EvaluateConfig(**FAST))
    for k in ("bop19_average_recall", "bop19_average_recall_vsd", "bop19_average_recall_mssd", "bop19_average_recall_mspd"):
        assert b[k] >= noisy["bop19"][k] >= noisier["bop19"][k], k
    assert b["bop19_average_recall"] > noisy["bop19"]["bop19_average_recall"] > noisier["bop19"]["bop19_average_recall"]
    assert noisy["ycbv"]["ADD-S"]["AUC"] > noisier["ycbv"]["ADD-S"]["AUC"]
    assert (tmp_path / "n" / "summary.md").read_text().startswith("| metric | value |")


def test_resume_recomputes_only_missing_scenes(toy, tmp_path):
    s1 = evaluate(toy / "noisy.csv", toy, tmp_path, EvaluateConfig(metrics=("bop19",), **FAST))
    files = sorted((tmp_path / "errors").glob("scene_*.csv"))
    assert len(files) == 3
    stamps = {f: f.stat().st_mtime_ns for f in files}
    files[1].unlink()
    s2 = evaluate(toy / "noisy.csv", toy, tmp_path, EvaluateConfig(metrics=("bop19",), **FAST))
    assert s2["bop19"] == s1["bop19"]
    assert files[1].exists() and all(f.stat().st_mtime_ns == stamps[f] for f in (files[0], files[2]))
    with pytest.raises(InputError, match="evaluate.json"):                    # another results file into the same folder
        evaluate(toy / "perfect.csv", toy, tmp_path, EvaluateConfig(metrics=("bop19",), **FAST))
    s3 = evaluate(toy / "perfect.csv", toy, tmp_path, EvaluateConfig(metrics=("bop19",), overwrite=True, **FAST))
    assert s3["bop19"]["bop19_average_recall_mssd"] == 1.0 and files[0].stat().st_mtime_ns != stamps[files[0]]   # its scenes dropped, redone


def test_output_folder_rule(toy, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        evaluate(toy / "noisy.csv", toy, tmp_path, EvaluateConfig(metrics=("ycbv",), **FAST))
    assert not (tmp_path / "evaluate.json").exists()                          # nothing written
    evaluate(toy / "noisy.csv", toy, tmp_path, EvaluateConfig(metrics=("ycbv",), overwrite=True, **FAST))
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "scores.json").exists()
    evaluate(toy / "noisy.csv", toy, tmp_path / "o", EvaluateConfig(metrics=("ycbv",), **FAST))
    evaluate(toy / "noisy.csv", toy, tmp_path / "o", EvaluateConfig(metrics=("ycbv",), **FAST))    # its own files: run again freely


def test_torchrun_shards_give_the_same_scores(toy, tmp_path):
    one = evaluate(toy / "noisy.csv", toy, tmp_path / "one", EvaluateConfig(**FAST))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    r = subprocess.run([str(torchrun), "--nproc-per-node", "2", "--no-python", str(Path(sys.executable).parent / "cosypose-nb"), "evaluate",
                        str(toy / "noisy.csv"), "--dataset", str(toy), "--out", str(tmp_path / "two"), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "scores.json").read_text())
    for k in ("bop19", "ycbv", "mv"):
        assert json.dumps(two[k], sort_keys=True) == json.dumps(json.loads(json.dumps(one[k], default=float)), sort_keys=True), k
    assert r.stdout.count("| BOP19 AR |") == 1                                # the summary is printed by rank 0 only


def _bad_csv(toy, tmp_path, extra_line):
    lines = (toy / "noisy.csv").read_text().splitlines()
    p = tmp_path / "bad.csv"
    p.write_text("\n".join(lines + [extra_line(lines)]) + "\n")
    return p


def _row_like(lines, k=1, **change):
    f = lines[k].split(",")
    for i, name in enumerate(("scene_id", "im_id", "obj_id")):
        if name in change: f[i] = str(change[name])
    return ",".join(f)


@pytest.mark.parametrize("change,reason", [(dict(obj_id=77), "unknown object"), (dict(scene_id=9), "unknown scene"),
                                           (dict(im_id=99), "unknown image"), (dict(), "duplicate")])
def test_bad_rows_error_or_skip(toy, tmp_path, change, reason):
    p = _bad_csv(toy, tmp_path, lambda lines: _row_like(lines, 1, **change))
    n = len(p.read_text().splitlines()) - 1
    with pytest.raises(InputError, match=rf"line {n + 1} \(.*\): {reason}"):
        evaluate(p, toy, tmp_path / "a", EvaluateConfig(metrics=("ycbv",), **FAST))
    s = evaluate(p, toy, tmp_path / "b", EvaluateConfig(metrics=("ycbv",), on_bad_row="skip", **FAST))
    assert s["counts"]["skipped"][reason.replace(" ", "_")] == 1 and s["counts"]["estimates"] == n - 1
    assert reason.replace("_", " ") in (tmp_path / "b" / "summary.md").read_text().replace("_", " ")


def test_bad_row_named_by_its_file_line(toy, tmp_path):
    "Blank lines are skipped by the reader: the error still names the line of the file (as the reader's own errors do)."
    lines = (toy / "noisy.csv").read_text().splitlines()
    p = tmp_path / "blank.csv"
    p.write_text("\n".join(lines[:2] + ["", ""] + lines[2:] + ["", _row_like(lines, 1, obj_id=77)]) + "\n")
    n = len(p.read_text().splitlines())
    with pytest.raises(InputError, match=rf"blank.csv: line {n} \(.*\): unknown object"):
        evaluate(p, toy, tmp_path / "o", EvaluateConfig(metrics=("ycbv",), **FAST))
    p.write_text("\n".join(lines[:2] + [""] + lines[1:]) + "\n")       # line 4 repeats line 2
    with pytest.raises(InputError, match=r"line 4 \(.*\): duplicate \(the same as line 2\)"):
        evaluate(p, toy, tmp_path / "o2", EvaluateConfig(metrics=("ycbv",), **FAST))


def test_malformed_row_names_its_line(toy, tmp_path):
    p = _bad_csv(toy, tmp_path, lambda lines: "0,1,1,0.5,1 0 0,0 0 500,0.1")
    with pytest.raises(InputError, match=r"line \d+: R"):
        evaluate(p, toy, tmp_path / "o", EvaluateConfig(**FAST))


def test_dataset_without_ground_truth_and_bad_targets(toy, tmp_path):
    nogt = tmp_path / "nogt"; shutil.copytree(toy, nogt)
    for f in (nogt / "test").glob("*/scene_gt.json"): f.unlink()
    with pytest.raises(InputError, match="scene_gt.json: file not found: split 'test' has no ground truth"):
        evaluate(toy / "noisy.csv", nogt, tmp_path / "o1", EvaluateConfig(**FAST))
    with pytest.raises(InputError, match="split folder not found"):
        evaluate(toy / "noisy.csv", toy, tmp_path / "o2", EvaluateConfig(split="val", **FAST))
    t = tmp_path / "targets.json"
    t.write_text(json.dumps([{"scene_id": 0, "im_id": 42, "obj_id": 1, "inst_count": 1}]))
    with pytest.raises(InputError, match="scene 0 image 42: listed as a target"):
        evaluate(toy / "noisy.csv", toy, tmp_path / "o3", EvaluateConfig(targets=str(t), **FAST))
    with pytest.raises(InputError, match="file not found"):
        evaluate(toy / "noisy.csv", toy, tmp_path / "o4", EvaluateConfig(targets=str(tmp_path / "none.json"), **FAST))


def test_targets_made_from_the_ground_truth_when_absent(toy, tmp_path):
    nt = tmp_path / "nt"; shutil.copytree(toy, nt)
    (nt / "test_targets_bop19.json").unlink()
    s = evaluate(toy / "noisy.csv", nt, tmp_path / "o", EvaluateConfig(metrics=("bop19",), **FAST))
    assert "made from the ground truth" in s["counts"]["targets_source"]
    assert s["bop19"]["targets_count"] <= s["counts"]["gt_instances_in_target_images"]


def test_cli(toy, tmp_path, capsys):
    from cosypose_nb.cli import main
    assert main(["evaluate", str(toy / "noisy.csv"), "--dataset", str(toy), "--out", str(tmp_path), "--metrics", "ycbv", "mv", "--no-progress"]) == 0
    assert "ADD(-S) AUC" in capsys.readouterr().out and not (tmp_path / "scores_bop19.json").exists()
    assert main(["evaluate", str(toy / "noisy.csv"), "--dataset", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    with pytest.raises(SystemExit) as e:                       # argparse: unknown metric, exit status 2
        main(["evaluate", str(toy / "noisy.csv"), "--dataset", str(toy), "--out", str(tmp_path / "y"), "--metrics", "adds"])
    assert e.value.code == 2


@pytest.mark.parametrize("edit,message", [
    (lambda f: f[:3] + ["high"] + f[4:], r"line 3: score: expected a number, got 'high'"),
    (lambda f: f[:5] + ["1 2 x"] + f[6:], r"line 3: t: expected 3 space-separated numbers"),
    (lambda f: f + ["extra"], r"line 3: expected 7 fields .*, got 8"),
    (lambda f: f[:4], r"line 3: expected 7 fields .*, got 4")])
def test_cli_malformed_row_names_file_line_and_field(toy, tmp_path, capsys, edit, message):
    "`cosypose-nb evaluate` on a malformed row: exit status 2, one line naming the file, line and field; nothing written."
    import re
    from cosypose_nb.cli import main
    lines = (toy / "noisy.csv").read_text().splitlines()
    lines[2] = ",".join(edit(lines[2].split(",")))
    p = tmp_path / "bad.csv"; p.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert main(["evaluate", str(p), "--dataset", str(toy), "--out", str(out), "--metrics", "ycbv", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(f"bad.csv: {message}", err) and "Traceback" not in err and not out.exists()
