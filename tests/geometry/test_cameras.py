"Tests of cosypose_nb.geometry.cameras on many random cameras, poses, boxes and images (float32/float64, CPU and CUDA when present)."
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cosypose_nb.core import InputError
from cosypose_nb.geometry.transforms import make_T, transform_points
from cosypose_nb.geometry.rotations import random_rotations
from cosypose_nb.geometry.cameras import (make_K, check_intrinsics, scale_intrinsics, project_points, project_camera_points, backproject, depth_to_points, boxes_from_points, boxes_from_masks, check_boxes, crop_transform, transform_pixels, crop_intrinsics, crop_images, deepim_crop_boxes, deepim_crops)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-3, torch.float64: 1e-8}


def rand(g, *shape, dtype=torch.float64):
    return torch.rand(*shape, generator=g, dtype=dtype)


def random_setup(B, N, g, dtype=torch.float64, device="cpu"):
    "Random K (B,3,3) (with skew), poses 0.4-1.5 m in front (B,4,4), object points within 10 cm (B,N,3)."
    f = 300 + 700 * rand(g, B)
    K = make_K(f, f * (0.9 + 0.2 * rand(g, B)), 200 + 200 * rand(g, B), 150 + 150 * rand(g, B), skew=rand(g, B) - 0.5)
    t = torch.cat([0.2 * (rand(g, B, 2) - 0.5), 0.4 + 1.1 * rand(g, B, 1)], -1)
    T = make_T(random_rotations(B, g), t)
    pts = (rand(g, B, N, 3) - 0.5) * 0.2
    return tuple(x.to(device=device, dtype=dtype) for x in (K, T, pts))


def random_boxes(B, g, lo=(0, 0), hi=(640, 480), min_size=4.0, dtype=torch.float64):
    "Random boxes (B, 4) with corners inside [lo, hi]."
    lo_, hi_ = torch.tensor(lo, dtype=dtype), torch.tensor(hi, dtype=dtype)
    a = lo_ + rand(g, B, 2, dtype=dtype) * (hi_ - lo_ - min_size)
    b = a + min_size + rand(g, B, 2, dtype=dtype) * (hi_ - a - min_size)
    return torch.cat([a, b], -1)


def pixel_grid(h, w, dtype, device="cpu"):
    "Projection coordinates (h*w, 2) of the pixel centres of an h x w image, row-major."
    v, u = torch.meshgrid(torch.arange(h, dtype=dtype, device=device), torch.arange(w, dtype=dtype, device=device),
                          indexing="ij")
    return torch.stack([u, v], -1).reshape(-1, 2)


def gaussian_dots(uv, H, W, sigma=1.5):
    "Images (B, 1, H, W) with a Gaussian dot at each `uv` (B, 2)."
    g = pixel_grid(H, W, uv.dtype, uv.device)
    d2 = ((g[None] - uv[:, None]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma ** 2)).reshape(-1, 1, H, W)


def centroids(img):
    H, W = img.shape[-2:]
    g = pixel_grid(H, W, img.dtype, img.device)
    w = img[:, 0].reshape(img.shape[0], -1)
    return (w[..., None] * g[None]).sum(1) / w.sum(1, keepdim=True)


# ---------------------------------------------------------------------------------------------------- intrinsics
def test_make_K_broadcasts_and_checks():
    K = make_K(torch.tensor([500., 600.]), 550., 320., torch.tensor([[240.], [250.], [260.]]))
    assert K.shape == (3, 2, 3, 3) and K.dtype == torch.float64
    assert torch.equal(K[2, 1], torch.tensor([[600., 0, 320], [0, 550, 260], [0, 0, 1]], dtype=torch.float64))
    assert make_K(1., 1., 0., 0., dtype=torch.float32).dtype == torch.float32


