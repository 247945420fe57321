"""Class-conditional DCGAN.

Generator conditioning (`conditioning=`):
  "concat": a learned label embedding concatenated to z (Mirza & Osindero 2014);
  "cbn":    conditional BatchNorm, a per-class scale and shift in every BatchNorm of G
            (de Vries et al. 2017; as in SNGAN / cGANs with projection); z alone enters the stem.
Discriminator conditioning (`conditioning=`):
  "projection": logit += <embed(y), sum-pooled features> (Miyato & Koyama 2018);
  "concat":     one-hot label maps concatenated to the image channels.

`ordinal=true` (classes whose label order is a severity order, as brainsim's and alzheimer's
NonDemented < VeryMildDemented < MildDemented < ModerateDemented): every class table is cumulative,
embed(c) = sum_{j<=c} e_j (a thermometer code for D's concat maps), so neighbouring classes share all
but one term and a rare class borrows what its neighbours learn.

`enable_cond_weight()` adds a `cond_weight` buffer that blends the label in (Shahbazi et al. 2022,
"Collapse by conditioning"): at 0 the label has no effect (G's label embedding is zero, CBN uses the
class-average scale and shift, D drops its projection term / label maps), at 1 the networks are fully
conditional. It is not saved (the training module sets it every step); without it, as in a network
loaded for sampling, the networks are fully conditional.

`enable_class_head()` gives the discriminator ADC-GAN's auxiliary discriminative classifier (Hou et al.,
ICML 2022): a linear head on D's pooled features over 2K classes, "real image of class k" and "generated
image of class k" (`forward(..., classes=True)` returns its logits too). The training module adds it when
`model.adc_weight` > 0; see ganlab.models.losses.adc_discriminator_term.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _sn

from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator, check_flag

G_CONDITIONINGS = ("concat", "cbn")
D_CONDITIONINGS = ("projection", "concat")


def check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: a conditional network needs a positive class count "
                         "(it comes from data.num_classes; data without classes, e.g. data=oasis, trains "
                         "model=dcgan or model=gan)")
    return num_classes


def check_labels(labels: torch.Tensor | None, batch: int) -> torch.Tensor:
    if labels is None:
        raise ValueError("a conditional network needs class labels")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    return labels


class OrdinalEmbedding(nn.Embedding):
    """embed(c) = sum_{j<=c} weight[j]: a gradient on class c's vector moves every class above it."""

    def table(self) -> torch.Tensor:
        return self.weight.cumsum(dim=0)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return F.embedding(labels, self.table())


def class_embedding(num_classes: int, dim: int, ordinal: bool) -> nn.Embedding:
    return (OrdinalEmbedding if ordinal else nn.Embedding)(num_classes, dim)


@torch.no_grad()
def init_class_table(embed: nn.Embedding, mean: float = 0.0, std: float = 1.0) -> None:
    """Class vectors ~ N(mean, std) (std 0: constant). Ordinal: class 0's vector so, the later classes'
    increments N(0, std/sqrt(K)), which keeps the cumulative vectors near the plain table's scale."""
    if isinstance(embed, OrdinalEmbedding):
        embed.weight.normal_(0.0, std / embed.num_embeddings ** 0.5)
        embed.weight[0].normal_(mean, std)
    elif std == 0:
        embed.weight.fill_(mean)
    else:
        embed.weight.normal_(mean, std)


def table(embed: nn.Embedding) -> torch.Tensor:
    return embed.table() if isinstance(embed, OrdinalEmbedding) else embed.weight


