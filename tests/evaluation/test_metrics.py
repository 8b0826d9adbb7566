"""Pose errors (`evaluation.metrics`): equal to the values the BOP toolkit and CosyPose computed on stored inputs
(tests/evaluation/data, copied from the project's reference runs of bop_toolkit @ cea62d6 and cosypose @ c90a04f),
to cases made by hand, and the batched torch versions equal to a slow loop oracle written from the definitions.

Tolerances: the reference values come from the same float64 operations in another order (BLAS products,
k-d tree vs distance matrix, Rodrigues formula vs roma), hence 1e-9 relative; the rotation error goes through
acos, whose slope near 0 amplifies rounding, hence 1e-6 degrees. VSD is tested in test_vsd.py."""
import json, math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.spatial.transform import Rotation

from cosypose_nb.core import InputError
from cosypose_nb.evaluation.metrics import *

DATA = Path(__file__).parent / "data"
POSE = json.loads((DATA / "pose_errors.json").read_text())
SYMS = json.loads((DATA / "symmetries.json").read_text())
YCBV = json.loads((DATA / "ycbv_auc.json").read_text())
T = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))


def _case_args(c):
    return (np.array(c["R_est"]), np.array(c["t_est_mm"]).reshape(3, 1), np.array(c["R_gt"]),
            np.array(c["t_gt_mm"]).reshape(3, 1), np.array(c["pts_mm"]))


@pytest.mark.parametrize("c", POSE["cases"], ids=lambda c: f"{c['id']}-{c['model_info_name']}")
def test_pose_errors_equal_the_toolkit(c):
    Re, te_, Rg, tg, pts = _case_args(c)
    K = np.array(c["K"])
    syms = get_symmetry_transformations(c["model_info"], POSE["max_sym_disc_step"])
    assert len(syms) == c["n_syms"]
    got = {"add": add(Re, te_, Rg, tg, pts), "adi": adi(Re, te_, Rg, tg, pts), "mssd": mssd(Re, te_, Rg, tg, pts, syms),
           "mspd": mspd(Re, te_, Rg, tg, K, pts, syms), "te": te(te_, tg), "proj": proj(Re, te_, Rg, tg, K, pts)}
    for k, v in got.items():
        assert v == pytest.approx(c["expected"][k], rel=1e-9, abs=1e-9), k
    assert re(Re, Rg) == pytest.approx(c["expected"]["re"], abs=1e-6)


@pytest.mark.parametrize("c", POSE["cases"], ids=lambda c: f"{c['id']}-{c['model_info_name']}")
def test_batched_errors_equal_the_toolkit(c):
    Re, te_, Rg, tg, pts = _case_args(c)
    S = symmetries_tensor(get_symmetry_transformations(c["model_info"], POSE["max_sym_disc_step"]))
    a = (T(Re)[None], T(te_)[None], T(Rg)[None], T(tg)[None])
    got = {"add": add_batch(*a, T(pts)), "adi": adi_batch(*a, T(pts)), "mssd": mssd_batch(*a, T(pts), S),
           "mspd": mspd_batch(*a, T(c["K"]), T(pts), S), "te": te_batch(a[1], a[3])}
    for k, v in got.items():
        assert float(v[0]) == pytest.approx(c["expected"][k], rel=1e-9, abs=1e-9), k
    assert float(re_batch(a[0], a[2])[0]) == pytest.approx(c["expected"]["re"], abs=1e-6)


