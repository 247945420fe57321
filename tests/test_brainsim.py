"""The embedded dataset: deterministic, class-structured, on disk in the Kaggle Alzheimer layout."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ganlab.data.brainsim import CLASS_NAMES, BrainSimDataModule, cache_dir_for, make_slice, render_brainsim
from ganlab.errors import GanlabError


def slice_of(seed, k, size=64):
    return make_slice(np.random.default_rng([seed, k, 0]), k, size)


def test_same_seed_same_image_different_seed_differs():
    assert np.array_equal(slice_of(1, 2), slice_of(1, 2))
    assert not np.array_equal(slice_of(1, 2), slice_of(2, 2))


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shape_dtype_and_black_background(size):
    img = slice_of(0, 0, size)
    assert img.shape == (size, size) and img.dtype == np.uint8
    assert img[0, 0] == 0 and img[-1, -1] == 0  # skull-stripped brain on black
    assert img.max() > 150  # white matter is bright


def csf_fraction(img: np.ndarray) -> float:
    """Dark pixels inside the central part of the brain (ventricles + widened sulci)."""
    n = img.shape[0]
    centre = img[n // 4: 3 * n // 4, n // 4: 3 * n // 4].astype(float)
    brain = centre > 0
    return float(((centre < 0.35 * np.percentile(img[img > 0], 90)) & brain).sum() / max(brain.sum(), 1))


def test_csf_area_grows_with_class():
    means = [np.mean([csf_fraction(make_slice(np.random.default_rng([7, k, i]), k, 64)) for i in range(40)])
             for k in range(len(CLASS_NAMES))]
    assert all(a < b for a, b in zip(means, means[1:])), means
    assert means[-1] > 1.5 * means[0], means


def test_render_layout_counts_imbalance_and_cache(tmp_path):
    root = tmp_path / "bs"
    render_brainsim(root, image_size=32, per_class=20, imbalance={"ModerateDemented": 0.25}, test_fraction=0.2)
    for split, per_class in (("train", 16), ("test", 4)):
        for name in CLASS_NAMES:
            files = sorted((root / split / name).glob("*.png"))
            expected = {"train": 4, "test": 1}[split] if name == "ModerateDemented" else per_class
            assert len(files) == expected, (split, name)
    im = Image.open(next((root / "train" / "NonDemented").glob("*.png")))
    assert im.mode == "L" and im.size == (32, 32)

    marker = root / "train" / "NonDemented" / "00000.png"
    before = marker.stat().st_mtime_ns
    render_brainsim(root, image_size=32, per_class=20, imbalance={"ModerateDemented": 0.25}, test_fraction=0.2)
    assert marker.stat().st_mtime_ns == before  # cached, not re-rendered


def test_rgb_render(tmp_path):
    render_brainsim(tmp_path / "rgb", image_size=32, per_class=2, channels=3)
    assert Image.open(next((tmp_path / "rgb" / "train" / "MildDemented").glob("*.png"))).mode == "RGB"


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="mine"):
        render_brainsim(tmp_path / "mine", image_size=32, per_class=2)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_cache_dir_depends_on_every_parameter(tmp_path):
    a = cache_dir_for(tmp_path, image_size=32, per_class=10)
    assert a == cache_dir_for(tmp_path, image_size=32, per_class=10)
    assert a != cache_dir_for(tmp_path, image_size=32, per_class=11)
    assert a != cache_dir_for(tmp_path, image_size=64, per_class=10)


def test_datamodule_serves_minus_one_to_one_batches_with_all_classes(tmp_path):
    dm = BrainSimDataModule(str(tmp_path), image_size=32, per_class=20, batch_size=8, val_fraction=0.25, seed=3)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == list(CLASS_NAMES) and dm.num_classes == 4
    assert len(dm.datasets["train"]) == 48 and len(dm.datasets["val"]) == 16 and len(dm.datasets["test"]) == 16
    images, labels = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert images.shape == (8, 1, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1 and images.min() == -1  # black background
    assert set(dm.class_counts("train")) == set(CLASS_NAMES)
    train_files = set(dm.datasets["train"].files)
    assert not train_files & set(dm.datasets["val"].files) and not train_files & set(dm.datasets["test"].files)


def test_datamodule_rejects_bad_parameters(tmp_path):
    with pytest.raises(GanlabError, match="imbalance"):
        BrainSimDataModule(str(tmp_path), imbalance={"Severe": 0.1})


def test_render_is_byte_identical_for_a_seed(tmp_path):
    a, b, c = (render_brainsim(tmp_path / d, image_size=32, per_class=3, seed=s) for d, s in
               (("a", 5), ("b", 5), ("c", 6)))
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 12
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_other_parameters_refused_unless_overwrite_and_no_temp_dirs_left(tmp_path):
    root = render_brainsim(tmp_path / "r", image_size=32, per_class=2)
    with pytest.raises(ValueError, match="overwrite"):
        render_brainsim(root, image_size=32, per_class=3)
    render_brainsim(root, image_size=32, per_class=3, overwrite=True)
    assert sum(1 for _ in root.glob("*/NonDemented/*.png")) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["r"]