@pytest.mark.parametrize("bad, match", [
    (torch.eye(4), "expected shape"),
    (torch.zeros(3, 3), "singular"),
    (torch.tensor([[-500., 0, 320], [0, 500, 240], [0, 0, 1]]), "negative focal"),
    (torch.tensor([[500., 0, 320], [0, -500, 240], [0, 0, 1]]), "negative focal"),
    (torch.tensor([[500., 0, 320], [0, 500, 240], [0, 0, float("inf")]]), "NaN or infinite"),
    (torch.tensor([[500., 0, float("nan")], [0, 500, 240], [0, 0, 1]]), "NaN or infinite"),
    (torch.tensor([[500., 0, 320], [0, 500, 240], [0, 0, 2]]), "last row"),
    (torch.tensor([[500., 0, 320], [3, 500, 240], [0, 0, 1]]), r"K\[1, 0\]"),
    (torch.tensor([[[500., 0, 320], [0, 500, 240], [0, 0, 1]], [[0., 0, 320], [0, 500, 240], [0, 0, 1]]]), "singular"),
])
def test_bad_intrinsics_raise(bad, match):
    with pytest.raises(InputError, match=match):
        check_intrinsics(bad)
    with pytest.raises(InputError, match="scene_camera.json: cam_K"):
        check_intrinsics(bad, "cam_K", path="scene_camera.json")


def test_good_intrinsics_pass():
    g = torch.Generator().manual_seed(0)
    K, _, _ = random_setup(100, 1, g)
    assert check_intrinsics(K) is not None
    assert check_intrinsics(K.numpy()).dtype == torch.float64
    assert check_intrinsics(np.array([[500, 0, 320], [0, 500, 240], [0, 0, 1]])).is_floating_point()


@pytest.mark.parametrize("dtype", DTYPES)
def test_scale_intrinsics_is_a_full_image_crop_and_matches_interpolate(dtype):
    g = torch.Generator().manual_seed(1)
    K, T, pts = random_setup(50, 3, g, dtype)
    for s in [(0.5, 0.5), (2.0, 2.0), (0.25, 1.5)]:
        out_hw = (int(480 * s[1]), int(640 * s[0]))
        full = torch.tensor([0, 0, 640, 480], dtype=dtype).expand(50, 4)
        assert torch.allclose(scale_intrinsics(K, s), crop_intrinsics(K, full, out_hw), atol=TOL[dtype])
    assert torch.allclose(scale_intrinsics(K, 0.5), scale_intrinsics(K, (0.5, 0.5)))
    # a dot resized with F.interpolate (bilinear, align_corners=False) sits where scale_intrinsics projects it
    B, H, W = 32, 60, 80
    Ks = make_K(100 + 50 * rand(g, B), 120., 40., 30.)
    X = torch.cat([(rand(g, B, 2) - 0.5) * 0.3, 1 + rand(g, B, 1)], -1)[:, None]
    eye = torch.eye(4, dtype=torch.float64).expand(B, 4, 4)
    img = gaussian_dots(project_points(X, Ks, eye)[:, 0], H, W, sigma=2.0)
    for scale in [2.0, 3.0]:
        up = F.interpolate(img, scale_factor=scale, mode="bilinear", align_corners=False)
        err = (centroids(up) - project_points(X, scale_intrinsics(Ks, scale), eye)[:, 0]).abs().max()
        assert err < 0.05 * scale, err


# ---------------------------------------------------------------------------------------------------- projection
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_project_backproject_roundtrip(dtype, device):
    g = torch.Generator().manual_seed(2)
    K, T, pts = random_setup(500, 40, g, dtype, device)
    uv, ok = project_points(pts, K, T, return_valid=True)
    assert uv.shape == (500, 40, 2) and uv.dtype == dtype and uv.device.type == device and ok.all()
    pc = transform_points(T, pts)
    # independent formula: homogeneous projection
    suv = pc @ K.transpose(-1, -2)
    assert torch.allclose(uv, suv[..., :2] / suv[..., 2:], rtol=TOL[dtype], atol=TOL[dtype])
    back = backproject(uv, pc[..., 2], K)
    assert (back - pc).abs().max() < 1e3 * TOL[dtype] * 1e-2
    # leading dimensions
    uv2 = project_points(pts.reshape(5, 100, 40, 3), K.reshape(5, 100, 3, 3), T.reshape(5, 100, 4, 4))
    assert torch.equal(uv2.reshape(500, 40, 2), uv)


