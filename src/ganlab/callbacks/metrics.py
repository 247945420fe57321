"""Sample-quality metrics during training: every `every_n_epochs` epochs and at the end of training.

The metric families are listed in conf/metrics/*.yaml (`metrics.families`) and run by a `MetricSuite`.
The metric networks (domain classifier, Inception) live in this callback's suite, never in the
LightningModule, so checkpoints stay free of them. Under DDP every process generates its share of
the N images and computes the same numbers from the gathered samples (torchmetrics state sync), so
no process waits on a rank-0-only computation. Rank 0 appends each evaluation to
`<run dir>/metrics_history.jsonl` (values, bootstrap CIs, sample sizes, seconds taken, and each
metric's panel / reference / headline, which the plots and the sweep summary read).

best.ckpt: a GAN does not settle. The quality ladder's runs moved FD/floor 2-5x between evaluations 10
epochs apart late in training, so the last state is one draw from that swing. After every evaluation where
`best_monitor` (lower is better) beats every earlier one, the run's state is saved as `best_checkpoint`
beside last.ckpt (StudioGAN and StyleGAN keep their best snapshot the same way). The best value so far is
part of the callback's state, so a resumed run keeps it. Off by default: chosen by the in-training FD (512
samples, one feature space) it was not better than last.ckpt when measured robustly (experiments/quality).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L

from ganlab.errors import GanlabError
from ganlab.metrics.report import to_log
from ganlab.metrics.suite import MetricSuite

log = logging.getLogger("ganlab.metrics")


class MetricsCallback(L.Callback):
    def __init__(self, every_n_epochs: int = 5, at_end: bool = True, history_file: str = "metrics_history.jsonl",
                 best_checkpoint: str | None = None, best_monitor: str = "metrics/fd_domain", **options):
        """every_n_epochs: evaluate after every k-th epoch (0: only at the end); best_checkpoint: file name of
        the state with the lowest `best_monitor` so far, in the run's checkpoint directory (null: none);
        `options`: MetricSuite's (families, spaces, n_samples, ...)."""
        if every_n_epochs < 0:
            raise GanlabError(f"metrics.every_n_epochs={every_n_epochs} must be >= 0")
        if best_checkpoint is not None and (not str(best_checkpoint).endswith(".ckpt") or "/" in str(best_checkpoint)
                                            or Path(str(best_checkpoint)).stem == "last"):
            raise GanlabError(f"metrics.best_checkpoint={best_checkpoint!r}: a file name ending in .ckpt, other than "
                              "last.ckpt (written into the run's checkpoint directory), or null")
        self.every_n_epochs, self.at_end, self.history_file = every_n_epochs, at_end, history_file
        self.best_checkpoint, self.best_monitor = best_checkpoint, best_monitor
        self.best: dict | None = None  # {"value", "step", "epoch"} of the state in best_checkpoint
        self.warned = False
        self.suite = MetricSuite(**options)
        self.history: list[dict] = []
        self.last_step: int | None = None
        self.seconds = 0.0  # time spent on metrics in this process (prepare + evaluations)

    def history_path(self, trainer: L.Trainer) -> Path:
        return Path(trainer.default_root_dir) / self.history_file

    def write(self, trainer: L.Trainer, record: dict) -> None:
        if trainer.is_global_zero:
            path = self.history_path(trainer)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        if self.suite.prepared:
            return
        dm = trainer.datamodule
        datasets = getattr(dm, "datasets", None) or {}
        if "train" not in datasets:
            raise GanlabError("metrics need a ganlab datamodule with a 'train' split; use metrics=none otherwise")
        train = datasets["train"]
        holdout = datasets.get("test") or datasets.get("val")
        start = time.perf_counter()
        self.suite.prepare(train.images, train.labels, list(dm.class_names),
                           holdout=(holdout.images, holdout.labels) if holdout is not None and len(holdout) else None,
                           device=pl_module.device, rank=trainer.global_rank, world=trainer.world_size,
                           broadcast=lambda obj: trainer.strategy.broadcast(obj, src=0), generator=pl_module)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.write(trainer, {"event": "prepare", "seconds": round(seconds, 3), "settings": self.suite.settings})
        if trainer.is_global_zero:
            log.info("metrics: real side prepared in %.1f s; evaluating %d generated images every %s epoch(s)%s",
                     seconds, self.suite.n_samples, self.every_n_epochs or "-",
                     " and at the end" if self.at_end else "")

    def evaluate(self, trainer: L.Trainer, pl_module) -> dict[str, float]:
        start = time.perf_counter()
        results = self.suite.evaluate(pl_module)
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.last_step = trainer.global_step
        values = to_log(results)
        values["metrics/eval_seconds"] = seconds
        record = {"event": "evaluation", "epoch": trainer.current_epoch, "step": trainer.global_step,
                  "seconds": round(seconds, 3), "metrics": {r.name: r.record() for r in results}}
        self.history.append(record)
        self.write(trainer, record)
        return values

    def is_last_epoch(self, trainer: L.Trainer) -> bool:
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs:
            return True
        if trainer.max_steps is not None and trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return True
        return bool(trainer.should_stop)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        due = self.every_n_epochs > 0 and epoch % self.every_n_epochs == 0
        if not (due or (self.at_end and self.is_last_epoch(trainer))):
            return
        values = self.evaluate(trainer, pl_module)
        # identical on every process already; sync_dist only keeps Lightning's DDP bookkeeping quiet
        pl_module.log_dict(values, on_step=False, on_epoch=True, sync_dist=trainer.world_size > 1)
        self.keep_best(trainer, values)

    def best_path(self, trainer: L.Trainer) -> Path:
        """best_checkpoint in the directory of the run's checkpoint callback (else <run dir>/checkpoints)."""
        dirpath = next((cb.dirpath for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)), None)
        return Path(dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.best_checkpoint

    def keep_best(self, trainer: L.Trainer, values: dict[str, float]) -> None:
        """Save the run's state as best_checkpoint when this evaluation's best_monitor beats every earlier one
        (every process takes part in the save, as in any Lightning checkpoint; the values are the same on all)."""
        if not self.best_checkpoint:
            return
        value = values.get(self.best_monitor)
        if value is None:
            if not self.warned and trainer.is_global_zero:
                log.warning("metrics.best_monitor=%s is not among this run's metrics: no %s is kept",
                            self.best_monitor, self.best_checkpoint)
            self.warned = True
            return
        if self.best is not None and value >= self.best["value"]:
            return
        self.best = {"value": value, "step": trainer.global_step, "epoch": trainer.current_epoch}
        path = self.best_path(trainer)
        trainer.save_checkpoint(path, weights_only=False)
        if trainer.is_global_zero:
            log.info("metrics: %s %.4g is the lowest so far: saved %s", self.best_monitor, value, path)

    def state_dict(self) -> dict:
        return {"best": self.best} if self.best_checkpoint else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        # training stopped between epochs (max_steps mid-epoch, interruption by a limit): evaluate once more
        if not self.at_end or not self.suite.prepared or self.last_step == trainer.global_step:
            return
        values = self.evaluate(trainer, pl_module)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
                logger.save()
        self.keep_best(trainer, values)
