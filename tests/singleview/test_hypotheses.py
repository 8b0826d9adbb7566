"""Tests of the coarse model that scores rotation hypotheses: the super-Fibonacci grid, the symmetric rotation angle,
box-based poses at given rotations, the training hypotheses and loss, and `PosePredictor.score_hypotheses` against
a slow one-box-at-a-time reference and an oracle score."""
import json, math

import numpy as np
import pandas as pd
import pytest
import torch

from cosypose_nb.core import ConfigError, InputError
from cosypose_nb.geometry.cameras import make_K, boxes_from_points, project_points
from cosypose_nb.geometry.rotations import (super_fibonacci_rotations, random_rotations, rotation_angle,
                                            euler_to_matrix)
from cosypose_nb.geometry.symmetries import symmetric_rotation_angle
from cosypose_nb.geometry.transforms import make_T
from cosypose_nb.singleview import training as tr
from cosypose_nb.singleview.inference import PosePredictor, PredictorConfig, load_pose_model
from cosypose_nb.singleview.pose_model import PoseModel, PoseModelConfig, poses_from_boxes, R_ZUP, save_pose_model

YCBV_K = (1066.778, 1067.487, 312.987, 241.311)
SMALL = dict(backbone="small", render_size=(48, 64), input_mean=0.5, input_std=0.25, xy_scale=6.4, z_scale=0.1,
             init_mode="zup-autodepth")


def nearest_angles(grid: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    "For each rotation of `R` (M, 3, 3) the angle (M,) radians to its nearest rotation of `grid` (G, 3, 3)."
    tr_ = torch.einsum("mij,gij->mg", R, grid)
    return torch.arccos(((tr_ - 1) / 2).clamp(-1, 1)).amin(1)


def test_super_fibonacci_grid():
    G = super_fibonacci_rotations(256)
    I = torch.eye(3, dtype=torch.float64)
    assert G.shape == (256, 3, 3) and G.dtype == torch.float64
    assert (G @ G.transpose(-1, -2) - I).abs().max() < 1e-12 and (torch.linalg.det(G) - 1).abs().max() < 1e-12
    assert torch.equal(G, super_fibonacci_rotations(256))                    # always the same grid
    assert super_fibonacci_rotations(8, dtype=torch.float32).dtype == torch.float32
    # Even cover: over 20,000 uniform rotations the nearest of 256 grid rotations is at most 35.3 degrees away (the
    # covering radius of an ideal 256-point set is about 27); 256 uniform random rotations leave holes of 50+ degrees.
    X = random_rotations(20000, torch.Generator().manual_seed(0))
    a = torch.rad2deg(nearest_angles(G, X))
    rnd = torch.rad2deg(nearest_angles(random_rotations(256, torch.Generator().manual_seed(1)), X))
    assert a.max() < 38 and a.median() < 21, (a.max(), a.median())
    assert rnd.max() > a.max() + 8 and rnd.median() > a.median()
    # more hypotheses cover more finely
    assert torch.rad2deg(nearest_angles(super_fibonacci_rotations(64), X)).median() > a.median() + 5
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InputError):
            super_fibonacci_rotations(bad)


def test_symmetric_rotation_angle_by_hand():
    g = torch.Generator().manual_seed(3)
    R1, R2 = random_rotations(6, g), random_rotations(6, g)
    ident = torch.eye(4, dtype=torch.float64).expand(6, 1, 4, 4)
    assert torch.allclose(symmetric_rotation_angle(R1, R2, ident), rotation_angle(R1, R2), atol=1e-7)
    # a half turn about z as a symmetry: R1 and R1 Rz(180) are the same pose; R1 Rz(90) is 90 degrees away
    Rz = lambda deg: euler_to_matrix(torch.tensor([0.0, 0.0, math.radians(deg)], dtype=torch.float64)).expand(6, 3, 3)
    S = torch.eye(4, dtype=torch.float64).repeat(6, 2, 1, 1); S[:, 1, :3, :3] = Rz(180)
    assert symmetric_rotation_angle(R1, R1 @ Rz(180), S).abs().max() < 1e-6
    assert torch.allclose(symmetric_rotation_angle(R1, R1 @ Rz(90), S), torch.full((6,), math.pi / 2, dtype=torch.float64))
    assert torch.allclose(symmetric_rotation_angle(R1, R1 @ Rz(150), S), torch.full((6,), math.radians(30), dtype=torch.float64))


