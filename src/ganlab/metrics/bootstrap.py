"""Percentile bootstrap confidence intervals.

A number that averages over generated images (precision, density, nearest-real SSIM, conditional
accuracy) is resampled over the generated images, one that averages over real images (recall,
coverage) over the real ones, the other set staying fixed; the Fréchet distance is resampled over
the generated images against the fixed real statistics. The interval describes how much the number
moves with another draw of that set. Caveat: repeats in a resample bias set-level statistics such as
the Fréchet distance slightly upwards, so an FD interval can sit a little above the point estimate.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def bootstrap_cis(statistic: Callable[[Tensor], dict[str, float]], n: int, resamples: int = 100,
                  confidence: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{name: (low, high)} of the numbers `statistic(indices)` returns, over `resamples` index draws of size n.
    Names with fewer than two finite values are left out. Seeded: every process gets the same interval."""
    if resamples <= 0 or n < 2:
        return {}
    g = torch.Generator().manual_seed(seed)
    draws = [statistic(torch.randint(0, n, (n,), generator=g)) for _ in range(resamples)]
    alpha = (1.0 - confidence) / 2
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
    out = {}
    for name in draws[0]:
        values = torch.tensor([d[name] for d in draws], dtype=torch.float64)
        values = values[torch.isfinite(values)]
        if len(values) >= 2:
            low, high = torch.quantile(values, q).tolist()
            out[name] = (low, high)
    return out


def bootstrap_ci(statistic: Callable[[Tensor], float], n: int, resamples: int = 100, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float] | None:
    """(low, high) of `statistic(indices)` over `resamples` index draws of size n; None when not computable."""
    return bootstrap_cis(lambda idx: {"x": statistic(idx)}, n, resamples, confidence, seed).get("x")


def mean_ci(values: Tensor, resamples: int = 100, confidence: float = 0.95, seed: int = 0):
    values = values.double().cpu()
    return bootstrap_ci(lambda idx: float(values[idx].mean()), len(values), resamples, confidence, seed)
