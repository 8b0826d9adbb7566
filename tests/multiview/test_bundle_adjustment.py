"Stage 3: the object-level bundle adjustment on synthetic problems with ground truth (and SE(3), which it steps on)."
import math

import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.geometry.transforms import invert_T
from cosypose_nb.geometry.rotations import perturb_poses, rotation_angle
from cosypose_nb.geometry.symmetries import symmetric_distance
from cosypose_nb.datasets.meshes import subsample_points
from cosypose_nb.geometry.liegroup import se3_exp, se3_log, skew, se3_exp_batch, se3_generators
from cosypose_nb.synthetic.mvproblems import make_problem, CandidateNoise
from cosypose_nb.multiview import bundle_adjustment as ba
from cosypose_nb.geometry.symmetries import symmetric_centres
from helpers import (EXACT, inputs, seen, perturbed_start, scene_px, scene_mm, cand_px_mm, discrete_object_set, ba_run,
                     scene_of)
from reference import bundle_adjust_dense_autograd


def ref_run(view_ids, cand_obj, T_CO, K, points, syms, T_WC, T_WO, centres=None, **kw):
    "The dense reference on the eight tensors."
    return bundle_adjust_dense_autograd(scene_of(view_ids, cand_obj, T_CO, K, points, syms, T_WC, T_WO, centres), **kw)


def test_se3_exp_matches_matrix_exponential_and_log_inverts():
    g = torch.Generator().manual_seed(0)
    xi = torch.randn(500, 6, generator=g, dtype=torch.float64)
    ang = torch.rand(500, 1, generator=g, dtype=torch.float64) * 3.1
    xi[:, 3:] = xi[:, 3:] / xi[:, 3:].norm(dim=-1, keepdim=True) * ang
    xi[:20, 3:] *= 1e-7                                   # the Taylor branch
    xi[20:30, 3:] = 0
    Xi = torch.zeros(500, 4, 4, dtype=torch.float64)
    Xi[:, :3, :3], Xi[:, :3, 3] = skew(xi[:, 3:]), xi[:, :3]
    assert torch.allclose(se3_exp(xi), torch.linalg.matrix_exp(Xi), atol=1e-12)
    assert torch.allclose(se3_log(se3_exp(xi)), xi, atol=1e-9)


def test_batched_exponential_matches_se3_exp():
    "The solver's exponential (I + Xi + b Xi^2 + c Xi^3) equals `se3_exp`, from zero to large angles."
    g = torch.Generator().manual_seed(3)
    xi = torch.randn(500, 6, generator=g, dtype=torch.float64)
    xi[:, 3:] *= (torch.logspace(-12, 0.5, 500, dtype=torch.float64) / xi[:, 3:].norm(dim=-1))[:, None]
    xi[0, 3:] = 0
    gen, eye4 = se3_generators(torch.float64, torch.device("cpu"))
    Xi = torch.zeros(500, 4, 4, dtype=torch.float64)
    Xi[:, :3, :3], Xi[:, :3, 3] = skew(xi[:, 3:]), xi[:, :3]
    E = se3_exp_batch(xi, gen, eye4)
    assert torch.allclose(E, torch.linalg.matrix_exp(Xi), atol=1e-13, rtol=0)
    assert torch.allclose(se3_exp(xi.view(5, 100, 6)), E.view(5, 100, 4, 4), atol=0, rtol=0)   # any batch shape


@pytest.mark.parametrize("seed", range(4))
def test_normal_equations_match_finite_difference_jacobian(seed):
    "H = J^T J and g = J^T r of the solver (analytic, assembled on the host) against finite differences of the residuals."
    pb = make_problem(3 + seed, 3 + seed % 2, seed=seed)
    view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb)
    V, O = pb.n_views, pb.n_objects
    T_WC0, T_WO0 = perturbed_start(pb, seed)
    keep = cand_obj >= 0
    pts = subsample_points(pts, 8)
    fixed = np.arange(V) == seed % V
    vi, co, h = ba._check_ba_inputs(scene_of(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0))
    pr = ba._prepare(vi, co, h, co >= 0, fixed, dtype=torch.float64)
    T_CW, T_WO = invert_T(T_WC0).numpy(), T_WO0.numpy()
    cost, r, sidx, H, g = ba._gauss_newton(T_CW, T_WO, pr, "none", 20.0)
    P = H.shape[0]
    assert P == 6 * (V - 1 + O)

    def resid(delta):
        Tc, To = ba._apply_step(T_CW, T_WO, delta, pr)
        u = ba.project_with(torch.from_numpy(pr.K_c @ (Tc[pr.cam] @ To[pr.obj])[:, :3, :]), pr.pts_c)
        return (u - ba._targets(pr, sidx)).reshape(-1).numpy()        # the same symmetry choice

    eps = 1e-6
    J = np.stack([(resid(eps * e) - resid(-eps * e)) / (2 * eps) for e in np.eye(P)], 1)
    r0 = resid(np.zeros(P))
    assert np.allclose(r0, r.reshape(-1).numpy(), atol=1e-9)
    assert abs(cost - (r0 ** 2).sum()) < 1e-9 * cost
    scale = np.abs(J.T @ J).max()
    assert np.abs(J.T @ J - H).max() / scale < 1e-6
    assert np.abs(J.T @ r0 - g).max() / np.abs(J.T @ r0).max() < 1e-6


