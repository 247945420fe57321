"""Reproducible randomness without RNG state in checkpoints (conf/callbacks/default.yaml: `rng`).

The global RNGs (torch CPU/CUDA, numpy, random) are re-seeded from (seed, rank, optimiser step)
before every batch (DiffAugment and anything else drawing in a step) and where an epoch's data
iterator is made (the DataLoader's shuffle order). A run resumed from an epoch-end checkpoint thus
draws exactly what the uninterrupted run drew, whatever other callbacks consumed in between.
The seed is the run's (seed_everything) and is saved in the checkpoint, so a resumed run keeps it.
(The latent noise has its own generator, saved by GANModule.)
"""
from __future__ import annotations

import os
import random

import lightning as L
import numpy as np
import torch

_M64 = (1 << 64) - 1
DATA_STREAM, BATCH_STREAM = 1, 2


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integers, e.g. (seed, rank, step, stream)."""
    h = 0
    for key in keys:
        h = _splitmix64(h ^ (int(key) & _M64))
    return h >> 1


def seed_global_rngs(seed: int) -> None:
    torch.default_generator.manual_seed(seed)  # torch.manual_seed costs ~0.25 ms; this ~1 us
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class ReseedRNG(L.Callback):
    def __init__(self):
        self.rng_seed = 0
        self._resume_step = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the run's seed (seed_everything); a resumed run takes its checkpoint's (load_state_dict, later)
        self.rng_seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def reseed(self, trainer: L.Trainer, step: int, stream: int) -> None:
        seed_global_rngs(derive_seed(self.rng_seed, trainer.global_rank, step, stream))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the first epoch's data iterator is made right after this hook (the loop counters of a
        # resumed run are not restored yet, hence the step read from its checkpoint)
        self.reseed(trainer, self._resume_step, DATA_STREAM)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(trainer, trainer.global_step, DATA_STREAM)  # later epochs' iterators: right after this

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.reseed(trainer, trainer.global_step, BATCH_STREAM)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resume_step = int(checkpoint.get("global_step", 0))
        # checkpoints written before this callback existed kept the seed in ResumableCheckpoint's state
        legacy = [s["rng_seed"] for k, s in checkpoint.get("callbacks", {}).items()
                  if str(k).startswith("ResumableCheckpoint") and isinstance(s, dict) and "rng_seed" in s]
        if legacy:
            self.rng_seed = int(legacy[0])

    def state_dict(self) -> dict:
        return {"rng_seed": self.rng_seed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rng_seed = int(state_dict.get("rng_seed", self.rng_seed))
