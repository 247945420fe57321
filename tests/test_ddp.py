"""Data-parallel training (ganlab.strategy): real Lightning DDP on CPU (2 processes, gloo) keeps the
replicas identical, ranks draw different noise and data, only rank 0 writes, one run dir per job."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from conftest import REPO, TINY, assert_ok
from ganlab.strategy import GANStrategy, config_flags, is_rank_zero


def test_default_trainer_uses_the_gan_strategy_for_any_device_count():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        for overrides in ([], ["trainer.devices=2"], ["trainer=ddp"], ["trainer=gpu"]):
            cfg = compose("train", overrides=overrides)
            assert cfg.trainer.strategy._target_ == "ganlab.strategy.GANStrategy", overrides
        ddp = compose("train", overrides=["trainer=ddp"]).trainer
        assert ddp.sync_batchnorm is True and ddp.devices == "auto"
        gpu = compose("train", overrides=["trainer=gpu"]).trainer
        assert gpu.strategy.channels_last and gpu.strategy.data_on_device and gpu.precision == "bf16-mixed"
        assert compose("train", overrides=["trainer.strategy=auto"]).trainer.strategy == "auto"


def test_single_process_starts_no_process_group_and_launches_nothing():
    trainer = L.Trainer(strategy=GANStrategy(), accelerator="cpu", devices=1, logger=False)
    assert trainer.strategy.launcher is None and not trainer.strategy.multi_process
    trainer.strategy.setup_environment()
    assert not torch.distributed.is_initialized()


def test_config_flags_are_passed_to_the_extra_ranks():
    argv = ["-m", "--config-name", "train", "model=dcgan,cdcgan", "-cd=/x", "seed=1", "--config-path", "p"]
    assert config_flags(argv) == ["--config-name", "train", "-cd=/x", "--config-path", "p"]


def test_rank_zero_from_the_environment(monkeypatch):
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert is_rank_zero()
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # local rank 0 of the second node
    assert not is_rank_zero()


@pytest.mark.slow
def test_ddp_multirun_two_cpu_processes_identical_replicas(run_cli, cli_env, tmp_path):
    """`trainer=ddp trainer.accelerator=cpu trainer.devices=2` for three families (R1 penalty on; ADA and
    LeCam too, whose statistics are all-reduced; the learning-rate decay, whose max_time reading rank 0
    broadcasts) in one multirun: each job has one run dir (children
    re-run their job, not the sweep), every parameter and buffer (ADA's p and sums, LeCam's anchors
    included) is identical on both ranks, ranks see different noise and batches, only rank 0 writes."""
    sweep = tmp_path / "sweep"
    env = {**cli_env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), cli_env.get("PYTHONPATH", "")])}
    result = run_cli("ganlab.train", "-m", *TINY, "model=dcgan,cdcgan,gan", "model.r1_gamma=1.0", "trainer=ddp",
                     "++model.diffaugment=mri", "++model.ada_target=0.6", "++model.ada_interval=2",
                     "++model.lecam_weight=0.1", "++model.lr_decay_start=0.25", "trainer.max_time=00:00:10:00",
                     "trainer.accelerator=cpu", "trainer.devices=2", "trainer.limit_train_batches=3", "logger=csv",
                     "metrics=none",
                     "+callbacks.digest._target_=ganlab.callbacks.state_digest.StateDigest",
                     "+callbacks.probe._target_=ddp_probe.RankProbe", f"hydra.sweep.dir={sweep}", env=env)
    assert_ok(result)
    assert "sync_batchnorm needs GPUs" in result.stderr  # trainer=ddp asks for it; CPU falls back
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in jobs] == ["0", "1", "2"]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()
    for job in jobs:
        digests = [json.loads((job / "state_digest" / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert len(digests[0]) > 10 and digests[0] == digests[1], job  # weights, BN statistics, EMA
        assert {"ada.p", "ada.stats", "lecam_anchors"} <= set(digests[0])
        probes = [json.loads((job / "probe" / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert [p["world_size"] for p in probes] == [2, 2] and probes[0]["strategy"] == "GANStrategy"
        assert probes[0]["noise_seed"] != probes[1]["noise_seed"]
        assert probes[0]["first_batch"] != probes[1]["first_batch"]
        assert (job / "train_ddp_process_1.log").exists() and (job / ".hydra").is_dir()
        assert (job / "checkpoints" / "last.ckpt").exists() and (job / "metrics.json").exists()
        assert len(list((job / "samples").glob("epoch_*.png"))) == 1  # rank 0 alone wrote the grid
        assert len(list((job / "csv").glob("version_*"))) == 1
    assert (sweep / "summary.md").exists()


@pytest.mark.slow
def test_two_processes_of_batch_b_step_like_one_process_of_batch_2b(cli_env, tmp_path):
    """Correct, not only consistent: one D+G step on 2 CPU processes x 4 images ends with the same G and D
    weights (float tolerance) as 1 process x 8 images, with the same images and per-sample noise
    (tests/ddp_equivalence.py). Plain SGD, whose step scales with the gradient, so an all-reduce that
    summed instead of averaging (or skipped a parameter) would be off by a whole update.

    BatchNorm: in train mode it normalises with the statistics of each process's own batch (sync_batchnorm
    is GPU-only), so 2 x B through BatchNorm equals 1 x 2B only with "ghost" BatchNorm over halves, not a
    plain 2B batch; the averaged running statistics match 1 x 2B's for the mean, not the variance. The
    comparison therefore uses D with spectral norm (ganlab's D drops BatchNorm then; its power-iteration
    vectors are compared too) and G with its BatchNorm layers replaced by identities."""
    env = {**cli_env, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), cli_env.get("PYTHONPATH", "")])}
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}.pt"
        result = subprocess.run([sys.executable, str(Path(__file__).parent / "ddp_equivalence.py"), str(processes),
                                 str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = torch.load(out, weights_only=True)
    one, two = runs[1], runs[2]
    assert (one["world_size"], two["world_size"]) == (1, 2) and one["global_step"] == two["global_step"] == 2
    assert torch.equal(torch.cat([v.flatten() for v in one["before"].values()]),
                       torch.cat([v.flatten() for v in two["before"].values()]))
    assert any(k.startswith("generator.") for k in one["after"]) and any(k.endswith("weight_u") for k in one["after"])
    for key, after in one["after"].items():
        update = (after - one["before"][key]).abs().max().item()
        gap = (two["after"][key] - after).abs().max().item()
        assert gap <= 1e-3 * update + 1e-9, f"{key}: 2 x B differs from 1 x 2B by {gap:.2e} (update {update:.2e})"
    moved = [(one["after"][k] - one["before"][k]).abs().max().item() > 0 for k in one["after"]
             if k.startswith("generator.")]
    assert all(moved)  # every G weight took a step


@pytest.mark.slow
def test_ddp_resume_continues_every_ranks_noise_bit_exactly(run_cli, tmp_path):
    """2 CPU processes, resumed with ckpt_path=last from the checkpoint that an uninterrupted run saved at
    the end of epoch 1, end bit-identical to that run: rank 1's latent noise stream is saved (gathered into
    the checkpoint) and restored, not reseeded (replicas average their gradients, so any rank's noise
    shows in the shared weights)."""
    from test_resume import differences

    common = [*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "logger=none", "metrics=none"]
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert_ok(run_cli("ganlab.train", *common, "trainer.max_epochs=2", "callbacks.checkpoint.keep_last=-1",
                      f"hydra.run.dir={reference}"))
    epoch_one = sorted((reference / "checkpoints").glob("epoch000-*.ckpt"))
    assert len(epoch_one) == 1
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(epoch_one[0], run / "checkpoints" / "last.ckpt")  # as if the run had been stopped there
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert len(first["noise_rng_states"]) == 2 and not torch.equal(*first["noise_rng_states"])
    assert_ok(run_cli("ganlab.train", *common, "trainer.max_epochs=2", "ckpt_path=last", f"hydra.run.dir={run}"))
    expected = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 2 * first["global_step"] > 0
    assert differences(expected["state_dict"], resumed["state_dict"], "state_dict") == []
    assert differences(expected["optimizer_states"], resumed["optimizer_states"], "optimizer_states") == []


def two_rank_digests(run_cli, cli_env, run: Path, *overrides: str) -> list[dict]:
    """A tiny training (TINY plus `overrides`) on two CPU processes with trainer=ddp into `run`; each rank's
    state digest (every parameter and buffer), rank 0's first."""
    assert_ok(run_cli("ganlab.train", *TINY, *overrides, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                      "trainer.limit_train_batches=3", "logger=none", "metrics=none",
                      "+callbacks.digest._target_=ganlab.callbacks.state_digest.StateDigest",
                      f"hydra.run.dir={run}", env=cli_env))
    return [json.loads((run / "state_digest" / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_ddp_adc_with_its_weight_at_zero_keeps_replicas_identical(run_cli, cli_env, tmp_path):
    """ADC-GAN under a conditioning transition that starts at weight 0: D's class head is in every step's graph
    (DDP reduces a gradient for each parameter), and both ranks end with the same weights, the head's included."""
    digests = two_rank_digests(run_cli, cli_env, tmp_path / "run", "model=cdcgan", "model.adc_weight=1",
                               "model.cond_start_kimg=0", "model.cond_end_kimg=1000")
    assert "discriminator.class_head.weight" in digests[0] and digests[0] == digests[1]


def test_ddp_rpgan_with_r1_and_r2_keeps_replicas_identical(run_cli, cli_env, tmp_path):
    """RpGAN's G step reads D's logits of the real batch (a forward without a graph) and R2 takes a second-order
    gradient at the fakes: under DDP both ranks still end with the same weights and statistics."""
    digests = two_rank_digests(run_cli, cli_env, tmp_path / "run", "model=cdcgan", "model/loss=rpgan",
                               "model.r1_gamma=0.2", "model.r2_gamma=0.2", "model.r1_interval=2")
    assert len(digests[0]) > 10 and digests[0] == digests[1]


@pytest.mark.slow
def test_ddp_apa_keeps_replicas_identical(run_cli, cli_env, tmp_path):
    """APA per class: each rank swaps its own images for its own G samples, but p and its sums are all-reduced, so
    both ranks end with the same p, weights and statistics (p rises within the 3 batches: ada_kimg tiny)."""
    run = tmp_path / "run"
    digests = two_rank_digests(run_cli, cli_env, run, "model=cdcgan", "model.apa_target=0.01", "model.ada_kimg=0.01",
                               "model.ada_interval=1")
    assert {"apa.p", "apa.stats"} <= set(digests[0]) and digests[0] == digests[1]
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["apa.p"].max() > 0  # G's images were swapped in on both ranks
