"""Vanilla GAN (Goodfellow et al. 2014): MLP generator and discriminator on flattened images."""
from __future__ import annotations

import torch
from torch import nn


class MLPGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, image_size: int = 64, channels: int = 1, width: int = 256,
                 depth: int = 3):
        super().__init__()
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        layers, d_in = [], latent_dim
        for i in range(depth):
            w = width * 2 ** i
            layers += [nn.Linear(d_in, w), nn.BatchNorm1d(w), nn.LeakyReLU(0.2, True)]
            d_in = w
        layers += [nn.Linear(d_in, channels * image_size * image_size), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, self.channels, self.image_size, self.image_size)


class MLPDiscriminator(nn.Module):
    def __init__(self, image_size: int = 64, channels: int = 1, width: int = 256, depth: int = 3,
                 spectral_norm: bool = False):
        super().__init__()
        self.image_size, self.channels = image_size, channels
        sn = nn.utils.spectral_norm if spectral_norm else (lambda m: m)
        layers, d_in = [], channels * image_size * image_size
        widths = [width * 2 ** i for i in reversed(range(depth))]
        for w in widths:
            layers += [sn(nn.Linear(d_in, w)), nn.LeakyReLU(0.2, True)]
            d_in = w
        layers.append(sn(nn.Linear(d_in, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x.flatten(1)).flatten()
