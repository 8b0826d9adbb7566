"Helpers shared by the multi-view tests: problem inputs, perturbed starts, errors against the truth, calls in the tests' layout."
import torch

from cosypose_nb.geometry.transforms import invert_T
from cosypose_nb.geometry.rotations import perturb_poses
from cosypose_nb.geometry.symmetries import symmetric_distance, symmetric_reprojection_distance
from cosypose_nb.structures import MatchingResult
from cosypose_nb.synthetic.mvproblems import make_object_set, CandidateNoise
from cosypose_nb.datasets.models import MeshDatabase
from cosypose_nb.multiview.config import BundleAdjustConfig
from cosypose_nb.multiview.bundle_adjustment import SceneProblem, bundle_adjust
from cosypose_nb.multiview.initialisation import initialize_scene

CONFIGS = [(4, 6), (4, 12), (8, 6), (8, 12), (16, 6), (16, 12)]
EXACT = dict(noise=CandidateNoise(rot_noise_deg=0, trans_noise_m=0, depth_noise_m=0, outlier_frac=0.0))


def inputs(pb, n_continuous=None):
    "Ground-truth associations: candidates keep their true object (outliers: -1)."
    return (pb.candidates.view_ids, pb.cand_gt_obj, pb.candidates.T_CO, pb.K,
            pb.objects.points(pb.obj_labels), pb.objects.symmetries(pb.obj_labels, n_continuous=n_continuous))


def seen(pb):
    "Objects with at least one candidate (make_problem may leave an object undetected everywhere)."
    m = torch.zeros(pb.n_objects, dtype=torch.bool)
    m[pb.cand_gt_obj[pb.cand_gt_obj >= 0]] = True
    return m


def perturbed_start(pb, seed, angle=0.05, trans=0.03, fixed=0):
    g = torch.Generator().manual_seed(seed)
    T_WC = perturb_poses(pb.T_WC, angle, trans, g)
    T_WC[fixed] = pb.T_WC[fixed]
    return T_WC, perturb_poses(pb.T_WO, angle, trans, g)


def scene_px(pb, T_WC, T_WO):
    "Symmetric reprojection error (px) of the scene's T_CO against the truth, every detected (view, object)."
    vv, oo = pb.visible.nonzero(as_tuple=True)
    L = [pb.obj_labels[o] for o in oo.tolist()]
    T = invert_T(T_WC[vv]) @ T_WO[oo]
    return symmetric_reprojection_distance(T, pb.gt_T_CO()[vv, oo], pb.K[vv], pb.objects.points(L), pb.objects.symmetries(L))


def scene_mm(pb, T_WC, T_WO):
    vv, oo = pb.visible.nonzero(as_tuple=True)
    L = [pb.obj_labels[o] for o in oo.tolist()]
    T = invert_T(T_WC[vv]) @ T_WO[oo]
    return symmetric_distance(T, pb.gt_T_CO()[vv, oo], pb.objects.points(L), pb.objects.symmetries(L)) * 1000


def cand_px_mm(pb):
    c, m = pb.candidates, pb.cand_gt_obj >= 0
    Tgt = pb.gt_T_CO()[c.view_ids[m], pb.cand_gt_obj[m]]
    L = [l for l, k in zip(c.labels, m.tolist()) if k]
    P, S = pb.objects.points(L), pb.objects.symmetries(L)
    return (symmetric_reprojection_distance(c.T_CO[m], Tgt, pb.K[c.view_ids[m]], P, S),
            symmetric_distance(c.T_CO[m], Tgt, P, S) * 1000)


def discrete_object_set():
    "The synthetic objects without a continuous symmetry (those have an exact optimum on any grid)."
    full = make_object_set()
    keep = [l for l in full.labels if len(full.object_symmetries(l)) <= 8]
    return MeshDatabase.from_points({l: full[l].points for l in keep}, {l: full.object_symmetries(l) for l in keep})


def scene_of(view_ids, cand_obj, T_CO, K, points, syms, T_WC=None, T_WO=None, centres=None) -> SceneProblem:
    "A `SceneProblem` from the eight tensors in the tests' order."
    return SceneProblem(view_ids, cand_obj, T_CO, K, points, syms, centres, T_WC, T_WO)


def ba_run(view_ids, cand_obj, T_CO, K, points, syms, T_WC, T_WO, centres=None, fixed_view=0, view_ok=None,
           hold_views=None, dtype=torch.float64, **settings):
    "`bundle_adjust` of the eight tensors; `settings` are `BundleAdjustConfig` fields."
    config = BundleAdjustConfig(**settings)
    return bundle_adjust(scene_of(view_ids, cand_obj, T_CO, K, points, syms, T_WC, T_WO, centres), config, fixed_view,
                         view_ok, hold_views, dtype)


def init_run(view_ids, cand_obj, T_CO, view_pairs, T_C1C2, pair_scores, K, points, syms, n_orders=5, generator=None):
    "`initialize_scene` from view pairs with their relative poses and scores."
    m = MatchingResult(view_pairs, T_C1C2, pair_scores, torch.zeros(0, 2, dtype=torch.long), cand_obj, len(points))
    return initialize_scene(scene_of(view_ids, cand_obj, T_CO, K, points, syms), m, BundleAdjustConfig(init_orders=n_orders),
                            generator)
