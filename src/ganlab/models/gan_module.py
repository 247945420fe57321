"""The one LightningModule every GAN family shares: manual optimisation, n_disc D steps then one
G step per batch, optional DiffAugment / R1 / gradient penalty, and a generator EMA.

Families differ only in the `generator` / `discriminator` modules they are given (see conf/model/),
which follow the family contract in ganlab/models/__init__.py: `generator.latent_dim`,
`num_classes` on conditional networks, `forward(z, labels)` -> images in [-1, 1], and a
discriminator returning 1-D logits.
"""
from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ganlab.errors import GanlabError
from ganlab.models.diffaugment import diff_augment, parse_policy
from ganlab.models.ema import make_ema
from ganlab.models.losses import GANLoss, NonSaturatingLoss, r1_penalty, wgan_gradient_penalty


class DivergenceError(GanlabError):
    """A loss became NaN/inf; training stops before a bad checkpoint can be written."""


def check_settings(generator, discriminator, loss, num_classes, n_disc, ema_decay) -> None:
    """Refuse combinations that would train silently wrong (ValueError names the setting)."""
    for name, net in (("generator", generator), ("discriminator", discriminator)):
        net_classes = getattr(net, "num_classes", 0)
        if net_classes != num_classes:
            raise ValueError(f"num_classes={num_classes} but the {name} ({type(net).__name__}) is built for "
                             f"{net_classes or 'no'} classes; conditional models need conditional networks")
    if not (isinstance(n_disc, int) and n_disc >= 1):
        raise ValueError(f"n_disc={n_disc!r}: need at least one discriminator step per generator step")
    if ema_decay and not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay={ema_decay}: must be in (0, 1), e.g. 0.999, or null for no EMA")
    if loss.gradient_penalty and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in discriminator.modules()):
        rank_zero_warn("WGAN-GP with BatchNorm in the discriminator: the penalty assumes per-sample gradients; "
                       "set model.discriminator.spectral_norm=true (which drops D's BatchNorm)")