def test_poses_from_boxes_at_given_rotations(objects):
    "With rotations R the box's pose keeps them and 'zup-autodepth' fits the depth to the object seen that way."
    labels = objects.labels
    B = len(labels)
    pts = objects.points(labels)
    K = make_K(*YCBV_K).expand(B, 3, 3)
    R = random_rotations(B, torch.Generator().manual_seed(4))
    T_true = make_T(R, torch.tensor([0.05, -0.02, 40.0], dtype=torch.float64).expand(B, 3))    # far: near-orthographic box
    boxes = boxes_from_points(project_points(pts, K, T_true))
    T = poses_from_boxes(boxes, K, pts, "zup-autodepth", R=R)
    assert torch.allclose(T[:, :3, :3], R) and ((T[:, 2, 3] / 40.0 - 1).abs() < 0.005).all()
    zup = torch.tensor(R_ZUP, dtype=torch.float64).expand(B, 3, 3)
    assert torch.equal(poses_from_boxes(boxes, K, pts, "zup-autodepth", R=zup), poses_from_boxes(boxes, K, pts, "zup-autodepth"))
    Tp = poses_from_boxes(boxes, K, mode="paper", R=R)
    assert torch.allclose(Tp[:, :3, :3], R) and torch.allclose(Tp[:, 2, 3], torch.ones(B, dtype=torch.float64))
    with pytest.raises(InputError, match="R"):
        poses_from_boxes(boxes, K, pts, "zup-autodepth", R=R[:2])


def test_training_hypotheses():
    g_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    R_gt = random_rotations(4000, torch.Generator().manual_seed(5))
    near = torch.rad2deg(rotation_angle(tr.hypothesis_rotations(R_gt, 1.0, 15.0), R_gt))
    far = torch.rad2deg(rotation_angle(tr.hypothesis_rotations(R_gt, 0.0, 15.0), R_gt))
    half = torch.rad2deg(rotation_angle(tr.hypothesis_rotations(R_gt, 0.5, 15.0), R_gt))
    torch.random.set_rng_state(g_state)
    # Euler noise of 15 degrees per axis: the angle is about 15 * chi(3), median 23 degrees; uniform rotations: 126 degrees
    assert 20 < near.median() < 27 and near.max() < 100
    assert 118 < far.median() < 134
    assert 0.45 < (half < 60).double().mean() < 0.55


def test_loss_with_positives_by_hand():
    "The pose terms average over the positives only; the score's BCE joins the total with its weight."
    from types import SimpleNamespace
    T = torch.eye(4)[None].repeat(2, 1, 1); T[:, 2, 3] = 1.0
    T_out = T.clone(); T_out[0, 2, 3] = 1.02; T_out[1, 2, 3] = 1.50            # depth off by 2 cm and by 50 cm
    pts = torch.randn(2, 40, 3) * 0.05
    syms = torch.eye(4)[None, None].repeat(2, 1, 1, 1)
    logits = torch.tensor([2.0, -1.0])
    out = SimpleNamespace(T_CO_output=T_out, T_CO_input=T_out, flows=None, scores=logits)
    cfg = tr.train_config("cpu", kind="coarse", loss_weights=(1.0, 1.0, 1.0), score_weight=0.5)
    l = tr.pose_losses([out], T, pts, syms, cfg, positives=torch.tensor([True, False]))
    assert abs(float(l["depth"]) - 0.02 / 3) < 1e-6                        # mean over x, y, z; the 50 cm negative left out
    bce = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2     # -log sigmoid(2), -log(1 - sigmoid(-1))
    assert abs(float(l["score"]) - bce) < 1e-6 and float(l["score_acc"]) == 1.0
    assert abs(float(l["total"]) - (float(l["rot"] + l["xy"] + l["depth"]) + 0.5 * bce)) < 1e-6
    none = tr.pose_losses([out], T, pts, syms, cfg, positives=torch.tensor([False, False]))
    assert float(none["depth"]) == 0.0 and float(none["score_acc"]) == 0.5          # no positive: no pose term


def test_config_and_score_head(tmp_path):
    c = tr.train_config("cpu", kind="coarse", n_hypotheses=64)
    assert tr.pose_model_config(c).n_hypotheses == 64 and tr.pose_model_config(tr.train_config("cpu", kind="coarse")).n_hypotheses == 0
    assert tr.pose_model_config(tr.train_config("cpu", kind="refiner", n_hypotheses=0)).n_hypotheses == 0
    with pytest.raises(ConfigError, match="n_hypotheses"):
        tr.train_config("cpu", kind="refiner", n_hypotheses=8)
    for bad in (-1, 1.5):
        with pytest.raises(ConfigError, match="n_hypotheses"):
            tr.train_config("cpu", kind="coarse", n_hypotheses=bad)
    with pytest.raises(ConfigError, match="score_max_deg"):
        tr.train_config("cpu", kind="coarse", score_max_deg=0.0)
    with pytest.raises(ConfigError, match="n_hypotheses"):
        PoseModelConfig(n_hypotheses=-2)
    m = PoseModel(PoseModelConfig(**SMALL, n_hypotheses=16))
    assert m.score_fc is not None and PoseModel(PoseModelConfig(**SMALL)).score_fc is None
    back = load_pose_model(save_pose_model(m, tmp_path / "m"))
    assert back.config.n_hypotheses == 16 and torch.equal(back.score_fc.weight, m.score_fc.weight)


