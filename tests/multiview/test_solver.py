"The Levenberg-Marquardt driver and the robust kernels shared by the bundle adjustment and the pose-space refinement."
import numpy as np
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.multiview import bundle_adjustment as ba
from cosypose_nb.multiview.solver import (robust_kernel, ROBUST_KERNELS, LMRules, levenberg_marquardt, cholesky_solve,
                                          damped_step, marquardt_diagonal)


def test_robust_kernels_weights_are_derivatives():
    s = torch.linspace(0.01, 5000, 400, dtype=torch.float64, requires_grad=True)
    for kind in ROBUST_KERNELS:
        rho, w = robust_kernel(s, kind, 20.0)
        (grad,) = torch.autograd.grad(rho.sum(), s)
        assert torch.allclose(grad, w, atol=1e-9), kind
    with pytest.raises(InputError):
        robust_kernel(s, "tukey", 20.0)


def test_robust_kernels_numpy_and_torch_agree():
    s = np.linspace(0.0, 5000, 300)
    for kind in ROBUST_KERNELS:
        rn, wn = robust_kernel(s, kind, 20.0)
        rt, wt = robust_kernel(torch.from_numpy(s), kind, 20.0)
        assert isinstance(rn, np.ndarray) and np.allclose(rn, rt.numpy(), rtol=1e-15, atol=0) and np.allclose(wn, wt.numpy(), rtol=1e-15, atol=0)


def test_solver_residuals_use_the_robust_kernels():
    "The solver's cost and weights (`_residuals`: Huber in fewer operations) are those of `robust_kernel`, every kind."
    g = torch.Generator().manual_seed(5)
    u = torch.randn(7, 30, 2, generator=g, dtype=torch.float64) * 30            # errors on both sides of the cap
    tgt = torch.randn(7, 30, 2, generator=g, dtype=torch.float64)
    for kind in ROBUST_KERNELS:
        r, cost, w, e = ba._residuals(u, tgt, kind, 20.0)
        rho, w_ref = robust_kernel(((u - tgt) ** 2).sum(-1), kind, 20.0)
        assert torch.equal(r, u - tgt) and torch.allclose(e, (u - tgt).norm(dim=-1), rtol=1e-14, atol=0)
        assert isinstance(cost, float) and abs(cost - rho.sum().item()) <= 1e-12 * rho.sum().item(), kind
        assert torch.allclose(w, w_ref, rtol=1e-12, atol=0), kind


class Quadratic:
    "A least-squares problem `|A x - b|^2` as an `LMProblem` (numpy or torch), counting its calls."
    def __init__(self, A, b):
        self.A, self.b, self.n_terms, self.calls = A, b, len(b), 0
    def _cost(self, x):
        r = self.A @ x - self.b
        return float((r * r).sum())
    def start(self, x): self.x = x; return self._cost(x)
    def evaluate(self, x): self.calls += 1; return self._cost(x)
    def accept(self, x): self.x = x; return self._cost(x)
    def normal_equations(self): return self.A.T @ self.A, self.A.T @ (self.A @ self.x - self.b)
    def retract(self, x, delta): return x + delta


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_driver_solves_a_linear_least_squares_problem(lib):
    rng = np.random.default_rng(0)
    A, b = rng.normal(size=(30, 5)), rng.normal(size=30)
    if lib == "torch": A, b = torch.from_numpy(A), torch.from_numpy(b)
    x0 = A[0] * 0
    for model_tests in (True, False):
        res = levenberg_marquardt(Quadratic(A, b), x0, LMRules(50, 1e-3, 1e-12, 1e12, 1e-12, 1e-14, model_tests=model_tests))
        x = np.linalg.lstsq(np.asarray(A), np.asarray(b), rcond=None)[0]
        assert np.allclose(np.asarray(res.x), x, atol=1e-8) and res.converged
        assert all(c1 <= c0 for c0, c1 in zip(res.costs, res.costs[1:])) and len(res.lambdas) == res.n_iters


