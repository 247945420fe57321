"""Precision / recall (Kynkäänniemi et al. 2019) and density / coverage (Naeem et al. 2020) from
k-nearest-neighbour balls in a feature space, following the reference `prdc` implementation.

precision: share of generated samples inside some real sample's k-NN ball (fidelity)
recall:    share of real samples inside some generated sample's k-NN ball (diversity)
density:   mean number of real balls containing a generated sample, / k (≈1 when the sets match)
coverage:  share of real samples whose ball contains at least one generated sample
"""
from __future__ import annotations

import torch
from torch import Tensor

NAMES = ("precision", "recall", "density", "coverage")


def knn_radii(features: Tensor, k: int) -> Tensor:
    """Distance of every sample to its k-th nearest neighbour in the same set (itself excluded)."""
    dist = torch.cdist(features, features)
    return dist.topk(k + 1, dim=1, largest=False).values[:, -1]


class PRDC:
    """Real features and their k-NN radii are computed once; `prepare(fake)` then `compute(...)` for the
    full generated set or any resample of it (the radii of generated samples come from the full set,
    so duplicated samples in a bootstrap resample do not shrink them to zero)."""

    def __init__(self, real: Tensor, k: int = 5):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.real = real.float().cpu()
        self.k = min(k, len(self.real) - 1)
        self.real_radii = knn_radii(self.real, self.k)

    def prepare(self, fake: Tensor) -> dict[str, Tensor]:
        """Ball memberships for the generated set: dist(real_i, fake_j) < radius of real i / of fake j."""
        fake = fake.float().cpu()
        dist = torch.cdist(self.real, fake)
        in_real = dist < self.real_radii[:, None]  # (n_real, n_fake)
        in_fake = dist < knn_radii(fake, min(self.k, len(fake) - 1))[None, :]
        return {"in_real": in_real.float(), "in_fake": in_fake.float(), "n_balls": in_real.sum(0).float()}

    def compute(self, state: dict[str, Tensor], idx: Tensor | None = None) -> dict[str, float]:
        """The four numbers for the generated set, or for the resample `idx` of it (with repeats)."""
        n_fake = state["n_balls"].shape[0]
        weight = torch.ones(n_fake) if idx is None else torch.bincount(idx, minlength=n_fake).float()
        total = weight.sum()
        return {
            "precision": float(((state["n_balls"] > 0).float() * weight).sum() / total),
            "recall": float((state["in_fake"] @ weight > 0).float().mean()),
            "density": float((state["n_balls"] * weight).sum() / total / self.k),
            "coverage": float((state["in_real"] @ weight > 0).float().mean()),
        }


def prdc(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    metric = PRDC(real, k)
    return metric.compute(metric.prepare(fake))
