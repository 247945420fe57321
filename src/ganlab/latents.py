"""Latent vectors for sampling, shared by ganlab.generate and the metrics."""
from __future__ import annotations

import torch


def truncated_noise(n: int, dim: int, truncation: float | None, generator: torch.Generator) -> torch.Tensor:
    """(n, dim) standard normal draws; with `truncation`, every coordinate beyond +-truncation is drawn again
    (BigGAN's truncation trick). None draws exactly what torch.randn does with `generator`."""
    z = torch.randn(n, dim, generator=generator)
    if truncation:
        while (bad := z.abs() > truncation).any():
            z[bad] = torch.randn(int(bad.sum()), generator=generator)
    return z