def test_batched_errors_in_one_batch_with_padded_symmetries():
    """All the reference cases at once: per-pair points and symmetries; the shorter symmetry sets padded with the
    identity, the shorter point sets with copies of their last point (neither changes a max or a min)."""
    cs = POSE["cases"]
    from cosypose_nb.geometry.symmetries import pad_symmetries
    S = pad_symmetries([symmetries_tensor(get_symmetry_transformations(c["model_info"], 0.01)) for c in cs])
    n = max(len(c["pts_mm"]) for c in cs)
    pts = T(np.stack([np.concatenate([p, np.repeat(p[-1:], n - len(p), 0)]) for p in (np.array(c["pts_mm"]) for c in cs)]))
    args = [T(np.stack([_case_args(c)[i] for c in cs])) for i in range(4)]
    K = T(np.stack([c["K"] for c in cs]))
    m = mssd_batch(*args, pts, S, max_elems=100_000)              # small chunks: the chunking is exercised too
    p = mspd_batch(*args, K, pts, S)
    assert np.allclose(m.numpy(), [c["expected"]["mssd"] for c in cs], rtol=1e-9, atol=1e-9)
    assert np.allclose(p.numpy(), [c["expected"]["mspd"] for c in cs], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("e", SYMS["entries"], ids=lambda e: f"{e['model_info_name']}-{e['max_sym_disc_step']}")
def test_symmetry_transformations_equal_the_toolkit(e):
    syms = get_symmetry_transformations(e["model_info"], e["max_sym_disc_step"])
    assert len(syms) == e["count"]
    idx = e.get("syms_index", range(len(e["syms"])))
    for i, s in zip(idx, e["syms"]):
        assert np.allclose(syms[i]["R"], s["R"], rtol=0, atol=1e-12)
        assert np.allclose(syms[i]["t"].reshape(3), s["t"], rtol=0, atol=1e-10)
        assert syms[i]["R"].shape == (3, 3) and syms[i]["t"].shape == (3, 1)


def test_symmetry_transformations_bad_input():
    with pytest.raises(InputError, match=r"symmetries_discrete\[0\]"):
        get_symmetry_transformations({"symmetries_discrete": [[1, 0, 0]]}, 0.01)
    with pytest.raises(InputError, match=r"symmetries_continuous\[0\]"):
        get_symmetry_transformations({"symmetries_continuous": [{"axis": [0, 0, 1]}]}, 0.01)
    with pytest.raises(InputError, match="axis"):
        get_symmetry_transformations({"symmetries_continuous": [{"axis": [0, 0, 0], "offset": [0, 0, 0]}]}, 0.01)
    with pytest.raises(InputError, match="max_sym_disc_step"):
        get_symmetry_transformations({}, 0)


def test_adds_of_cosypose_equal():
    "CosyPose's ADD and ADD-S (metres) on the reference cases: the same direction as the toolkit's adi."
    by_id = {c["id"]: c for c in POSE["cases"]}
    for r in YCBV["add_s_cosypose_cases"]["cases"]:
        Re, te_, Rg, tg, pts = _case_args(by_id[r["pose_errors_case_id"]])
        a = (T(Re)[None], T(te_ / 1000)[None], T(Rg)[None], T(tg / 1000)[None])
        assert float(add_batch(*a, T(pts / 1000))[0]) == pytest.approx(r["add_m"], rel=1e-9, abs=1e-12)
        assert float(adi_batch(*a, T(pts / 1000))[0]) == pytest.approx(r["add_s_m"], rel=1e-9, abs=1e-12)


# ---- a slow oracle written from the definitions (loops over points and symmetries), for the batched versions
def _oracle(Re, te_, Rg, tg, K, pts, syms):
    move = lambda R, t, x: [sum(R[r][k] * x[k] for k in range(3)) + t[r] for r in range(3)]
    pix = lambda X: [(K[0][0] * X[0] + K[0][1] * X[1] + K[0][2] * X[2]) / X[2], (K[1][1] * X[1] + K[1][2] * X[2]) / X[2]]
    pe = [move(Re, te_, x) for x in pts]
    pg = [move(Rg, tg, x) for x in pts]
    out = {"add": sum(math.dist(a, b) for a, b in zip(pe, pg)) / len(pts),
           "adi": sum(min(math.dist(g, e) for e in pe) for g in pg) / len(pts),
           "te": math.dist(te_, tg)}
    ms, mp = [], []
    for s in syms:
        Rs, ts = s["R"].tolist(), s["t"].reshape(3).tolist()
        gs = [move(Rg, tg, move(Rs, ts, x)) for x in pts]
        ms.append(max(math.dist(a, b) for a, b in zip(pe, gs)))
        mp.append(max(math.dist(pix(a), pix(b)) for a, b in zip(pe, gs)))
    out["mssd"], out["mspd"] = min(ms), min(mp)
    c = (sum(Re[i][k] * Rg[i][k] for i in range(3) for k in range(3)) - 1) / 2     # tr(Re Rg^T) = sum of the products
    out["re"] = math.degrees(math.acos(max(-1.0, min(1.0, c))))
    return out

INFOS = [{}, {"symmetries_discrete": [[-1, 0, 0, 0, 0, -1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]]},
         {"symmetries_continuous": [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]},
         {"symmetries_continuous": [{"axis": [1, 1, 0], "offset": [5, -3, 2]}],
          "symmetries_discrete": [[1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 10, 0, 0, 0, 1]]}]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), info=st.sampled_from(INFOS), n=st.integers(1, 30), B=st.integers(1, 4))
