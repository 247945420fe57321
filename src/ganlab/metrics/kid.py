"""Kernel (Inception) distance: the unbiased polynomial-kernel MMD^2 of torchmetrics' KID, averaged
over random subsets whose size is capped at the smaller set (torchmetrics raises when the
configured `subset_size` exceeds N; small medical sets are often below its default of 1000)."""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.image.kid import poly_mmd


def kernel_distance(real: Tensor, fake: Tensor, subset_size: int = 1000, subsets: int = 100,
                    seed: int = 0) -> tuple[float, float, int]:
    """(mean, std over subsets, subset size used); NaN when either set has fewer than 2 samples. When the
    subset covers both whole sets there is one subset only, and no spread: std is NaN."""
    m = min(int(subset_size), len(real), len(fake))
    if m < 2:
        return float("nan"), float("nan"), m
    real, fake = real.double().cpu(), fake.double().cpu()
    g = torch.Generator().manual_seed(seed)  # same subsets on every process
    full = m == len(real) == len(fake)
    scores = []
    for _ in range(1 if full else subsets):
        r = real[torch.randperm(len(real), generator=g)[:m]]
        f = fake[torch.randperm(len(fake), generator=g)[:m]]
        scores.append(poly_mmd(r, f))
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False)) if len(scores) > 1 else float("nan"), m
