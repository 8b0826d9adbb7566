"The initial scene of stage 3: spanning trees of the view graph, objects from their candidates, the best of several starts."
import pytest
import torch

from cosypose_nb.core import InputError
from cosypose_nb.geometry.transforms import invert_T
from cosypose_nb.geometry.rotations import perturb_poses
from cosypose_nb.geometry.symmetries import symmetric_distance
from cosypose_nb.synthetic.mvproblems import make_problem, CandidateNoise
from cosypose_nb.multiview.initialisation import view_components, scene_reprojection_errors
from helpers import EXACT, inputs, seen, ba_run, init_run, scene_of


def gt_pairs(pb, pairs, noise=0.0, seed=0):
    "View pairs (P, 2) with their true relative poses (rotated by `noise` rad, shifted by `noise` m)."
    vp = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
    T = invert_T(pb.T_WC[vp[:, 0]]) @ pb.T_WC[vp[:, 1]]
    if noise:
        T = perturb_poses(T, noise, noise, torch.Generator().manual_seed(seed))
    return vp, T, torch.full((len(vp),), 3.0, dtype=torch.float64)


def test_initialize_scene_exact_relative_poses_give_the_exact_scene():
    for seed, (V, O) in enumerate([(4, 6), (8, 6), (8, 12)]):
        pb = make_problem(V, O, seed=seed, **EXACT)
        view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb, n_continuous=None)
        g = torch.Generator().manual_seed(seed)
        pairs = [(a, b) for a in range(V) for b in range(a + 1, V) if torch.rand(1, generator=g) < 0.6 or b == a + 1]
        vp, T, ps = gt_pairs(pb, pairs)
        T_WC, T_WO, ok = init_run(view_ids, cand_obj, T_CO, vp, T, ps, K, pts, syms)
        assert ok.all()
        assert torch.allclose(T_WC[0], torch.eye(4, dtype=T_WC.dtype))
        # the world is camera 0's frame
        A = pb.T_WC[0] @ T_WC[0]
        assert torch.allclose(A @ T_WC, pb.T_WC, atol=1e-9)
        o = seen(pb)
        assert symmetric_distance((A @ T_WO)[o], pb.T_WO[o], pts[o], syms[o]).max() < 1e-6


def test_initialize_scene_disconnected_views_and_single_view():
    pb = make_problem(6, 6, seed=1, noise=CandidateNoise(outlier_frac=0.0))
    view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb)
    # two components {0, 1, 2} (bigger) and {3, 4}; view 5 alone
    vp, T, ps = gt_pairs(pb, [(0, 1), (1, 2), (3, 4)], noise=0.01)
    T_WC, T_WO, ok = init_run(view_ids, cand_obj, T_CO, vp, T, ps, K, pts, syms)
    assert ok.tolist() == [True, True, True, False, False, False]
    assert torch.equal(T_WC[3:], torch.eye(4, dtype=T_WC.dtype).expand(3, 4, 4))
    assert view_components(vp, 6).tolist() == [0, 0, 0, 3, 3, 5]
    # objects seen only in views outside the component stay at the identity
    seen = torch.zeros(6, dtype=torch.bool)
    seen[cand_obj[(cand_obj >= 0) & ok[view_ids]]] = True
    assert torch.equal(T_WO[~seen], torch.eye(4, dtype=T_WO.dtype).expand(int((~seen).sum()), 4, 4))
    # BA of that component keeps the other views where they are and improves its own
    res = ba_run(view_ids, cand_obj, T_CO, K, pts, syms, T_WC, T_WO, fixed_view=0, view_ok=ok)
    assert torch.equal(res.T_WC[~ok], T_WC[~ok]) and res.costs[-1] < res.costs[0]
    # the component with the larger total pair score wins a tie in size
    vp2, T2, ps2 = gt_pairs(pb, [(0, 1), (3, 4)])
    ps2[1] = 10
    assert init_run(view_ids, cand_obj, T_CO, vp2, T2, ps2, K, pts, syms)[2].tolist() == [False, False, False, True, True, False]
    # a single view, no pairs: objects straight from their candidates
    m = view_ids == 2
    T_WC1, T_WO1, ok1 = init_run(torch.zeros(int(m.sum()), dtype=torch.long), cand_obj[m], T_CO[m],
                                 torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.float64),
                                 torch.zeros(0, dtype=torch.float64), K[2:3], pts, syms)
    assert ok1.tolist() == [True] and torch.equal(T_WC1[0], torch.eye(4, dtype=torch.float64))
    for c in (cand_obj[m] >= 0).nonzero()[:, 0].tolist():
        o = int(cand_obj[m][c])
        assert symmetric_distance(T_WO1[o:o + 1], T_CO[m][c:c + 1], pts[o:o + 1], syms[o:o + 1]).item() < 1e-9 or \
            (cand_obj[m] == o).sum() > 1
    # bad inputs
    with pytest.raises(InputError):
        init_run(view_ids, cand_obj, T_CO, vp + 10, T, ps, K, pts, syms)
    with pytest.raises(InputError):
        init_run(view_ids, cand_obj, T_CO, vp, T[:1], ps, K, pts, syms)


def test_initialize_scene_keeps_the_best_of_several_orders():
    # noisy relative poses on a dense view graph: the start kept is the one of lowest reprojection error
    for seed in range(3):
        pb = make_problem(8, 8, seed=seed, noise=CandidateNoise(outlier_frac=0.0))
        view_ids, cand_obj, T_CO, K, pts, syms = inputs(pb)
        pairs = [(a, b) for a in range(8) for b in range(a + 1, 8)]
        vp, T, ps = gt_pairs(pb, pairs, noise=0.05, seed=seed)
        errs = []
        for n in (1, 8):
            T_WC, T_WO, ok = init_run(view_ids, cand_obj, T_CO, vp, T, ps, K, pts, syms, n_orders=n,
                                      generator=torch.Generator().manual_seed(seed))
            m = cand_obj >= 0
            errs.append(scene_reprojection_errors(scene_of(view_ids[m], cand_obj[m], T_CO[m], K, pts, syms, T_WC, T_WO))
                        .clamp(max=50).mean())
        assert errs[1] <= errs[0]
