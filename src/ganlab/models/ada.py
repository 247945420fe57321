"""Adaptive augmentation probability (ADA, Karras et al. 2020) over the DiffAugment ops.

Every image D sees (real and fake, in D and G steps) gets each op of the policy with probability p.
The overfitting heuristic r_t = E[sign(D(real))] is accumulated over `interval` batches; then p moves
by sign(r_t - target) * (images shown since the last update) / (kimg * 1000), so it can go 0 -> 1 in
`kimg` thousand images (the paper's 500; runs of ~100-200 kimg need less). Under DDP each batch's
sums are all-reduced as they are added (one 2-number all-reduce per D step), so every process holds
the same sums and p, and a checkpoint written by rank 0 resumes every rank exactly.

Per class (`classes` > 0; model.few_shot_ada_target): one p per class, each driven by that class's own
r_t = E[sign(D(real of the class))] and moved by the images of that class shown since the last update. The
pooled r_t is dominated by the large classes, so it cannot see a D that has learned a class of 20 images
by heart; the class's own r_t can.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ganlab.models.diffaugment import augment_with_probability


def multi_process() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class AdaptiveAugment(nn.Module):
    def __init__(self, ops: tuple, target: float = 0.6, kimg: float = 500.0, interval: int = 4,
                 translation_ratio: float = 0.125, classes: int = 0):
        super().__init__()
        self.ops, self.target, self.kimg, self.interval = tuple(ops), float(target), float(kimg), int(interval)
        self.translation_ratio, self.classes = float(translation_ratio), int(classes)
        shape = (self.classes,) if self.classes else ()
        # buffers: saved in checkpoints, so a resumed run continues with the same p and partial sums
        self.register_buffer("p", torch.zeros(shape))
        self.register_buffer("stats", torch.zeros(*shape, 2))  # sum of sign(D(real)) and the logit count, since the last update
        self.register_buffer("rt", torch.zeros(shape))  # the last r_t, for the logs

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        p = self.p[labels].view(-1, 1, 1, 1) if self.classes else self.p
        return augment_with_probability(x, self.ops, p, self.translation_ratio)

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        logits = real_logits.detach().float().reshape(-1)
        if self.classes:
            batch = torch.zeros_like(self.stats)
            batch[:, 0].index_add_(0, labels, logits.sign())
            batch[:, 1].index_add_(0, labels, torch.ones_like(logits))
        else:
            batch = torch.stack([logits.sign().sum(), torch.full_like(logits[0], logits.numel())])
        if multi_process():
            dist.all_reduce(batch)
        self.stats += batch

    @torch.no_grad()
    def update(self, images: int) -> None:
        """Adjust p after `images` real images (all processes together) since the last update; per class,
        after the images of each class counted in the sums."""
        counts = self.stats[..., 1]
        self.rt.copy_(self.stats[..., 0] / counts.clamp(min=1))
        shown = counts if self.classes else images
        step = torch.sign(self.rt - self.target) * (shown / (self.kimg * 1000))
        self.p.copy_((self.p + torch.where(counts > 0, step, 0.0)).clamp(0.0, 1.0))
        self.stats.zero_()
