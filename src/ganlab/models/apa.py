"""Adaptive pseudo augmentation (APA, Jiang et al., "Deceive D", NeurIPS 2021).

In D's step each real image is replaced, with probability p, by a generated image of the same class, which
D is told is real. The target distribution D learns becomes (1 - p) * data + p * G, so a D that has learned
its few training images by heart is handed images it cannot call real from memory. p adapts as ADA's does
(models/ada.py: ada_kimg, ada_interval) from E[sign D(real)] over the images D was told are real, pseudo
ones included, so p settles where the swapped-in images pull that figure down to the target.

Per class in a conditional model (each class its own p, from its own r_t, moved by its own images): the
pooled r_t is the large classes' figure. With apa_few_shot only the classes with at most few_shot_images
training images are ever swapped (the others' p is still computed, and never used).
"""
from __future__ import annotations

from typing import Callable

import torch

from ganlab.models.ada import AdaptiveAugment


class PseudoAugment(AdaptiveAugment):
    def __init__(self, target: float = 0.6, kimg: float = 500.0, interval: int = 4, classes: int = 0):
        super().__init__((), target, kimg, interval, classes=classes)

    def forward(self, real: torch.Tensor, labels: torch.Tensor | None,
                generate: Callable[[int], torch.Tensor], classes: torch.Tensor | None = None) -> torch.Tensor:
        """`real` with each image replaced, with its class's p (or the pooled p), by a generated one; `generate(n)`
        returns n images whose i-th has the i-th real image's label. `classes` (bool per class): only images of
        these classes are ever replaced. G is not run while every such p is 0: a decision from p alone, the same
        on every process (p is all-reduced), so a collective in G's forward (SyncBatchNorm) runs on all or none."""
        p = self.p if classes is None else torch.where(classes, self.p, 0.0)
        if not bool((p > 0).any()):
            return real
        per_image = p[labels] if self.classes else p.expand(real.shape[0])
        pick = torch.rand(real.shape[0], device=real.device) < per_image
        fakes = generate(real.shape[0])
        return torch.where(pick.view(-1, 1, 1, 1), fakes.to(real.dtype), real)