@pytest.mark.parametrize("V,O,seed", [(2, 3, 0), (4, 6, 1), (8, 6, 2), (8, 12, 3), (16, 12, 4)])
def test_exact_data_recovers_ground_truth(V, O, seed):
    # discrete symmetries only: the optimum is exact
    pb = make_problem(V, O, seed=seed, objects=discrete_object_set(), **EXACT)
    args = inputs(pb)
    T_WC0, T_WO0 = perturbed_start(pb, seed, angle=0.05, trans=0.03)
    res = ba_run(*args, T_WC0, T_WO0, fixed_view=0, n_points=32)
    assert res.converged
    assert res.costs[-1] < 1e-12 and res.costs[-1] < res.costs[0] * 1e-10
    assert torch.nanmean(res.cand_errors) < 1e-5
    assert (res.T_WC[:, :3, 3] - pb.T_WC[:, :3, 3]).norm(dim=-1).max() < 1e-6
    assert rotation_angle(res.T_WC[:, :3, :3], pb.T_WC[:, :3, :3]).max() < 1e-6
    o = seen(pb)
    assert symmetric_distance(res.T_WO[o], pb.T_WO[o], args[4][o], args[5][o]).max() < 1e-6
    # with continuous symmetries (make_problem reports candidates under the set's own discretisation, the
    # same here) each candidate's symmetry is a discrete choice: from a start more than half a grid step
    # (2.8 degrees) off, a candidate of a can or a bowl can lock one step away from the others and the
    # optimum keeps a residual of a pixel or so -- a known limit of discretised continuous symmetries
    # (the paper's code shares it); the poses stay within a few centimetres, usually exact
    pb = make_problem(V, O, seed=seed, **EXACT)
    args = inputs(pb)
    res = ba_run(*args, *perturbed_start(pb, seed, angle=0.05, trans=0.03), fixed_view=0, n_points=32)
    assert res.converged and res.costs[-1] < 1.0 and torch.nanmedian(res.cand_errors) < 1.0
    assert (res.T_WC[:, :3, 3] - pb.T_WC[:, :3, 3]).norm(dim=-1).max() < 0.03
    o = seen(pb)
    assert symmetric_distance(res.T_WO[o], pb.T_WO[o], args[4][o], args[5][o]).max() < 0.01
    # from a start within half a grid step, exact
    res = ba_run(*args, *perturbed_start(pb, seed, angle=0.01, trans=0.01), fixed_view=0, n_points=32)
    assert res.costs[-1] < 1e-12
    assert symmetric_distance(res.T_WO[o], pb.T_WO[o], args[4][o], args[5][o]).max() < 1e-6


@pytest.mark.parametrize("V,O", [(4, 6), (8, 6), (8, 12), (16, 12)])
def test_noisy_data_error_below_the_candidates(V, O):
    # pixel errors, the quantity BA minimises, with the default noise of make_problem
    ba_px, cand_px = [], []
    for seed in range(3):
        pb = make_problem(V, O, seed=seed, noise=CandidateNoise(outlier_frac=0.0))
        T_WC0, T_WO0 = perturbed_start(pb, seed, angle=0.03, trans=0.02)
        res = ba_run(*inputs(pb), T_WC0, T_WO0)
        ba_px.append(scene_px(pb, res.T_WC, res.T_WO).mean()); cand_px.append(cand_px_mm(pb)[0].mean())
    assert sum(ba_px) < sum(cand_px)
    # metric errors where the candidates' error is mostly in depth (as for real single-view estimates):
    # triangulation through the shared scene removes most of it
    ba_mm, cand_mm = [], []
    for seed in range(3):
        pb = make_problem(V, O, seed=seed, noise=CandidateNoise(outlier_frac=0.0, trans_noise_m=(0.001, 0.003)))
        T_WC0, T_WO0 = perturbed_start(pb, seed, angle=0.03, trans=0.02)
        res = ba_run(*inputs(pb), T_WC0, T_WO0)
        ba_mm.append(scene_mm(pb, res.T_WC, res.T_WO).mean()); cand_mm.append(cand_px_mm(pb)[1].mean())
    assert sum(ba_mm) < 0.8 * sum(cand_mm)


