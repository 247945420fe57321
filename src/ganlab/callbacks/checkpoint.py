"""Checkpoints a pre-empted run resumes from without losing anything (see conf/callbacks/default.yaml).

- Atomic writes: every checkpoint the Trainer writes goes to a hidden temporary file in the same
  directory, is fsync'ed, then renamed over the target (os.replace), so a kill during a save leaves
  the previous file intact. (Lightning's own save writes to $TMPDIR and moves the file, which is a
  plain copy when $TMPDIR is another file system, e.g. a node-local /tmp, and never fsyncs.)
  Temporaries a kill left behind are removed at the next start.
- Bounded disk: each callback keeps its newest `keep_last` checkpoints, plus last.ckpt.
- `last.ckpt` is written at epoch ends (and at the end of training): `ckpt_path=last` resumes from
  it bit-exactly. Step checkpoints (`every_n_train_steps`) are separate files; resuming from one
  restores every state, but the rest of that epoch is drawn afresh (Lightning cannot restore a plain
  DataLoader's position), so it is not bit-exact.
- The W&B run id goes into every checkpoint, so a resumed run logs into the same W&B run.
- Reproducible randomness is the job of ganlab.callbacks.reseed.ReseedRNG (the `rng` callback).
"""
from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ganlab.atomic import TMP_SUFFIX, atomic_torch_save

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

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.is_global_zero and self.dirpath:
            remove_stale_temporaries(self.dirpath)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and logger.version:
                checkpoint[WANDB_ID_KEY] = str(logger.version)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run that stops between two scheduled saves (max_steps, every_n_epochs > 1) still ends with
        # its final state on disk.
        if not self.save_last or self._should_skip_saving_checkpoint(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self.save_top_k:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
