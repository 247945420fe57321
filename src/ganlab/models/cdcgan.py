"""Class-conditional DCGAN.

Generator conditioning (`conditioning=`):
  "concat": a learned label embedding concatenated to z (Mirza & Osindero 2014);
  "cbn":    conditional BatchNorm, a per-class scale and shift in every BatchNorm of G
            (de Vries et al. 2017; as in SNGAN / cGANs with projection); z alone enters the stem.
Discriminator conditioning (`conditioning=`):
  "projection": logit += <embed(y), sum-pooled features> (Miyato & Koyama 2018);
  "concat":     one-hot label maps concatenated to the image channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _sn

from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator

G_CONDITIONINGS = ("concat", "cbn")
D_CONDITIONINGS = ("projection", "concat")


def check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: a conditional network needs a positive class count "
                         "(it comes from data.num_classes)")
    return num_classes


def check_labels(labels: torch.Tensor | None, batch: int) -> torch.Tensor:
    if labels is None:
        raise ValueError("a conditional network needs class labels")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    return labels


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine; the scale and shift are looked up per class."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.normal_(self.gamma.weight, 1.0, 0.02)  # DCGAN's N(1, 0.02) BatchNorm scale, per class
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gamma(labels)[:, :, None, None] + self.beta(labels)[:, :, None, None]


class ConditionalDCGANGenerator(DCGANGenerator):
    def __init__(self, num_classes: int, latent_dim: int = 100, image_size: int = 64, channels: int = 1,
                 width: int = 64, embed_dim: int = 32, conditioning: str = "concat"):
        if conditioning not in G_CONDITIONINGS:
            raise ValueError(f"generator conditioning={conditioning!r}; choose one of {G_CONDITIONINGS}")
        self.num_classes, self.conditioning = check_num_classes(num_classes), conditioning
        self.embed_dim = embed_dim if conditioning == "concat" else 0
        super().__init__(latent_dim=latent_dim, image_size=image_size, channels=channels, width=width)
        if conditioning == "concat":
            self.embed = nn.Embedding(num_classes, embed_dim)
        else:
            for seq in (self.stem, self.blocks):
                for i, m in enumerate(seq):
                    if isinstance(m, nn.BatchNorm2d):
                        seq[i] = ConditionalBatchNorm2d(m.num_features, num_classes)

    def stem_in_features(self) -> int:
        return self.latent_dim + self.embed_dim

    def stem_input(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        labels = check_labels(labels, z.shape[0])
        return torch.cat([z, self.embed(labels)], dim=1) if self.conditioning == "concat" else z

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioning == "concat":
            return super().forward(z, labels)
        h = self.stem_input(z, labels)[:, :, None, None]
        for m in (*self.stem, *self.blocks):
            h = m(h, labels) if isinstance(m, ConditionalBatchNorm2d) else m(h)
        return self.to_image(h)


class ConditionalDCGANDiscriminator(DCGANDiscriminator):
    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 1, width: int = 64,
                 conditioning: str = "projection", spectral_norm: bool = False):
        if conditioning not in D_CONDITIONINGS:
            raise ValueError(f"discriminator conditioning={conditioning!r}; choose one of {D_CONDITIONINGS}")
        self.num_classes, self.conditioning = check_num_classes(num_classes), conditioning
        in_channels = channels + (num_classes if conditioning == "concat" else 0)
        super().__init__(image_size=image_size, channels=in_channels, width=width, spectral_norm=spectral_norm)
        self.channels = channels
        if conditioning == "projection":
            embed = nn.Embedding(num_classes, self.feature_dim)
            nn.init.normal_(embed.weight, 0.0, 0.02)
            self.embed = _sn(embed) if spectral_norm else embed

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = check_labels(labels, x.shape[0])
        if self.conditioning == "concat":
            maps = F.one_hot(labels, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
            return super().forward(x)
        h = self.features(x)
        logit = self.head(h).flatten()
        pooled = h.sum(dim=(2, 3))
        return logit + (self.embed(labels) * pooled).sum(dim=1)