def test_points_behind_camera_are_clamped_and_flagged():
    g = torch.Generator().manual_seed(3)
    K, T, pts = random_setup(200, 30, g)
    T = T.clone()
    T[:, 2, 3] = torch.linspace(-0.2, 0.2, 200, dtype=torch.float64)    # many objects straddle the camera plane
    uv, ok = project_points(pts, K, T, z_min=0.01, return_valid=True)
    z = transform_points(T, pts)[..., 2]
    assert torch.equal(ok, z > 0.01) and (~ok).any() and ok.any()
    assert torch.isfinite(uv).all()
    boxes = boxes_from_points(uv, ok)
    has = ok.any(-1)
    assert boxes[~has].isnan().all() and torch.isfinite(boxes[has]).all()
    for b in torch.nonzero(has)[:20, 0]:
        assert torch.allclose(boxes[b], boxes_from_points(uv[b][ok[b]][None])[0])
    # the crop boxes of DeepIM stay finite
    obs = random_boxes(200, g)
    assert torch.isfinite(deepim_crop_boxes(K, T, pts, obs, (240, 320))).all()


def test_depth_to_points_projects_back_to_the_pixel_grid():
    g = torch.Generator().manual_seed(4)
    K, _, _ = random_setup(6, 1, g)
    depth = 0.3 + rand(g, 6, 24, 32)
    depth[:, :3] = 0
    pts = depth_to_points(depth, K)
    assert pts.shape == (6, 24, 32, 3)
    assert torch.allclose(pts[..., 2], depth)
    good = depth > 0
    uv = project_camera_points(pts.reshape(6, -1, 3), K).reshape(6, 24, 32, 2)
    grid = pixel_grid(24, 32, torch.float64).reshape(24, 32, 2)
    assert (uv[good] - grid.expand(6, 24, 32, 2)[good]).abs().max() < 1e-9
    assert (pts[~good] == 0).all()
    assert depth_to_points(depth.float(), K.float()).dtype == torch.float32


def test_project_points_gradients():
    g = torch.Generator().manual_seed(5)
    K, T, pts = random_setup(3, 4, g)
    T = T.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda T_: project_points(pts, K, T_), (T,))


# ---------------------------------------------------------------------------------------------------- boxes
def test_boxes_from_masks_matches_a_loop():
    g = torch.Generator().manual_seed(6)
    masks = rand(g, 40, 17, 23) > 0.97
    masks[0] = False
    boxes = boxes_from_masks(masks)
    for m, b in zip(masks.numpy(), boxes):
        if not m.any():
            assert b.isnan().all(); continue
        ii, jj = np.nonzero(m)
        assert b.tolist() == [jj.min(), ii.min(), jj.max() + 1, ii.max() + 1]
    assert boxes_from_masks(masks.to(torch.uint8), dtype=torch.float64).dtype == torch.float64
    # the box of the pixels whose centres lie in an integer box is that box, and so is its BOP (x, y, w, h)
    b = torch.tensor([3, 5, 11, 9])
    m = torch.zeros(1, 17, 23, dtype=torch.bool)
    m[0, b[1]:b[3], b[0]:b[2]] = True
    assert boxes_from_masks(m)[0].tolist() == b.float().tolist()


@pytest.mark.parametrize("dtype", DTYPES)
def test_boxes_from_points_are_tight(dtype):
    g = torch.Generator().manual_seed(7)
    uv = (rand(g, 300, 50, 2) * 500).to(dtype)
    b = boxes_from_points(uv)
    x = uv + 0.5                                                     # box coordinates of the points
    assert ((x >= b[:, None, :2]) & (x <= b[:, None, 2:])).all()
    assert torch.equal(x.amin(1), b[:, :2]) and torch.equal(x.amax(1), b[:, 2:])
    with pytest.raises(InputError):
        boxes_from_points(torch.zeros(3, 0, 2))


def test_check_boxes():
    assert check_boxes([[0, 0, 1, 1]]).shape == (1, 4)
    for bad in ([[0, 0, 0, 1]], [[0, 5, 1, 1]], [[0, 0, float("nan"), 1]], [[0, 0, 1]]):
        with pytest.raises(InputError):
            check_boxes(bad)


