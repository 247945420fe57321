"""BigGAN's "standing statistics": a generator's BatchNorm statistics recomputed for its current weights.

The EMA generator averages the training generator's BatchNorm buffers along with its weights, but the
activations of averaged weights need not have averaged statistics. Recomputing them runs the network in
train mode on fresh latent vectors (labels uniform over the classes, as balanced training draws them) and
keeps the cumulative mean of each batch's statistics.
"""
from __future__ import annotations

import torch
from torch import nn

from ganlab.models.dcgan import noise_seeded_by


@torch.no_grad()
def recompute_batchnorm(net: nn.Module, latent_dim: int, num_classes: int, batches: int = 32,
                        batch_size: int = 64, seed: int = 0) -> int:
    """Reset and re-estimate every BatchNorm's running mean and variance in `net` from `batches` batches
    of G(z, labels); the global RNG is not touched. Returns how many BatchNorm layers were updated."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or batches < 1:
        return 0
    was_training, momenta = net.training, [m.momentum for m in norms]
    device = next(net.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    net.train()
    try:
        for i in range(batches):
            z = torch.randn(batch_size, latent_dim, generator=generator).to(device)
            labels = (torch.arange(batch_size) + i * batch_size) % num_classes if num_classes else None
            with noise_seeded_by(z):  # noise inputs draw from the global RNG: seeded from z, restored after
                net(z, None if labels is None else labels.to(device))
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        net.train(was_training)
    return len(norms)