def test_batched_equal_the_loop_oracle(seed, info, n, B):
    rng = np.random.default_rng(seed)
    pts = rng.normal(0, 50, (n, 3))
    Re, Rg = Rotation.random(B, random_state=seed).as_matrix(), Rotation.random(B, random_state=seed + 1).as_matrix()
    te_, tg = rng.normal(0, 40, (B, 3)) + [0, 0, 700], rng.normal(0, 40, (B, 3)) + [0, 0, 700]
    K = np.array([[rng.uniform(300, 900), 0, 320], [0, rng.uniform(300, 900), 240], [0, 0, 1]])
    syms = get_symmetry_transformations(info, 0.5)
    S = symmetries_tensor(syms)
    a = (T(Re), T(te_), T(Rg), T(tg))
    got = {"add": add_batch(*a, T(pts)), "adi": adi_batch(*a, T(pts)), "mssd": mssd_batch(*a, T(pts), S),
           "mspd": mspd_batch(*a, T(K), T(pts), S), "te": te_batch(a[1], a[3]), "re": re_batch(a[0], a[2])}
    for b in range(B):
        want = _oracle(Re[b].tolist(), te_[b].tolist(), Rg[b].tolist(), tg[b].tolist(), K.tolist(), pts.tolist(), syms)
        for k, v in want.items():
            tol = dict(abs=1e-6) if k == "re" else dict(rel=1e-9, abs=1e-9)
            assert float(got[k][b]) == pytest.approx(v, **tol), k


def test_batched_errors_on_float32_and_shared_or_per_pair_points():
    rng = np.random.default_rng(1)
    B, n = 5, 40
    pts = rng.normal(0, 50, (n, 3))
    Re, Rg = Rotation.random(B, random_state=3).as_matrix(), Rotation.random(B, random_state=4).as_matrix()
    te_, tg = rng.normal(0, 40, (B, 3)) + [0, 0, 700], rng.normal(0, 40, (B, 3)) + [0, 0, 700]
    a = (T(Re), T(te_), T(Rg), T(tg))
    shared, per_pair = mssd_batch(*a, T(pts), torch.eye(4)[None].double()), mssd_batch(*a, T(np.tile(pts, (B, 1, 1))), torch.eye(4)[None].double())
    assert torch.equal(shared, per_pair)
    f32 = mssd_batch(*(x.float() for x in a), T(pts).float(), torch.eye(4)[None])
    assert f32.dtype == torch.float32 and torch.allclose(f32.double(), shared, rtol=1e-4)
    with pytest.raises(InputError, match="pts"):
        add_batch(*a, T(np.zeros((B + 1, n, 3))))
    with pytest.raises(InputError, match="R_gt"):
        add_batch(a[0], a[1], a[2][:2], a[3], T(pts))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 31 - 1), n_bound=st.sampled_from([1, 3, 32]), info=st.sampled_from(INFOS[1:]))
