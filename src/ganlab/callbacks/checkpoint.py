"""Checkpoints a pre-empted run resumes from without losing anything (see conf/callbacks/default.yaml).

- Atomic writes: every checkpoint the Trainer writes goes to a hidden temporary file in the same
  directory, is fsync'ed, then renamed over the target (os.replace), so a kill during a save leaves
  the previous file intact. (Lightning's own save writes to $TMPDIR and moves the file, which is a
  plain copy when $TMPDIR is another file system, e.g. a node-local /tmp, and never fsyncs.)
  Temporaries a kill left behind are removed at the next start.
- Bounded disk: each callback keeps its newest `keep_last` checkpoints, plus last.ckpt.
- `last.ckpt` is written at epoch ends (and at the end of training): `ckpt_path=last` resumes from
  it bit-exactly.
- Pre-emption: SIGTERM or SIGINT lets the batch in flight finish, then last.ckpt is saved (atomically)
  and the process exits with status 128 + signal; `ckpt_path=last` continues from that step (the
  rest of the interrupted epoch is drawn afresh, like a step checkpoint). A second Ctrl-C stops at once.
  Under submitit (hydra/launcher=slurm), its pre-emption/timeout signal (USR2) does the same, then
  hands over to submitit, which requeues the job. Step checkpoints (`every_n_train_steps`) are separate files; resuming from one
  restores every state, but the rest of that epoch is drawn afresh (Lightning cannot restore a plain
  DataLoader's position), so it is not bit-exact.
- The W&B run id goes into every checkpoint, so a resumed run logs into the same W&B run.
- Reproducible randomness: the global RNGs (torch CPU/CUDA, numpy, random) are re-seeded from
  (seed, rank, optimiser step) before every batch (DiffAugment and anything else drawing in a step)
  and where an epoch's data iterator is made (the DataLoader's shuffle order). A resumed run thus
  draws exactly what the uninterrupted run drew, with no RNG state in the checkpoint, whatever other
  callbacks consumed in between. The first ResumableCheckpoint of the Trainer drives this.
  (The latent noise has its own generator, saved by GANModule.)
"""
from __future__ import annotations

import logging
import os
import random
import signal
import threading
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("ganlab.train")
TMP_SUFFIX = ".tmp"



def stop_signals() -> list[int]:
    """SIGTERM and SIGINT, plus submitit's pre-emption/timeout signal (SIGUSR2, or $SUBMITIT_PREEMPT_SIGNAL)
    when submitit handles it in this process (a hydra/launcher=slurm job): that handler requeues the job."""
    found = [signal.SIGTERM, signal.SIGINT]
    requeue = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if requeue is not None and requeue not in found and callable(signal.getsignal(requeue)):
        found.append(requeue)
    return found
WANDB_ID_KEY = "wandb_run_id"
_M64 = (1 << 64) - 1
_DATA_STREAM, _BATCH_STREAM = 1, 2


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


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj, path: str | Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def remove_stale_temporaries(dirpath: str | Path) -> list[Path]:
    """Delete the temporaries of saves that a kill interrupted."""
    dirpath = Path(dirpath)
    stale = sorted(dirpath.glob(f".*.ckpt.*{TMP_SUFFIX}")) if dirpath.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are atomic; remote URLs keep Lightning's behaviour."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)


