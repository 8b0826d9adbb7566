"Placing the views that stage 2 left out, against the scene (`register_views`)."
import numpy as np
import torch
from dataclasses import replace

from cosypose_nb.geometry.rotations import rotation_angle
from cosypose_nb.synthetic.mvproblems import make_problem, CandidateNoise
from cosypose_nb.multiview.config import MatchingConfig
from cosypose_nb.geometry.symmetries import symmetric_centres
from cosypose_nb.multiview.registration import References, register_views


def references(objects, p):
    "The problem's true objects as references, at 1.5 times the matching threshold."
    syms = objects.symmetries(p.obj_labels, n_continuous=32)
    return References(p.obj_labels, p.T_WO, syms, symmetric_centres(objects.points(p.obj_labels), syms),
                      torch.clamp(0.25 * objects.diameters(p.obj_labels), min=0.05) * 1.5)


def centres_of(objects, c):
    return symmetric_centres(objects.points(c.labels), objects.symmetries(c.labels, n_continuous=32))


def test_register_views_chunks_give_the_same_placement(objects):
    "`register_views` scores its hypotheses in chunks (bounded memory): any chunk size gives the same cameras."
    p = make_problem(8, 12, seed=5, objects=objects)
    c = p.candidates
    ok = torch.ones(8, dtype=torch.bool); ok[[2, 5]] = False
    T_WC = p.T_WC.clone(); T_WC[[2, 5]] = torch.eye(4, dtype=torch.float64)
    cfg = MatchingConfig(depth_factor=1.0)
    outs = [register_views(c, centres_of(objects, c), references(objects, p), T_WC, ok, cfg, max_elems=m)
            for m in (2_000_000, 5_000, 1)]
    assert outs[0][1].all()
    for T, o in outs[1:]:
        assert torch.equal(o, outs[0][1]) and torch.equal(T, outs[0][0])


def test_register_views_places_a_left_out_view(objects):
    """A view left out by stage 2 is placed against the scene objects (ground truth here): coarsely, from its best
    single candidate (its 2-5 degree error moves a camera a metre away by up to ~10 cm); the pose-space refinement
    of the predictor then refines it with every candidate. Along the viewing rays or not (depth_factor 2 or 1)."""
    for seed in range(6):
        p = make_problem(4, 6, seed=seed, objects=objects, noise=CandidateNoise(outlier_frac=0.2))
        c = p.candidates
        ok = torch.ones(4, dtype=torch.bool); ok[2] = False
        T_WC = p.T_WC.clone(); T_WC[2] = torch.eye(4, dtype=torch.float64)
        for cfg in (MatchingConfig(depth_factor=1.0), MatchingConfig()):
            T2, ok2 = register_views(c, centres_of(objects, c), references(objects, p), T_WC, ok, cfg)
            assert ok2.all() and torch.equal(T2[[0, 1, 3]], p.T_WC[[0, 1, 3]])
            assert (T2[2, :3, 3] - p.T_WC[2, :3, 3]).norm() < 0.2
            assert rotation_angle(T2[2, :3, :3], p.T_WC[2, :3, :3]) < np.deg2rad(10)
    # nothing to match: the view stays out
    refs = replace(references(objects, p), labels=["obj_nothing"] * p.n_objects)
    T3, ok3 = register_views(c, centres_of(objects, c), refs, T_WC, ok)
    assert not ok3[2] and torch.equal(T3, T_WC)