# ---------------------------------------------------------------------------------------------------- crops
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_crop_intrinsics_equals_box_transform_of_projections(dtype, device):
    g = torch.Generator().manual_seed(8)
    K, T, pts = random_setup(1000, 30, g, dtype, device)
    boxes = random_boxes(1000, g, lo=(-100, -100), hi=(740, 580)).to(device=device, dtype=dtype)
    uv = project_points(pts, K, T)
    for out_hw in [(240, 320), (64, 64), (17, 300)]:
        A = crop_transform(boxes, out_hw)
        uv_crop = project_points(pts, crop_intrinsics(K, boxes, out_hw), T)
        scale = A[:, :2, :2].abs().amax((-1, -2))[:, None, None]
        assert ((uv_crop - transform_pixels(A, uv)).abs() / scale).max() < TOL[dtype]
        # explicit formula in box coordinates: x' = (x - x1) w / (x2 - x1)
        x = uv + 0.5
        xc = (x - boxes[:, None, :2]) * torch.tensor(out_hw[::-1], dtype=dtype, device=device) / (boxes[:, None, 2:] - boxes[:, None, :2])
        assert ((uv_crop + 0.5 - xc).abs() / scale).max() < TOL[dtype]


def test_crop_of_a_crop_composes():
    g = torch.Generator().manual_seed(9)
    K, _, _ = random_setup(200, 1, g)
    b1 = random_boxes(200, g)
    out1, out2 = (120, 160), (50, 70)
    b2 = random_boxes(200, g, hi=(160, 120))                      # a box inside the first crop
    s1 = torch.tensor(out1[::-1], dtype=torch.float64) / (b1[:, 2:] - b1[:, :2])
    b = torch.cat([b1[:, :2] + b2[:, :2] / s1, b1[:, :2] + b2[:, 2:] / s1], -1)
    two = crop_intrinsics(crop_intrinsics(K, b1, out1), b2, out2)
    assert torch.allclose(two, crop_intrinsics(K, b, out2), atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sampling_ratio", [0, 1, 3])
def test_bilinear_crop_is_exact_on_linear_images(dtype, device, sampling_ratio):
    "Bilinear sampling reproduces a linear image, so each crop pixel must hold the image at its mapped centre."
    g = torch.Generator().manual_seed(10)
    B, H, W = 24, 90, 130
    coef = torch.randn(B, 3, generator=g, dtype=torch.float64)
    grid = pixel_grid(H, W, torch.float64)
    img = ((grid @ coef[:, :2].T).T + coef[:, 2:]).reshape(B, 1, H, W)
    img = torch.cat([img, -2 * img], 1).to(device=device, dtype=dtype)
    boxes = random_boxes(B, g, lo=(1, 1), hi=(W - 1, H - 1), min_size=3).to(device=device, dtype=dtype)
    for out_hw in [(31, 47), (100, 100), (5, 160)]:
        crop = crop_images(img, boxes, out_hw, sampling_ratio=sampling_ratio)
        assert crop.shape == (B, 2, *out_hw) and crop.dtype == dtype
        A_inv = torch.linalg.inv(crop_transform(boxes.double().cpu(), out_hw))
        src = transform_pixels(A_inv, pixel_grid(*out_hw, torch.float64)[None].expand(B, -1, 2))
        expect = (src @ coef[:, :2, None]).squeeze(-1) + coef[:, 2:]
        err = (crop[:, 0].reshape(B, -1).double().cpu() - expect).abs().max()
        assert err < 10 * TOL[dtype] * (1 + expect.abs().max()), err
        assert torch.allclose(crop[:, 1], -2 * crop[:, 0], atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bilinear_crop_matches_grid_sample(dtype):
    "With one sample per output pixel, roi_align(aligned=True) is grid_sample(align_corners=False) at the mapped pixel centres."
    g = torch.Generator().manual_seed(11)
    B, C, H, W = 16, 3, 70, 90
    img = torch.rand(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    boxes = random_boxes(B, g, lo=(1, 1), hi=(W - 1, H - 1), min_size=3).to(dtype)
    out_hw = (33, 41)
    crop = crop_images(img, boxes, out_hw, sampling_ratio=1)
    A_inv = torch.linalg.inv(crop_transform(boxes.double(), out_hw))
    src = transform_pixels(A_inv, pixel_grid(*out_hw, torch.float64)[None].expand(B, -1, 2))
    norm = (2 * (src + 0.5) / torch.tensor([W, H], dtype=torch.float64) - 1).reshape(B, *out_hw, 2)
    ref = F.grid_sample(img.double(), norm, mode="bilinear", align_corners=False)
    assert (crop.double() - ref).abs().max() < 10 * TOL[dtype]


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_crop_matches_grid_sample_and_keeps_dtype(device):
    g = torch.Generator().manual_seed(12)
    B, H, W = 20, 40, 50
    img = torch.arange(B * 2 * H * W, dtype=torch.int64).reshape(B, 2, H, W)
    boxes = random_boxes(B, g, lo=(-20, -20), hi=(W + 20, H + 20), min_size=5)   # partly outside the image
    out_hw = (37, 23)
    crop = crop_images(img.to(device), boxes.to(device), out_hw, mode="nearest").cpu()
    assert crop.dtype == torch.int64
    A_inv = torch.linalg.inv(crop_transform(boxes, out_hw))
    src = transform_pixels(A_inv, pixel_grid(*out_hw, torch.float64)[None].expand(B, -1, 2))
    norm = (2 * (src + 0.5) / torch.tensor([W, H], dtype=torch.float64) - 1).reshape(B, *out_hw, 2)
    ref = F.grid_sample(img.double(), norm, mode="nearest", padding_mode="zeros", align_corners=False)
    assert torch.equal(crop.double(), ref)
    assert (crop == 0).any()                                     # some boxes reach outside: zeros there


def test_integer_boxes_at_scale_one_are_slices_and_integer_images_round_trip():
    g = torch.Generator().manual_seed(13)
    img = torch.randint(0, 256, (4, 3, 40, 60), generator=g, dtype=torch.uint8)
    for _ in range(20):
        x1, w = torch.randint(0, 30, (1,), generator=g).item(), torch.randint(1, 30, (1,), generator=g).item()
        y1, h = torch.randint(0, 20, (1,), generator=g).item(), torch.randint(1, 20, (1,), generator=g).item()
        bx = torch.tensor([[x1, y1, x1 + w, y1 + h]], dtype=torch.float32).expand(4, 4)
        ref = img[:, :, y1:y1 + h, x1:x1 + w]
        for mode in ("bilinear", "nearest"):
            c = crop_images(img, bx, (h, w), mode=mode)
            assert c.dtype == torch.uint8 and torch.equal(c, ref)
    masks = torch.rand(2, 1, 40, 60, generator=g) > 0.5
    bx = torch.tensor([[3., 4, 23, 14], [0, 0, 60, 40]])
    assert torch.equal(crop_images(masks, bx, (10, 20), mode="bilinear")[0], masks[0, :, 4:14, 3:23])
    assert crop_images(masks, bx, (10, 20)).dtype == torch.bool


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dot_lands_where_crop_intrinsics_projects_it(dtype, device):
    """A bright dot drawn at the projection of a model point, after a DeepIM crop (upscaling or
    downscaling), has its centre at the point's projection with the crop's intrinsics."""
    g = torch.Generator().manual_seed(14)
    B, H, W = 48, 240, 320
    K = make_K(250 + 150 * rand(g, B), 250 + 150 * rand(g, B), 150 + 20 * rand(g, B), 110 + 20 * rand(g, B))
    T = make_T(random_rotations(B, g), torch.cat([0.1 * (rand(g, B, 2) - 0.5), 0.5 + rand(g, B, 1)], -1))
    pts = (rand(g, B, 60, 3) - 0.5) * 0.15
    X = pts[:, :1] * 0.3                                             # a point near the object centre
    uv = project_points(X, K, T)[:, 0]
    img = gaussian_dots(uv, H, W, sigma=1.5)
    obs = boxes_from_points(project_points(pts, K, T))
    cast = lambda *xs: [x.to(device=device, dtype=dtype) for x in xs]
    img, K, T, pts, X, obs = cast(img, K, T, pts, X, obs)
    for out_hw in [(240, 320), (96, 128), (256, 256)]:
        crops, boxes, K_crop = deepim_crops(img, K, T, pts, obs, out_hw=out_hw)
        pred = project_points(X, K_crop, T)[:, 0]
        sx = crop_transform(boxes, out_hw)[:, 0, 0]
        err = ((centroids(crops) - pred).abs().amax(-1) / sx).max()   # in source pixels
        assert err < 0.05, err                                       # half a pixel off would read 0.5
    # a deliberately wrong convention (the crop box shifted by half a pixel) is caught
    wrong = project_points(X, crop_intrinsics(K, boxes + 0.5, out_hw), T)[:, 0]
    assert (((centroids(crops) - wrong).abs().amax(-1) / sx).min()) > 0.3


# ---------------------------------------------------------------------------------------------------- DeepIM boxes
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_deepim_boxes_contain_both_are_centred_and_have_the_aspect_ratio(dtype, device):
    g = torch.Generator().manual_seed(15)
    B = 2000
    K, T, pts = random_setup(B, 80, g, dtype, device)
    rend = boxes_from_points(project_points(pts, K, T))
    obs = (rend + (torch.randn(B, 4, generator=g, dtype=torch.float64) * 40).to(device=device, dtype=dtype))
    obs = torch.cat([torch.minimum(obs[:, :2], obs[:, 2:] - 1), obs[:, 2:]], -1)
    centre = project_points(torch.zeros(B, 1, 3, dtype=dtype, device=device), K, T)[:, 0] + 0.5
    for out_hw in [(240, 320), (128, 128), (400, 100)]:
        r = out_hw[1] / out_hw[0]
        for lamb in (1.0, 1.4, 2.0):
            db = deepim_crop_boxes(K, T, pts, obs, out_hw, lamb=lamb)
            e = 1e-4 * db.abs().max()
            for b in (obs, rend):
                assert ((db[:, :2] <= b[:, :2] + e) & (db[:, 2:] >= b[:, 2:] - e)).all()
            w, h = db[:, 2] - db[:, 0], db[:, 3] - db[:, 1]
            assert torch.allclose(w / h, torch.full_like(w, r), rtol=1e-5)
            assert torch.allclose((db[:, :2] + db[:, 2:]) / 2, centre, rtol=1e-6, atol=1e-3)
            # tight: with lambda = 1 the box touches one of the two boxes; otherwise it is lambda times that
            edges = torch.stack([obs, rend], -1)
            dx = (edges[:, [0, 2]] - centre[:, 0, None, None]).abs().flatten(1).amax(1)
            dy = (edges[:, [1, 3]] - centre[:, 1, None, None]).abs().flatten(1).amax(1)
            assert torch.allclose(w / 2, lamb * torch.maximum(dx, r * dy), rtol=1e-5)
        no_obs = deepim_crop_boxes(K, T, pts, None, out_hw)
        assert ((no_obs[:, :2] <= rend[:, :2] + 1e-3) & (no_obs[:, 2:] >= rend[:, 2:] - 1e-3)).all()
        # a missing observed box (NaN row, e.g. from an empty mask) falls back to the rendered box alone
        obs_nan = obs.clone(); obs_nan[::3] = float("nan")
        mixed = deepim_crop_boxes(K, T, pts, obs_nan, out_hw)
        assert torch.equal(mixed[::3], no_obs[::3])
        keep = torch.ones(B, dtype=torch.bool); keep[::3] = False
        assert torch.equal(mixed[keep], deepim_crop_boxes(K, T, pts, obs, out_hw)[keep])


def test_deepim_min_size_and_bad_arguments():
    K = make_K(500., 500., 320., 240.)[None]
    T = torch.eye(4, dtype=torch.float64)[None].clone(); T[0, 2, 3] = 1.0
    pts = torch.zeros(1, 5, 3, dtype=torch.float64)                    # all points at the origin
    db = deepim_crop_boxes(K, T, pts, None, (100, 200), min_size=4.0)
    assert torch.allclose(db[0, 2] - db[0, 0], torch.tensor(8.0, dtype=torch.float64))   # min size on the short side
    assert torch.allclose(db[0, 3] - db[0, 1], torch.tensor(4.0, dtype=torch.float64))
    with pytest.raises(InputError, match="lamb"):
        deepim_crop_boxes(K, T, pts, None, (100, 200), lamb=0)
    with pytest.raises(InputError, match="out_hw"):
        deepim_crop_boxes(K, T, pts, None, (100, 0))
    with pytest.raises(InputError, match="out_hw"):
        crop_images(torch.zeros(1, 1, 8, 8), torch.tensor([[0., 0, 4, 4]]), (2.5, 3))
    with pytest.raises(InputError, match="mode"):
        crop_images(torch.zeros(1, 1, 8, 8), torch.tensor([[0., 0, 4, 4]]), (2, 3), mode="bicubic")
    with pytest.raises(InputError, match="boxes"):
        crop_images(torch.zeros(2, 1, 8, 8), torch.tensor([[0., 0, 4, 4]]), (2, 3))
