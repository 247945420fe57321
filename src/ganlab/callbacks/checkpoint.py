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
- Reproducible randomness is the job of ganlab.callbacks.reseed.ReseedRNG (the `rng` callback).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ganlab.atomic import TMP_SUFFIX, atomic_torch_save

log = logging.getLogger("ganlab.train")


def stop_signals() -> list[int]:
    """SIGTERM and SIGINT, plus submitit's pre-emption/timeout signal (SIGUSR2, or $SUBMITIT_PREEMPT_SIGNAL)
    when submitit handles it in this process (a hydra/launcher=slurm job): that handler requeues the job."""
    found = [signal.SIGTERM, signal.SIGINT]
    requeue = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if requeue is not None and requeue not in found and callable(signal.getsignal(requeue)):
        found.append(requeue)
    return found


WANDB_ID_KEY = "wandb_run_id"


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
        self._stop_signal: int | None = None
        self._previous_handlers: dict = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero and self.dirpath:
            remove_stale_temporaries(self.dirpath)

    def is_driver(self, trainer: L.Trainer) -> bool:
        """The first ResumableCheckpoint of the run handles the stop signals (one handler, one save)."""
        return next(cb for cb in trainer.callbacks if isinstance(cb, ResumableCheckpoint)) is self

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
            trainer.save_checkpoint(self.last_path(), weights_only=False)  # a full one: it resumes

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
        trainer.save_checkpoint(path, weights_only=False)  # atomic (AtomicCheckpointIO); every rank takes part
        if trainer.is_global_zero:
            run_dir = Path(path).parent.parent if Path(path).parent.name == "checkpoints" else Path(path).parent
            log.warning("stopped by %s at step %d: saved %s; continue with the same command plus "
                        "hydra.run.dir=%s ckpt_path=last", signal.Signals(signum).name, trainer.global_step, path,
                        run_dir)
        previous = self._previous_handlers.get(signum)
        if signum not in (signal.SIGTERM, signal.SIGINT) and callable(previous):
            previous(signum, None)  # submitit: requeue this job (rank 0), then exit
        raise SIGTERMException(128 + int(signum))  # the shell's exit status for a signal