def test_reprojection_errors_per_step():
    "`reproj_errors`: the median candidate error of the start and of each accepted step; the last one is the result's."
    pb = make_problem(8, 6, seed=5, noise=CandidateNoise(outlier_frac=0.0))
    T_WC0, T_WO0 = perturbed_start(pb, 5, angle=0.05, trans=0.03)
    res = ba_run(*inputs(pb), T_WC0, T_WO0)
    assert len(res.reproj_errors) == len(res.costs) >= 3
    assert res.reproj_errors[-1] < 0.2 * res.reproj_errors[0]
    assert res.reproj_errors[-1] == pytest.approx(float(np.nanmedian(res.cand_errors.numpy())), rel=1e-12)
    none = ba_run(*inputs(pb), T_WC0, T_WO0, ba_iters=0)         # no step: the start only, which is the result
    assert len(none.reproj_errors) == 1 and none.reproj_errors[0] == pytest.approx(res.reproj_errors[0], rel=1e-12)


def test_symmetric_candidates_converge_to_the_same_scene():
    # every candidate re-reported under a random symmetry of its object gives the same scene
    for seed in range(4):
        discrete = seed % 2 == 0
        pb = make_problem(6, 8, seed=seed, objects=discrete_object_set() if discrete else None, **EXACT)
        view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb, n_continuous=None)
        assert (syms - torch.eye(4, dtype=syms.dtype)).abs().amax((-1, -2)).gt(1e-9).any()   # symmetric objects present
        g = torch.Generator().manual_seed(seed)
        n_sym = (syms - torch.eye(4, dtype=syms.dtype)).abs().amax((-1, -2)).gt(1e-9).sum(1) + 1
        pick = (torch.rand(len(T_CO), generator=g, dtype=torch.float64) * n_sym[cand_obj]).long()
        T_CO2 = T_CO @ syms[cand_obj, pick]
        T_WC0, T_WO0 = perturbed_start(pb, seed)
        r1 = ba_run(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0)
        r2 = ba_run(view_ids, cand_obj, T_CO2, K, pts, syms, T_WC0, T_WO0)
        tol = 1e-6 if discrete else 0.03       # see the continuous case of the test above
        for r in (r1, r2):
            assert r.costs[-1] < (1e-12 if discrete else 1.0)
            o = seen(pb)
            assert symmetric_distance(r.T_WO[o], pb.T_WO[o], pts[o], syms[o]).max() < tol
            assert (r.T_WC[:, :3, 3] - pb.T_WC[:, :3, 3]).norm(dim=-1).max() < tol
        assert (pick > 0).any()


def test_robust_cap_limits_an_outlier_candidate():
    worse_none, worse_huber = [], []
    for seed in range(4):
        pb = make_problem(6, 6, seed=seed, noise=CandidateNoise(outlier_frac=0.0, trans_noise_m=(0.001, 0.003)))
        view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb)
        T_WC0, T_WO0 = perturbed_start(pb, seed, 0.02, 0.01)
        clean = {k: ba_run(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0, robust=k) for k in ("none", "huber")}
        # an outlier assigned to object 0 in a view where it is seen: 60 degrees and 10 cm off
        i = int((cand_obj == 0).nonzero()[0])
        g = torch.Generator().manual_seed(seed)
        bad = perturb_poses(T_CO[i:i + 1], math.radians(60), 0.0, g)
        bad[0, :2, 3] += 0.07
        args = (torch.cat([view_ids, view_ids[i:i + 1]]), torch.cat([cand_obj, cand_obj[i:i + 1]]),
                torch.cat([T_CO, bad]), K, pts, syms, T_WC0, T_WO0)
        for k, acc in (("none", worse_none), ("huber", worse_huber)):
            r = ba_run(*args, robust=k, robust_cap_px=10.0)
            acc.append((scene_mm(pb, r.T_WC, r.T_WO).mean() - scene_mm(pb, clean[k].T_WC, clean[k].T_WO).mean()).item())
        assert r.cand_errors[-1] > 20 * r.cand_errors[:-1].median()     # the outlier stays an outlier
    assert sum(worse_huber) < 0.5 * sum(worse_none)
    # 'cap' (the paper's truncated square) ignores it entirely once it is past the cap
    pb = make_problem(6, 6, seed=0, **EXACT)
    view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb, n_continuous=None)
    far = T_CO[:1].clone(); far[0, :2, 3] += 0.2
    r = ba_run(torch.cat([view_ids, view_ids[:1]]), torch.cat([cand_obj, cand_obj[:1]]), torch.cat([T_CO, far]),
                      K, pts, syms, pb.T_WC, pb.T_WO, robust="cap", robust_cap_px=20.0)
    assert symmetric_distance(r.T_WO, pb.T_WO, pts, syms).max() < 1e-6


