"""The one LightningModule every GAN family shares: manual optimisation, n_disc D steps then one
G step per batch, optional DiffAugment / R1 / gradient penalty, and a generator EMA.

Families differ only in the `generator` / `discriminator` modules they are given (see conf/model/).
"""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch import nn

from ganlab.errors import GanlabError
from ganlab.models.diffaugment import diff_augment, parse_policy
from ganlab.models.ema import make_ema
from ganlab.models.losses import GANLoss, NonSaturatingLoss, r1_penalty, wgan_gradient_penalty


class DivergenceError(GanlabError):
    """A loss became NaN/inf; training stops before a bad checkpoint can be written."""


class GANModule(L.LightningModule):
    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GANLoss | None = None,
        num_classes: int = 0,
        latent_dim: int | None = None,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        n_disc: int = 1,
        r1_gamma: float = 0.0,
        diffaugment: str | None = None,
        ema_decay: float | None = 0.999,
        sample_rows: int = 8,
        sample_seed: int = 1234,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator", "loss"])
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.loss = loss or NonSaturatingLoss()
        self.hparams["loss"] = repr(self.loss)
        self.latent_dim = generator.latent_dim
        if latent_dim is not None and latent_dim != self.latent_dim:
            raise ValueError(f"latent_dim={latent_dim} but the generator takes {self.latent_dim}")
        self.num_classes = num_classes
        self.augment_ops = parse_policy(diffaugment)
        self.generator_ema = None
        if ema_decay:
            self.generator_ema = make_ema(generator, ema_decay)
        # The fixed-noise grid: the same latent vectors (and labels) for the whole run, saved in checkpoints.
        rows = max(num_classes, 1) if num_classes else sample_rows
        cols = 8
        g = torch.Generator().manual_seed(sample_seed)
        self.register_buffer("fixed_z", torch.randn(rows * cols, self.latent_dim, generator=g))
        self.register_buffer("fixed_labels", torch.arange(rows).repeat_interleave(cols) if num_classes
                             else torch.zeros(rows * cols, dtype=torch.long))
        self.register_buffer("nonfinite_seen", torch.zeros((), dtype=torch.bool), persistent=False)
        self.noise_rng: torch.Generator | None = None

    # ----------------------------------------------------------------- sampling
    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def sampling_generator(self) -> nn.Module:
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=self.device, generator=self.noise_rng)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, z: torch.Tensor | None = None,
               ema: bool = True) -> torch.Tensor:
        """n images in [-1, 1]; labels default to a uniform spread over the classes."""
        if self.conditional and labels is None:
            labels = torch.arange(n, device=self.device) % self.num_classes
        if labels is not None:
            labels = labels.to(self.device)
        z = self.noise(n) if z is None else z.to(self.device)
        net = self.sampling_generator() if ema else self.generator
        was_training = net.training
        net.eval()
        try:
            return net(z, labels if self.conditional else None).float().clamp(-1, 1)
        finally:
            net.train(was_training)

    def fixed_samples(self) -> torch.Tensor:
        return self.sample(len(self.fixed_z), self.fixed_labels if self.conditional else None, z=self.fixed_z)

    # ----------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        # Per-rank latent noise: identical seeds on every rank would give every GPU the same fakes.
        if self.noise_rng is None:
            seed = torch.initial_seed() + self.global_rank
            self.noise_rng = torch.Generator(device=self.device).manual_seed(seed % 2**63)

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=betas)
        return opt_g, opt_d

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.augment_ops) if self.augment_ops else x

    def discriminator_step(self, real, labels, opt_d):
        y = labels if self.conditional else None
        with torch.no_grad():
            fake = self.generator(self.noise(real.shape[0]), y)
        real_logits = self.discriminator(self.augment(real), y)
        fake_logits = self.discriminator(self.augment(fake), y)
        loss = self.loss.discriminator(real_logits, fake_logits)
        if self.loss.gradient_penalty:
            loss = loss + self.loss.gradient_penalty * wgan_gradient_penalty(self.discriminator, real, fake, y)
        if self.hparams.r1_gamma:
            loss = loss + 0.5 * self.hparams.r1_gamma * r1_penalty(self.discriminator, real, y)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_d.step()
        return loss.detach(), real_logits.detach(), fake_logits.detach()

    def generator_step(self, batch_size, labels, opt_g):
        y = labels if self.conditional else None
        self.toggle_optimizer(opt_g)  # D's parameters stop requiring grad while G learns
        fake_logits = self.discriminator(self.augment(self.generator(self.noise(batch_size), y)), y)
        loss = self.loss.generator(fake_logits)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.generator_ema is not None:
            self.generator_ema.update_parameters(self.generator)
        return loss.detach()

    def training_step(self, batch, batch_idx):
        real, labels = batch
        opt_g, opt_d = self.optimizers()
        for _ in range(self.hparams.n_disc):
            loss_d, real_logits, fake_logits = self.discriminator_step(real, labels, opt_d)
        loss_g = self.generator_step(real.shape[0], labels, opt_g)
        self.nonfinite_seen |= ~(torch.isfinite(loss_d) & torch.isfinite(loss_g))
        if self.trainer.global_step % max(self.trainer.log_every_n_steps, 1) == 0:
            self.check_finite()
        self.log_dict({
            "train/loss_d": loss_d,
            "train/loss_g": loss_g,
            "train/d_real": torch.sigmoid(real_logits.float()).mean(),  # D(x)
            "train/d_fake": torch.sigmoid(fake_logits.float()).mean(),  # D(G(z))
            "train/d_acc_real": (real_logits > 0).float().mean(),
            "train/d_acc_fake": (fake_logits < 0).float().mean(),
        }, prog_bar=False, on_step=True, on_epoch=False, batch_size=real.shape[0])
        self.log("train/loss_g_epoch", loss_g, on_step=False, on_epoch=True, batch_size=real.shape[0])

    def check_finite(self) -> None:
        if bool(self.nonfinite_seen):
            raise DivergenceError(
                f"training diverged: a NaN/inf loss appeared at or before step {self.trainer.global_step}; "
                "the last saved checkpoint is untouched. Lower the learning rates or change the loss."
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_finite()  # never write a checkpoint made from NaN weights
        if self.noise_rng is not None:
            checkpoint["noise_rng_state"] = self.noise_rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("noise_rng_state")
        if state is not None:
            self.noise_rng = torch.Generator(device=self.device)
            self.noise_rng.set_state(state)
