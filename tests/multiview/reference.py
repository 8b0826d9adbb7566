"""Reference implementations for the multi-view tests and benchmarks (not part of the library).

`bundle_adjust_dense_autograd`: Levenberg-Marquardt built the way the paper's implementation is, the yardstick of
`cosypose_nb.multiview.bundle_adjustment.bundle_adjust` (same residuals, robust cost and symmetry choice). Each
pose is a 9-vector (6D rotation + translation) updated additively, the full Jacobian (residuals x 9 (V + O))
comes from autograd on one copy of all parameters per scalar residual (a single backward pass of their sum), and
the step solves the dense damped system `(J^T W J + lambda I) h = J^T W e` with a pseudo-inverse (`lambda`
divided by 9 on success, multiplied by 11 on failure). The held views' parameters are left out of the system
(zeroing them in a joint step instead would break the step: the gauge freedom spreads motion over all cameras).
Its cost grows with residuals x parameters."""
from __future__ import annotations

import numpy as np
import torch

from cosypose_nb.geometry.transforms import invert_T
from cosypose_nb.geometry.rotations import pose_to_9d, pose_from_9d
from cosypose_nb.geometry.cameras import project_points
from cosypose_nb.structures import BAResult
from cosypose_nb.multiview import bundle_adjustment as ba
from cosypose_nb.multiview.bundle_adjustment import SceneProblem
from cosypose_nb.datasets.meshes import subsample_points
from cosypose_nb.multiview.solver import robust_kernel


def _layout(scene: SceneProblem, fixed_view, view_ok, n_points, dtype):
    "The scene on its device in `dtype`, the kept candidates and held views, and `bundle_adjust`'s layout of it."
    dev = scene.T_WC.device
    ba._check_ba_inputs(scene)
    V = scene.n_views
    view_ids, cand_obj = scene.view_ids.to(dev).long(), scene.cand_obj.to(dev).long()
    keep = cand_obj >= 0
    fixed = torch.zeros(V, dtype=torch.bool, device=dev)
    fixed[fixed_view] = True
    if view_ok is not None:
        view_ok = torch.as_tensor(view_ok, device=dev).bool()
        keep &= view_ok[view_ids]
        fixed |= ~view_ok
    points = subsample_points(scene.points.to(device=dev, dtype=dtype), n_points)
    sub = SceneProblem(view_ids, cand_obj, scene.T_CO.to(dev, dtype), scene.K.to(dev, dtype), points,
                       scene.syms.to(dev, dtype), scene.centres, scene.T_WC, scene.T_WO)
    vi, co, h = ba._check_ba_inputs(sub)
    pr = ba._prepare(vi, co, h, keep.cpu().numpy(), fixed.cpu().numpy(), dev, dtype)
    return view_ids, keep, fixed, pr