def test_fixed_view_and_views_not_ok_stay_fixed():
    pb = make_problem(6, 6, seed=3)
    view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb)
    for fixed in range(pb.n_views):
        T_WC0, T_WO0 = perturbed_start(pb, fixed, fixed=fixed)
        ok = torch.ones(pb.n_views, dtype=torch.bool)
        ok[(fixed + 2) % pb.n_views] = False
        res = ba_run(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0, fixed_view=fixed, view_ok=ok)
        assert torch.equal(res.T_WC[fixed], T_WC0[fixed])
        assert torch.equal(res.T_WC[~ok], T_WC0[~ok])
        moved = torch.ones(pb.n_views, dtype=torch.bool); moved[fixed] = False; moved &= ok
        assert ((res.T_WC[moved] - T_WC0[moved]).abs().amax((-1, -2)) > 1e-6).all()
        ignored = (cand_obj < 0) | ~ok[view_ids]
        assert res.cand_errors[ignored].isnan().all() and not res.cand_errors[~ignored].isnan().any()
        assert (res.sym_index[ignored] == -1).all()
    with pytest.raises(InputError):
        ba_run(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0, fixed_view=pb.n_views)


def test_held_views_keep_their_pose_and_their_candidates_count():
    """`hold_views` (known cameras): held views keep their pose bit for bit while their candidates still pull the
    objects; the others move. All views held: only the objects move. Bad masks raise `InputError`."""
    from cosypose_nb.multiview.pose_refinement import refine_scene_poses
    pb = make_problem(6, 6, seed=3)
    view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb)
    T_WC0, T_WO0 = perturbed_start(pb, 0)
    hold = torch.tensor([False, True, False, True, False, False])
    for held in (hold, torch.ones(6, dtype=torch.bool)):
        res = ba_run(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0, fixed_view=0, hold_views=held)
        assert torch.equal(res.T_WC[held], T_WC0[held]) and torch.equal(res.T_WC[0], T_WC0[0])
        free = ~held; free[0] = False
        assert ((res.T_WC[free] - T_WC0[free]).abs().amax((-1, -2)) > 1e-6).all()
        assert not res.cand_errors[cand_obj >= 0].isnan().any()            # the held views' candidates count
        assert (res.T_WO - T_WO0).abs().amax() > 1e-6
        T_WC, T_WO, err, _ = refine_scene_poses(scene_of(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0,
                                                         symmetric_centres(pts, syms)), hold_views=held)
        assert torch.equal(T_WC[held], T_WC0[held]) and not err[cand_obj >= 0].isnan().any()
    # the true cameras held: they come back as given, and the objects end closer to the truth than they started
    held = torch.ones(6, dtype=torch.bool)
    res = ba_run(view_ids, cand_obj, T_CO, K, pts, syms, pb.T_WC, T_WO0, hold_views=held)
    assert torch.equal(res.T_WC, pb.T_WC)
    assert scene_mm(pb, res.T_WC, res.T_WO).mean() < 0.5 * scene_mm(pb, pb.T_WC, T_WO0).mean()
    for bad in (torch.ones(7, dtype=torch.bool), torch.ones(6), torch.ones(6, 1, dtype=torch.bool)):
        with pytest.raises(InputError, match="hold_views"):
            ba_run(view_ids, cand_obj, T_CO, K, pts, syms, T_WC0, T_WO0, hold_views=bad)


