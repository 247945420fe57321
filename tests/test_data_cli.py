"""Every real-data config end to end: composes with the models, and one short training run per data
module through the real CLI on a fixture in the dataset's own layout."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ganlab.config  # noqa: F401  (registers resolvers)
from conftest import REPO, assert_ok
from test_data_real import (ALZ_TRAIN, encoded, make_alzheimer, make_oasis, make_parquet, make_tumor_four,
                            make_tumor_yes_no, ready, save)

DATA = ("alzheimer", "brain_tumor", "brain_tumor_yes_no", "oasis", "folder", "parquet")


def tiny(run_dir) -> list[str]:
    """Like conftest.TINY without brainsim's data.per_class; two batches of 4 at 32 px, csv logger."""
    return ["data.image_size=32", "data.batch_size=4", "model.generator.width=8", "model.discriminator.width=8",
            "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "logger=csv",
            f"hydra.run.dir={run_dir}"]


@pytest.mark.parametrize("data", DATA)
def test_data_config_declares_num_classes_for_cdcgan(data, tmp_path):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", "model=cdcgan", f"data.root={tmp_path}"])
    assert "num_classes" in cfg.data and cfg.data.root == str(tmp_path)
    assert cfg.model.num_classes == cfg.data.num_classes
    assert cfg.data.cache_dir.endswith("cache")


def test_brain_tumor_yes_no_config_reads_the_yes_no_set(tmp_path, monkeypatch):
    monkeypatch.setenv("GANLAB_DATA_DIR", str(tmp_path / "data"))
    root = make_tumor_yes_no(tmp_path / "dl")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["data=brain_tumor_yes_no", "model=cdcgan", f"data.root={root}",
                                          "data.image_size=16", "data.batch_size=2"])
    dm = ready(instantiate(cfg.data))
    assert cfg.model.num_classes == 2 and dm.class_names == ["no", "yes"]
    assert list((tmp_path / "data" / "cache").glob("braintumor-*.pt"))


def test_missing_root_exits_2_with_one_line(run_cli, tmp_path):
    result = run_cli("ganlab.train", "data=alzheimer", f"data.root={tmp_path / 'nowhere'}", *tiny(tmp_path / "run"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: data root {tmp_path / 'nowhere'} does not exist")
    assert "kaggle datasets download" in lines[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def fixture_for(data: str, base) -> tuple[list[str], list[str]]:
    """(overrides, expected class names) for a fixture of `data` built under base."""
    if data == "alzheimer":
        return ["model=cdcgan"], list(ALZ_TRAIN)
    if data == "brain_tumor":
        return ["model=cdcgan"], ["glioma", "meningioma", "notumor", "pituitary"]
    if data == "oasis":
        return ["model=dcgan"], ["slice"]
    if data == "folder":
        return ["model=dcgan", "data.train_split=train", "data.test_split=test"], ["flair", "t1"]
    return ["model=cdcgan", "data.num_classes=2", "data.label_names=[healthy,lesion]"], ["healthy", "lesion"]


def build(data: str, base):
    if data == "alzheimer":
        return make_alzheimer(base)
    if data == "brain_tumor":
        return make_tumor_four(base)
    if data == "oasis":
        return make_oasis(base)
    if data == "folder":
        for split, n in (("train", 6), ("test", 2)):
            for name in ("flair", "t1"):
                for i in range(n):
                    save(base / split / name / f"{i}.png", size=(40, 30), mode="RGB" if i == 0 else "L")
        return base
    rows = [(encoded(50 + 100 * (i % 2), fmt="JPEG"), i % 2) for i in range(12)]
    make_parquet(base / "data" / "train-00000-of-00001.parquet", rows)
    return base


@pytest.mark.slow
@pytest.mark.parametrize("data", ["alzheimer", "brain_tumor", "oasis", "folder", "parquet"])
def test_short_training_run(run_cli, tmp_path, data_dir, data):
    root = build(data, tmp_path / "dl")
    overrides, classes = fixture_for(data, root)
    run_dir = tmp_path / "run"
    result = run_cli("ganlab.train", f"data={data}", f"data.root={root}", *overrides, *tiny(run_dir))
    assert_ok(result)
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    facts = ckpt["ganlab"]["data"]
    assert facts["class_names"] == classes and facts["image_size"] == 32
    assert ckpt["ganlab"]["model"]["num_classes"] == (len(classes) if "model=cdcgan" in overrides else 0)
    log = (run_dir / "train.log").read_text()
    assert f"classes {classes}" in log  # class names and counts logged at start-up
    assert list((data_dir / "cache").glob("*.pt"))  # decoded store cached under paths.data_dir, not the dataset
    assert not [p for p in root.rglob("*.pt")]


@pytest.mark.slow
def test_cdcgan_on_folder_data_finds_its_class_count_and_refuses_another(run_cli, tmp_path):
    """data=folder leaves data.num_classes to the data: a conditional model gets the count of class folders;
    a model.num_classes set apart from it is refused at start-up, not as an IndexError mid-training."""
    root = build("folder", tmp_path / "dl")
    split = ["data.train_split=train", "data.test_split=test"]
    run_dir = tmp_path / "run"
    assert_ok(run_cli("ganlab.train", "data=folder", f"data.root={root}", "model=cdcgan", *split, *tiny(run_dir)))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["ganlab"]["model"]["num_classes"] == 2
    assert "num_classes: 2" in (run_dir / "config_resolved.yaml").read_text()

    result = run_cli("ganlab.train", "data=folder", f"data.root={root}", "model=cdcgan", "model.num_classes=3", *split,
                     *tiny(tmp_path / "run3"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == ("error: model.num_classes=3 but the data has 2 classes ['flair', 't1']; "
                                              "leave model.num_classes to the data (${data.num_classes})")
    assert not (tmp_path / "run3").exists()
