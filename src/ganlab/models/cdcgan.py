"""Class-conditional DCGAN.

Generator: a learned label embedding concatenated to z.
Discriminator: "projection" (Miyato & Koyama 2018: logit += <embed(y), pooled features>) or
"concat" (one-hot label maps concatenated to the image channels).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _sn

from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator

CONDITIONINGS = ("projection", "concat")


class ConditionalDCGANGenerator(DCGANGenerator):
    def __init__(self, num_classes: int, latent_dim: int = 100, image_size: int = 64, channels: int = 1,
                 width: int = 64, embed_dim: int = 32):
        self.num_classes, self.embed_dim = num_classes, embed_dim
        super().__init__(latent_dim=latent_dim, image_size=image_size, channels=channels, width=width)
        self.embed = nn.Embedding(num_classes, embed_dim)

    def stem_in_features(self) -> int:
        return self.latent_dim + self.embed_dim

    def stem_input(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("a conditional generator needs class labels")
        return torch.cat([z, self.embed(labels)], dim=1)


class ConditionalDCGANDiscriminator(DCGANDiscriminator):
    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 1, width: int = 64,
                 conditioning: str = "projection", spectral_norm: bool = False):
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={conditioning!r}; choose one of {CONDITIONINGS}")
        self.num_classes, self.conditioning = num_classes, conditioning
        in_channels = channels + (num_classes if conditioning == "concat" else 0)
        super().__init__(image_size=image_size, channels=in_channels, width=width, spectral_norm=spectral_norm)
        self.channels = channels
        if conditioning == "projection":
            embed = nn.Embedding(num_classes, self.feature_dim)
            nn.init.normal_(embed.weight, 0.0, 0.02)
            self.embed = _sn(embed) if spectral_norm else embed

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            raise ValueError("a conditional discriminator needs class labels")
        if self.conditioning == "concat":
            maps = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
            return super().forward(x)
        h = self.features(x)
        logit = self.head(h).flatten()
        pooled = h.sum(dim=(2, 3))
        return logit + (self.embed(labels) * pooled).sum(dim=1)
