"""The user's command, end to end through the real CLI with tiny overrides."""
from __future__ import annotations

import csv
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

from conftest import CDCGAN_RUN, TINY, assert_ok


def test_default_run_writes_grids_checkpoint_config_and_wandb_offline(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("ganlab.train", *TINY, "trainer.max_epochs=2", f"hydra.run.dir={run_dir}")
    assert_ok(result)
    # Lightning's messages once on the console (not also through its own handler) and in train.log
    assert (result.stdout + result.stderr).count("`Trainer.fit` stopped") == 1
    assert "`Trainer.fit` stopped" in (run_dir / "train.log").read_text()

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


def test_logger_none_still_writes_grids_and_checkpoint(cdcgan_ckpt):
    run_dir = cdcgan_ckpt.parents[1]  # the session's run: CDCGAN_RUN has logger=none
    assert "logger=none" in CDCGAN_RUN
    assert (run_dir / "samples" / "final.png").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert not (run_dir / "wandb").exists()


def test_same_seed_same_weights(run_cli, tmp_path, cdcgan_ckpt):
    """The session's shared cdcgan run, repeated: the same command line gives the same weights."""
    assert_ok(run_cli("ganlab.train", *CDCGAN_RUN, f"hydra.run.dir={tmp_path / 'again'}"))
    again = torch.load(tmp_path / "again" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    first = torch.load(cdcgan_ckpt, weights_only=True)["state_dict"]
    assert set(first) == set(again) and any("generator_ema" in k for k in first)
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_the_entry_point_checks_the_command_line_before_loading_lightning(run_cli):
    """`python -m ganlab.train` imports Lightning (~5 s) only once Hydra has composed the config: a mistyped
    key is reported without it."""
    probe = subprocess.run([sys.executable, "-c", "import sys, ganlab.train; print('lightning' in sys.modules, "
                            "'torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert probe.stdout.split() == ["False", "False"]
    result = run_cli("ganlab.train", "model.lr=0.1")
    assert result.returncode == 1 and "Could not override 'model.lr'" in result.stderr