def bundle_adjust_dense_autograd(scene: SceneProblem, fixed_view: int = 0, ba_iters: int = 100, robust: str = "huber",
                                 robust_cap_px: float = 20.0, n_points: int | None = 32, view_ok=None,
                                 ba_lambda0: float = 1e-3, L_down: float = 9.0, L_up: float = 11.0, eps: float = 1e-5,
                                 dtype: torch.dtype = torch.float64) -> BAResult:
    "The reference Levenberg-Marquardt (see the module's docstring): the scene's `T_WC`, `T_WO` refined."
    V, O = scene.n_views, scene.n_objects
    out_dtype, dev = scene.T_WC.dtype, scene.T_WC.device
    view_ids, keep, fixed, pr = _layout(scene, fixed_view, view_ok, n_points, dtype)
    cam, obj = (torch.as_tensor(x, device=dev) for x in (pr.cam, pr.obj))
    K_c = torch.as_tensor(pr.K_c, device=dev, dtype=dtype)
    C, N = len(cam), pr.pts_c.shape[1]
    # one row per scalar residual: (candidate, point, x/y)
    res_c = torch.arange(C, device=dev).repeat_interleave(2 * N)
    res_p = torch.arange(N, device=dev).repeat_interleave(2).repeat(C)
    res_xy = torch.arange(2, device=dev).repeat(C * N)
    n_res = len(res_c)
    ar = torch.arange(n_res, device=dev)
    TWO_9d, TCW_9d = pose_to_9d(scene.T_WO.to(dtype)), pose_to_9d(invert_T(scene.T_WC.to(dtype)))
    n_pts = max(C * N, 1)

    def cost_and_sym(TWO_9d, TCW_9d):
        T = pose_from_9d(TCW_9d)[cam] @ pose_from_9d(TWO_9d)[obj]
        u = project_points(pr.pts_c, K_c, T)
        sidx = ba._symmetries(ba._host(T[:, :3, :3]), pr)         # the same symmetry choice as `bundle_adjust`
        tgt = ba._targets(pr, sidx)
        r = u - tgt
        rho, wt = robust_kernel((r * r).sum(-1), robust, robust_cap_px)
        return rho.sum() / n_pts, r, torch.as_tensor(sidx, device=dev), wt, tgt

    def forward_jacobian(TWO_9d, TCW_9d):
        loss, _, _, wt, tgt = cost_and_sym(TWO_9d, TCW_9d)
        y = tgt[res_c, res_p, res_xy]                                              # (R,) aligned candidate pixels
        TWO_r = TWO_9d.unsqueeze(0).repeat(n_res, 1, 1).requires_grad_()          # one copy per residual
        TCW_r = TCW_9d.unsqueeze(0).repeat(n_res, 1, 1).requires_grad_()
        with torch.enable_grad():
            T_n = pose_from_9d(TCW_r)[ar, cam[res_c]] @ pose_from_9d(TWO_r)[ar, obj[res_c]]
            yhat = project_points(pr.pts_c[res_c, res_p][:, None], K_c[res_c], T_n)[:, 0][ar, res_xy]
            yhat.sum().backward()
        J = torch.cat([TWO_r.grad.flatten(1), TCW_r.grad.flatten(1)], 1)          # (R, 9 (O + V))
        return (y - yhat.detach()), loss, J, wt[res_c, res_p]

    free_cols = torch.cat([torch.ones(9 * O, dtype=torch.bool, device=dev), (~fixed).repeat_interleave(9)]).nonzero()[:, 0]
    idJ = torch.eye(len(free_cols), dtype=dtype, device=dev)
    lambd, done, prev_update, costs, lambdas, it = ba_lambda0, False, False, [], [], 0
    errors = loss = J = w = None
    if C:
        for it in range(ba_iters):
            if not prev_update:
                errors, loss, J, w = forward_jacobian(TWO_9d, TCW_9d)
            if not costs or costs[-1] != loss.item():
                costs.append(loss.item())
            if done: break
            lambdas.append(lambd)
            Jf = J[:, free_cols]
            A = (Jf * w[:, None]).t() @ Jf + lambd * idJ
            b = (Jf * w[:, None]).t() @ errors[:, None]
            h = torch.zeros(9 * (O + V), dtype=dtype, device=dev)
            h[free_cols] = (torch.linalg.pinv(A.cpu()).to(dev) @ b).flatten()   # "pinverse is faster on CPU"
            TWO_new = TWO_9d + h[:9 * O].view(O, 9)
            TCW_new = TCW_9d + h[9 * O:].view(V, 9)
            errors_n, loss_n, J_n, w_n = forward_jacobian(TWO_new, TCW_new)
            rho = loss - loss_n
            if rho.abs() <= eps * loss + 1e-18:
                done = True
            if rho > 0:
                TWO_9d, TCW_9d, errors, loss, J, w = TWO_new, TCW_new, errors_n, loss_n, J_n, w_n
                lambd, prev_update = max(lambd / L_down, 1e-7), True
            else:
                lambd, prev_update = min(lambd * L_up, 1e7), False
    T_WC_out = invert_T(pose_from_9d(TCW_9d))
    T_WC_out[fixed] = scene.T_WC.to(dtype)[fixed]
    _, r, sidx, _, _ = cost_and_sym(TWO_9d, TCW_9d)
    if not costs: costs = [0.0]
    cand_errors = torch.full((len(view_ids),), float("nan"), dtype=out_dtype, device=dev)
    cand_errors[keep] = r.norm(dim=-1).mean(-1).to(out_dtype)
    sym_index = torch.full((len(view_ids),), -1, dtype=torch.long, device=dev)
    sym_index[keep] = sidx
    return BAResult(T_WC_out.to(out_dtype), pose_from_9d(TWO_9d).to(out_dtype), costs, cand_errors, sym_index,
                    it, done, lambdas)
