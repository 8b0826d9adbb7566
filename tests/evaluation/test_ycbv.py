"""YCB-Video AUC and the multi-view mAP (`evaluation.ycbv`) against CosyPose's own functions run on stored inputs
(tests/evaluation/data/ycbv_auc.json: `compute_auc_posecnn`; mv_map.json: cosypose's valid-GT, top-n, candidate and
matching functions with the AP of `PoseErrorMeter.summary` through scikit-learn). AUC and AP values are sums of
float64 products in the same order: compared to 1e-12; matches and flags exactly."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cosypose_nb.core import InputError
from cosypose_nb.evaluation.ycbv import *

DATA = Path(__file__).parent / "data"
AUC = json.loads((DATA / "ycbv_auc.json").read_text())
MV = json.loads((DATA / "mv_map.json").read_text())
inf = lambda xs: [np.inf if x is None else x for x in xs]


@pytest.mark.parametrize("c", AUC["cases"], ids=lambda c: c["name"])
def test_auc_equals_cosypose(c):
    got = auc_posecnn(inf(c["errors_m"]))
    if c["auc"] is None:
        assert np.isnan(got)
    else:
        assert got == pytest.approx(c["auc"], rel=1e-12, abs=1e-15)


def test_auc_per_object_mean_skips_nan():
    ex = AUC["per_object_mean_example"]
    per = {k: auc_posecnn(inf(v)) for k, v in ex["errors_m_by_object"].items()}
    for k, v in ex["auc_by_object"].items():
        assert (np.isnan(per[k]) if v is None else per[k] == pytest.approx(v, rel=1e-12))
    assert np.nanmean(list(per.values())) == pytest.approx(ex["mean_skipping_nan"], rel=1e-12)
    # the same through auc_scores: instances of 3 objects, every one matched with the stored error
    errs = [(int(k), e) for k, v in ex["errors_m_by_object"].items() for e in inf(v)]
    gts = pd.DataFrame({"scene_id": 1, "im_id": np.arange(len(errs)), "obj_id": [k for k, _ in errs], "visib_fract": 1.0})
    m = Matching(np.ones(len(errs), bool), np.ones(len(errs), bool),
                 pd.DataFrame({"pred": np.arange(len(errs)), "gt": np.arange(len(errs)), "error": [e for _, e in errs], "tp": False}))
    s = auc_scores(m, gts)
    assert s.auc_objects_mean == pytest.approx(ex["mean_skipping_nan"], rel=1e-12) and np.isnan(s.per_object[3])


def test_auc_bad_input():
    with pytest.raises(InputError, match="NaN"):
        auc_posecnn([0.01, np.nan])
    assert np.isnan(auc_posecnn([]))


def _tables(inp):
    ren = lambda d: {"scene_id": d["scene_id"], "im_id": d["view_id"], "obj_id": d["label"]}
    preds = pd.DataFrame([{**ren(p), "score": p["score"]} for p in inp["predictions"]])
    gts = pd.DataFrame([{**ren(g), "visib_fract": g["visib_fract"]} for g in inp["gts"]])
    targets = None if inp["targets"] is None else pd.DataFrame([{**ren(t), "inst_count": t["inst_count"]} for t in inp["targets"]])
    cands = pd.DataFrame([{"pred": c["pred_row"], "gt": c["gt_row"], "error": c["error"]} for c in inp["candidate_errors_m"]])
    return preds, gts, targets, cands


@pytest.mark.parametrize("c", MV["cases"], ids=lambda c: c["name"])
def test_mv_map_equals_cosypose(c):
    inp, exp = c["inputs"], c["expected"]
    preds, gts, targets, cands = _tables(inp)
    meter = Meter(n_top=inp["n_top"], visib_gt_min=inp["visib_gt_min"], consider_all_predictions=inp["consider_all_predictions"],
                  match_threshold=0.1)
    m = match_predictions(preds, gts, cands, inp["diameter_m"], meter, targets)
    assert m.valid.tolist() == exp["gt_valid"]
    got = sorted((int(r.pred), int(r.gt), bool(r.tp)) for r in m.matches.itertuples())
    assert got == sorted((x["pred_row"], x["gt_row"], x["tp"]) for x in exp["matches"])
    err = {(int(r.pred), int(r.gt)): r.error for r in m.matches.itertuples()}
    for x in exp["matches"]:
        assert err[(x["pred_row"], x["gt_row"])] == x["error"]
    a = ap_scores(m, preds, gts)
    assert a.n_gt == exp["n_gt_per_label"] and sum(a.n_gt.values()) == exp["n_gt_valid"]
    assert set(a.per_object) == set(exp["AP_per_label"])
    for k, v in exp["AP_per_label"].items():
        assert a.per_object[k] == pytest.approx(v, rel=1e-12)
    assert a.mAP == pytest.approx(exp["mAP"], rel=1e-12) and a.AP == pytest.approx(exp["AP_all"], rel=1e-12)
    assert a.recall_01d == pytest.approx(exp["ADD-S<0.1d_recall"], rel=1e-12)
    tp = np.zeros(len(preds), bool)
    tp[m.matches["pred"].to_numpy().astype(int)] = m.matches["tp"].to_numpy()
    assert tp.tolist() == exp["pred_tp"]


def test_average_precision_by_hand():
    # ranks: TP, FP, TP, FP -> precisions 1, 1/2, 2/3, 1/2 at recalls 1/2, 1/2, 1, 1: AP = 1/2 + 1/2 * 2/3
    assert average_precision([1, 0, 1, 0], [4, 3, 2, 1]) == pytest.approx(5 / 6)
    # a tie between a TP and an FP is one threshold: precision 1/2 at recall 1
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 0], [0.5, 0.2]) == 0.0
    assert average_precision([0, 1], [0.9, 0.1]) == pytest.approx(0.5)


def test_greedy_matching_never_takes_an_infinite_error():
    preds = pd.DataFrame({"scene_id": 1, "im_id": 1, "obj_id": 1, "score": [0.9, 0.5]})
    gts = pd.DataFrame({"scene_id": 1, "im_id": 1, "obj_id": 1, "visib_fract": [1.0]})
    cands = pd.DataFrame({"pred": [0, 1], "gt": [0, 0], "error": [np.inf, 0.02]})
    m = match_predictions(preds, gts, cands, {1: 0.1}, Meter(match_threshold=np.inf, spheres_overlap_check=False))
    assert m.matches[["pred", "gt"]].values.tolist() == [[1, 0]]
    m1 = match_predictions(preds, gts, cands, {1: 0.1}, YCBV_METER)
    assert len(m1.matches) == 0 and auc_scores(m1, gts).accuracy_01d == 0.0      # the top-1 prediction has no usable error
