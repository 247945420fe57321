"""Adversarial losses on discriminator logits, and the gradient penalties.

Each loss knows its two phases: `discriminator(real_logits, fake_logits)` and `generator(fake_logits)`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class GANLoss:
    #: weight of the WGAN-GP gradient penalty on real/fake interpolates; 0 disables it
    gradient_penalty: float = 0.0

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
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

    def discriminator(self, real_logits, fake_logits):
        real_target = torch.full_like(real_logits, 1.0 - self.label_smoothing)
        return (F.binary_cross_entropy_with_logits(real_logits, real_target)
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))

    def generator(self, fake_logits):
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


class HingeLoss(GANLoss):
    def discriminator(self, real_logits, fake_logits):
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()

    def generator(self, fake_logits):
        return -fake_logits.mean()


class LSGANLoss(GANLoss):
    def discriminator(self, real_logits, fake_logits):
        return 0.5 * ((real_logits - 1.0).pow(2).mean() + fake_logits.pow(2).mean())

    def generator(self, fake_logits):
        return 0.5 * (fake_logits - 1.0).pow(2).mean()


class WGANGPLoss(GANLoss):
    """Wasserstein loss with gradient penalty (Gulrajani et al. 2017); use without BatchNorm in D."""

    def __init__(self, gradient_penalty: float = 10.0):
        if not gradient_penalty >= 0.0:
            raise ValueError(f"gradient_penalty={gradient_penalty}: must be >= 0 (10 is the paper's value)")
        self.gradient_penalty = float(gradient_penalty)

    def discriminator(self, real_logits, fake_logits):
        return fake_logits.mean() - real_logits.mean()

    def generator(self, fake_logits):
        return -fake_logits.mean()


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


def r1_penalty(discriminator, real: torch.Tensor, labels) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): squared gradient norm of D at real images; multiply by gamma/2."""
    return _input_gradients(discriminator, real, labels).pow(2).sum(dim=1).mean()
