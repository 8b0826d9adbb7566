"""Pose training data: the samples of BOP folders (toy and recorded), the same batches with 0 and 2 data-loader
workers, background replacement behind the masks only, the augmentations' rates, padding, and refused input."""
from __future__ import annotations
import itertools, json, shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosypose_nb.core import InputError
from cosypose_nb.datasets.bop import read_mask, read_scene_gt_info, mask_name
from cosypose_nb.singleview.pose_data import (PoseDataConfig, PoseDataset, EpochSampler, collate_poses, BackgroundBank,
                                              default_background_files)

NO_RGB = dict(rgb_augmentation=False)
NO_BG = dict(background_augmentation=False)


@pytest.fixture(scope="module")
def toy(toy_dataset):
    "The shared toy BOP dataset (tests/conftest.py)."
    return toy_dataset


def foreground(ds: PoseDataset, i: int) -> np.ndarray:
    "Union of the visible masks of all objects of sample i's image, read straight from the files."
    d = ds.datasets[ds.part[i]].scene_dir(int(ds.scene_id[i]))
    im = int(ds.im_id[i])
    masks = [read_mask(p) for p in sorted((d / "mask_visib").glob(f"{im:06d}_*.png"))]
    return np.any(masks, axis=0)


def test_samples_are_the_visible_objects(toy):
    ds = PoseDataset(toy, augment=False)
    infos = {s: read_scene_gt_info(toy / "train" / f"{s:06d}") for s in range(3)}
    want = [(s, im, j) for s, inf in infos.items() for im, objs in inf.items() for j, o in enumerate(objs) if o["visib_fract"] >= 0.1]
    assert sorted(zip(ds.scene_id.tolist(), ds.im_id.tolist(), ds.inst.tolist())) == sorted(want)
    s = ds[3]
    o = infos[s["scene_id"]][s["im_id"]][s["inst_id"]]
    assert np.allclose(s["box"].numpy(), o["bbox_visib"]) and np.allclose(s["box_obj"].numpy(), o["bbox_obj"])
    assert s["rgb"].shape == (3, 120, 160) and s["rgb"].dtype == torch.uint8 and s["K"].dtype == torch.float64
    assert s["T_CO"].shape == (4, 4) and s["label"].startswith("obj_") and s["visib_fract"] >= 0.1
    assert len(PoseDataset(toy, PoseDataConfig(min_visib=0.9), augment=False)) < len(ds)


def test_same_batches_with_0_and_2_workers(toy):
    ds = PoseDataset(toy, seed=3)

    def batches(workers):
        dl = torch.utils.data.DataLoader(ds, batch_size=5, sampler=EpochSampler(len(ds), seed=3), num_workers=workers,
                                         collate_fn=collate_poses)
        return list(itertools.islice(iter(dl), 10))        # 50 samples: more than one epoch

    a, b = batches(0), batches(2)
    for x, y in zip(a, b):
        assert torch.equal(x.images, y.images) and x.labels == y.labels and torch.equal(x.T_CO, y.T_CO)
        assert torch.equal(x.indices, y.indices)
    assert not torch.equal(PoseDataset(toy, seed=4)[(0, 0)]["rgb"], ds[(0, 0)]["rgb"]) or not torch.equal(
        PoseDataset(toy, seed=4)[(1, 0)]["rgb"], ds[(1, 0)]["rgb"])              # another seed, other augmentations


def test_background_replaced_behind_the_masks_only(toy):
    raw = PoseDataset(toy, augment=False)
    ds = PoseDataset(toy, PoseDataConfig(p_background=1.0, **NO_RGB))
    for i in range(0, len(ds), 5):
        a, b = raw[i]["rgb"].permute(1, 2, 0).numpy(), ds[(i, 2)]["rgb"].permute(1, 2, 0).numpy()
        fg = foreground(ds, i)
        assert (a[fg] == b[fg]).all()                                     # the objects untouched
        assert (a[~fg] != b[~fg]).any(-1).mean() > 0.5                     # the rest replaced


def test_augmentation_rates(toy):
    "Over 300 draws the background (p 0.3) and RGB block (p 0.8) fire at their rates (binomial sd 0.026 / 0.023: 0.08 is 3 sd)."
    raw = PoseDataset(toy, augment=False)
    raw_rgb = [raw[i]["rgb"] for i in range(len(raw))]
    bg = PoseDataset(toy, PoseDataConfig(p_procedural=1.0, **NO_RGB))       # procedural backgrounds: no file to decode
    rgb = PoseDataset(toy, PoseDataConfig(**NO_BG))
    keys = list(itertools.islice(iter(EpochSampler(len(raw), seed=0)), 300))
    changed = lambda ds: np.mean([not torch.equal(ds[k]["rgb"], raw_rgb[k[0]]) for k in keys])
    assert abs(changed(bg) - 0.3) < 0.08
    assert abs(changed(rgb) - 0.8) < 0.08                   # the blur always fires in the block (the original's quirk)
    quiet = PoseDataset(toy, PoseDataConfig(p_blur=0, p_sharpness=0, p_contrast=0, p_brightness=0, p_color=0, **NO_BG))
    assert changed(quiet) == 0