def test_other_input_types_and_no_aliasing():
    """Centres as a list, numpy model points (subsampled like tensors) and bfloat16 intrinsics give the same
    scene; the outputs never share memory with the inputs, even when no step is taken (ba_iters=0)."""
    pb = make_problem(4, 5, seed=1)
    args = inputs(pb)
    T_WC0, T_WO0 = perturbed_start(pb, 1)
    ref = ba_run(*args, T_WC0, T_WO0)
    cen = symmetric_centres(subsample_points(args[4], 32), args[5])
    assert torch.equal(ba_run(*args, T_WC0, T_WO0, centres=cen.tolist()).T_WO,
                       ba_run(*args, T_WC0, T_WO0, centres=cen).T_WO)
    assert torch.equal(ba_run(*args[:4], args[4].numpy(), args[5], T_WC0, T_WO0).T_WO, ref.T_WO)
    r = ba_run(*args[:3], args[3].bfloat16(), *args[4:], T_WC0, T_WO0)
    assert r.T_WO.dtype == torch.float64 and (r.T_WO - ref.T_WO).abs().max() < 0.05     # K rounded to 8 bits
    d = ref_run(*args, T_WC0, T_WO0, centres=cen.tolist(), ba_iters=2)
    assert torch.isfinite(d.T_WO).all()
    T_WC_in, T_WO_in = T_WC0.clone(), T_WO0.clone()
    r0 = ba_run(*args, T_WC0, T_WO0, ba_iters=0)
    r0.T_WO.add_(1.0); r0.T_WC.add_(1.0)
    assert torch.equal(T_WO0, T_WO_in) and torch.equal(T_WC0, T_WC_in)


def test_float32_inputs_and_float32_compute():
    pb = make_problem(6, 6, seed=5)
    args = inputs(pb)
    T_WC0, T_WO0 = perturbed_start(pb, 5)
    r64 = ba_run(*args, T_WC0, T_WO0)
    r32in = ba_run(*(a.float() if a.is_floating_point() else a for a in args), T_WC0.float(), T_WO0.float())
    assert r32in.T_WC.dtype == torch.float32 and r32in.T_WO.dtype == torch.float32
    assert (r32in.T_WC.double() - r64.T_WC).abs().max() < 1e-4          # computed in float64, rounded at the end
    r32 = ba_run(*args, T_WC0, T_WO0, dtype=torch.float32)
    assert r32.T_WC.dtype == torch.float64
    assert (r32.T_WC - r64.T_WC)[:, :3, 3].abs().max() < 2e-3 and r32.costs[-1] < 1.05 * r64.costs[-1]


def test_same_result_as_the_dense_reference():
    for seed, (V, O) in enumerate([(3, 3), (4, 4), (4, 6)]):
        pb = make_problem(V, O, seed=seed, noise=CandidateNoise(outlier_frac=0.0), objects=discrete_object_set())
        args = inputs(pb)
        T_WC0, T_WO0 = perturbed_start(pb, seed, 0.02, 0.01)
        r = ba_run(*args, T_WC0, T_WO0, n_points=8, ba_ftol=1e-10)
        d = ref_run(*args, T_WC0, T_WO0, n_points=8, eps=1e-10)
        assert abs(r.costs[-1] - d.costs[-1]) < 1e-4 * d.costs[-1]
        assert (r.T_WC - d.T_WC).abs().max() < 1e-5 and (r.T_WO - d.T_WO).abs().max() < 1e-5
        assert torch.equal(r.sym_index, d.sym_index)
        assert r.costs[-1] < 0.5 * r.costs[0]


def test_empty_and_bad_inputs():
    pb = make_problem(3, 3, seed=0)
    view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb)
    none = torch.full_like(cand_obj, -1)
    r = ba_run(view_ids, none, T_CO, K, pts, syms, pb.T_WC, pb.T_WO)
    assert r.n_iters == 0 and torch.allclose(r.T_WC, pb.T_WC) and torch.allclose(r.T_WO, pb.T_WO)
    with pytest.raises(InputError, match="K"):
        ba_run(view_ids, cand_obj, T_CO, K[:2], pts, syms, pb.T_WC, pb.T_WO)
    with pytest.raises(InputError, match="cand_obj"):
        ba_run(view_ids, cand_obj + 10, T_CO, K, pts, syms, pb.T_WC, pb.T_WO)
    with pytest.raises(InputError, match="view_ids"):
        ba_run(view_ids + 10, cand_obj, T_CO, K, pts, syms, pb.T_WC, pb.T_WO)
    bad = T_CO.clone(); bad[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="T_CO"):
        ba_run(view_ids, cand_obj, bad, K, pts, syms, pb.T_WC, pb.T_WO)
    with pytest.raises(InputError, match="robust"):
        ba_run(view_ids, cand_obj, T_CO, K, pts, syms, pb.T_WC, pb.T_WO, robust="tukey")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_same_code_on_gpu():
    pb = make_problem(8, 6, seed=0)
    args = inputs(pb)
    T_WC0, T_WO0 = perturbed_start(pb, 0)
    r = ba_run(*args, T_WC0, T_WO0)
    dev = torch.device("cuda")
    rg = ba_run(*(a.to(dev) for a in args), T_WC0.to(dev), T_WO0.to(dev))
    assert rg.T_WC.device.type == "cuda"
    assert (rg.T_WC.cpu() - r.T_WC).abs().max() < 1e-6
