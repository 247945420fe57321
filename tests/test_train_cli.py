"""The user's command, end to end through the real CLI with tiny overrides."""
from __future__ import annotations

import csv
import math

import pytest
import torch
from PIL import Image

from conftest import TINY, assert_ok


def test_default_run_writes_grids_checkpoint_config_and_wandb_offline(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("ganlab.train", *TINY, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert_ok(result)

    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    assert [g.name for g in grids] == ["epoch_0000.png", "epoch_0001.png"]
    final = Image.open(run_dir / "samples" / "final.png")
    assert final.width > 8 * 32 and final.height >= 8 * 32  # 8x8 grid of 32 px images
    assert (run_dir / "samples" / "progress.gif").stat().st_size > 0

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert {"generator.stem.0.weight", "discriminator.head.weight"} <= set(ckpt["state_dict"])
    assert any(k.startswith("generator_ema.") for k in ckpt["state_dict"])
    assert ckpt["ganlab"]["data"]["class_names"][0] == "NonDemented"
    assert (run_dir / "config_resolved.yaml").read_text().count("${") == 0

    # W&B: offline by default, with a real run file
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    records = runs[0].read_bytes()  # protobuf records: keys and config strings appear verbatim
    for expected in (b"train/loss_d", b"train/d_fake", b"BrainSimDataModule", b"samples/fixed_noise"):
        assert expected in records, expected
    assert list(runs[0].parent.glob("files/media/images/samples/fixed_noise_*.png"))


def test_csv_logger_records_finite_losses_and_d_outputs(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    assert_ok(run_cli("ganlab.train", *TINY, "logger=csv", f"hydra.run.dir={run_dir}"))
    rows = list(csv.DictReader(open(next(run_dir.glob("csv/version_*/metrics.csv")))))
    losses = [float(r["train/loss_d"]) for r in rows if r.get("train/loss_d")]
    assert losses and all(math.isfinite(v) for v in losses)
    for key in ("train/loss_g", "train/d_real", "train/d_fake"):
        values = [float(r[key]) for r in rows if r.get(key)]
        assert values and all(math.isfinite(v) for v in values), key
    assert all(0.0 <= float(r["train/d_real"]) <= 1.0 for r in rows if r.get("train/d_real"))


def test_logger_none_still_writes_grids_and_checkpoint(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    assert_ok(run_cli("ganlab.train", *TINY, "logger=none", f"hydra.run.dir={run_dir}"))
    assert (run_dir / "samples" / "final.png").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert not (run_dir / "wandb").exists()


def test_same_seed_same_weights(run_cli, tmp_path):
    states = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        assert_ok(run_cli("ganlab.train", *TINY, "logger=none", "trainer.deterministic=true",
                          f"hydra.run.dir={run_dir}"))
        states.append(torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
