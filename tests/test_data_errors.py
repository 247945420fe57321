"""Bad data gives one clear line naming the path; the decoded tensor cache is keyed, atomic and
stays outside the dataset."""
from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import ganlab.data.store as store
from ganlab.data.alzheimer import AlzheimerDataModule
from ganlab.data.brain_tumor import BrainTumorDataModule
from ganlab.data.folder import ImageFolderDataModule
from ganlab.data.oasis import OasisDataModule
from ganlab.data.parquet import ParquetDataModule
from ganlab.errors import GanlabError
from test_data_real import make_alzheimer, make_oasis, ready, save


def error_of(make) -> str:
    with pytest.raises(GanlabError) as info:
        ready(make())
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.fixture
def alz(tmp_path):
    make_alzheimer(tmp_path / "dl")
    return tmp_path / "dl" / "Alzheimer_s Dataset"


def test_missing_root_says_layout_and_where_to_get_it(tmp_path):
    for module in (AlzheimerDataModule, BrainTumorDataModule, OasisDataModule, ImageFolderDataModule):
        message = error_of(lambda: module(str(tmp_path / "nowhere"), batch_size=2))
        assert str(tmp_path / "nowhere") in message and "does not exist" in message and "<root>/" in message
        assert "datasets.md" in message
    assert "kaggle datasets download -d tourist55/" in error_of(lambda: AlzheimerDataModule(str(tmp_path / "x")))
    assert "data.root is not set" in error_of(lambda: OasisDataModule(None))
    (tmp_path / "empty").mkdir()
    assert "no Alzheimer class folders" in error_of(lambda: AlzheimerDataModule(str(tmp_path / "empty")))
    assert "keras_png_slices_train" in error_of(lambda: OasisDataModule(str(tmp_path / "empty")))


def test_empty_class_folder_is_named(alz):
    for f in (alz / "train" / "ModerateDemented").iterdir():
        f.unlink()
    message = error_of(lambda: AlzheimerDataModule(str(alz), batch_size=2))
    assert message == f"class folder {alz / 'train' / 'ModerateDemented'} has no images"


def test_missing_class_folder_is_named(alz):
    (alz / "train" / "ModerateDemented").rename(alz / "train" / "Severe")
    message = error_of(lambda: AlzheimerDataModule(str(alz), batch_size=2))
    assert "ModerateDemented" in message and str(alz / "train") in message


def test_corrupt_and_non_image_files_named_or_skipped_with_a_count(alz, caplog):
    bad = alz / "train" / "NonDemented" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    message = error_of(lambda: AlzheimerDataModule(str(alz), image_size=16, batch_size=2))
    assert str(bad) in message and "skip_bad_files=true" in message
    notes = alz / "train" / "VeryMildDemented" / "notes.txt"
    notes.write_text("scanner settings")
    (alz / "train" / "VeryMildDemented" / ".DS_Store").write_bytes(b"\0")  # hidden litter is never read
    bad.unlink()
    assert f"{notes} is not an image file" in error_of(lambda: AlzheimerDataModule(str(alz), image_size=16,
                                                                                    batch_size=2))
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with caplog.at_level(logging.WARNING, logger="ganlab.data"):
        dm = ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, skip_bad_files=True))
    assert "skipped 2 bad file(s)" in caplog.text
    assert sum(len(dm.datasets[s]) for s in ("train", "val")) == 20


def test_truncated_png_is_reported(tmp_path):
    good = save(tmp_path / "a" / "0.png", size=(40, 40))
    for i in range(1, 4):
        save(tmp_path / "a" / f"{i}.png", size=(40, 40))
    good.write_bytes(good.read_bytes()[:60])
    message = error_of(lambda: ImageFolderDataModule(str(tmp_path), batch_size=2, train_split=None))
    assert message.startswith(f"cannot read image {good}: ")


def test_fewer_images_than_one_batch(alz):
    message = error_of(lambda: AlzheimerDataModule(str(alz), image_size=16, batch_size=32))
    assert "fewer than one batch (data.batch_size=32)" in message and "18 training images" in message


@pytest.mark.parametrize("kwargs, key", [({"channels": 2}, "data.channels=2"), ({"channels": 4}, "data.channels=4"),
                                         ({"resize": "squash"}, "data.resize='squash'"),
                                         ({"val_fraction": 1.0}, "data.val_fraction"),
                                         ({"layout": "three"}, "data.layout='three'")])