def test_bounded_min_max_equals_evaluating_every_symmetry(seed, n_bound, info):
    "The lower-bound pruning of MSSD / MSPD gives the same value as the maximum over all points of every symmetry."
    rng = np.random.default_rng(seed)
    B, n = 3, 200
    pts = T(rng.normal(0, 50, (n, 3)))
    Re, Rg = T(Rotation.random(B, random_state=seed).as_matrix()), T(Rotation.random(B, random_state=seed + 7).as_matrix())
    tg = T(rng.normal(0, 40, (B, 3)) + [0, 0, 700])
    S = symmetries_tensor(get_symmetry_transformations(info, 0.1))
    Re[0] = Rg[0] @ S[len(S) // 2, :3, :3]                         # one estimate right on a symmetric pose: near-equal candidates
    te_ = tg + T(rng.normal(0, 2, (B, 3)))
    K = T(np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]]))
    y = (pts @ Re.transpose(-1, -2) + (te_ - tg)[:, None]) @ Rg
    full = (y[:, None] - (pts @ S[:, :3, :3].transpose(-1, -2) + S[:, None, :3, 3])[None]).norm(dim=-1).amax(-1).amin(-1)
    assert torch.equal(mssd_batch(Re, te_, Rg, tg, pts, S, n_bound=n_bound), full)
    ref = [mspd(Re[b].numpy(), te_[b].numpy(), Rg[b].numpy(), tg[b].numpy(), K.numpy(), pts.numpy(), get_symmetry_transformations(info, 0.1))
           for b in range(B)]
    assert np.allclose(mspd_batch(Re, te_, Rg, tg, K, pts, S, n_bound=n_bound).numpy(), ref, rtol=1e-9)


def test_adi_batch_per_pair_points_trees_and_cdist_agree():
    "Points a pair (B, N, 3): k-d trees above KD_TREE_MIN_POINTS, cdist below; both the reference `adi` pair by pair."
    rng = np.random.default_rng(5)
    for N in (KD_TREE_MIN_POINTS - 12, KD_TREE_MIN_POINTS + 200):
        P = rng.normal(size=(3, N, 3)) * 40
        R = Rotation.random(6, random_state=1).as_matrix()
        t = rng.normal(size=(6, 3)) * 10
        got = adi_batch(T(R[:3]), T(t[:3]), T(R[3:]), T(t[3:]), T(P))
        want = [adi(R[b], t[b], R[3 + b], t[3 + b], P[b]) for b in range(3)]
        assert np.allclose(got.numpy(), want, rtol=1e-9, atol=0), (N, got, want)   # (k-d tree vs distances: rounding)


def test_scene_metric_on_a_problem():
    "`evaluate_scene`: the truth solves its problem under any symmetry element; a 5 cm shift of every object does not."
    from cosypose_nb.synthetic.mvproblems import make_problem
    p = make_problem(4, 6, seed=3)
    S = p.objects.symmetries(p.obj_labels, n_continuous=64)[:, 1]           # a non-identity element (or the padding)
    ev = evaluate_scene(p, p.obj_labels, p.T_WO @ S, p.T_WC)
    assert ev["solved"] and ev["errors"].max() < 1e-9 and ev["missing"] == ev["spurious"] == ev["duplicate"] == 0
    shifted = p.T_WO.clone(); shifted[:, 2, 3] += 0.05
    ev = evaluate_scene(p, p.obj_labels, shifted, p.T_WC)
    assert not ev["solved"] and ev["frac_ok"] < 0.5
    d = adds_aligned(p.objects, p.obj_labels, shifted, p.T_WO)             # closest points slide along the surface:
    assert (d > 0.01).all() and (d <= 0.05 + 1e-12).all()                  # seen, and never above the ADD (5 cm)
