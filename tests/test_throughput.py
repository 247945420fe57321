"""Speed: throughput logging, no host syncs in the training step, the sync-free EMA update, and the
GPU fast path (channels_last, compiled networks, data on the device) exercised on CPU."""
from __future__ import annotations

import collections
import csv
import json
import math
import subprocess
import sys
import traceback

import lightning as L
import pytest
import torch

from conftest import REPO
from ganlab.callbacks.throughput import Throughput
from ganlab.data.folder import ImageFolderDataModule, UInt8ImageDataset
from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganlab.models.ema import make_ema
from ganlab.models.gan_module import GANModule
from ganlab.strategy import DeviceBatches, GANStrategy

SYNCS = ("item", "__bool__", "tolist", "__int__", "__float__", "__index__", "numpy", "cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(batches: int = 6):
    torch.manual_seed(0)
    model = GANModule(DCGANGenerator(image_size=32, width=8), DCGANDiscriminator(image_size=32, width=8),
                      diffaugment="translation")
    data = ImageFolderDataModule(root="(in memory)", image_size=32, batch_size=8)
    images = torch.randint(0, 256, (8 * batches, 1, 32, 32), dtype=torch.uint8)
    labels = torch.zeros(len(images), dtype=torch.long)
    data.datasets, data.class_names = {"train": UInt8ImageDataset(images, labels)}, ["a"]
    return model, data


def fit(model, data, batches: int, callbacks=(), strategy=None, **kwargs):
    trainer = L.Trainer(strategy=strategy or GANStrategy(), accelerator="cpu", devices=1, max_epochs=1,
                        limit_train_batches=batches, callbacks=list(callbacks), enable_model_summary=False,
                        **{"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, **kwargs})
    trainer.fit(model, datamodule=data)
    return trainer


def count_host_syncs(monkeypatch) -> tuple[collections.Counter, list[bool]]:
    """Counts of .item()/bool()/.cpu()/... on tensors while `active[0]` is true (Adam's step counter,
    which lives on the host even for CUDA parameters, excepted)."""
    calls, active = collections.Counter(), [False]

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if active[0]:
                caller = traceback.extract_stack(limit=2)[0].filename
                if not caller.endswith(("torch/optim/adam.py", "torch/optim/optimizer.py")):
                    calls[f"{name} in {caller}"] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name in SYNCS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    return calls, active


class SyncWindow(L.Callback):
    """Counting on from the first callback's on_train_batch_start of batches 1-4 to the module's own
    on_train_batch_end, which runs after every callback's: the whole step and every callback hook."""

    def __init__(self, model, active):
        self.active = active
        hook = model.on_train_batch_end

        def end(*args, **kwargs):
            hook(*args, **kwargs)
            active[0] = False
        model.on_train_batch_end = end

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.active[0] = 1 <= batch_idx < 5


def test_training_steps_do_not_sync_with_the_host(monkeypatch):
    """Between log points a batch reads nothing back from the device (on CPU: no .item()/bool()/...
    on a tensor)."""
    calls, active = count_host_syncs(monkeypatch)
    model, data = tiny(8)
    fit(model, data, 6, [SyncWindow(model, active), Throughput()], log_every_n_steps=50)
    assert not calls, dict(calls)


def test_the_default_callbacks_do_not_sync_with_the_host_between_log_points(monkeypatch, tmp_path):
    """The callbacks train.py builds from conf/callbacks/default.yaml (checkpoints, samples, plots, RNG
    reseeding), plus the recipe, throughput and the progress bar; the plots still hold every step once
    the epoch is over. (The metrics callback does its work at epoch ends.)"""
    from hydra import compose, initialize_config_dir

    from ganlab.callbacks.plots import TrainingPlots
    from ganlab.callbacks.recipe import Recipe
    from ganlab.config import to_plain
    from ganlab.training import build_callbacks

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.output_dir={tmp_path}"])
    defaults = build_callbacks(cfg) + [Recipe(to_plain(cfg.model)), Throughput()]
    calls, active = count_host_syncs(monkeypatch)
    model, data = tiny(8)
    fit(model, data, 6, [SyncWindow(model, active), *defaults], log_every_n_steps=50,
        default_root_dir=tmp_path, enable_checkpointing=True, enable_progress_bar=True)
    assert not calls, dict(calls)
    plots = next(cb for cb in defaults if isinstance(cb, TrainingPlots))
    assert [step for step, _ in plots.series["train/loss_d"]] == [2, 4, 6, 8, 10, 12]
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and (tmp_path / "plots" / "losses.png").is_file()


def test_ema_update_equals_averaged_model_update():
    torch.manual_seed(0)
    model, _ = tiny()
    reference = make_ema(model.generator, 0.9)
    for step in range(4):
        with torch.no_grad():
            for p in [*model.generator.parameters(), *model.generator.buffers()]:
                p.add_(torch.randn_like(p.float()).to(p.dtype) if p.is_floating_point() else 1)
        model.update_ema()
        reference.update_parameters(model.generator)
        model.generator_ema.multi_avg_fn = reference.multi_avg_fn  # same decay for both
        for a, b in zip(model.generator_ema.state_dict().values(), reference.state_dict().values()):
            assert torch.equal(a, b), step


def test_throughput_is_logged_at_the_log_cadence(tmp_path):
    model, data = tiny(8)
    logger = L.pytorch.loggers.CSVLogger(tmp_path)
    trainer = fit(model, data, 8, [Throughput()], logger=logger, log_every_n_steps=2)
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    perf = [r for r in rows if r.get("perf/images_per_sec")]
    assert [int(r["step"]) for r in perf] == [1, 3, 5, 7]  # every 2nd batch, Lightning's step axis
    losses = {int(r["step"]) for r in rows if r.get("train/loss_d")}
    assert {1, 3, 5, 7} <= losses  # the same steps Lightning logs the losses at
    for r in perf:
        rate, per_kimg = float(r["perf/images_per_sec"]), float(r["perf/sec_per_kimg"])
        assert rate > 0 and math.isclose(rate * per_kimg, 1000.0, rel_tol=1e-6)
    assert float(trainer.callback_metrics["perf/images_per_sec_mean"]) > 0


def test_fast_path_switches_work_on_cpu():
    seen = {}

    class Inspect(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["loader"] = trainer.fit_loop._combined_loader.flattened[0]
            seen["nets"] = pl_module._train_nets
            seen["format"] = pl_module.generator.to_image[0].weight.is_contiguous(memory_format=torch.channels_last)
            seen["batch"] = batch[0]

    model, data = tiny()
    keys = set(model.state_dict())
    strategy = GANStrategy(channels_last=True, data_on_device=True, compile={"backend": "eager"})
    fit(model, data, 3, [Inspect()], strategy=strategy)
    assert isinstance(seen["loader"], DeviceBatches) and seen["batch"].shape == (8, 1, 32, 32)
    assert all(type(n).__name__ == "OptimizedModule" for n in seen["nets"]) and seen["format"]
    assert model._train_nets == (model.generator, model.discriminator)  # reset at teardown
    assert set(model.state_dict()) == keys  # compiled wrappers never enter the checkpoint


@pytest.mark.slow
def test_bench_runs_and_reports_a_ratio(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_throughput.py"), "--size", "32",
                             "--width", "8", "--batch", "8", "--warmup", "1", "--steps", "2", "--repeats", "1",
                             "--threads", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "bench_throughput_cpu.json").read_text())
    assert set(summary["median"]) == {"plain", "ganlab"} and summary["ratio_vs_plain"]["ganlab"] > 0
    assert summary["cpu_time_ratio_vs_plain"]["ganlab"] > 0 and summary["median"]["ganlab"]["threads"] == 1
    assert "| ganlab |" in (tmp_path / "bench_throughput_cpu.md").read_text()
    callbacks = set(summary["ganlab_callbacks"].split(", "))  # those of a normal run
    assert {"MetricsCallback", "ResumableCheckpoint", "SampleGrid", "TrainingPlots", "ReseedRNG", "Recipe",
            "Throughput"} <= callbacks and any(c.endswith("ProgressBar") for c in callbacks)


def test_data_on_device_yields_the_loaders_batches_and_reshuffles_each_epoch():
    firsts = {False: [], True: []}

    class First(L.Callback):
        def __init__(self, key):
            self.key = key

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 0:
                firsts[self.key].append(batch[0].clone())

    for on_device in (False, True):
        model, data = tiny(4)
        L.Trainer(strategy=GANStrategy(data_on_device=on_device), accelerator="cpu", devices=1, max_epochs=2,
                  callbacks=[First(on_device)], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False).fit(model, datamodule=data)
    assert all(torch.equal(a, b) for a, b in zip(firsts[False], firsts[True])) and len(firsts[True]) == 2
    assert not torch.equal(*firsts[True])  # the sampler's epoch is set through the wrapper