def test_bad_options_fail_at_construction(tmp_path, kwargs, key):
    with pytest.raises(GanlabError, match=key.replace("[", r"\[")):
        BrainTumorDataModule(str(tmp_path), **kwargs)


def test_num_classes_mismatch_and_parquet_column_errors(tmp_path, alz):
    assert "data.num_classes=3" in error_of(lambda: AlzheimerDataModule(str(alz), num_classes=3))
    path = tmp_path / "p" / "train.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"img": [b"x"], "label": [0]}), path)
    assert "has no column 'image'" in error_of(lambda: ParquetDataModule(str(path)))
    pq.write_table(pa.table({"image": [1.0], "label": [0]}), path)
    assert "expected encoded image bytes" in error_of(lambda: ParquetDataModule(str(path)))
    pq.write_table(pa.table({"image": [b"not an image"] * 4, "label": [0, 1, 0, 1]}), path)
    message = error_of(lambda: ParquetDataModule(str(path), image_size=16, batch_size=2))
    assert f"cannot read image {path}#0" in message and "BytesIO" not in message, message


def test_oasis_file_without_subject_id(tmp_path):
    make_oasis(tmp_path)
    stray = save(tmp_path / "keras_png_slices_data" / "keras_png_slices_train" / "extra_slice.png", size=(8, 8))
    message = error_of(lambda: OasisDataModule(str(tmp_path), batch_size=2))
    assert message.startswith(f"{stray}: no subject id")


# ---------------------------------------------------------------------------------------- cache
def test_cache_is_reused_invalidated_and_never_inside_the_dataset(tmp_path, alz, monkeypatch):
    cache = tmp_path / "cache"
    before = sorted(p for p in alz.rglob("*"))
    first = ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, cache_dir=str(cache)))
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt" and sorted(alz.rglob("*")) == before

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(store, "decode", no_decoding)
    second = ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, cache_dir=str(cache)))
    assert torch.equal(first.datasets["train"].images, second.datasets["train"].images)
    assert first.datasets["val"].files == second.datasets["val"].files
    monkeypatch.undo()

    ready(AlzheimerDataModule(str(alz), image_size=8, batch_size=2, cache_dir=str(cache)))  # other size: new entry
    changed = sorted((alz / "train" / "NonDemented").iterdir())[0]
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))
    ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, cache_dir=str(cache)))  # changed file: new entry
    assert len(list(cache.glob("alzheimer-*.pt"))) == 3 and not list(cache.glob(".*"))  # no temp files left

    inside = ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, cache_dir=str(alz / "cache")))
    assert not (alz / "cache").exists() and len(inside.datasets["train"]) == 18


def test_corrupt_cache_file_is_rebuilt(tmp_path, alz):
    cache = tmp_path / "cache"
    ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, cache_dir=str(cache)))
    entry = next(cache.iterdir())
    entry.write_bytes(b"garbage")
    dm = ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, cache_dir=str(cache)))
    assert len(dm.datasets["train"]) == 18 and torch.load(entry, weights_only=True)["splits"]


def test_cache_with_skipped_files_still_refuses_them_without_skip(tmp_path, alz):
    (alz / "train" / "NonDemented" / "broken.jpg").write_bytes(b"junk")
    cache = str(tmp_path / "cache")
    ready(AlzheimerDataModule(str(alz), image_size=16, batch_size=2, cache_dir=cache, skip_bad_files=True))
    assert "broken.jpg" in error_of(lambda: AlzheimerDataModule(str(alz), image_size=16, batch_size=2,
                                                                 cache_dir=cache))


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.tile(np.linspace(0, 4000, 16, dtype=np.uint16), (16, 1))
    for name in ("a", "b"):
        path = tmp_path / name / "scan.png"
        path.parent.mkdir(parents=True)
        Image.fromarray(arr).save(path)
    dm = ready(ImageFolderDataModule(str(tmp_path), image_size=16, batch_size=1, train_split=None, val_fraction=0.0))
    row = dm.datasets["train"].images[0, 0, 8].float()
    assert row[0] < 5 and row[-1] > 250 and (row.diff() >= 0).all()