def test_backgrounds(tmp_path):
    files = default_background_files()
    assert len(files) >= 10 and not {"domino.jpg", "duckCM.png", "colors16.png"} & {p.name for p in files}
    (tmp_path / "a").mkdir()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(tmp_path / "a" / "red.png")     # subfolders are searched too
    Image.new("RGB", (50, 40), (0, 0, 255)).save(tmp_path / "blue.png")
    (tmp_path / "notes.txt").write_text("not an image")
    bank = BackgroundBank(str(tmp_path))
    assert len(bank) == 2 and bank.p_procedural == 0
    draws = {tuple(bank.sample(np.random.default_rng(s), (30, 40))[15, 20].tolist()) for s in range(20)}
    assert draws == {(255, 0, 0), (0, 0, 255)}
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image file"):
        BackgroundBank(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="not a folder"):
        BackgroundBank(str(tmp_path / "nowhere"))


def test_recorded_dataset(recorded_dataset, default_objects):
    labels = default_objects.labels
    ds = PoseDataset(recorded_dataset, labels=labels, seed=0)
    b = collate_poses([ds[(i, 0)] for i in range(min(6, len(ds)))])
    assert b.images.shape[1:] == (3, 120, 160) and set(b.labels) <= set(labels)
    assert ((b.boxes[:, :2] >= 0) & (b.boxes[:, 2:] <= torch.tensor([160.0, 120.0]))).all()
    assert (b.T_CO[:, 2, 3] > 0).all()


def test_collate_pads_to_the_largest_image(toy):
    ds = PoseDataset(toy, augment=False)
    s0, s1 = ds[0], dict(ds[1])
    s1["rgb"] = s1["rgb"][:, :70, :90]
    b = collate_poses([s1, s0])
    assert b.images.shape == (2, 3, 120, 160) and b.sizes.tolist() == [[70, 90], [120, 160]]
    assert (b.images[0, :, 70:] == 0).all() and (b.images[0, :, :, 90:] == 0).all() and torch.equal(b.images[1], s0["rgb"])
    assert b.to("cpu").labels == b.labels
    with pytest.raises(InputError):
        collate_poses([])


def test_epoch_sampler_shards_and_resumes():
    n = 11
    full = list(itertools.islice(iter(EpochSampler(n, seed=2)), 40))
    assert all(sorted(i for i, e in full if e == ep) == list(range(n)) for ep in range(3))
    assert list(itertools.islice(iter(EpochSampler(n, seed=2, start=17)), 10)) == full[17:27]
    shards = [list(itertools.islice(iter(EpochSampler(n, seed=2, rank=r, world_size=3)), 4)) for r in range(3)]
    assert len({i for s in shards for i, _ in s}) == n                  # 3 x 4 = 12 keys: the 11 samples + 1 padding


def test_bad_input(tmp_path, toy):
    with pytest.raises(InputError, match="not a BOP dataset"):
        PoseDataset(tmp_path)
    with pytest.raises(InputError, match="data folder not found"):
        PoseDataset(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no data folder"):
        PoseDataset([])
    with pytest.raises(InputError, match="have no model"):
        PoseDataset(toy, labels=["obj_000001"])
    two = tmp_path / "two"
    for s in ("train", "test"): shutil.copytree(toy / "train", two / s)
    with pytest.raises(InputError, match="several splits"):
        PoseDataset(two)
    assert len(PoseDataset(two / "test")) == len(PoseDataset(toy))      # a split folder given directly

    small = tmp_path / "small" / "train"; shutil.copytree(toy / "train", small)
    for p in small.glob("*/rgb/*"):                                       # images halved, cameras kept
        Image.open(p).resize((80, 60)).save(p)
    with pytest.raises(InputError, match=r"rgb/\d{6}\.png: image of 80x60 px does not match"):
        PoseDataset(small, augment=False)[0]

    nomask = tmp_path / "nomask" / "train"; shutil.copytree(toy / "train", nomask)
    for d in nomask.glob("*/mask_visib"): shutil.rmtree(d)
    with pytest.raises(InputError, match="mask_visib"):
        PoseDataset(nomask)
    assert len(PoseDataset(nomask, PoseDataConfig(**NO_BG))) > 0

    hidden = tmp_path / "hidden" / "train"; shutil.copytree(toy / "train", hidden)
    for f in hidden.glob("*/scene_gt_info.json"):
        f.write_text(json.dumps({k: [dict(o, visib_fract=0.02) for o in v] for k, v in json.loads(f.read_text()).items()}))
    with pytest.raises(InputError, match="no object with visib_fract >= 0.1"):
        PoseDataset(hidden)
    (hidden / "000001" / "scene_gt_info.json").unlink()
    with pytest.raises(InputError, match="scene_gt_info.json: file not found"):
        PoseDataset(hidden)
    with pytest.raises(InputError, match="p_background"):
        PoseDataConfig(p_background=-0.1)
    with pytest.raises(IndexError):
        PoseDataset(toy)[10_000]
