"""Generator EMA with a warm-up: the decay ramps as min(decay, (1 + n) / (10 + n)) over the first
updates, so short runs are not stuck near the initial weights (n = updates so far)."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmup_ema_fn(decay: float):
    @torch.no_grad()
    def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        if not averaged[0].is_floating_point():  # integer buffers (BatchNorm's step counter)
            torch._foreach_copy_(averaged, current)
            return
        # kept as a tensor: no host sync per step on GPU
        d = torch.clamp((1.0 + num_averaged) / (10.0 + num_averaged), max=decay)
        torch._foreach_lerp_(averaged, current, 1.0 - d)

    return ema_update


@torch.no_grad()
def step_average(average: nn.Module, current: nn.Module, avg_fn, n_averaged: torch.Tensor,
                 beta: float | None = None) -> None:
    """One EMA step of `average` towards `current` over parameters and buffers: floating-point tensors by
    `avg_fn(averaged, current, n_averaged)` (warmup_ema_fn's decay) or, given `beta`, average = beta x average +
    (1 - beta) x current; integer buffers (BatchNorm's step counter) are copied."""
    averaged = [*average.parameters(), *average.buffers()]
    currents = [*current.parameters(), *current.buffers()]
    for is_float in (True, False):
        pairs = [(a, c) for a, c in zip(averaged, currents) if a.is_floating_point() == is_float]
        if not pairs:
            continue
        a, c = [a for a, _ in pairs], [c for _, c in pairs]
        if beta is None:
            avg_fn(a, c, n_averaged)
        elif is_float:
            torch._foreach_lerp_(a, c, 1.0 - beta)
        else:
            torch._foreach_copy_(a, c)


def make_ema(generator: nn.Module, decay: float) -> AveragedModel:
    """A frozen copy of `generator` that `update_parameters(generator)` moves towards it (buffers too)."""
    ema = AveragedModel(generator, multi_avg_fn=warmup_ema_fn(decay), use_buffers=True)
    return ema.requires_grad_(False)


def ema_beta(half_life_kimg: float, rampup: float | None, batch_size: int, images_seen: int) -> float:
    """stylegan2-ada's per-step EMA decay: the average's half-life is `half_life_kimg` thousand images
    whatever the batch size (`batch_size`: all processes together); with `rampup`, the half-life is
    at most rampup x the images seen so far, so short runs are not stuck near the initial weights."""
    half_life = half_life_kimg * 1000
    if rampup is not None:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))
