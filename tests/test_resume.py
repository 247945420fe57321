"""True resume: a run SIGKILLed after an epoch and resumed with ckpt_path=last ends bit-identical to an
uninterrupted one (G, D, EMA, both optimisers, counters), logging into the same W&B run."""
from __future__ import annotations

import os
import random
import signal
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import ModelCheckpoint

import ganlab.config  # noqa: F401  (registers resolvers)
from conftest import REPO, TINY, assert_ok, signal_when
from ganlab.callbacks.checkpoint import ResumableCheckpoint, find_last_checkpoint
from ganlab.callbacks.reseed import ReseedRNG, derive_seed
from ganlab.checkpoint import check_same_data, check_same_model
from ganlab.config import to_plain
from ganlab.errors import GanlabError
from ganlab.training import resolve_resume

# `python -m ganlab.train` with every batch slowed down, so a test can kill it at a chosen moment.
SLOW_TRAIN = """
import os, time
from ganlab.models.gan_module import GANModule
_delay, _hook = float(os.environ["GANLAB_TEST_BATCH_DELAY"]), GANModule.on_train_batch_end
def _slow(self, *args, **kwargs):
    time.sleep(_delay)
    return _hook(self, *args, **kwargs)
GANModule.on_train_batch_end = _slow
import runpy
runpy.run_module("ganlab.train", run_name="__main__", alter_sys=True)
"""


