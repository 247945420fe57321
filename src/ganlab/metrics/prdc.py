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

    def compute(self, state: dict[str, Tensor], fake_idx: Tensor | None = None,
                real_idx: Tensor | None = None) -> dict[str, float]:
        """The four numbers; with `fake_idx` / `real_idx` (resamples with repeats) for bootstrap intervals.
        Precision and density average over generated samples, recall and coverage over real ones: each
        is resampled over the set it averages (resampling the generated set with repeats would shrink
        recall and coverage, which count distinct generated samples)."""
        n_fake, n_real = state["n_balls"].shape[0], state["in_real"].shape[0]
        weight = torch.ones(n_fake) if fake_idx is None else torch.bincount(fake_idx, minlength=n_fake).float()
        rows = torch.arange(n_real) if real_idx is None else real_idx
        return {
            "precision": float(((state["n_balls"] > 0).float() * weight).sum() / weight.sum()),
            "recall": float((state["in_fake"].sum(1) > 0).float()[rows].mean()),
            "density": float((state["n_balls"] * weight).sum() / weight.sum() / self.k),
            "coverage": float((state["in_real"].sum(1) > 0).float()[rows].mean()),
        }


def prdc(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    metric = PRDC(real, k)
    return metric.compute(metric.prepare(fake))
