"""Fréchet distance between two sets of features (the FID formula, in any feature space).

FD = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^1/2). The real statistics are computed once
(`FrechetReference`); for each generated set, tr((S_r S_f)^1/2) = tr((A S_f A)^1/2) with A = S_r^1/2,
and A S_f A has the same non-zero eigenvalues as the n x n Gram matrix of the centred, A-projected
features, so a symmetric eigensolver on min(n, d) rows suffices. Same numbers as torchmetrics'
FrechetInceptionDistance (tests/test_metrics.py checks it), cheap enough to bootstrap.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    eigval, eigvec = torch.linalg.eigh(matrix)
    return (eigvec * eigval.clamp(min=0).sqrt()) @ eigvec.T


class FrechetReference:
    """The real side of the Fréchet distance, computed once: mean, covariance trace, covariance root."""

    def __init__(self, real: Tensor):
        if real.ndim != 2 or len(real) < 2:
            raise ValueError(f"need (n >= 2, d) real features, got shape {tuple(real.shape)}")
        real = real.double()
        self.n, self.dim = real.shape
        self.mean = real.mean(0)
        cov = torch.cov(real.T).reshape(self.dim, self.dim)
        self.trace = cov.trace()
        self.root = _sqrtm_psd(cov)

    def project(self, fake: Tensor) -> Tensor:
        """Features times S_r^1/2; project once, then `distance_projected` for any subset / resample."""
        return fake.double().to(self.root.device) @ self.root

    def distance(self, fake: Tensor) -> float:
        return self.distance_projected(fake.double().to(self.root.device), self.project(fake))

    def distance_projected(self, fake: Tensor, projected: Tensor) -> float:
        n = len(fake)
        if n < 2:
            return float("nan")
        centred = fake - fake.mean(0)
        trace_fake = centred.square().sum() / (n - 1)
        p = projected - projected.mean(0)
        gram = (p @ p.T if n <= self.dim else p.T @ p) / (n - 1)
        cross = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum()
        mean_term = (self.mean.to(fake.device) - fake.mean(0)).square().sum()
        return max(float(mean_term + self.trace + trace_fake - 2 * cross), 0.0)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    return FrechetReference(real).distance(fake)


def distance_at_n(ref: FrechetReference, features: Tensor, n: int, draws: int, seed: int) -> float:
    """Mean Fréchet distance of `draws` random n-subsets of `features` (without repeats) against `ref`;
    the whole set when n covers it. FD is biased upwards by roughly 1/n, so two sets are compared with
    the real-vs-real floor only at the same n."""
    features = features.double()
    if n >= len(features):
        return ref.distance(features)
    g = torch.Generator().manual_seed(seed)
    projected = ref.project(features)
    values = []
    for _ in range(max(1, draws)):
        idx = torch.randperm(len(features), generator=g)[:n]
        values.append(ref.distance_projected(features[idx], projected[idx]))
    return sum(values) / len(values)