def test_driver_rules():
    "max_iters counts trials or accepted steps; no terms, no iteration; past lambda_max the loop gives up, not converged."
    rng = np.random.default_rng(1)
    A, b = rng.normal(size=(20, 4)), rng.normal(size=20)
    assert levenberg_marquardt(Quadratic(A, b), np.zeros(4), LMRules(1, 1e-3, 1e-9, 1e8, 1e-12)).n_iters == 1
    assert levenberg_marquardt(Quadratic(A[:0], b[:0]), np.zeros(4), LMRules(10, 1e-3, 1e-9, 1e8, 1e-12)).n_iters == 0
    r = levenberg_marquardt(Quadratic(A, b), np.zeros(4), LMRules(2, 1e-3, 1e-9, 1e8, 0.0, count_rejected=False, model_tests=False))
    assert len(r.costs) == 3                                     # two accepted steps
    class Uphill(Quadratic):                                     # every trial raises the cost
        def evaluate(self, x): return super().evaluate(x) + 1e6
    r = levenberg_marquardt(Uphill(A, b), np.zeros(4), LMRules(100, 1e-3, 1e-9, 1e2, 0.0, count_rejected=False, model_tests=False))
    assert not r.converged and r.lambdas[-1] > 1e1 and len(r.costs) == 1
    with pytest.raises(InputError, match="max_iters"):
        LMRules(-1, 1e-3, 1e-9, 1e8, 1e-12)


def test_driver_records_the_start_and_each_accepted_step():
    "The `record` hook sees the problem at the start and at each accepted point, never at a rejected trial."
    rng = np.random.default_rng(2)
    A, b = rng.normal(size=(20, 4)), rng.normal(size=20)
    pb = Quadratic(A, b)
    r = levenberg_marquardt(pb, np.zeros(4), LMRules(20, 1e3, 1e-9, 1e8, 0.0, count_rejected=True, model_tests=False),
                            record=lambda p: p._cost(p.x))
    assert len(r.history) == len(r.costs) >= 2 and np.allclose(np.array(r.history) / len(b), r.costs)
    assert levenberg_marquardt(Quadratic(A, b), np.zeros(4), LMRules(5, 1e-3, 1e-9, 1e8, 1e-12)).history == []
    class Uphill(Quadratic):                                     # every trial rejected: the start only
        def evaluate(self, x): return super().evaluate(x) + 1e6
    r = levenberg_marquardt(Uphill(A, b), np.zeros(4), LMRules(5, 1e-3, 1e-9, 1e8, 0.0, model_tests=False), record=lambda p: 1)
    assert r.history == [1] and r.n_iters == 5


def test_cholesky_paths():
    "scipy below 128 unknowns, torch from 128 and on tensors: the same solutions; None when not positive definite."
    rng = np.random.default_rng(2)
    for n in (5, 127, 128, 200):
        M = rng.normal(size=(n, n)); A = M @ M.T + n * np.eye(n); b = rng.normal(size=n)
        x = cholesky_solve(A, b)
        assert np.allclose(A @ x, b) and np.allclose(cholesky_solve(torch.from_numpy(A), torch.from_numpy(b)).numpy(), x)
        assert cholesky_solve(-A, b) is None and cholesky_solve(-torch.from_numpy(A), torch.from_numpy(b)) is None
    H = np.diag([4.0, 0.0]); g = np.array([1.0, 0.0])
    d = marquardt_diagonal(H)
    assert d.tolist() == [4.0, 1.0] and np.allclose(damped_step(H, g, d, 1.0), [-1 / 8, 0.0])
    assert torch.allclose(damped_step(torch.from_numpy(H), torch.from_numpy(g), marquardt_diagonal(torch.from_numpy(H)), 1.0),
                          torch.tensor([-1 / 8, 0.0], dtype=torch.float64))