def check_ordinal(ordinal) -> bool:
    return check_flag("ordinal", ordinal)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without its own affine; the scale and shift are looked up per class."""

    def __init__(self, num_features: int, num_classes: int, ordinal: bool = False):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = class_embedding(num_classes, num_features, ordinal)
        self.beta = class_embedding(num_classes, num_features, ordinal)
        init_class_table(self.gamma, 1.0, 0.02)  # DCGAN's N(1, 0.02) BatchNorm scale, per class
        init_class_table(self.beta, 0.0, 0.0)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        h = self.bn(x)
        gamma, beta = self.gamma(labels), self.beta(labels)
        if weight is not None:  # weight 0: the class-average scale and shift for every label
            gamma = weight * gamma + (1 - weight) * table(self.gamma).mean(dim=0)
            beta = weight * beta + (1 - weight) * table(self.beta).mean(dim=0)
        return h * gamma[:, :, None, None] + beta[:, :, None, None]


def enable_cond_weight(net: nn.Module) -> None:
    """Give a conditional network the `cond_weight` buffer (1.0) that blends its label in."""
    net.cond_weight = torch.ones((), device=next(net.parameters()).device)


class ConditionalDCGANGenerator(DCGANGenerator):
    def __init__(self, num_classes: int, latent_dim: int = 100, image_size: int = 64, channels: int = 1,
                 width: int = 64, embed_dim: int = 32, conditioning: str = "concat", ordinal: bool = False,
                 upsample: str = "transpose", noise_inputs: bool = False, noise_init: float = 0.0,
                 full_res_width: int = 0):
        if conditioning not in G_CONDITIONINGS:
            raise ValueError(f"generator conditioning={conditioning!r}; choose one of {G_CONDITIONINGS}")
        self.num_classes, self.conditioning = check_num_classes(num_classes), conditioning
        self.embed_dim = embed_dim if conditioning == "concat" else 0
        super().__init__(latent_dim=latent_dim, image_size=image_size, channels=channels, width=width,
                         upsample=upsample, noise_inputs=noise_inputs, noise_init=noise_init,
                         full_res_width=full_res_width)
        self.register_buffer("cond_weight", None, persistent=False)  # see enable_cond_weight
        if conditioning == "concat":
            self.embed = class_embedding(num_classes, embed_dim, check_ordinal(ordinal))
            if ordinal:  # the plain table keeps torch's N(0, 1) init
                init_class_table(self.embed)
        else:
            for seq in (self.stem, self.blocks):
                for i, m in enumerate(seq):
                    if isinstance(m, nn.BatchNorm2d):
                        seq[i] = ConditionalBatchNorm2d(m.num_features, num_classes, check_ordinal(ordinal))

    def stem_in_features(self) -> int:
        return self.latent_dim + self.embed_dim

    def stem_input(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        labels = check_labels(labels, z.shape[0])
        if self.conditioning != "concat":
            return z
        embedded = self.embed(labels)
        if self.cond_weight is not None:
            embedded = self.cond_weight.to(embedded.dtype) * embedded
        return torch.cat([z, embedded], dim=1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioning == "concat":
            return super().forward(z, labels)
        h = self.stem_input(z, labels)[:, :, None, None]
        for m in (*self.stem, *self.blocks):
            h = m(h, labels, self.cond_weight) if isinstance(m, ConditionalBatchNorm2d) else m(h)
        return self.to_image(h)


class ConditionalDCGANDiscriminator(DCGANDiscriminator):
    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 1, width: int = 64,
                 conditioning: str = "projection", spectral_norm: bool = False, mbstd_group: int = 0,
                 ordinal: bool = False, texture_width: int = 0, batch_norm: bool = True):
        if conditioning not in D_CONDITIONINGS:
            raise ValueError(f"discriminator conditioning={conditioning!r}; choose one of {D_CONDITIONINGS}")
        self.num_classes, self.conditioning = check_num_classes(num_classes), conditioning
        self.ordinal = check_ordinal(ordinal)
        super().__init__(image_size=image_size, channels=channels, width=width, spectral_norm=spectral_norm,
                         mbstd_group=mbstd_group, texture_width=texture_width, batch_norm=batch_norm,
                         label_channels=num_classes if conditioning == "concat" else 0)
        self.register_buffer("cond_weight", None, persistent=False)  # see enable_cond_weight
        self.spectral_norm = spectral_norm
        if conditioning == "projection":
            embed = class_embedding(num_classes, self.feature_dim, ordinal)
            init_class_table(embed, 0.0, 0.02)
            self.embed = _sn(embed) if spectral_norm else embed
        self.class_head = None  # see enable_class_head

    def enable_class_head(self) -> None:
        """Add ADC-GAN's classifier: logit 2k = real image of class k, 2k + 1 = generated image of class k.
        Built after the rest, so the rest's initial weights do not depend on it."""
        if self.class_head is None:
            head = nn.Linear(self.feature_dim, 2 * self.num_classes)
            nn.init.normal_(head.weight, 0.0, 0.02)
            nn.init.zeros_(head.bias)
            self.class_head = (_sn(head) if self.spectral_norm else head).to(next(self.parameters()).device)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None, classes: bool = False):
        """D's logit per image; with `classes=True`, also the class head's (N, 2K) logits."""
        labels = check_labels(labels, x.shape[0])
        if classes and self.class_head is None:
            raise ValueError("classes=True needs the class head (enable_class_head; model.adc_weight > 0)")
        image = x
        if self.conditioning == "concat":
            if self.ordinal:  # thermometer code: class c lights maps 0..c
                maps = (labels[:, None] >= torch.arange(self.num_classes, device=labels.device)).to(x.dtype)
            else:
                maps = F.one_hot(labels, self.num_classes).to(x.dtype)
            if self.cond_weight is not None:
                maps = self.cond_weight.to(x.dtype) * maps
            maps = maps[:, :, None, None]
            x = torch.cat([x, maps.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        h = self.features(x)
        logit = self.head(self.mbstd(h)).flatten() + self.texture_logit(image)
        pooled = h.sum(dim=(2, 3))
        if self.conditioning == "projection":
            projection = (self.embed(labels) * pooled).sum(dim=1)
            if self.cond_weight is not None:
                projection = self.cond_weight.to(projection.dtype) * projection
            logit = logit + projection
        return (logit, self.class_head(pooled)) if classes else logit
