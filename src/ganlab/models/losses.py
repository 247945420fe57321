"""Adversarial losses on discriminator logits, and the gradient penalties.

Each loss knows its two phases: `discriminator(real_logits, fake_logits)` and `generator(fake_logits)`;
both take optional per-sample `weights` (class-weighted losses): the mean becomes sum(w * l) / sum(w).
A relativistic loss (`relativistic = True`) also needs D's logits of real images in G's phase:
`generator(fake_logits, weights, real_logits=...)`, paired with the fakes image by image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def mean(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The plain mean, or the weighted mean sum(w * v) / sum(w) (float32: weights may be tiny)."""
    if weights is None:
        return values.mean()
    weights = weights.float()
    return (values.float() * weights).sum() / weights.sum().clamp(min=1e-12)


class GANLoss:
    #: weight of the WGAN-GP gradient penalty on real/fake interpolates; 0 disables it
    gradient_penalty: float = 0.0
    #: the generator phase compares each fake's logit with a real image's (needs `real_logits`)
    relativistic: bool = False

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def generator(self, fake_logits: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({vars(self)})"


class NonSaturatingLoss(GANLoss):
    """The original GAN loss with the non-saturating generator objective, on logits (AMP-safe).

    `label_smoothing` > 0 gives one-sided label smoothing: real targets become 1 - label_smoothing.
    """

    def __init__(self, label_smoothing: float = 0.0):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing={label_smoothing}: must be in [0, 1) (0.1 is usual)")
        self.label_smoothing = float(label_smoothing)

    def discriminator(self, real_logits, fake_logits, weights=None):
        real_target = torch.full_like(real_logits, 1.0 - self.label_smoothing)
        if weights is None:
            return (F.binary_cross_entropy_with_logits(real_logits, real_target)
                    + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        bce = F.binary_cross_entropy_with_logits
        return (mean(bce(real_logits, real_target, reduction="none"), weights)
                + mean(bce(fake_logits, torch.zeros_like(fake_logits), reduction="none"), weights))

    def generator(self, fake_logits, weights=None):
        if weights is None:
            return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        return mean(F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits), reduction="none"),
                    weights)


class HingeLoss(GANLoss):
    def discriminator(self, real_logits, fake_logits, weights=None):
        return mean(F.relu(1.0 - real_logits), weights) + mean(F.relu(1.0 + fake_logits), weights)

    def generator(self, fake_logits, weights=None):
        return -mean(fake_logits, weights)


class LSGANLoss(GANLoss):
    def discriminator(self, real_logits, fake_logits, weights=None):
        return 0.5 * (mean((real_logits - 1.0).pow(2), weights) + mean(fake_logits.pow(2), weights))

    def generator(self, fake_logits, weights=None):
        return 0.5 * mean((fake_logits - 1.0).pow(2), weights)


class WGANGPLoss(GANLoss):
    """Wasserstein loss with gradient penalty (Gulrajani et al. 2017); use without BatchNorm in D."""

    def __init__(self, gradient_penalty: float = 10.0):
        if not gradient_penalty >= 0.0:
            raise ValueError(f"gradient_penalty={gradient_penalty}: must be >= 0 (10 is the paper's value)")
        self.gradient_penalty = float(gradient_penalty)

    def discriminator(self, real_logits, fake_logits, weights=None):
        return mean(fake_logits, weights) - mean(real_logits, weights)

    def generator(self, fake_logits, weights=None):
        return -mean(fake_logits, weights)


class RelativisticPairedLoss(GANLoss):
    """RpGAN (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024): D learns that each real image is more real than
    the fake it is paired with, softplus(D(fake) - D(real)), and G the reverse, softplus(D(real) - D(fake)). Only
    differences of logits count, so D's output has no fixed level: adding a constant to every logit changes
    nothing. R3GAN pairs it with R1 and R2 (model.r1_gamma, model.r2_gamma) for a well-behaved D. In float32."""

    relativistic = True

    def discriminator(self, real_logits, fake_logits, weights=None):
        return mean(F.softplus(fake_logits.float() - real_logits.float()), weights)

    def generator(self, fake_logits, weights=None, real_logits=None):
        if real_logits is None:
            raise ValueError("the relativistic loss compares each fake with a real image: pass real_logits")
        return mean(F.softplus(real_logits.detach().float() - fake_logits.float()), weights)


