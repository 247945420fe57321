"""The real-dataset DataModules on small fixtures built in each dataset's true on-disk layout."""
from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ganlab.data.alzheimer import CLASS_NAMES, AlzheimerDataModule
from ganlab.data.brain_tumor import BrainTumorDataModule
from ganlab.data.folder import ImageFolderDataModule, class_balanced
from ganlab.data.oasis import OasisDataModule
from ganlab.data.parquet import ParquetDataModule
from ganlab.data.splits import holdout
from ganlab.errors import GanlabError

ALZ_TRAIN = {"NonDemented": 8, "VeryMildDemented": 6, "MildDemented": 4, "ModerateDemented": 2}
ALZ_TEST = {"NonDemented": 2, "VeryMildDemented": 2, "MildDemented": 1, "ModerateDemented": 1}
UNDERSCORED = {"NonDemented": "Non_Demented", "VeryMildDemented": "Very_Mild_Demented",
               "MildDemented": "Mild_Demented", "ModerateDemented": "Moderate_Demented"}
TUMOR_TRAIN = {"glioma": 5, "meningioma": 4, "notumor": 6, "pituitary": 3}
LEVEL = {name: 40 + 50 * k for k, name in enumerate(CLASS_NAMES)}  # each class's grey level


def save(path: Path, size=(44, 52), mode="L", value: int | None = None, fmt: str | None = None) -> Path:
    """A small image file: constant grey `value` (recognisable after resizing) or random texture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    arr = np.full((h, w, 3), value, np.uint8) if value is not None else \
        np.random.default_rng(abs(hash(path.name)) % 2**32).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format=fmt)
    return path


def encoded(value: int, size=(30, 36), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def make_alzheimer(base: Path, underscored: bool = False, split: bool = True) -> Path:
    """Kaggle layout inside the folder the archive unpacks to; one RGB file and one odd size."""
    root = base / ("Alzheimer_s Dataset" if split else "Dataset")
    for split_name, counts in (("train", ALZ_TRAIN), ("test", ALZ_TEST)) if split else (("", ALZ_TRAIN),):
        for name, n in counts.items():
            folder = root / split_name / (UNDERSCORED[name] if underscored else name)
            for i in range(n):
                save(folder / f"{name[:5].lower()}Dem{i}.jpg", size=(30, 30) if i == 2 else (44, 52),
                     mode="RGB" if i == 1 else "L", value=LEVEL[name])
    return base


def make_tumor_four(base: Path, old_names: bool = False) -> Path:
    for split, scale in (("Training", 1), ("Testing", 0)):
        for k, (name, n) in enumerate(TUMOR_TRAIN.items()):
            folder = base / split / ((f"{name}_tumor" if name != "notumor" else "no_tumor") if old_names else name)
            for i in range(max(n * scale, 1)):
                save(folder / f"Tr-{name[:2]}_{i:04d}.jpg", size=(60 + 7 * i, 50 + 3 * k), mode="RGB" if i % 2 else "L")
    return base


def make_tumor_yes_no(base: Path) -> Path:
    for name, n in (("no", 5), ("yes", 8)):
        for i in range(n):
            save(base / name / (f"{i + 1} no.jpeg" if name == "no" else f"Y{i}.JPG"), size=(50 + 5 * i, 40),
                 mode="RGB" if i == 0 else "L", fmt="JPEG")
        save(base / "brain_tumor_dataset" / name / "dup.jpg")  # the archive's duplicate copy
    return base


def make_oasis(base: Path, slices: int = 4) -> Path:
    root = base / "keras_png_slices_data"
    for split, cases in (("train", range(1, 9)), ("validate", range(9, 11)), ("test", range(11, 13))):
        for c in cases:
            for s in range(slices):
                save(root / f"keras_png_slices_{split}" / f"case_{c:03d}_slice_{s}.nii.png", size=(32, 32))
            save(root / f"keras_png_slices_seg_{split}" / f"seg_{c:03d}_slice_0.nii.png", size=(32, 32))
    return base


def make_parquet(path: Path, rows: list[tuple[bytes, object]], struct: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [{"bytes": b, "path": None} for b, _ in rows] if struct else [b for b, _ in rows]
    pq.write_table(pa.table({"image": images, "label": [lab for _, lab in rows]}), path)
    return path


def ready(dm):
    dm.prepare_data()
    dm.setup("fit")
    return dm


def counts_all(dm, splits=("train", "val")) -> dict[str, int]:
    return {name: sum(dm.class_counts(s)[name] for s in splits) for name in dm.class_names}


def centre_levels(dataset) -> list[int]:
    return dataset.images[:, 0, dataset.images.shape[2] // 2, dataset.images.shape[3] // 2].tolist()


# ---------------------------------------------------------------------------------------- alzheimer
@pytest.mark.parametrize("underscored", [False, True])
def test_alzheimer_both_spellings_fixed_class_order_counts_and_labels(tmp_path, underscored):
    dm = ready(AlzheimerDataModule(str(make_alzheimer(tmp_path, underscored)), image_size=16, batch_size=4))
    assert dm.class_names == list(CLASS_NAMES) and dm.num_classes == 4
    assert counts_all(dm) == ALZ_TRAIN and dm.class_counts("test") == ALZ_TEST
    for split in ("train", "val", "test"):  # every label points at its own class's images
        ds = dm.datasets[split]
        expected = [LEVEL[CLASS_NAMES[k]] for k in ds.labels.tolist()]
        assert np.allclose(centre_levels(ds), expected, atol=3)
    assert len(dm.datasets["val"]) == 2  # round(20 * 0.1), stratified: from the two largest classes


def test_alzheimer_shapes_range_pad_and_rgb_files_read_as_configured(tmp_path):
    root = str(make_alzheimer(tmp_path))
    dm = ready(AlzheimerDataModule(root, image_size=16, batch_size=4, resize="pad"))
    images = dm.datasets["train"].images
    assert images.shape == (18, 1, 16, 16) and images.dtype == torch.uint8
    assert images[:, 0, :, 0].float().mean() < 20  # 44x52 portrait: black letterbox bars left and right
    batch, labels = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch.shape == (4, 1, 16, 16) and batch.dtype == torch.float32 and labels.dtype == torch.long
    assert batch.min() >= -1 and batch.max() <= 1 and batch.min() == -1
    cropped = ready(AlzheimerDataModule(root, image_size=16, batch_size=4, resize="crop")).datasets["train"].images
    assert cropped[:, 0, :, 0].float().mean() > 30  # centre crop: no bars
    rgb = ready(AlzheimerDataModule(root, image_size=16, channels=3, batch_size=4)).datasets["train"].images
    assert rgb.shape[1] == 3 and torch.equal(rgb[:, 0], rgb[:, 2])  # grey files replicated to 3 channels


def test_alzheimer_capitalised_split_folders_keep_both_splits(tmp_path):
    root = make_alzheimer(tmp_path) / "Alzheimer_s Dataset"
    (root / "train").rename(root / "Train")
    (root / "test").rename(root / "Test")
    dm = ready(AlzheimerDataModule(str(tmp_path), image_size=16, batch_size=4))
    assert counts_all(dm) == ALZ_TRAIN and dm.class_counts("test") == ALZ_TEST


@pytest.mark.parametrize("split", ["train", "test"])
def test_alzheimer_root_at_one_split_of_a_split_copy_is_refused_naming_the_folder_above(tmp_path, split):
    root = make_alzheimer(tmp_path) / "Alzheimer_s Dataset"
    with pytest.raises(GanlabError, match=f"is the {split} split of a train/test copy.*{re.escape(str(root))}, so"):
        ready(AlzheimerDataModule(str(root / split), image_size=16, batch_size=4))


def test_alzheimer_128_variant_without_split_holds_out_a_stratified_test_split(tmp_path):
    dm = ready(AlzheimerDataModule(str(make_alzheimer(tmp_path, underscored=True, split=False)), image_size=16,
                                   batch_size=4, test_fraction=0.2, val_fraction=0.1))
    assert dm.class_names == list(CLASS_NAMES)
    assert counts_all(dm, ("train", "val", "test")) == ALZ_TRAIN
    assert len(dm.datasets["test"]) == 4 and all(v >= 1 for v in dm.class_counts("train").values())


def test_alzheimer_parquet_mirror_labels_are_remapped_to_severity_order(tmp_path):
    mirror = ("MildDemented", "ModerateDemented", "NonDemented", "VeryMildDemented")  # label ids 0..3
    rows = [(encoded(LEVEL[name], fmt="JPEG" if i % 2 else "PNG"), k) for k, name in enumerate(mirror) for i in range(3)]
    make_parquet(tmp_path / "data" / "train-00000-of-00001.parquet", rows)
    make_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", rows[::3])
    dm = ready(AlzheimerDataModule(str(tmp_path), image_size=16, batch_size=4, val_fraction=0.0))
    ds = dm.datasets["train"]
    assert dm.class_counts("train") == dict.fromkeys(CLASS_NAMES, 3) and len(dm.datasets["test"]) == 4
    assert np.allclose(centre_levels(ds), [LEVEL[CLASS_NAMES[k]] for k in ds.labels.tolist()], atol=3)


# ---------------------------------------------------------------------------------------- brain tumour
@pytest.mark.parametrize("old_names", [False, True])
def test_brain_tumor_four_class_mixed_sizes_and_modes(tmp_path, old_names):
    dm = ready(BrainTumorDataModule(str(make_tumor_four(tmp_path, old_names)), image_size=24, batch_size=4,
                                    num_classes=4))
    assert dm.class_names == ["glioma", "meningioma", "notumor", "pituitary"] and dm.layout == "four_class"
    assert counts_all(dm) == TUMOR_TRAIN and sum(dm.class_counts("test").values()) == 4
    assert dm.datasets["train"].images.shape[1:] == (1, 24, 24)


def test_brain_tumor_yes_no_layout_found_and_test_held_out(tmp_path, caplog):
    root = str(make_tumor_yes_no(tmp_path))
    with caplog.at_level(logging.WARNING, logger="ganlab.data"):
        dm = ready(BrainTumorDataModule(root, image_size=16, channels=3, batch_size=4, num_classes=2,
                                        test_fraction=0.2))
    assert dm.class_names == ["no", "yes"] and dm.layout == "yes_no"
    assert counts_all(dm, ("train", "val", "test")) == {"no": 5, "yes": 8}  # the duplicate folder is not read
    assert "brain_tumor_dataset" in caplog.text
    assert dm.datasets["train"].images.shape[1] == 3
    with pytest.raises(GanlabError, match="data=brain_tumor_yes_no"):
        ready(BrainTumorDataModule(root, image_size=16, batch_size=4, num_classes=4))


# ---------------------------------------------------------------------------------------- oasis
def subjects(dm, split) -> set[str]:
    return {dm.subject_of(f) for f in dm.datasets[split].files}


def test_oasis_disk_splits_unconditional_and_seg_folders_ignored(tmp_path):
    dm = ready(OasisDataModule(str(make_oasis(tmp_path)), image_size=16, batch_size=4))
    assert dm.class_names == ["slice"] and set(dm.datasets["train"].labels.tolist()) == {0}
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [32, 8, 8]
    assert not any("seg" in f for ds in dm.datasets.values() for f in ds.files)
    assert subjects(dm, "val") == {"case_009", "case_010"}


def test_oasis_pooled_split_keeps_every_subject_on_one_side(tmp_path):
    root = str(make_oasis(tmp_path))
    dm = ready(OasisDataModule(root, image_size=16, batch_size=4, pool_splits=True, val_fraction=0.2,
                               test_fraction=0.2))
    sides = [subjects(dm, s) for s in ("train", "val", "test")]
    assert all(sides) and not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert sum(map(len, sides)) == 12 and all(len(dm.datasets[s]) % 4 == 0 for s in ("val", "test"))
    again = ready(OasisDataModule(root, image_size=16, batch_size=4, pool_splits=True, val_fraction=0.2,
                                  test_fraction=0.2))
    assert subjects(again, "val") == sides[1]  # deterministic for a seed
    other = [subjects(ready(OasisDataModule(root, image_size=16, batch_size=4, pool_splits=True,
                                            val_fraction=0.2, test_fraction=0.2, seed=s)), "val") for s in range(1, 6)]
    assert any(o != sides[1] for o in other)


def test_holdout_groups_stratifies_and_is_deterministic():
    labels = [0] * 60 + [1] * 20
    groups = [f"s{i // 4}" for i in range(80)]  # 20 subjects of 4 slices, one class each
    keep, held = holdout(labels, groups, 0.25, seed=7)
    assert sorted(keep + held) == list(range(80)) and len(held) == 20
    assert {groups[i] for i in keep}.isdisjoint({groups[i] for i in held})
    assert sum(labels[i] for i in held) == 4  # one subject: the closest to a quarter of class 1
    assert holdout(labels, groups, 0.25, seed=7) == (keep, held)
    assert holdout([0, 0, 1], ["a", "b", "c"], 0.5, seed=0)[0].count(2) == 1  # a class keeps its one group


# ---------------------------------------------------------------------------------------- folder / parquet
def test_folder_subject_pattern_groups_the_val_split(tmp_path):
    for sub in range(10):
        for s in range(3):
            save(tmp_path / ("ad" if sub % 2 else "cn") / f"sub-{sub:02d}_slice{s}.png", size=(20, 20))
    dm = ready(ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=4, train_split=None,
                                     test_split=None, val_fraction=0.2, subject_pattern=r"(sub-\d+)"))
    assert dm.class_names == ["ad", "cn"] and len(dm.datasets["val"]) == 6
    assert subjects(dm, "train").isdisjoint(subjects(dm, "val"))


def test_parquet_binary_column_string_labels_reordered_and_unconditional(tmp_path):
    rows = [(encoded(200), "tumour")] * 3 + [(encoded(60), "healthy")] * 5
    path = make_parquet(tmp_path / "scans.parquet", rows, struct=False)
    dm = ready(ParquetDataModule(str(path), image_size=16, batch_size=4, val_fraction=0.0,
                                 class_names=["tumour", "healthy"]))
    assert dm.class_counts() == {"tumour": 3, "healthy": 5}
    assert np.allclose(centre_levels(dm.datasets["train"]), [200 if k == 0 else 60 for k in dm.datasets["train"].labels],
                       atol=2)
    plain = ready(ParquetDataModule(str(path), image_size=16, batch_size=4, label_column=None))
    assert plain.class_names == ["image"] and len(plain.datasets["train"]) + len(plain.datasets["val"]) == 8


def test_parquet_integer_labels_named_and_reordered(tmp_path):
    rows = [(encoded(30 + 60 * k), k) for k in (0, 1, 2) for _ in range(k + 2)]
    make_parquet(tmp_path / "train-00000-of-00001.parquet", rows)
    make_parquet(tmp_path / "validation-00000-of-00001.parquet", rows[:3])
    dm = ready(ParquetDataModule(str(tmp_path), image_size=16, batch_size=2, label_names=["a", "b", "c"],
                                 class_names=["c", "a", "b"]))
    assert dm.class_counts() == {"c": 4, "a": 2, "b": 3} and dm.class_counts("val") == {"c": 0, "a": 2, "b": 1}
    ds = dm.datasets["train"]
    assert np.allclose(centre_levels(ds), [{0: 150, 1: 30, 2: 90}[k] for k in ds.labels.tolist()], atol=2)
    with pytest.raises(GanlabError, match="label 2 .* has 2 names"):
        ready(ParquetDataModule(str(tmp_path), batch_size=2, label_names=["a", "b"]))


def test_balanced_sampler_draws_classes_equally(tmp_path):
    for name, n in (("common", 36), ("rare", 4)):
        for i in range(n):
            save(tmp_path / name / f"{i}.png", size=(8, 8))
    kwargs = dict(image_size=8, batch_size=4, train_split=None, test_split=None, val_fraction=0.0)

    def rare_share(dm) -> float:
        labels = torch.cat([lab for _, lab in dm.train_dataloader()])
        return labels.double().mean().item()

    balanced = ready(ImageFolderDataModule(str(tmp_path), balanced_sampling=True, **kwargs))
    assert rare_share(balanced) == 0.5  # every epoch, not only on average
    files = [f for f in class_balanced(balanced.datasets["train"], 0).files if "rare" in f]
    assert len(files) == 36 and all(files.count(f) == 9 for f in set(files))  # each rare image equally often
    common = [f for f in class_balanced(balanced.datasets["train"], 0).files if "common" in f]
    assert sorted(common) == sorted(f for f in balanced.datasets["train"].files if "common" in f)  # all, once
    assert rare_share(ready(ImageFolderDataModule(str(tmp_path), **kwargs))) == 0.1


def test_balanced_sampling_leaves_balanced_classes_untouched(tmp_path):
    for name in ("a", "b"):
        for i in range(6):
            save(tmp_path / name / f"{i}.png", size=(8, 8))
    kwargs = dict(image_size=8, batch_size=4, train_split=None, test_split=None, val_fraction=0.0)
    dm = ready(ImageFolderDataModule(str(tmp_path), balanced_sampling=True, **kwargs))
    assert class_balanced(dm.datasets["train"], 0) is dm.datasets["train"]  # same images, same order
    assert class_balanced(dm.datasets["train"], 0, 0.5) is dm.datasets["train"]
    save(tmp_path / "b" / "6.png", size=(8, 8))  # one image more in one class: topped up again
    dm = ready(ImageFolderDataModule(str(tmp_path), balanced_sampling=True, **kwargs))
    assert torch.bincount(class_balanced(dm.datasets["train"], 0).labels).tolist() == [7, 7]


def test_balanced_sampling_strength_between_natural_and_balanced(tmp_path):
    for name, n in (("common", 36), ("rare", 4)):
        for i in range(n):
            save(tmp_path / name / f"{i}.png", size=(8, 8))
    kwargs = dict(image_size=8, batch_size=4, train_split=None, test_split=None, val_fraction=0.0)
    half = ready(ImageFolderDataModule(str(tmp_path), balanced_sampling=0.5, **kwargs))
    labels = torch.cat([lab for _, lab in half.train_dataloader()])
    assert torch.bincount(labels).tolist() == [36, 12]  # sqrt(36 * 4) rare images: each repeated 3x
    files = [f for f in class_balanced(half.datasets["train"], 0, 0.5).files if "rare" in f]
    assert all(files.count(f) == 3 for f in set(files)) and len(set(files)) == 4
    # strength 1 is exactly `true` (same images in the same order: old runs resume unchanged)
    assert class_balanced(half.datasets["train"], 0, 1.0).files == class_balanced(half.datasets["train"], 0).files
    with pytest.raises(GanlabError, match="data.balanced_sampling=1.5"):
        ImageFolderDataModule(str(tmp_path), balanced_sampling=1.5, **kwargs)


def test_transparent_pixels_read_as_black_background():
    """An RGBA / LA / palette PNG with a transparent background: the background reads 0 (MRI background, the
    padding's colour), not the colour hidden under the transparency; opaque pixels keep their value."""
    from ganlab.data.readers import to_array

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[2:6, 2:6] = 255, (120, 120, 120, 255)  # transparent white around an opaque grey square
    palette = Image.fromarray(rgba, "RGBA").convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    for im in (Image.fromarray(rgba, "RGBA"), Image.fromarray(rgba, "RGBA").convert("LA"), palette):
        arr = to_array(im, 8, 1, resize="stretch")[0]
        assert arr[0, 0] == 0 and abs(int(arr[4, 4]) - 120) <= 2, (im.mode, arr[0, 0], arr[4, 4])
    assert to_array(Image.fromarray(rgba[..., :3], "RGB"), 8, 1, resize="stretch")[0, 0, 0] == 255  # opaque: as is


def test_folder_of_split_folders_is_not_read_as_classes(tmp_path):
    for split in ("train", "test"):
        for name in ("flair", "t1"):
            for i in range(3):
                save(tmp_path / split / name / f"{i}.png")
    with pytest.raises(GanlabError, match=r"holds split folders \['test', 'train'\], not class folders.*"
                                          r"data.train_split"):
        ready(ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, train_split=None, test_split=None))
    dm = ready(ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=2, train_split="train",
                                     test_split="test"))
    assert dm.class_names == ["flair", "t1"]


def test_a_root_that_is_a_file_is_named_as_one(tmp_path):
    (tmp_path / "scans.zip").write_bytes(b"PK")
    with pytest.raises(GanlabError, match="scans.zip is a file, not a folder"):
        ready(ImageFolderDataModule(str(tmp_path / "scans.zip"), image_size=16, batch_size=2))


def test_the_other_brain_tumour_set_is_named_with_its_data_config(tmp_path):
    four, yes_no = make_tumor_four(tmp_path / "four"), make_tumor_yes_no(tmp_path / "yn")
    with pytest.raises(GanlabError, match="holds the four_class brain-tumour set, not the yes_no one: "
                                          "use data=brain_tumor$"):
        ready(BrainTumorDataModule(str(four), layout="yes_no", image_size=16, batch_size=2))
    with pytest.raises(GanlabError, match="holds the yes_no brain-tumour set, not the four_class one: "
                                          "use data=brain_tumor_yes_no"):
        ready(BrainTumorDataModule(str(yes_no), layout="four_class", image_size=16, batch_size=2))
