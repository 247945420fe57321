"""Training speed in every run: `perf/images_per_sec` (real images through D per second, all
processes together) and `perf/sec_per_kimg` (seconds per 1000 of them, the StyleGAN unit), logged
at the trainer's log cadence, plus `perf/images_per_sec_mean` over the run at the end.

Wall-clock time between log points, read on the host only: no device synchronisation, no `.item()`.
On a GPU the host runs a few steps ahead of the device, so one window can be off by a step; the
steady-state rate over many steps is exact. The first window of each fit (warm-up: cuDNN autotuning,
torch.compile, allocator growth) is logged but left out of the run mean; epoch-end work (sample
grids, metrics, checkpoints) falls between windows and is not counted.
"""
from __future__ import annotations

import time

import lightning as L
import torch

PREFIX = "perf/"


class Throughput(L.Callback):
    def __init__(self, every_n_batches: int | None = None):
        self.every_n_batches = every_n_batches  # None: the trainer's log_every_n_steps
        self._mark: float | None = None
        self._images = 0
        self._windows = 0
        self._steady_images = 0
        self._steady_seconds = 0.0
        # batches trained so far in the run (a resumed run restores it): the step axis Lightning logs at
        self._batches = 0

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self._windows, self._steady_images, self._steady_seconds = 0, 0, 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self._mark, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._images += batch_size(batch) * trainer.world_size
        every = self.every_n_batches or max(trainer.log_every_n_steps, 1)
        step, self._batches = self._batches, self._batches + 1  # Lightning logs this batch at `step`
        if (step + 1) % every or self._mark is None:
            return
        now = time.perf_counter()
        seconds, images = now - self._mark, self._images
        self._mark, self._images = now, 0
        if seconds <= 0 or images == 0:
            return
        self._windows += 1
        if self._windows > 1:
            self._steady_images += images
            self._steady_seconds += seconds
        self.publish(trainer, step, {f"{PREFIX}images_per_sec": images / seconds,
                                     f"{PREFIX}sec_per_kimg": 1000.0 * seconds / images})

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if self._steady_seconds > 0:
            self.publish(trainer, self._batches, {f"{PREFIX}images_per_sec_mean":
                                                  self._steady_images / self._steady_seconds})

    def state_dict(self) -> dict:
        return {"batches": self._batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self._batches = int(state_dict.get("batches", 0))

    @staticmethod
    def publish(trainer: L.Trainer, step: int, values: dict[str, float]) -> None:
        """To the loggers (rank 0) at Lightning's own step axis, and to callback_metrics (host tensors)."""
        for key, value in values.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=step)


def batch_size(batch) -> int:
    """Images in a batch: (images, labels) tuples, dicts with "image(s)", or a bare tensor."""
    if isinstance(batch, dict):
        batch = batch.get("images", batch.get("image"))
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) else 0
