"""Linear learning-rate decay over the end of the training budget, as SNGAN (Miyato et al. 2018) and
Mimicry's GANs are trained: both learning rates stay as set until `start` of the budget has passed, then fall
linearly to 0 at its end, so the last images seen move G and D less and the run ends on a settled generator
rather than wherever the D/G oscillation happens to be. The budget is whichever of the trainer's max_steps,
max_epochs and max_time runs out first."""
from __future__ import annotations

import math

from lightning.pytorch.callbacks import Timer


def no_budget(start) -> str:
    """Why a run without a training budget cannot decay its learning rates over one."""
    return (f"model.lr_decay_start={start}: the learning rates decay over the training budget and this run has "
            "none; set trainer.max_steps, trainer.max_epochs or trainer.max_time")


def decay_factor(progress: float, start: float) -> float:
    """1 up to `start` (a fraction of the budget), then linear to 0 at the end of the budget."""
    if progress <= start:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - start))


def step_progress(trainer, batches_done: int, optimizer_steps_per_batch: int) -> float | None:
    """The fraction of the step or epoch budget done after `batches_done` batches (per process); None
    when the trainer has neither. max_steps counts optimizer steps: one per D and one per G update."""
    fractions = []
    if trainer.max_steps is not None and trainer.max_steps > 0:
        fractions.append(batches_done * optimizer_steps_per_batch / trainer.max_steps)
    epochs, per_epoch = trainer.max_epochs, trainer.num_training_batches
    if epochs is not None and epochs > 0 and math.isfinite(per_epoch) and per_epoch > 0:
        fractions.append(batches_done / (epochs * per_epoch))
    return max(fractions) if fractions else None


def time_progress(trainer) -> float | None:
    """The fraction of trainer.max_time spent training (a resumed run counts its earlier time); None without it."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    if remaining is None:
        return None
    elapsed = timer.time_elapsed("train")
    return min(max(elapsed / max(elapsed + remaining, 1e-9), 0.0), 1.0)