def _input_gradients(discriminator, images: torch.Tensor, labels) -> torch.Tensor:
    """dD/dx with a graph for the second backward. Computed in float32 with autocast off: in float16
    the double backward overflows, and under GradScaler (16-mixed) nearly every D step is skipped."""
    images = images.detach().float().requires_grad_(True)
    with torch.autocast(images.device.type, enabled=False):
        logits = discriminator(images, labels).float()
    (grad,) = torch.autograd.grad(logits.sum(), images, create_graph=True)
    return grad.flatten(1)


def wgan_gradient_penalty(discriminator, real: torch.Tensor, fake: torch.Tensor, labels) -> torch.Tensor:
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
    mixed = alpha * real.detach().float() + (1 - alpha) * fake.detach().float()
    return (_input_gradients(discriminator, mixed, labels).norm(2, dim=1) - 1.0).pow(2).mean()


def squared_gradient_norm(discriminator, images: torch.Tensor, labels) -> torch.Tensor:
    """The batch mean of ||dD/dx||^2 at `images`: the zero-centred penalty behind R1 and R2."""
    return _input_gradients(discriminator, images, labels).pow(2).sum(dim=1).mean()


def r1_penalty(discriminator, real: torch.Tensor, labels) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): squared gradient norm of D at real images; multiply by gamma/2."""
    return squared_gradient_norm(discriminator, real, labels)


def r2_penalty(discriminator, fake: torch.Tensor, labels) -> torch.Tensor:
    """R2: the same at generated images (R3GAN needs both with RpGAN); multiply by gamma/2."""
    return squared_gradient_norm(discriminator, fake, labels)


def lecam_penalty(real_logits: torch.Tensor, fake_logits: torch.Tensor, anchor_real: torch.Tensor,
                  anchor_fake: torch.Tensor) -> torch.Tensor:
    """LeCam regulariser (Tseng et al. 2021, their code's form): D(real) is pulled down towards the EMA
    of D(fake) and D(fake) up towards the EMA of D(real), one-sided, in float32."""
    return (F.relu(real_logits.float() - anchor_fake).pow(2).mean()
            + F.relu(anchor_real - fake_logits.float()).pow(2).mean())


def _masked_mean(per_image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The batch mean of a per-image term, counting only the images where mask is true (still divided by the
    whole batch, so an image that counts weighs the same with and without the mask; `mean`'s weights would
    renormalise over the kept images instead)."""
    return per_image.mean() if mask is None else (per_image * mask).sum() / per_image.shape[0]


def adc_discriminator_term(real_classes: torch.Tensor, fake_classes: torch.Tensor, labels: torch.Tensor,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """ADC-GAN's classifier loss for D (Hou et al. 2022) on real and generated images of the same labels:
    cross-entropy over 2K classes, a real image of class k being class 2k and a generated one 2k + 1 (float32).
    `mask` (per image, bool): the images that count; None, all."""
    per_image = (F.cross_entropy(real_classes.float(), 2 * labels, reduction="none")
                 + F.cross_entropy(fake_classes.float(), 2 * labels + 1, reduction="none"))
    return _masked_mean(per_image, mask)


def adc_generator_term(fake_classes: torch.Tensor, labels: torch.Tensor,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """ADC-GAN's term for G: -log p(real, k) + log p(generated, k) for an image generated as class k. Its optimum
    is G's class-k images distributed as the real class k, not the images easiest to classify (AC-GAN's bias).
    `mask` as in adc_discriminator_term."""
    logits = fake_classes.float()
    per_image = (F.cross_entropy(logits, 2 * labels, reduction="none")
                 - F.cross_entropy(logits, 2 * labels + 1, reduction="none"))
    return _masked_mean(per_image, mask)
