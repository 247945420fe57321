"""Is the discriminator learning its training images rather than the data? ADA's validation heuristic
(Karras et al. 2020): r_v = (E[D(train)] - E[D(held-out)]) / (E[D(train)] - E[D(generated)]), with D
in eval mode and no augmentation. 0: D scores new real images like its training images; 1: as low as
generated ones (it has learned the training images by heart); above 1: lower still.

Shared by ganlab.audit (a checkpoint's D, per class) and the metric family
ganlab.metrics.families.discriminator (the same figure during training)."""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ganlab.pixels import to_model_range


def overfit_ratio(d_train: float | None, d_holdout: float | None, d_generated: float | None) -> float | None:
    """r_v from the three mean logits; None when one is missing or D scores its training images no higher
    than generated ones (the ratio then says nothing)."""
    if d_train is None or d_holdout is None or d_generated is None or d_train - d_generated <= 1e-6:
        return None
    return (d_train - d_holdout) / (d_train - d_generated)


@contextlib.contextmanager
def eval_mode(net: torch.nn.Module):
    """`net` in eval mode (BatchNorm's running statistics, no batch coupling) for the block, then as it was."""
    was_training = net.training
    net.eval()
    try:
        yield net
    finally:
        net.train(was_training)


@torch.no_grad()
def discriminator_logits(discriminator, images: Tensor, labels: Tensor | None, batch_size: int = 256) -> Tensor:
    """D's logits (float32, on the CPU) for uint8 or [-1, 1] images, in eval mode; `labels` None for an
    unconditional D."""
    device = next(discriminator.parameters()).device
    parts = []
    with eval_mode(discriminator):
        for i in range(0, len(images), batch_size):
            x = to_model_range(images[i:i + batch_size]).to(device)
            y = labels[i:i + batch_size].to(device) if labels is not None else None
            parts.append(discriminator(x, y).float().reshape(-1).cpu())
    return torch.cat(parts) if parts else torch.zeros(0)
