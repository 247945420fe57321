"""Sample-quality metrics during training: every `every_n_epochs` epochs and at the end of training.

The metric families are listed in conf/metrics/*.yaml (`metrics.families`) and run by a `MetricSuite`.
The metric networks (domain classifier, Inception) live in this callback's suite, never in the
LightningModule, so checkpoints stay free of them. Under DDP every process generates its share of
the N images and computes the same numbers from the gathered samples (torchmetrics state sync), so
no process waits on a rank-0-only computation. Rank 0 appends each evaluation to
`<run dir>/metrics_history.jsonl` (values, bootstrap CIs, sample sizes, seconds taken, and each
metric's panel / reference / headline, which the plots and the sweep summary read).
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
                 **options):
        """every_n_epochs: evaluate after every k-th epoch (0: only at the end); `options`: MetricSuite's
        (families, spaces, n_samples, ...)."""
        if every_n_epochs < 0:
            raise GanlabError(f"metrics.every_n_epochs={every_n_epochs} must be >= 0")
        self.every_n_epochs, self.at_end, self.history_file = every_n_epochs, at_end, history_file
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

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        # training stopped between epochs (max_steps mid-epoch, interruption by a limit): evaluate once more
        if not self.at_end or not self.suite.prepared or self.last_step == trainer.global_step:
            return
        values = self.evaluate(trainer, pl_module)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
                logger.save()
