"""Adaptive pseudo augmentation (APA, Jiang et al., "Deceive D", NeurIPS 2021).

In D's step each real image is replaced, with probability p, by a generated image of the same class, which
D is told is real. The target distribution D learns becomes (1 - p) * data + p * G, so a D that has learned
its few training images by heart is handed images it cannot call real from memory. p adapts as ADA's does
(models/ada.py: ada_kimg, ada_interval) from E[sign D(real)] over the images D was told are real, pseudo
ones included, so p settles where the swapped-in images pull that figure down to the target.

Per class in a conditional model (each class its own p, from its own r_t, moved by its own images): the
pooled r_t is the large classes' figure. With `few_shot` only the classes with at most few_shot_images
training images are ever swapped (the rest keep p at 0 in effect, though their p is still computed).
"""
from __future__ import annotations

from typing import Callable

import torch

from ganlab.models.ada import AdaptiveAugment


class PseudoAugment(AdaptiveAugment):
    def __init__(self, target: float = 0.6, kimg: float = 500.0, interval: int = 4, classes: int = 0):
        super().__init__((), target, kimg, interval, classes=classes)

    def chosen(self, labels: torch.Tensor | None, n: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Which of n real images to replace: each with its class's p (or the pooled p), never where not allowed."""
        p = self.p[labels] if self.classes else self.p.expand(n)
        if allowed is not None:
            p = torch.where(allowed, p, 0.0)
        return torch.rand(n, device=p.device) < p

    def forward(self, real: torch.Tensor, labels: torch.Tensor | None,
                generate: Callable[[int], torch.Tensor], allowed: torch.Tensor | None = None) -> torch.Tensor:
        """`real` with the chosen images replaced by generated ones; `generate(n)` returns n images whose i-th
        has the i-th real image's label. Nothing is generated while no image is chosen."""
        pick = self.chosen(labels, real.shape[0], allowed)
        if not bool(pick.any()):  # one host sync per D step: skips G's extra forward while p is 0
            return real
        fakes = generate(real.shape[0])
        return torch.where(pick.view(-1, 1, 1, 1), fakes.to(real.dtype), real)
