"The pose-space refinement of the scene and the candidates that join it."
from dataclasses import replace

import torch

from cosypose_nb.geometry.symmetries import symmetric_distance
from cosypose_nb.synthetic.mvproblems import make_problem, CandidateNoise
from cosypose_nb.multiview.config import PoseRefineConfig
from cosypose_nb.geometry.symmetries import symmetric_centres
from cosypose_nb.multiview.pose_refinement import refine_scene_poses, join_scene
from helpers import perturbed_start, scene_mm, scene_of


def refined(pb, seed, **kw):
    pts, syms = pb.objects.points(pb.obj_labels), pb.objects.symmetries(pb.obj_labels, n_continuous=64)
    T_WC0, T_WO0 = perturbed_start(pb, seed, 0.03, 0.02)
    scene = scene_of(pb.candidates.view_ids, pb.cand_gt_obj, pb.candidates.T_CO, pb.K, pts, syms, T_WC0, T_WO0,
                     symmetric_centres(pts, syms))
    return scene, refine_scene_poses(scene, **kw)


def test_refinement_closer_to_the_truth_and_holds_views():
    "From a start 2 degrees and 2 cm off, the scene ends closer to the truth; held and not-ok views keep their pose."
    for seed in range(3):
        pb = make_problem(8, 6, seed=seed, noise=CandidateNoise(outlier_frac=0.0))
        scene, (T_WC, T_WO, err, costs) = refined(pb, seed)
        assert scene_mm(pb, T_WC, T_WO).mean() < 0.5 * scene_mm(pb, scene.T_WC, scene.T_WO).mean()
        assert costs[-1] < costs[0] and not err.isnan().any() and torch.equal(T_WC[0], scene.T_WC[0])
        ok = torch.ones(8, dtype=torch.bool); ok[3] = False
        hold = torch.zeros(8, dtype=torch.bool); hold[5] = True
        T_WC2, _, err2, _ = refine_scene_poses(scene, view_ok=ok, hold_views=hold, fixed_view=1)
        assert torch.equal(T_WC2[[1, 3, 5]], scene.T_WC[[1, 3, 5]])
        assert err2[pb.candidates.view_ids == 3].isnan().all() and not err2[pb.candidates.view_ids == 5].isnan().any()


def test_iterations_and_nothing_to_refine():
    pb = make_problem(4, 6, seed=1, noise=CandidateNoise(outlier_frac=0.0))
    scene, (_, _, _, costs) = refined(pb, 1, config=PoseRefineConfig(refine_iters=1))
    assert len(costs) == 2                                               # one accepted step
    none = replace(scene, cand_obj=torch.full_like(scene.cand_obj, -1))
    T_WC, T_WO, err, costs = refine_scene_poses(none)
    assert T_WC is none.T_WC and costs == [] and err.isnan().all()


def test_left_out_candidates_join_the_scene():
    pb = make_problem(8, 6, seed=2, noise=CandidateNoise(outlier_frac=0.0))
    scene, (T_WC, T_WO, _, _) = refined(pb, 2)
    co = scene.cand_obj.clone(); co[[1, 4]] = -1
    out = join_scene(replace(scene.moved(T_WC, T_WO), cand_obj=co), pb.candidates.labels, pb.obj_labels,
                     torch.ones(8, dtype=torch.bool))
    assert out[[1, 4]].tolist() == scene.cand_obj[[1, 4]].tolist()
    co[4] = -2                                                           # kept out (below -1)
    out = join_scene(replace(scene.moved(T_WC, T_WO), cand_obj=co), pb.candidates.labels, pb.obj_labels,
                     torch.ones(8, dtype=torch.bool), PoseRefineConfig(reject=1e-9))
    assert out[1] == -1 and out[4] == -2                                 # nothing within a tiny reject; -2 untouched