def check_numbers(lr_g, lr_d, betas, r1_gamma, ema_decay) -> None:
    """A mistyped number on the command line (model.lr_g=abc) arrives as a string: name the setting."""
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    for name, value in (("lr_g", lr_g), ("lr_d", lr_d)):
        if not (number(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a positive number, e.g. 2.0e-4")
    if not (number(r1_gamma) and r1_gamma >= 0):
        raise ValueError(f"r1_gamma={r1_gamma!r}: expected a number >= 0 (0: no R1 penalty)")
    if ema_decay is not None and not number(ema_decay):
        raise ValueError(f"ema_decay={ema_decay!r}: expected a number in (0, 1), e.g. 0.999, or null for no EMA")
    pair = isinstance(betas, Sequence) and not isinstance(betas, str) and len(betas) == 2
    if not (pair and all(number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"betas={betas!r}: expected two numbers in [0, 1), e.g. [0.5, 0.999]")


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
        check_numbers(lr_g, lr_d, betas, r1_gamma, ema_decay)
        check_settings(generator, discriminator, self.loss, num_classes, n_disc, ema_decay)
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
        # global step of the first NaN/inf loss, -1 while all are finite (a tensor: no host sync per step)
        self.register_buffer("nonfinite_step", torch.full((), -1, dtype=torch.long), persistent=False)
        self.noise_rng: torch.Generator | None = None
        self._noise_rng_state: torch.Tensor | None = None  # from a checkpoint; used at the first draw
        self._noise_seed: int | None = None
        self._ema_started = False  # host-side copy of `generator_ema.n_averaged > 0` (see update_ema)
        self.set_training_networks()

    def set_training_networks(self, generator: nn.Module | None = None, discriminator: nn.Module | None = None):
        """The networks training_step calls: the strategy may pass compiled ones (ganlab.strategy);
        by default the plain modules. Sampling, the EMA, penalties and checkpoints use the plain ones.
        Kept in a tuple so they are not registered as submodules (no duplicate state_dict keys)."""
        self._train_nets = (generator if generator is not None else self.generator,
                            discriminator if discriminator is not None else self.discriminator)

    # ----------------------------------------------------------------- sampling
    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def sampling_generator(self) -> nn.Module:
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def noise(self, n: int) -> torch.Tensor:
        """Training noise, from the per-rank RNG on the module's device."""
        if self.noise_rng is None or self.noise_rng.device != self.device:
            self.noise_rng = self.make_noise_rng()
        return torch.randn(n, self.latent_dim, device=self.device, generator=self.noise_rng)

    def make_noise_rng(self) -> torch.Generator:
        # Per-rank seeds: identical seeds on every rank would give every GPU the same fakes. A resumed
        # run continues rank 0's saved stream; other ranks (and a stream saved on another device type)
        # are reseeded from (seed, rank, step).
        rng = torch.Generator(device=self.device)
        state, self._noise_rng_state = self._noise_rng_state, None
        if state is not None and self.global_rank == 0:
            try:
                return rng.set_state(state)
            except RuntimeError:
                pass
        seed = self._noise_seed if self._noise_seed is not None else torch.initial_seed()
        return rng.manual_seed((seed + self.global_rank + 7919 * self.global_step) % 2**63)

    @torch.no_grad()
    def sample(self, n: int, labels: torch.Tensor | None = None, z: torch.Tensor | None = None,
               ema: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images in [-1, 1] from the EMA generator (ema=False: the raw one); labels (n,) default to a
        uniform spread over the classes (an unconditional model ignores them). z is drawn with
        `generator` (else the global RNG), never with the training noise RNG, so sampling during
        training does not change the run."""
        if self.conditional:
            labels = torch.arange(n) % self.num_classes if labels is None else torch.as_tensor(labels)
            in_range = n == 0 or 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes
            if labels.shape != (n,) or labels.is_floating_point() or not in_range:
                raise ValueError(f"labels must be {n} integer class indices in [0, {self.num_classes}), "
                                 f"got shape {tuple(labels.shape)}")
            labels = labels.to(self.device)
        if z is None:
            device = generator.device if generator is not None else self.device
            z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        z = z.to(self.device)
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
        self.noise_rng, self._noise_seed = None, torch.initial_seed()  # made at the first draw, on the fit's device
        if self.generator_ema is not None:
            self._ema_started = bool(self.generator_ema.n_averaged > 0)  # one host sync per fit

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=betas)
        return opt_g, opt_d

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.augment_ops) if self.augment_ops else x

    def discriminator_step(self, real, labels, opt_d):
        y = labels if self.conditional else None
        generator, discriminator = self._train_nets
        with torch.no_grad():
            fake = generator(self.noise(real.shape[0]), y)
        real_logits = discriminator(self.augment(real), y)
        fake_logits = discriminator(self.augment(fake), y)
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
        generator, discriminator = self._train_nets
        fake_logits = discriminator(self.augment(generator(self.noise(batch_size), y)), y)
        loss = self.loss.generator(fake_logits)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.generator_ema is not None:
            self.update_ema()
        return loss.detach()

    @torch.no_grad()
    def update_ema(self) -> None:
        """AveragedModel.update_parameters without its two host syncs per call (it tests the device
        tensor n_averaged in Python): the first update copies G, later ones apply the EMA function."""
        ema = self.generator_ema
        averaged = [*ema.module.parameters(), *ema.module.buffers()]
        current = [*self.generator.parameters(), *self.generator.buffers()]
        if not self._ema_started:
            torch._foreach_copy_(averaged, current)
            self._ema_started = True
        else:
            for is_float in (True, False):
                pairs = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point() == is_float]
                if pairs:
                    ema.multi_avg_fn([a for a, _ in pairs], [c for _, c in pairs], ema.n_averaged)
        ema.n_averaged += 1

    def training_step(self, batch, batch_idx):
        real, labels = batch
        opt_g, opt_d = self.optimizers()
        step, losses = self.trainer.global_step, []
        for _ in range(self.hparams.n_disc):
            loss_d, real_logits, fake_logits = self.discriminator_step(real, labels, opt_d)
            losses.append(loss_d)
        loss_g = self.generator_step(real.shape[0], labels, opt_g)
        bad = ~torch.isfinite(torch.stack([x.float() for x in (*losses, loss_g)]))  # one per optimizer step
        first = step + bad.int().argmax()
        self.nonfinite_step.copy_(torch.where(bad.any() & (self.nonfinite_step < 0), first, self.nonfinite_step))
        if self.check_due(batch_idx):
            self.check_finite()
        self.log_dict({
            "train/loss_d": loss_d,
            "train/loss_g": loss_g,
            "train/d_real": torch.sigmoid(real_logits.float()).mean(),  # D(x)
            "train/d_fake": torch.sigmoid(fake_logits.float()).mean(),  # D(G(z))
            "train/d_acc_real": (real_logits > 0).float().mean(),
            "train/d_acc_fake": (fake_logits < 0).float().mean(),
        }, prog_bar=False, on_step=True, on_epoch=False, batch_size=real.shape[0])
        # sync_dist: the epoch mean over all processes (one reduction at epoch end, not per step)
        self.log("train/loss_g_epoch", loss_g, on_step=False, on_epoch=True, batch_size=real.shape[0],
                 sync_dist=True)

    def check_due(self, batch_idx: int) -> bool:
        """Check for NaN/inf (a host sync) when logging anyway, and before an epoch or the run ends."""
        t = self.trainer
        return (t.global_step % max(t.log_every_n_steps, 1) == 0 or t.is_last_batch
                or batch_idx + 1 >= t.num_training_batches or 0 < t.max_steps <= t.global_step)

    def check_finite(self) -> None:
        # any rank: one rank stopping alone would leave the others waiting in a collective
        if self.trainer.strategy.reduce_boolean_decision(bool(self.nonfinite_step >= 0), all=False):
            step, per_batch = int(self.nonfinite_step), self.hparams.n_disc + 1
            which = "generator" if step % per_batch == per_batch - 1 else "discriminator"
            where = (f"the {which} loss became NaN/inf at step {step}" if step >= 0
                     else f"a loss became NaN/inf on another process by step {self.trainer.global_step}")
            raise DivergenceError(
                f"training diverged: {where} (epoch {self.current_epoch}); stopped "
                "before writing a checkpoint, so the last one saved is intact. Lower model.lr_d/model.lr_g, "
                "add model.r1_gamma, or try another model/loss."
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.check_finite()  # never write a checkpoint made from NaN weights
        if self.noise_rng is not None:
            checkpoint["noise_rng_state"] = self.noise_rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # applied at the first draw, once the module is on its device (see make_noise_rng)
        self._noise_rng_state, self.noise_rng = checkpoint.get("noise_rng_state"), None