def differences(a, b, path: str = "") -> list[str]:
    """Paths at which two checkpoint trees differ (tensors compared exactly, dtype and shape included)."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{path} (keys)"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return [f"{path} (length)"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["shuffle", "balanced"])
def test_sigkill_after_an_epoch_then_resume_is_bit_identical(sampling, run_cli, start_cli, cli_env, tmp_path):
    common = [*TINY, "trainer.max_epochs=3", "trainer.deterministic=true",
              f"data.balanced_sampling={sampling == 'balanced'}"]
    steps_per_epoch = 3 * 2  # limit_train_batches=3, one D and one G step per batch

    reference = tmp_path / "reference"
    assert_ok(run_cli("ganlab.train", *common, "logger=none", f"hydra.run.dir={reference}"))

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = start_cli(["-c", SLOW_TRAIN, *common, f"hydra.run.dir={run_dir}"],
                     {**cli_env, "GANLAB_TEST_BATCH_DELAY": "0.4"}, tmp_path / "killed.log")
    signal_when(proc, last.exists, "the first epoch's last.ckpt", signal.SIGKILL, tmp_path / "killed.log")
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert torch.load(last, weights_only=True)["global_step"] == steps_per_epoch  # killed inside epoch 2

    result = run_cli("ganlab.train", *common, f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert_ok(result)
    assert "resuming from" in result.stdout + result.stderr

    expected = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == expected["global_step"] == 3 * steps_per_epoch
    assert resumed["epoch"] == expected["epoch"]
    prefixes = {k.split(".")[0] for k in expected["state_dict"]}
    assert {"generator", "discriminator", "generator_ema"} <= prefixes
    assert len(expected["optimizer_states"]) == 2 and all(o["state"] for o in expected["optimizer_states"])
    assert differences(expected["state_dict"], resumed["state_dict"], "state_dict") == []
    assert differences(expected["optimizer_states"], resumed["optimizer_states"], "optimizer_states") == []

    # W&B (offline here): the resumed process logged into the interrupted run's id
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    assert {r.name.rsplit("-", 1)[1] for r in runs} == {resumed["wandb_run_id"]}


def test_ckpt_path_last_without_a_checkpoint_starts_fresh(tmp_path):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["ckpt_path=last"])
    callbacks = [ModelCheckpoint(dirpath=tmp_path / "checkpoints")]
    assert resolve_resume(cfg, callbacks) == (None, None)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "epoch000-step000006.ckpt").write_bytes(b"x")
    cfg.ckpt_path = None  # a fresh start must not overwrite another run's checkpoints
    with pytest.raises(GanlabError, match="already holds checkpoints.*ckpt_path=last"):
        resolve_resume(cfg, callbacks)


def test_find_last_checkpoint_takes_the_newest(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    old, new = a / "last.ckpt", b / "last-v1.ckpt"
    old.write_bytes(b"1"), new.write_bytes(b"2"), (b / ".last.ckpt.123.tmp").write_bytes(b"3")
    os.utime(old, (1, 1))
    assert find_last_checkpoint([a, b]) == new
    assert find_last_checkpoint([tmp_path / "missing"]) is None


def test_reseeding_makes_a_batch_draw_what_its_seed_rank_and_step_say():
    cb, trainer = ReseedRNG(), SimpleNamespace(global_rank=0, global_step=7)
    cb.rng_seed = 42
    draws = []
    for _ in range(2):
        cb.on_train_batch_start(trainer, None, None, 0)
        draws.append((torch.rand(3), np.random.rand(), random.random()))
        torch.rand(5)  # whatever else draws before the next batch does not matter
    assert torch.equal(draws[0][0], draws[1][0]) and draws[0][1:] == draws[1][1:]
    trainer.global_step = 8
    cb.on_train_batch_start(trainer, None, None, 0)
    assert not torch.equal(torch.rand(3), draws[0][0])


def test_a_checkpoint_from_before_the_rng_callback_keeps_its_seed():
    cb = ReseedRNG()
    cb.on_load_checkpoint(None, None, {"global_step": 12, "callbacks": {
        "ResumableCheckpoint{'monitor': 'step'}": {"rng_seed": 5, "best_model_path": ""}}})
    assert (cb.rng_seed, cb._resume_step) == (5, 12)
    cb.load_state_dict(cb.state_dict())
    assert cb.rng_seed == 5


def test_derived_seeds_differ_by_rank_step_and_stream():
    seeds = {derive_seed(42, rank, step, stream) for rank in range(4) for step in range(500) for stream in (1, 2)}
    assert len(seeds) == 4 * 500 * 2
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(42, 0, 7, 1) == derive_seed(42, 0, 7, 1) != derive_seed(43, 0, 7, 1)


@pytest.mark.parametrize("keep_last,top_k,monitor", [(0, 0, None), (-1, -1, None), (3, 3, "step")])
def test_keep_last_maps_to_newest_k(keep_last, top_k, monitor):
    cb = ResumableCheckpoint(keep_last=keep_last)
    assert (cb.save_top_k, cb.monitor) == (top_k, monitor)
    if monitor:
        assert cb.mode == "max"


def test_keep_last_rejects_nonsense():
    with pytest.raises(ValueError, match="keep_last"):
        ResumableCheckpoint(keep_last=-2)



def test_resume_refuses_other_model_settings():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        saved = compose("train", overrides=["model.generator.width=8", "data.image_size=32"])
        wider = compose("train", overrides=["model.generator.width=16", "data.image_size=32"])
        cdcgan = compose("train", overrides=["model=cdcgan", "data.image_size=32"])
    ckpt = {"ganlab": {"model": to_plain(saved.model)}}
    check_same_model(ckpt, to_plain(saved.model), "x.ckpt")  # the same settings resume
    with pytest.raises(GanlabError, match=r"other model settings \(model.generator.width: 8 -> 16\)"):
        check_same_model(ckpt, to_plain(wider.model), "x.ckpt")
    with pytest.raises(GanlabError, match="holds a dcgan model but this run builds cdcgan"):
        check_same_model(ckpt, to_plain(cdcgan.model), "x.ckpt")



def test_resume_refuses_other_data():
    facts = {"class_names": ["a", "b"], "image_size": 32, "channels": 1, "class_counts": {"a": 20, "b": 20}}
    ckpt = {"ganlab": {"data": facts}}
    check_same_data(ckpt, dict(facts), "x.ckpt")
    with pytest.raises(GanlabError, match=r"x.ckpt was trained on other data \(class_counts: \{'a': 20, 'b': 20\} -> "
                                          r"\{'a': 30, 'b': 20\}\)"):
        check_same_data(ckpt, {**facts, "class_counts": {"a": 30, "b": 20}}, "x.ckpt")
    check_same_data({"ganlab": {}}, facts, "old.ckpt")  # a checkpoint without data facts: nothing to compare


def test_resume_accepts_a_recipe_written_before_an_option_existed():
    """A checkpoint from before an option was added lacks its key: resuming at the option's default
    (the behaviour the old run had) is accepted, any other value is a change."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        now = to_plain(compose("train", overrides=["model=cdcgan", "data.image_size=32"]).model)
        lecam = to_plain(compose("train", overrides=["model=cdcgan", "data.image_size=32",
                                                     "model.lecam_weight=0.3"]).model)
    old = {k: v for k, v in now.items() if k not in ("lecam_weight", "ada_kimg")}
    old["generator"] = {k: v for k, v in now["generator"].items() if k != "ordinal"}
    check_same_model({"ganlab": {"model": old}}, now, "old.ckpt")
    with pytest.raises(GanlabError, match=r"model.lecam_weight: None -> 0.3"):
        check_same_model({"ganlab": {"model": old}}, lecam, "old.ckpt")

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_last_ckpt_and_the_run_continues_from_it(signum, run_cli, start_cli, cli_env, tmp_path):
    """Pre-emption: a real signal to a real `python -m ganlab.train` mid-run: the batch in flight
    finishes, last.ckpt is saved at that step (not the epoch-end one), the exit status is 128 + signal,
    and `ckpt_path=last` continues from the saved step to the planned end."""
    common = [*TINY, "trainer.max_epochs=3", "logger=none", "metrics=none"]
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = start_cli(["-c", SLOW_TRAIN, *common, f"hydra.run.dir={run_dir}"],
                     {**cli_env, "GANLAB_TEST_BATCH_DELAY": "0.4"}, tmp_path / "signalled.log")
    # inside epoch 2 (each of its batches takes >= 0.4 s)
    signal_when(proc, last.exists, "the first epoch's last.ckpt", signum, tmp_path / "signalled.log")
    output = (tmp_path / "signalled.log").read_text()
    assert proc.returncode == 128 + signum, output[-3000:]
    saved = torch.load(last, weights_only=True)["global_step"]
    assert 6 < saved < 18 and saved % 2 == 0, saved  # mid-run, after whole D+G steps
    assert f"stopped by {signal.Signals(signum).name} at step {saved}: saved {last}" in output
    assert "Traceback" not in output and not list(last.parent.glob(".*.tmp"))

    result = run_cli("ganlab.train", *common, f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert_ok(result)
    assert f"resuming from {last} (epoch 1, step {saved})" in result.stdout + result.stderr
    assert torch.load(last, weights_only=True)["global_step"] == 18


def test_submitits_requeue_signal_saves_then_hands_over(tmp_path):
    """Under hydra/launcher=slurm, submitit handles SIGUSR2 (pre-emption or time limit) by requeueing the
    job and exiting; ganlab first finishes the batch and saves last.ckpt, then calls submitit's handler."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException
    from test_models import make_module, tiny_loader

    handed_over = []

    def submitit_handler(signum, frame):
        handed_over.append(torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"])

    class Preempt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 1:
                os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        checkpoint = ResumableCheckpoint(dirpath=tmp_path, save_last=True, keep_last=0)
        trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                            accelerator="cpu", callbacks=[checkpoint, Preempt()])
        with pytest.raises(SIGTERMException) as info:
            trainer.fit(make_module("dcgan"), tiny_loader(n=32))
        assert info.value.code == 128 + signal.SIGUSR2
        assert handed_over == [4]  # batch 1 (steps 2, 3) finished before the save
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # restored after fit
        assert signal.getsignal(signal.SIGINT) != checkpoint._request_stop
    finally:
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.slow
def test_ctrl_c_before_training_is_one_line_and_leaves_no_run_dir(start_cli, cli_env, tmp_path):
    """SIGINT while the embedded data is still being rendered (before training's own handler is in place):
    one error line, exit 130, no traceback, and neither a run dir nor a half-rendered dataset left."""
    run_dir, log, data = tmp_path / "run", tmp_path / "interrupted.log", tmp_path / "fresh_data"
    proc = start_cli(["-m", "ganlab.train", "data.per_class=3000", "logger=none", f"hydra.run.dir={run_dir}"],
                     {**cli_env, "GANLAB_DATA_DIR": str(data)}, log)
    signal_when(proc, lambda: log.is_file() and "Seed set to" in log.read_text(), "the start of the run",
                signal.SIGINT, log)
    output = log.read_text()
    assert proc.returncode == 130, output[-3000:]
    assert "Traceback" not in output and output.strip().splitlines()[-1] == \
        "error: interrupted (Ctrl-C); nothing was finished"
    assert not run_dir.exists()
    assert not [p for p in data.rglob("*.png")], "a half-rendered dataset was left"