def find_last_checkpoint(dirpaths) -> Path | None:
    """The newest last*.ckpt in the given directories (what `ckpt_path=last` resumes), else None."""
    found = [p for d in dirpaths if d and Path(d).is_dir() for p in Path(d).glob("last*.ckpt")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


class ResumableCheckpoint(ModelCheckpoint):
    """ModelCheckpoint with atomic writes, keep-last-K retention and a final save at the end of training.

    keep_last: how many of this callback's own checkpoints to keep (newest first; 0: none besides
    last.ckpt, -1: all). Other arguments are ModelCheckpoint's.
    """

    def __init__(self, keep_last: int = 2, **kwargs):
        if not isinstance(keep_last, int) or keep_last < -1:
            raise ValueError(f"keep_last={keep_last!r}: expected -1 (all), 0 or a positive count")
        if keep_last not in (0, -1):
            kwargs.update(monitor="step", mode="max")  # the top-k by step are the newest k
        kwargs.setdefault("enable_version_counter", False)  # one last.ckpt, replaced in place
        super().__init__(save_top_k=keep_last, **kwargs)
        self.keep_last = keep_last
        self.rng_seed = 0
        self._resume_step = 0
        self._stop_signal: int | None = None
        self._previous_handlers: dict = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # the run's seed (seed_everything); a resumed run takes its checkpoint's (load_state_dict, later)
        self.rng_seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero and self.dirpath:
            remove_stale_temporaries(self.dirpath)

    # ------------------------------------------------------------ reproducible randomness
    def is_driver(self, trainer: L.Trainer) -> bool:
        return next(cb for cb in trainer.callbacks if isinstance(cb, ResumableCheckpoint)) is self

    def reseed(self, trainer: L.Trainer, step: int, stream: int) -> None:
        if self.is_driver(trainer):
            seed_global_rngs(derive_seed(self.rng_seed, trainer.global_rank, step, stream))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the first epoch's data iterator is made right after this hook (the loop counters of a
        # resumed run are not restored yet, hence the step read from its checkpoint)
        self.reseed(trainer, self._resume_step, _DATA_STREAM)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reseed(trainer, trainer.global_step, _DATA_STREAM)  # later epochs' iterators: right after this

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.reseed(trainer, trainer.global_step, _BATCH_STREAM)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self._resume_step = int(checkpoint.get("global_step", 0))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng_seed": self.rng_seed}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.rng_seed = int(state_dict.get("rng_seed", self.rng_seed))

    # ------------------------------------------------------------ saving
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[WANDB_ID_KEY] = str(logger.version)

    def last_path(self) -> Path:
        return Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run that stops between two scheduled saves (max_steps, every_n_epochs > 1) still ends with
        # its final state in last.ckpt (rewritten even when an epoch-end save just wrote it: one file).
        if self.save_last and self.dirpath and not (trainer.fast_dev_run or trainer.sanity_checking):
            trainer.save_checkpoint(self.last_path())

    # ------------------------------------------------------------ pre-emption
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # SIGTERM (SLURM pre-emption, a scheduler, `kill`) and SIGINT (Ctrl-C) only raise a flag here:
        # the batch in flight finishes, then on_train_batch_end saves last.ckpt and stops the run, so
        # weights and optimisers are never saved half-stepped. (Replaces Lightning's SIGTERM handling,
        # which stops without saving; Lightning restores the previous handlers at the end of fit.)
        super().on_train_start(trainer, pl_module)
        self._stop_signal = None
        if self.is_driver(trainer) and threading.current_thread() is threading.main_thread():
            self._previous_handlers = {s: signal.signal(s, self._request_stop) for s in stop_signals()}

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _request_stop(self, signum, frame) -> None:
        if self._stop_signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once, without a save
        self._stop_signal = signum
        log.warning("received %s: saving last.ckpt after this batch, then stopping", signal.Signals(signum).name)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if not self.is_driver(trainer):
            return
        stop = self._stop_signal is not None
        if trainer.world_size > 1:  # a signal to one process stops them all, at the same batch
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        signum = self._stop_signal or signal.SIGTERM
        path = self.last_path()
        trainer.save_checkpoint(path)  # atomic (AtomicCheckpointIO); every rank takes part
        if trainer.is_global_zero:
            log.warning("stopped by %s at step %d: saved %s; continue with ckpt_path=last",
                        signal.Signals(signum).name, trainer.global_step, path)
        previous = self._previous_handlers.get(signum)
        if signum not in (signal.SIGTERM, signal.SIGINT) and callable(previous):
            previous(signum, None)  # submitit: requeue this job (rank 0), then exit
        raise SIGTERMException(128 + int(signum))  # the shell's exit status for a signal
