"""BOP19 scores (`evaluation.bop19`) against the toolkit's own run (`scripts/eval_bop19_pose.py`, unmodified) on a
small fake YCB-V dataset (tests/evaluation/data/bop19_scores.json): from the toolkit's per-estimate error files, the
recall of every threshold, both visibility rules and the final scores are equal (ratios of integers: exactly). The
MSSD and MSPD errors themselves are recomputed from the stored poses and models (to 1e-9 relative), with the
selection of estimates (top inst_count per target) and the MSSD shortcut (infinite beyond a diameter)."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosypose_nb.core import InputError
from cosypose_nb.evaluation.bop19 import *
from cosypose_nb.evaluation.metrics import get_symmetry_transformations, mssd, mspd

REF = json.loads((Path(__file__).parent / "data" / "bop19_scores.json").read_text())
W = REF["im_size"][0]


def gt_table():
    rows = []
    for sid, ims in REF["scene_gt"].items():
        for im, objs in ims.items():
            for j, o in enumerate(objs):
                rows.append({"scene_id": int(sid), "im_id": int(im), "gt_id": j, "obj_id": o["obj_id"],
                             "visib_fract": REF["scene_gt_info"][sid][im][j]["visib_fract"]})
    return pd.DataFrame(rows)


def targets_table():
    return pd.DataFrame(REF["targets"])[["scene_id", "im_id", "obj_id", "inst_count"]]


def pairs_from_error_files():
    "The toolkit's errors_{scene}.json of every error type as one pairs table."
    tables = []
    for sign, files in REF["errors_files"].items():
        col = "mssd" if sign.startswith("error=mssd") else "mspd" if sign.startswith("error=mspd") else \
            vsd_tau_column(float(sign.split("tau=")[1]))
        rows = [{"scene_id": e["scene_id"], "im_id": e["im_id"], "obj_id": e["obj_id"], "est_id": e["est_id"], "score": e["score"],
                 "gt_id": int(g), col: v[0]} for f in files.values() for e in f for g, v in e["errors"].items()]
        tables.append(pd.DataFrame(rows))
    keys = ["scene_id", "im_id", "obj_id", "est_id", "score", "gt_id"]
    p = tables[0]
    for t in tables[1:]:
        p = p.merge(t, on=keys, how="outer")
    diam = {int(k): v["diameter"] for k, v in REF["models_info_all"].items()}
    return p.assign(diameter=p["obj_id"].map(diam), im_width=W)


def results_table():
    lines = [l.split(",") for l in REF["results_csv"].strip().split("\n")[1:]]
    return pd.DataFrame({"scene_id": [int(l[0]) for l in lines], "im_id": [int(l[1]) for l in lines], "obj_id": [int(l[2]) for l in lines],
                         "score": [float(l[3]) for l in lines], "R": [np.array(l[4].split(), float).reshape(3, 3) for l in lines],
                         "t": [np.array(l[5].split(), float).reshape(3, 1) for l in lines], "time": [float(l[6]) for l in lines]})


@pytest.mark.parametrize("visib", ["-1", "0.1"])
def test_recalls_per_threshold_equal_the_toolkit(visib):
    cfg = BOP19Config(visib_gt_min=float(visib))
    s = bop19_scores(pairs_from_error_files(), gt_table(), targets_table(), cfg)
    ref = REF["per_threshold"]
    want_vsd = [[r["recall"] for r in ref["vsd"][sign][visib]] for sign in sorted(ref["vsd"])]
    assert s.recall_vsd.tolist() == want_vsd
    for k, got in (("mssd", s.recall_mssd), ("mspd", s.recall_mspd)):
        (sign,) = ref[k]
        assert got.tolist() == [r["recall"] for r in ref[k][sign][visib]], k
        assert s.n_targets == ref[k][sign][visib][0]["targets_count"] and s.n_gt == ref[k][sign][visib][0]["gt_count"]
    want = REF["average_recalls_by_visib_gt_min"][visib]
    got = s.to_json()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-15, abs=0), k


def test_final_scores_equal_scores_bop19_json():
    res = results_table()
    s = bop19_scores(pairs_from_error_files(), gt_table(), targets_table(), BOP19Config(), average_time_per_image(res))
    got = s.to_json()
    for k, v in REF["scores_bop19_json"].items():
        assert got[k] == pytest.approx(v, rel=1e-12), k


def test_selection_and_mssd_mspd_recomputed_from_poses():
    res, gts = results_table(), gt_table()
    sel = select_estimates(res, targets_table())
    ref = {(e["scene_id"], e["im_id"], e["obj_id"], e["est_id"]): e for e in
           (e for f in REF["errors_files"]["error=mssd_ntop=-1"].values() for e in f)}
    ref_p = {(e["scene_id"], e["im_id"], e["obj_id"], e["est_id"]): e for e in
             (e for f in REF["errors_files"]["error=mspd_ntop=-1"].values() for e in f)}
    assert sorted(zip(sel.scene_id, sel.im_id, sel.obj_id, sel.est_id)) == sorted(ref)     # the same estimates are kept
    K = np.array(REF["K"])
    gt_pose = {(int(s), int(i), j): (np.array(o["cam_R_m2c"]), np.array(o["cam_t_m2c"]).reshape(3, 1))
               for s, ims in REF["scene_gt"].items() for i, objs in ims.items() for j, o in enumerate(objs)}
    n_inf = 0
    for r in sel.itertuples():
        m = REF["models"][str(r.obj_id)]
        pts, info = np.array(m["pts_mm"]), m["info"]
        syms = get_symmetry_transformations(info, 0.01)
        e_ref = ref[(r.scene_id, r.im_id, r.obj_id, r.est_id)]
        assert e_ref["score"] == r.score
        for g, (v,) in e_ref["errors"].items():
            Rg, tg = gt_pose[(r.scene_id, r.im_id, int(g))]
            if np.linalg.norm(r.t - tg) >= info["diameter"]:       # the toolkit's shortcut: infinite, not computed
                assert v == np.inf; n_inf += 1
            else:
                assert mssd(r.R, r.t, Rg, tg, pts, syms) == pytest.approx(v, rel=1e-9)
            (vp,) = ref_p[(r.scene_id, r.im_id, r.obj_id, r.est_id)]["errors"][g]
            assert mspd(r.R, r.t, Rg, tg, K, pts, syms) == pytest.approx(vp, rel=1e-9)
    assert n_inf >= 1


def test_valid_gt_rules_differ_on_the_reference_case():
    "Scene 48 image 2: object 13's only instance is 5% visible; the BOP19 rule counts it (a target), the 0.1 rule does not."
    g, t = gt_table(), targets_table()
    v_new, v_old = valid_gts(g, t, -1), valid_gts(g, t, 0.1)
    m = (g.scene_id == 48) & (g.im_id == 2) & (g.obj_id == 13)
    assert v_new[m].all() and not v_old[m].any()
    assert v_new.sum() == 17 and v_old.sum() == 16


def test_matching_ties_and_duplicates():
    p = pd.DataFrame({"scene_id": 1, "im_id": 1, "obj_id": 1, "est_id": [0, 0, 1, 1, 2, 2], "score": [0.9, 0.9, 0.9, 0.9, 0.1, 0.1],
                      "gt_id": [0, 1] * 3, "e": [0.2, 0.2, 0.2, 0.2, 0.01, 0.01]})
    # equal errors: the first estimate takes gt 0 (the lower id), the second gt 1; the third finds nothing left
    assert count_true_positives(p, "e", [0.3]).tolist() == [2]
    # a duplicate of an estimate adds no true positive and takes nothing away
    q = pd.DataFrame({"scene_id": 1, "im_id": 1, "obj_id": 1, "est_id": [0, 1], "score": [0.5, 0.5], "gt_id": 0, "e": [0.1, 0.1]})
    assert count_true_positives(q, "e", [0.2]).tolist() == [1]
    # NaN (not computed) is an infinite error
    assert count_true_positives(q.assign(e=np.nan), "e", [0.2]).tolist() == [0]


def test_scores_without_targets_are_zero():
    g = gt_table()
    s = bop19_scores(pairs_from_error_files().iloc[:0], g, targets_table().iloc[:0])
    assert s.average_recall == 0 and s.n_targets == 0


def test_times():
    res = results_table()
    assert average_time_per_image(res) == pytest.approx(REF["scores_bop19_json"]["bop19_average_time_per_image"], rel=1e-12)
    assert average_time_per_image(res.assign(time=np.where(res.index == 3, -1.0, res.time))) == -1.0