@pytest.fixture(scope="module")
def scene(objects, renderer):
    "2 views (480 x 640, uint8) of 3 objects pasted on noise, their boxes and true poses."
    from cosypose_nb.structures import Detections
    from cosypose_nb.geometry.cameras import boxes_from_masks
    g = torch.Generator().manual_seed(7)
    K = make_K(*YCBV_K).expand(2, 3, 3).clone()
    view_ids = torch.tensor([0, 1, 1])
    labels = [objects.labels[i] for i in (0, 2, 7)]
    T_CO = make_T(random_rotations(3, g), torch.tensor([[0.05, 0.0, 0.7], [-0.08, 0.03, 0.8], [0.1, 0.05, 0.9]], dtype=torch.float64))
    r = renderer.render(labels, T_CO, K[view_ids], (480, 640), render_mask=True)
    images = torch.rand(2, 3, 480, 640, generator=g)
    for i, v in enumerate(view_ids.tolist()):
        images[v] = torch.where(r.mask[i], r.rgb[i], images[v])
    det = Detections(view_ids, labels, torch.ones(3), boxes_from_masks(r.mask[:, 0]).double())
    return (images * 255).round().to(torch.uint8), K, det, T_CO


def scorer(seed: int, n: int = 24) -> PoseModel:
    torch.manual_seed(seed)
    m = PoseModel(PoseModelConfig(**SMALL, n_hypotheses=n))
    torch.nn.init.normal_(m.pose_fc.weight, std=0.02); torch.nn.init.normal_(m.score_fc.weight, std=1.0)
    return m


def test_score_hypotheses_equals_one_box_at_a_time(scene, objects, renderer):
    "Batched over (box, hypothesis) pairs across views, the choice is that of scoring each box's hypotheses alone."
    images, K, det, _ = scene
    p = PosePredictor(scorer(0), None, objects, renderer, PredictorConfig(batch_size=10))    # batches cut across boxes
    T_in, T_out = p.score_hypotheses(images, K, det.boxes, det.view_ids, list(det.labels))
    m, H = p.coarse, 24
    R = super_fibonacci_rotations(H)
    for d in range(len(det)):                                    # the slow reference: one box, every hypothesis
        pts = objects.points([det.labels[d]]).expand(H, -1, -1)
        T = poses_from_boxes(det.boxes[d:d + 1].expand(H, 4), K[det.view_ids[d:d + 1]].expand(H, 3, 3), pts, "zup-autodepth", R=R)
        with torch.no_grad():
            it = m(images, K[det.view_ids[d:d + 1]].expand(H, 3, 3), T, [det.labels[d]] * H, 1, renderer, objects,
                   image_ids=det.view_ids[d:d + 1].expand(H))[0]
        b = int(it.scores.argmax())
        assert torch.allclose(T_in[d], T[b]) and (T_out[d] - it.T_CO_output[b].double()).abs().max() < 1e-4
    assert T_in.shape == T_out.shape == (3, 4, 4)


def test_hypotheses_kept_become_candidates(scene, objects, renderer):
    """`keep`: the k best-scored hypotheses of each box, best first (the first: the one `keep=1` returns); with
    `hypotheses_kept=k` the predictor makes k candidates per box, the best with the box's score, the others below."""
    images, K, det, _ = scene
    det = type(det)(det.view_ids, det.labels, torch.tensor([0.9, 0.5, 0.7]), det.boxes)
    p = PosePredictor(scorer(0), None, objects, renderer, PredictorConfig(batch_size=10))
    T1, O1 = p.score_hypotheses(images, K, det.boxes, det.view_ids, list(det.labels))
    T3, O3, prob = p.score_hypotheses(images, K, det.boxes, det.view_ids, list(det.labels), keep=3)
    assert T3.shape == O3.shape == (9, 4, 4) and prob.shape == (3, 3) and (prob[:, :-1] >= prob[:, 1:]).all()
    assert torch.allclose(T3[::3], T1) and (O3[::3] - O1).abs().max() < 1e-5
    assert not torch.allclose(T3[1::3], T1)                                   # other rotations
    q = PosePredictor(scorer(0), None, objects, renderer, PredictorConfig(batch_size=10, hypotheses_kept=3))
    c = q.run(images, K, det, n_coarse=1, n_refiner=0).candidates
    assert len(c) == 9 and c.labels == [l for l in det.labels for _ in range(3)]
    assert torch.equal(c.view_ids, det.view_ids.repeat_interleave(3)) and torch.allclose(c.scores[::3].float(), det.scores)
    assert (c.scores.reshape(3, 3)[:, 1:] <= c.scores.reshape(3, 3)[:, :1]).all()
    assert (c.T_CO[::3].double() - O1).abs().max() < 1e-5


