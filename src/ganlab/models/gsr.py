"""Group spectral regularisation of G's class-conditional BatchNorm (gSR; Rangwani et al., ECCV 2022,
"Improving GANs for Long-Tailed Data through Group Spectral Regularization").

On long-tailed data a tail class's conditional BatchNorm scale and shift grow a few large directions: the
largest singular value of the class's scale offset (gamma - 1) and shift (beta), each reshaped into a
near-square group matrix, explodes, and the class's images collapse to few modes. gSR adds to G's loss

    sum over CBN layers l and classes y of  lambda_y * (sigma_max(Gamma_l,y)^2 + sigma_max(B_l,y)^2) / (L * K)

with lambda_y proportional to 1 / (class y's effective number of training images, Cui et al. 2019):
(1 - beta^n) / (1 - beta). The class weights average 1, so `model.gsr_weight` is the mean class's weight
(the paper: 0.5, beta 0.999). Every class's table is regularised every G step, not only those in the batch.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ganlab.models.cdcgan import ConditionalBatchNorm2d, table


def group_shape(features: int) -> tuple[int, int]:
    """The near-square (rows, cols), rows <= cols, with rows * cols = features that a class's vector is
    reshaped into: 256 -> (16, 16), 128 -> (8, 16), 7 -> (1, 7)."""
    rows = max(r for r in range(1, math.isqrt(features) + 1) if features % r == 0)
    return rows, features // rows


def class_weights(counts: Sequence[int], beta: float) -> torch.Tensor:
    """lambda_y: 1 / effective number of class y's training images, scaled to average 1 over the classes."""
    counts = torch.as_tensor(list(counts), dtype=torch.float64)
    if (counts <= 0).any():
        raise ValueError(f"gsr_weight: a class has no training images (counts {counts.long().tolist()})")
    effective = (1 - beta ** counts) / (1 - beta)
    inverse = 1 / effective
    return (inverse * len(counts) / inverse.sum()).float()


def cbn_layers(generator: nn.Module) -> list[ConditionalBatchNorm2d]:
    return [m for m in generator.modules() if isinstance(m, ConditionalBatchNorm2d)]


def group_spectral_norms(layer: ConditionalBatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(K,) largest singular values of each class's grouped scale offset and shift, in float32."""
    gamma, beta = table(layer.gamma).float() - 1, table(layer.beta).float()
    shape = (gamma.shape[0], *group_shape(gamma.shape[1]))
    return (torch.linalg.matrix_norm(gamma.reshape(shape), ord=2),
            torch.linalg.matrix_norm(beta.reshape(shape), ord=2))


def gsr_term(generator: nn.Module, weights: torch.Tensor) -> torch.Tensor:
    """gSR's penalty (without gsr_weight) over every conditional BatchNorm of `generator`; weights: (K,)."""
    layers = cbn_layers(generator)
    with torch.autocast(weights.device.type, enabled=False):
        total = sum((weights * (g ** 2 + b ** 2)).sum() for g, b in map(group_spectral_norms, layers))
    return total / (len(layers) * len(weights))