def test_oracle_score_picks_the_nearest_hypothesis(scene, objects, renderer):
    "With a score that knows the truth (minus the symmetric angle), each box gets the grid rotation nearest to it."
    images, K, det, T_CO = scene
    m = scorer(1, n=128)
    syms = objects.symmetries(list(det.labels), n_continuous=32)
    def oracle(inputs, keep_inputs=False):
        out = PoseModel.compare(m, inputs, keep_inputs)
        # the truth of each input: the object whose true direction its pose's translation points along
        d = torch.cdist(inputs.T_in[:, :3, 3] / inputs.T_in[:, 2:3, 3], T_CO[:, :3, 3] / T_CO[:, 2:3, 3]).argmin(1)
        out.scores = -symmetric_rotation_angle(inputs.T_in[:, :3, :3], T_CO[d, :3, :3], syms[d])
        return out
    m.compare = oracle
    p = PosePredictor(m, None, objects, renderer, PredictorConfig(batch_size=50))
    est = p.run(images, K, det, n_coarse=1, n_refiner=0)
    G = super_fibonacci_rotations(128)
    for d in range(3):
        best = symmetric_rotation_angle(G, T_CO[d, :3, :3].expand(128, 3, 3), syms[d:d + 1].expand(128, -1, -1, -1)).min()
        got = symmetric_rotation_angle(est.T_CO_init[d:d + 1, :3, :3], T_CO[d:d + 1, :3, :3], syms[d:d + 1])
        assert abs(float(got) - float(best)) < 1e-9 and float(got) < math.radians(45)
    assert est.T_CO_iterations.shape == (2, 3, 4, 4) and torch.equal(est.T_CO_iterations[1], est.T_CO_coarse)
    assert (est.T_CO_init[:, 2, 3] / T_CO[:, 2, 3] - 1).abs().max() < 0.25          # the box's depth, fitted to the rotation
    # a second coarse iteration starts from the first one's output; none leaves the box's z-up pose
    two = p.run(images, K, det, n_coarse=2, n_refiner=0)
    assert two.T_CO_iterations.shape == (3, 3, 4, 4) and torch.equal(two.T_CO_iterations[1], est.T_CO_coarse)
    zero = p.run(images, K, det, n_coarse=0, n_refiner=0)
    assert torch.allclose(zero.T_CO_init[:, :3, :3], torch.tensor(R_ZUP, dtype=torch.float64).expand(3, 3, 3))
    assert len(p.run(images, K, det[[]], n_coarse=1, n_refiner=0).candidates) == 0


def test_train_command_with_hypotheses(tmp_path, recorded_dataset):
    "The coarse model with hypotheses trains through the command, logs its score terms, resumes, and loads."
    from cosypose_nb.cli import main
    args = ["train", "coarse", "--data", str(recorded_dataset), "--out", str(tmp_path / "run"), "--config", "cpu", "--n-steps", "2",
            "--batch-size", "4", "--render-size", "48", "64", "--backbone", "correlation", "--head", "flatten_bn",
            "--n-hypotheses", "32", "--num-workers", "0", "--checkpoint-every", "1", "--n-loss-points", "100", "--no-progress"]
    assert main(args) == 0 and main([*args, "--resume"]) == 0
    # a run started before the score settings existed (its config.json without them) resumes: they take their defaults
    cfg_file = tmp_path / "run" / "config.json"
    old = json.loads(cfg_file.read_text())
    for k in ("score_weight", "score_max_deg", "score_near_share"): del old["train"][k]
    cfg_file.write_text(json.dumps(old))
    assert main([*args, "--resume"]) == 0 and main([*args, "--resume", "--score-weight", "0.5"]) == 2
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert {"loss_score", "loss_score_acc", "loss_rot"} <= set(log.columns) and np.isfinite(log.loss_total).all()
    m = load_pose_model(tmp_path / "run")
    assert m.config.n_hypotheses == 32 and m.score_fc is not None
    assert main([*args[:1], "refiner", *args[2:], "--out", str(tmp_path / "r")]) == 2       # refused: the refiner has no score
