"""The one LightningModule every GAN family shares: manual optimisation, n_disc D steps then one
G step per batch, optional DiffAugment / R1 / R2 / gradient penalty, and a generator EMA.

Families differ only in the `generator` / `discriminator` modules they are given (see conf/model/),
which follow the family contract in ganlab/models/__init__.py: `generator.latent_dim`,
`num_classes` on conditional networks, `forward(z, labels)` -> images in [-1, 1], and a
discriminator returning 1-D logits.

Small-data options, all off by default (conf/model/dcgan.yaml says which key switches each on):
ADA (adaptive augmentation probability, models/ada.py), APA (adaptive pseudo augmentation,
models/apa.py), LeCam regularisation, lazy R1, EMA as a
half-life in kimg with ramp-up, a transition from unconditional to conditional training, mode-seeking
regularisation, class-weighted losses and a linear learning-rate decay over the end of the training budget
(models/lr_decay.py). Schedules count images as batches x batch size x processes
(derived from global_step, so they resume exactly; the decay over a max_time budget follows the clock).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Sequence

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from ganlab.errors import GanlabError
from ganlab.models.ada import AdaptiveAugment, multi_process
from ganlab.models.apa import PseudoAugment
from ganlab.models.cdcgan import enable_cond_weight
from ganlab.models.dcgan import check_count, check_flag, has_noise_inputs, noise_seeded_by
from ganlab.models.diffaugment import augment_with_probability, diff_augment, parse_policy
from ganlab.models.ema import ema_beta, make_ema, step_average
from ganlab.models.gsr import cbn_layers, class_weights as gsr_class_weights, gsr_term
from ganlab.models.lr_decay import decay_factor, no_budget, step_progress, time_progress
from ganlab.models.losses import (GANLoss, NonSaturatingLoss, adc_discriminator_term, adc_generator_term,
                                  lecam_penalty, r1_penalty, r2_penalty, wgan_gradient_penalty)
from ganlab.models.standing_stats import recompute_batchnorm

CLASS_WEIGHTINGS = ("inverse", "inverse_sqrt")
TIME_REFRESH_BATCHES = 8  # how often a max_time budget's progress is read (a broadcast under DDP)


class DivergenceError(GanlabError):
    """A loss became NaN/inf; training stops before a bad checkpoint can be written."""


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_fraction(name: str, value, hint: str) -> None:
    """A setting that must be a number strictly between 0 and 1 (a target or a decay)."""
    if not (number(value) and 0 < value < 1):
        raise ValueError(f"{name}={value!r}: expected a number in (0, 1), {hint}")


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


def check_numbers(lr_g, lr_d, betas, r1_gamma, ema_decay, r2_gamma=0.0) -> None:
    """A mistyped number on the command line (model.lr_g=abc) arrives as a string: name the setting."""
    for name, value in (("lr_g", lr_g), ("lr_d", lr_d)):
        if not (number(value) and value > 0):
            raise ValueError(f"{name}={value!r}: expected a positive number, e.g. 2.0e-4")
    for name, value, images in (("r1_gamma", r1_gamma, "real"), ("r2_gamma", r2_gamma, "generated")):
        if not (number(value) and value >= 0):
            raise ValueError(f"{name}={value!r}: expected a number >= 0 (0: no gradient penalty on {images} images)")
    if ema_decay is not None and not number(ema_decay):
        raise ValueError(f"ema_decay={ema_decay!r}: expected a number in (0, 1), e.g. 0.999, or null for no EMA")
    pair = isinstance(betas, Sequence) and not isinstance(betas, str) and len(betas) == 2
    if not (pair and all(number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"betas={betas!r}: expected two numbers in [0, 1), e.g. [0.5, 0.999]")


def check_techniques(num_classes, diffaugment, ada_target, ada_kimg, ada_interval, lecam_weight, lecam_decay,
                     r1_interval, ema_kimg, ema_rampup, cond_start_kimg, cond_end_kimg, mode_seeking,
                     class_weights, augment_p=1.0, translation_ratio=0.125, standing_stats=0,
                     lr_decay_start=None) -> None:
    """The small-data options: a bad value is a ValueError naming the key."""
    if lr_decay_start is not None and not (number(lr_decay_start) and 0 <= lr_decay_start < 1):
        raise ValueError(f"lr_decay_start={lr_decay_start!r}: expected the fraction of the training budget after "
                         "which both learning rates fall linearly to 0, in [0, 1), e.g. 0.5, or null (off)")
    if not (number(translation_ratio) and 0 < translation_ratio <= 0.5):
        raise ValueError(f"translation_ratio={translation_ratio!r}: expected the largest shift as a fraction of "
                         "the image size, in (0, 0.5], e.g. 0.125")
    if not (number(augment_p) and 0 <= augment_p <= 1):
        raise ValueError(f"augment_p={augment_p!r}: expected a probability in [0, 1] (1: DiffAugment as published)")
    if augment_p != 1 and ada_target is not None:
        raise ValueError(f"augment_p={augment_p} with ada_target={ada_target}: ADA sets the probability itself; "
                         "choose one")
    if ada_target is not None:
        check_fraction("ada_target", ada_target, "e.g. 0.6, or null (ADA off)")
        if not parse_policy(diffaugment):
            raise ValueError("ada_target is set but model.diffaugment is null: ADA applies the DiffAugment ops "
                             "with probability p; name them, e.g. model.diffaugment=mri or "
                             "\"model.diffaugment='translation,color,cutout'\"")
    if not (number(ada_kimg) and ada_kimg > 0):
        raise ValueError(f"ada_kimg={ada_kimg!r}: expected a positive number of kimg for p to go 0 -> 1, e.g. 100")
    for name, value, least, unit in (("ada_interval", ada_interval, 1, "minibatches"),
                                     ("r1_interval", r1_interval, 1, "minibatches"),
                                     ("standing_stats", standing_stats, 0, "batches; 0: off")):
        check_count(name, value, unit, least)
    for name, value in (("lecam_weight", lecam_weight), ("mode_seeking", mode_seeking)):
        if not (number(value) and value >= 0):
            raise ValueError(f"{name}={value!r}: expected a number >= 0 (0: off)")
    check_fraction("lecam_decay", lecam_decay, "e.g. 0.99")
    if ema_kimg is not None and not (number(ema_kimg) and ema_kimg > 0):
        raise ValueError(f"ema_kimg={ema_kimg!r}: expected a positive half-life in kimg, e.g. 10, or null")
    if ema_rampup is not None and not (number(ema_rampup) and ema_rampup > 0):
        raise ValueError(f"ema_rampup={ema_rampup!r}: expected a positive number, e.g. 0.05, or null (no ramp-up)")
    check_kimg_window("cond", cond_start_kimg, cond_end_kimg, "the conditioning weight goes 0 -> 1 between them")
    if cond_start_kimg is not None and not num_classes:
        raise ValueError("cond_start_kimg/cond_end_kimg need a conditional model (model=cdcgan)")
    if class_weights is not None:
        if not num_classes:
            raise ValueError("class_weights needs a conditional model (model=cdcgan)")
        if isinstance(class_weights, str):
            if class_weights not in CLASS_WEIGHTINGS:
                raise ValueError(f"class_weights={class_weights!r}: choose one of {CLASS_WEIGHTINGS}, "
                                 f"a list of {num_classes} positive numbers, or null")
        elif not (isinstance(class_weights, Sequence) and len(class_weights) == num_classes
                  and all(number(w) and w > 0 for w in class_weights)):
            raise ValueError(f"class_weights={class_weights!r}: expected {num_classes} positive numbers "
                             f"(one per class), one of {CLASS_WEIGHTINGS}, or null")


def check_kimg_window(prefix: str, start, end, what: str) -> None:
    """<prefix>_start_kimg and <prefix>_end_kimg go together: both or neither, numbers with 0 <= start <= end."""
    shown = f"{prefix}_start_kimg={start!r} {prefix}_end_kimg={end!r}"
    if (start is None) != (end is None):
        raise ValueError(f"{shown}: set both ({what}) or neither")
    if start is not None and not (number(start) and number(end) and 0 <= start <= end):
        raise ValueError(f"{shown}: expected numbers with 0 <= start <= end (kimg)")


def ramp(images_seen: int, start_kimg: float, end_kimg: float) -> float:
    """0 before start_kimg, 1 from end_kimg on, linear between (a step at end_kimg when they are equal)."""
    start, end = start_kimg * 1000, end_kimg * 1000
    if end <= start:
        return float(images_seen >= end)
    return min(max((images_seen - start) / (end - start), 0.0), 1.0)


def check_adc(adc_weight, num_classes, discriminator, adc_few_shot=True, adc_fade_start_kimg=None,
              adc_fade_end_kimg=None, adc_rise_start_kimg=None, adc_rise_end_kimg=None) -> None:
    if not (number(adc_weight) and adc_weight >= 0):
        raise ValueError(f"adc_weight={adc_weight!r}: expected a number >= 0 (0: off; ADC-GAN's paper 1.0)")
    check_kimg_window("adc_rise", adc_rise_start_kimg, adc_rise_end_kimg, "ADC's weight rises from 0 between them")
    check_kimg_window("adc_fade", adc_fade_start_kimg, adc_fade_end_kimg, "ADC's weight falls to 0 between them")
    for prefix, start, what in (("adc_rise", adc_rise_start_kimg, "bring ADC in"),
                                ("adc_fade", adc_fade_start_kimg, "fade ADC out")):
        if start is not None and not adc_weight:
            raise ValueError(f"{prefix}_start_kimg/{prefix}_end_kimg {what}, but adc_weight is 0: set "
                             "model.adc_weight too, e.g. 0.3")
    if adc_rise_start_kimg is not None and adc_fade_start_kimg is not None and adc_rise_end_kimg > adc_fade_start_kimg:
        raise ValueError(f"adc_rise_end_kimg={adc_rise_end_kimg!r} adc_fade_start_kimg={adc_fade_start_kimg!r}: "
                         "ADC must have risen before it fades (rise end <= fade start)")
    check_flag("adc_few_shot", adc_few_shot)
    if not adc_few_shot and not adc_weight:
        raise ValueError("adc_few_shot=false but adc_weight is 0: it leaves ADC's terms off the few-shot classes; "
                         "set model.adc_weight too, e.g. 1.0")
    if adc_weight and not (num_classes and hasattr(discriminator, "enable_class_head")):
        raise ValueError("adc_weight needs a conditional model (model=cdcgan): its classifier tells real from "
                         "generated images of each class")


def weights_from_counts(counts: Sequence[int], how: str) -> torch.Tensor:
    """Per-class loss weights from training-set counts: inverse frequency N / (K n_c) (mean 1 over the
    training images), or its square root."""
    counts = torch.as_tensor(list(counts), dtype=torch.float64)
    if (counts <= 0).any():
        raise ValueError(f"class_weights={how!r}: a class has no training images (counts {counts.tolist()})")
    weights = counts.sum() / (len(counts) * counts)
    return (weights.sqrt() if how == "inverse_sqrt" else weights).float()


def check_gsr(gsr_weight, gsr_beta, generator) -> None:
    if not (number(gsr_weight) and gsr_weight >= 0):
        raise ValueError(f"gsr_weight={gsr_weight!r}: expected a number >= 0 (0: off; the paper 0.5)")
    if not (number(gsr_beta) and 0 <= gsr_beta < 1):
        raise ValueError(f"gsr_beta={gsr_beta!r}: expected a number in [0, 1) (the paper 0.999; 0: every class "
                         "weighs the same)")
    if gsr_weight and not cbn_layers(generator):
        raise ValueError("gsr_weight regularises G's conditional BatchNorm: it needs model=cdcgan with "
                         "model.generator.conditioning=cbn")


def check_few_shot(num_classes, policy, max_images, ada_target=None) -> tuple:
    """The few-shot classes' extra DiffAugment ops (() when off), after checking the settings."""
    ops = parse_policy(policy)
    if policy is not None and not ops:
        raise ValueError(f"few_shot_policy={policy!r}: name the extra ops, e.g. brightness,contrast, or null (off)")
    if ops and not num_classes:
        raise ValueError("few_shot_policy needs a conditional model (model=cdcgan): it augments by class")
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"few_shot_images={max_images!r}: expected a positive number of training images")
    if ada_target is not None:
        check_fraction("few_shot_ada_target", ada_target, "e.g. 0.6, or null")
        if not ops:
            raise ValueError("few_shot_ada_target is set but few_shot_policy is null: it adapts the probability "
                             "of the few-shot ops; name them, e.g. model.few_shot_policy='flip,rotation'")
    return ops


def check_apa(apa_target, apa_few_shot, num_classes, loss) -> None:
    if apa_target is not None:
        check_fraction("apa_target", apa_target, "e.g. 0.6, or null (APA off)")
        if loss.relativistic:
            raise ValueError("apa_target with a relativistic loss (model/loss=rpgan): APA reads D's overfitting from "
                             "the sign of D(real), which a relativistic D leaves without a fixed level")
    check_flag("apa_few_shot", apa_few_shot)
    if apa_few_shot and apa_target is None:
        raise ValueError("apa_few_shot=true but apa_target is null: it limits APA to the few-shot classes; "
                         "set model.apa_target (e.g. 0.6)")
    if apa_few_shot and not num_classes:
        raise ValueError("apa_few_shot needs a conditional model (model=cdcgan): it picks classes")


def mode_seeking_term(fake: torch.Tensor, z: torch.Tensor, half: int) -> torch.Tensor:
    """MSGAN's term to minimise: 1 / (mean |G(z1) - G(z2)| / mean |z1 - z2| + eps), in float32."""
    fake, z = fake.float(), z.float()
    ratio = (fake[:half] - fake[half:]).abs().mean() / (z[:half] - z[half:]).abs().mean()
    return 1.0 / (ratio + 1e-5)


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
        ada_target: float | None = None,
        ada_kimg: float = 500.0,
        ada_interval: int = 4,
        lecam_weight: float = 0.0,
        lecam_decay: float = 0.99,
        r1_interval: int = 1,
        ema_kimg: float | None = None,
        ema_rampup: float | None = None,
        cond_start_kimg: float | None = None,
        cond_end_kimg: float | None = None,
        mode_seeking: float = 0.0,
        class_weights: str | Sequence[float] | None = None,
        augment_p: float = 1.0,
        translation_ratio: float = 0.125,
        few_shot_policy: str | None = None,
        few_shot_images: int = 100,
        few_shot_ada_target: float | None = None,
        standing_stats: int = 0,
        lr_decay_start: float | None = None,
        adc_weight: float = 0.0,
        adc_few_shot: bool = True,
        adc_fade_start_kimg: float | None = None,
        adc_fade_end_kimg: float | None = None,
        adc_rise_start_kimg: float | None = None,
        adc_rise_end_kimg: float | None = None,
        gsr_weight: float = 0.0,
        gsr_beta: float = 0.999,
        r2_gamma: float = 0.0,
        d_joint_batch: bool = False,
        apa_target: float | None = None,
        apa_few_shot: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["generator", "discriminator", "loss"])
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.loss = loss or NonSaturatingLoss()
        self.hparams["loss"] = repr(self.loss)
        self.latent_dim = generator.latent_dim
        check_count("latent_dim", self.latent_dim, "the size of G's noise vector", least=1)
        if latent_dim is not None and latent_dim != self.latent_dim:
            raise ValueError(f"latent_dim={latent_dim} but the generator takes {self.latent_dim}")
        self.num_classes = num_classes
        check_numbers(lr_g, lr_d, betas, r1_gamma, ema_decay, r2_gamma)
        check_settings(generator, discriminator, self.loss, num_classes, n_disc, ema_decay)
        if self.loss.relativistic and (ada_target is not None or few_shot_ada_target is not None):
            raise ValueError("ada_target/few_shot_ada_target with a relativistic loss (model/loss=rpgan): ADA reads "
                             "D's overfitting from the sign of D(real), which a relativistic D leaves without a "
                             "fixed level; use a fixed model.augment_p, or another loss")
        check_techniques(num_classes, diffaugment, ada_target, ada_kimg, ada_interval, lecam_weight, lecam_decay,
                         r1_interval, ema_kimg, ema_rampup, cond_start_kimg, cond_end_kimg, mode_seeking,
                         class_weights, augment_p, translation_ratio, standing_stats, lr_decay_start)
        check_adc(adc_weight, num_classes, discriminator, adc_few_shot, adc_fade_start_kimg, adc_fade_end_kimg,
                  adc_rise_start_kimg, adc_rise_end_kimg)
        check_gsr(gsr_weight, gsr_beta, generator)
        check_flag("d_joint_batch", d_joint_batch)
        check_apa(apa_target, apa_few_shot, num_classes, self.loss)
        self.augment_ops, self.augment_p = parse_policy(diffaugment), float(augment_p)
        self.translation_ratio = float(translation_ratio)
        self.ada = (AdaptiveAugment(self.augment_ops, ada_target, ada_kimg, ada_interval, self.translation_ratio)
                    if ada_target else None)
        self.few_shot_ops = check_few_shot(num_classes, few_shot_policy, few_shot_images, few_shot_ada_target)
        if self.needs_few_shot_classes:  # which classes count as few-shot is filled in from the data at fit start
            self.register_buffer("few_shot_class", torch.zeros(num_classes, dtype=torch.bool))
        self.few_shot_ada = (AdaptiveAugment(self.few_shot_ops, few_shot_ada_target, ada_kimg, ada_interval,
                                             self.translation_ratio, classes=num_classes)
                             if few_shot_ada_target is not None else None)
        self.few_shot_names: list[tuple[int, str]] = []  # (index, name) of the few-shot classes, for the logs
        self.apa = (PseudoAugment(apa_target, ada_kimg, ada_interval, classes=num_classes)
                    if apa_target is not None else None)
        # (index, name) of the classes whose APA p is logged, set at fit start; None: one pooled p (unconditional)
        self.apa_names: list[tuple[int, str]] | None = None
        if lecam_weight:
            # EMA anchors of the mean D(real) and D(fake) logits, and how many updates they have had
            self.register_buffer("lecam_anchors", torch.zeros(2))
            self.register_buffer("lecam_updates", torch.zeros((), dtype=torch.long))
        if cond_start_kimg is not None:
            enable_cond_weight(generator)
            enable_cond_weight(discriminator)
        self._cond_now = 1.0  # the conditioning weight of this batch (cond_start_kimg); it also scales ADC's terms
        self._adc_scale = 1.0  # ADC's rise and fade factor of this batch (adc_rise_* / adc_fade_* kimg)
        self._term_logs: dict[str, torch.Tensor] = {}  # ADC's and gSR's last terms, for the logs
        if adc_weight:
            discriminator.enable_class_head()
        if gsr_weight:  # gSR's per-class weights, filled in from the data's class counts at fit start
            self.register_buffer("gsr_class_weight", torch.ones(num_classes))
        if class_weights is not None:  # "inverse"/"inverse_sqrt" are filled in from the data at fit start
            self.register_buffer("class_weight", torch.as_tensor(
                class_weights if not isinstance(class_weights, str) else [1.0] * num_classes, dtype=torch.float32))
        self._standing: tuple | None = None  # (device, EMA copy with recomputed statistics): not a submodule
        self.generator_ema = None
        if ema_decay or ema_kimg:
            self.generator_ema = make_ema(generator, ema_decay or 0.999)  # the decay is unused with ema_kimg
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
        self._noise_rng_states: list[torch.Tensor] | None = None  # every rank's, from a checkpoint
        self._noise_seed: int | None = None
        self._time_progress: float | None = None  # share of max_time spent, refreshed every few batches
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
        """The network that draws samples: the EMA generator (the training one without EMA). With
        standing_stats, a copy of the EMA generator whose BatchNorm statistics are recomputed for its own
        weights from that many batches (ganlab.models.standing_stats), kept until the EMA next moves; the
        EMA itself, and so training and checkpoints, are unchanged."""
        if self.generator_ema is None:
            return self.generator
        net = self.generator_ema.module
        if not self.hparams.standing_stats:
            return net
        if self._standing is None or self._standing[0] != self.device:
            standing = copy.deepcopy(net)
            recompute_batchnorm(standing, self.latent_dim, self.num_classes, batches=self.hparams.standing_stats)
            self._standing = (self.device, standing)
        return self._standing[1]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._standing = None  # new EMA weights: statistics to recompute
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def noise(self, n: int) -> torch.Tensor:
        """Training noise, from the per-rank RNG on the module's device."""
        if self.noise_rng is None or self.noise_rng.device != self.device:
            self.noise_rng = self.make_noise_rng()
        return torch.randn(n, self.latent_dim, device=self.device, generator=self.noise_rng)

    def make_noise_rng(self) -> torch.Generator:
        # Per-rank seeds: identical seeds on every rank would give every GPU the same fakes. A resumed
        # run continues every rank's saved stream (bit-exact DDP resume); a checkpoint from another
        # process count (or an old one, with rank 0's stream only) reseeds the ranks it has no stream
        # for from (seed, rank, step), as does a stream saved on another device type.
        rng = torch.Generator(device=self.device)
        state, self._noise_rng_state = self._noise_rng_state, None
        states, self._noise_rng_states = self._noise_rng_states, None
        if states is not None and len(states) == (self._trainer.world_size if self._trainer is not None else 1):
            state = states[self.global_rank].clone()  # set_state reads a view's storage from its start (crash)
        elif self.global_rank != 0:
            state = None
        if state is not None:
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
            with noise_seeded_by(z) if has_noise_inputs(net) else contextlib.nullcontext():
                return net(z, labels if self.conditional else None).float().clamp(-1, 1)
        finally:
            net.train(was_training)

    def fixed_samples(self) -> torch.Tensor:
        return self.sample(len(self.fixed_z), self.fixed_labels if self.conditional else None, z=self.fixed_z)

    # ----------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        self.noise_rng, self._noise_seed = None, torch.initial_seed()  # made at the first draw, on the fit's device
        self._time_progress = None
        if self.generator_ema is not None:
            self._ema_started = bool(self.generator_ema.n_averaged > 0)  # one host sync per fit
        how = self.hparams.class_weights
        if isinstance(how, str):
            self.class_weight.copy_(weights_from_counts(self.training_class_counts(), how))
        if self.needs_few_shot_classes:
            self.mark_few_shot_classes(self.training_counts(
                "few_shot_policy" if self.few_shot_ops else "apa_few_shot" if self.hparams.apa_few_shot
                else "adc_few_shot"))
        if self.apa is not None and self.apa.classes:
            self.apa_names = (self.few_shot_names if self.hparams.apa_few_shot else
                              list(enumerate(self.class_names())))
        if self.hparams.gsr_weight:
            counts = self.training_counts("gsr_weight")
            self.gsr_class_weight.copy_(gsr_class_weights(counts.values(), self.hparams.gsr_beta))
            shown = ", ".join(f"{name} {w:.2f}" for name, w in zip(counts, self.gsr_class_weight.tolist()))
            rank_zero_info(f"gsr_weight: each class's weight x {self.hparams.gsr_weight}: {shown}")

    def on_train_start(self) -> None:
        # here, not at fit start: the batches per epoch (the epoch budget) are known once the data is set up
        start = self.hparams.lr_decay_start
        if start is not None and step_progress(self.trainer, 0, 1) is None and time_progress(self.trainer) is None:
            raise GanlabError(no_budget(start))

    @property
    def adc_leaves_out_few_shot(self) -> bool:
        return bool(self.hparams.adc_weight) and not self.hparams.adc_few_shot

    @property
    def needs_few_shot_classes(self) -> bool:
        return bool(self.few_shot_ops) or self.adc_leaves_out_few_shot or self.hparams.apa_few_shot

    def mark_few_shot_classes(self, counts: dict[str, int]) -> None:
        """Mark the classes with at most few_shot_images training images (counts: class name -> images)."""
        limit = self.hparams.few_shot_images
        self.few_shot_class.copy_(torch.as_tensor([0 < n <= limit for n in counts.values()]))
        self.few_shot_names = [(c, name) for c, (name, n) in enumerate(counts.items()) if 0 < n <= limit]
        chosen = [f"{name} ({counts[name]} images)" for _, name in self.few_shot_names]
        uses = {}  # setting: what it does to the few-shot classes
        if self.few_shot_ops:
            uses["few_shot_policy"] = f"{','.join(self.few_shot_ops)} on"
        if self.adc_leaves_out_few_shot:
            uses["adc_few_shot=false"] = "no ADC terms for"
        if self.hparams.apa_few_shot:
            uses["apa_few_shot"] = "pseudo augmentation only on"
        for setting, does in uses.items():
            if chosen:
                rank_zero_info(f"{setting}: {does} {', '.join(chosen)}")
            else:
                rank_zero_warn(f"{setting}: no class has at most few_shot_images={limit} training images ({counts}), "
                               "so it changes nothing")

    def adc_mask(self, labels: torch.Tensor) -> torch.Tensor | None:
        """The images whose ADC terms count: all (None), or with adc_few_shot=false those not of a few-shot class."""
        return ~self.few_shot_class[labels] if self.adc_leaves_out_few_shot else None

    def training_counts(self, setting: str) -> dict[str, int]:
        """The training split's images per class, from the datamodule `setting` needs them for."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "class_counts"):
            raise ValueError(f"{setting}={self.hparams[setting]!r} needs the data's class counts "
                             "(a ganlab datamodule)" + ("; pass a list of weights instead" if setting == "class_weights"
                                                       else ""))
        return datamodule.class_counts("train")

    def training_class_counts(self) -> list[int]:
        counts = list(self.training_counts("class_weights").values())
        datamodule = self.trainer.datamodule
        if getattr(datamodule, "balanced_sampling", False):
            rank_zero_warn("class_weights with data.balanced_sampling=true: batches are already class-balanced, "
                           "so the inverse-frequency weights count the imbalance twice")
        return counts

    def configure_optimizers(self):
        betas = tuple(self.hparams.betas)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=betas)
        return opt_g, opt_d

    def augment(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """What D sees of a batch of real or generated images: the DiffAugment ops (with ADA's or a fixed
        probability), then the few-shot classes' extra ops on their images."""
        if self.ada is not None:
            x = self.ada(x)
        elif self.augment_ops and self.augment_p < 1:  # a share reaches D as it is: see conf/model/dcgan.yaml
            x = augment_with_probability(x, self.augment_ops, self.augment_p, self.translation_ratio)
        elif self.augment_ops:
            x = diff_augment(x, self.augment_ops, self.translation_ratio)
        if self.few_shot_ops and labels is not None:
            few = self.few_shot_class[labels].view(-1, 1, 1, 1)
            extra = (self.few_shot_ada(x, labels) if self.few_shot_ada is not None
                     else diff_augment(x, self.few_shot_ops, self.translation_ratio))
            x = torch.where(few, extra, x)
        return x

    def world_size(self) -> int:
        return self.trainer.world_size if self._trainer is not None else 1

    def decay_learning_rates(self, batches: int, batch_idx: int, opt_g, opt_d) -> float:
        """Set both optimizers' learning rates for this batch (model.lr_decay_start); the factor applied."""
        trainer = self.trainer
        progress = step_progress(trainer, batches, self.hparams.n_disc + 1) or 0.0
        if self._time_progress is None or batch_idx % TIME_REFRESH_BATCHES == 0:
            spent = time_progress(trainer)  # None on every process alike: no max_time
            # every process must use the same rate, and their clocks differ: rank 0's reading
            self._time_progress = 0.0 if spent is None else trainer.strategy.broadcast(spent)
        factor = decay_factor(max(progress, self._time_progress), self.hparams.lr_decay_start)
        for opt, lr in ((opt_g, self.hparams.lr_g), (opt_d, self.hparams.lr_d)):
            for group in getattr(opt, "optimizer", opt).param_groups:
                group["lr"] = lr * factor
        return factor

    def images_seen(self, batch_size: int, batches: int) -> int:
        """Images all processes have shown D after `batches` batches of `batch_size` per process."""
        return batches * batch_size * self.world_size()

    def loss_weights(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None or self.hparams.class_weights is None:
            return None
        return self.class_weight[labels]

    def discriminator_step(self, real, labels, opt_d, d_step: int = 0):
        """One D update; `d_step` counts D updates over the run (lazy R1 uses it)."""
        y = labels if self.conditional else None
        generator, discriminator = self._train_nets
        with torch.no_grad():
            fake = generator(self.noise(real.shape[0]), y)
        adc = self.adc_weight_now()
        # the ADC head is used at weight 0 too: DDP expects every parameter in the graph
        told_real = real if self.apa is None else self.pseudo_augment(real, y, generator)
        real_out, fake_out = self.judge(discriminator, self.augment(told_real, y), self.augment(fake, y), y, y)
        if self.hparams.adc_weight:
            (real_logits, real_classes), (fake_logits, fake_classes) = real_out, fake_out
        else:
            real_logits, fake_logits = real_out, fake_out
        loss = self.loss.discriminator(real_logits, fake_logits, **self.weight_kwargs(y))
        if self.hparams.adc_weight:
            term = adc_discriminator_term(real_classes, fake_classes, y, self.adc_mask(y))
            loss = loss + adc * term
            self._term_logs["train/adc_d"] = term.detach()
        if self.ada is not None:
            self.ada.accumulate(real_logits)
        if self.few_shot_ada is not None:
            self.few_shot_ada.accumulate(real_logits, labels)
        if self.apa is not None:
            self.apa.accumulate(real_logits, y)
        if self.hparams.lecam_weight:
            self.update_lecam_anchors(real_logits, fake_logits)
            anchors = self.lecam_anchors
            loss = loss + self.hparams.lecam_weight * lecam_penalty(real_logits, fake_logits, anchors[0], anchors[1])
        if self.loss.gradient_penalty:
            loss = loss + self.loss.gradient_penalty * wgan_gradient_penalty(self.discriminator, real, fake, y)
        interval = self.hparams.r1_interval
        if d_step % interval == 0:  # lazy R1 / R2: every `interval` D steps, x interval
            if self.hparams.r1_gamma:
                loss = loss + 0.5 * self.hparams.r1_gamma * interval * r1_penalty(self.discriminator, real, y)
            if self.hparams.r2_gamma:
                loss = loss + 0.5 * self.hparams.r2_gamma * interval * r2_penalty(self.discriminator, fake, y)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_d.step()
        return loss.detach(), real_logits.detach(), fake_logits.detach()

    @torch.no_grad()
    def pseudo_augment(self, real, y, generator) -> torch.Tensor:
        """APA: real images replaced by G's images of the same class with probability p (models/apa.py); with
        apa_few_shot only those of the few-shot classes. R1 still reads the true real images."""
        classes = self.few_shot_class if self.hparams.apa_few_shot else None
        return self.apa(real, y, lambda n: generator(self.noise(n), y), classes)

    def class_names(self) -> list[str]:
        """The datamodule's class names (the data contract's `class_names`), else the class indices."""
        names = list(getattr(getattr(self.trainer, "datamodule", None), "class_names", None) or [])
        return names if len(names) == self.num_classes else [str(c) for c in range(self.num_classes)]

    def judge(self, discriminator, real, fake, real_labels, fake_labels):
        """D's outputs (logits, or logits and class logits with ADC) for augmented real and fake images: two
        forwards, or with d_joint_batch one forward of both, so D's BatchNorm normalises real and fake images with
        the same statistics and a shift between them stays visible to D (in separate batches each is normalised
        away). `real` None: fakes alone."""
        classes = {"classes": True} if self.hparams.adc_weight else {}
        if real is None:
            return None, discriminator(fake, fake_labels, **classes)
        if not self.hparams.d_joint_batch:
            return discriminator(real, real_labels, **classes), discriminator(fake, fake_labels, **classes)
        labels = None if real_labels is None else torch.cat([real_labels, fake_labels])
        both = discriminator(torch.cat([real, fake]), labels, **classes)
        n = real.shape[0]
        if classes:
            return (both[0][:n], both[1][:n]), (both[0][n:], both[1][n:])
        return both[:n], both[n:]

    def weight_kwargs(self, labels) -> dict:
        weights = self.loss_weights(labels)
        return {} if weights is None else {"weights": weights}

    @torch.no_grad()
    def update_lecam_anchors(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> None:
        """EMA (decay lecam_decay; the first update copies) of the batch-mean D(real) and D(fake) logits;
        under DDP the batch means are averaged over processes first, so every process holds the same anchors."""
        means = torch.stack([real_logits.detach().float().mean(), fake_logits.detach().float().mean()])
        if multi_process():
            dist.all_reduce(means)
            means /= dist.get_world_size()
        keep = torch.where(self.lecam_updates > 0, self.hparams.lecam_decay, 0.0)
        self.lecam_anchors.copy_(keep * self.lecam_anchors + (1 - keep) * means)
        self.lecam_updates += 1

    def generator_step(self, batch_size, labels, opt_g, images_seen: int | None = None,
                       real: torch.Tensor | None = None):
        """One G update; `images_seen` (after this batch, all processes) sets the EMA decay with ema_kimg. A
        relativistic loss pairs each fake with one of the `real` images (of the same label unless mode seeking
        repeats the first half's labels)."""
        y = labels if self.conditional else None
        self.toggle_optimizer(opt_g)  # D's parameters stop requiring grad while G learns
        generator, discriminator = self._train_nets
        needs_real = self.loss.relativistic or self.hparams.d_joint_batch
        if needs_real and real is None:
            raise ValueError("a relativistic loss and d_joint_batch need the batch's real images in the generator step")
        real_labels = y  # before mode seeking repeats the first half's labels for the fakes
        real_seen = self.augment(real, y) if needs_real else None
        ms_weight = self.hparams.mode_seeking
        half = batch_size // 2
        if ms_weight and half:
            # mode seeking (Mao et al. 2019): pairs (i, i + half) share a label and differ in z
            y = torch.cat([y[:half], y[:half]]) if y is not None else None
            z = self.noise(2 * half)
        else:
            z = self.noise(batch_size)
        fake = generator(z, y)
        adc = self.adc_weight_now()
        real_out, fake_out = self.judge(discriminator, real_seen, self.augment(fake, y), real_labels, y)
        if self.hparams.adc_weight:
            fake_logits, fake_classes = fake_out
        else:
            fake_logits = fake_out
        real_kwargs = {}
        if self.loss.relativistic:  # constants for G (D's parameters do not require grad in this step)
            real_logits = real_out[0] if self.hparams.adc_weight else real_out
            real_kwargs["real_logits"] = real_logits.detach()[:fake_logits.shape[0]]
        loss = self.loss.generator(fake_logits, **self.weight_kwargs(y), **real_kwargs)
        if self.hparams.adc_weight:
            term = adc_generator_term(fake_classes, y, self.adc_mask(y))
            loss = loss + adc * term
            self._term_logs["train/adc_g"] = term.detach()
        if ms_weight and half:
            loss = loss + ms_weight * mode_seeking_term(fake, z, half)
        if self.hparams.gsr_weight:
            term = gsr_term(self.generator, self.gsr_class_weight)  # the plain G: a penalty on its weights
            loss = loss + self.hparams.gsr_weight * term
            self._term_logs["train/gsr"] = term.detach()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.generator_ema is not None:
            beta = None
            if self.hparams.ema_kimg is not None:
                seen = images_seen if images_seen is not None else batch_size * self.world_size()
                beta = ema_beta(self.hparams.ema_kimg, self.hparams.ema_rampup, batch_size * self.world_size(), seen)
            self.update_ema(beta)
        return loss.detach()

    @torch.no_grad()
    def update_ema(self, beta: float | None = None) -> None:
        """AveragedModel.update_parameters without its two host syncs per call (it tests the device
        tensor n_averaged in Python): the first update copies G, later ones apply the EMA function
        (or, given `beta`, average = beta * average + (1 - beta) * current)."""
        ema = self.generator_ema
        self._standing = None
        if not self._ema_started:
            torch._foreach_copy_([*ema.module.parameters(), *ema.module.buffers()],
                                 [*self.generator.parameters(), *self.generator.buffers()])
            self._ema_started = True
        else:
            step_average(ema.module, self.generator, ema.multi_avg_fn, ema.n_averaged, beta)
        ema.n_averaged += 1

    def cond_weight(self, images_seen: int) -> float:
        """The conditioning weight: 0 before cond_start_kimg, 1 after cond_end_kimg, linear between."""
        return ramp(images_seen, self.hparams.cond_start_kimg, self.hparams.cond_end_kimg)

    def adc_weight_now(self) -> float:
        """ADC's weight for this batch: adc_weight, times the conditioning weight (0 at the start of a conditioning
        transition) and the schedule's factor (0 before adc_rise_start_kimg and after adc_fade_end_kimg)."""
        return self.hparams.adc_weight * self._cond_now * self._adc_scale

    def adc_schedule(self, images_seen: int) -> float:
        """ADC's factor: rising 0 -> 1 over adc_rise_*_kimg, falling 1 -> 0 over adc_fade_*_kimg (1 where unset)."""
        h = self.hparams
        rise = 1.0 if h.adc_rise_start_kimg is None else ramp(images_seen, h.adc_rise_start_kimg, h.adc_rise_end_kimg)
        fade = 0.0 if h.adc_fade_start_kimg is None else ramp(images_seen, h.adc_fade_start_kimg, h.adc_fade_end_kimg)
        return rise * (1.0 - fade)

    def set_cond_weight(self, weight: float) -> None:
        nets = [self.generator, self.discriminator]
        if self.generator_ema is not None:
            nets.append(self.generator_ema.module)
        for net in nets:
            net.cond_weight.fill_(weight)
        self._cond_now = weight

    def training_step(self, batch, batch_idx):
        real, labels = batch
        opt_g, opt_d = self.optimizers()
        n_disc = self.hparams.n_disc
        step, losses = self.trainer.global_step, []
        batches = step // (n_disc + 1)  # batches done before this one (one optimizer step per D and G update)
        extra = {}
        if self.hparams.lr_decay_start is not None:
            extra["train/lr_factor"] = self.decay_learning_rates(batches, batch_idx, opt_g, opt_d)
        seen = self.images_seen(real.shape[0], batches)  # before this batch, all processes
        if self.hparams.cond_start_kimg is not None:
            weight = self.cond_weight(seen)
            self.set_cond_weight(weight)
            extra["train/cond_weight"] = weight
        if self.hparams.adc_rise_start_kimg is not None or self.hparams.adc_fade_start_kimg is not None:
            self._adc_scale = self.adc_schedule(seen)
            extra["train/adc_scale"] = self._adc_scale
        for i in range(n_disc):
            loss_d, real_logits, fake_logits = self.discriminator_step(real, labels, opt_d, batches * n_disc + i)
            losses.append(loss_d)
        loss_g = self.generator_step(real.shape[0], labels, opt_g, self.images_seen(real.shape[0], batches + 1),
                                     real=real)
        adaptive = ((self.ada, "ada", None), (self.few_shot_ada, "few_shot", self.few_shot_names),
                    (self.apa, "apa", self.apa_names))
        for probability, key, names in adaptive:  # ADA's, the few-shot ops' and APA's p: every ada_interval batches
            if probability is None:
                continue
            if (batches + 1) % self.hparams.ada_interval == 0:
                probability.update(self.images_seen(real.shape[0], self.hparams.ada_interval))
            if names is None:
                extra.update({f"train/{key}_p": probability.p, f"train/{key}_rt": probability.rt})
            for c, name in names or ():
                extra.update({f"train/{key}_p/{name}": probability.p[c], f"train/{key}_rt/{name}": probability.rt[c]})
        extra.update(self._term_logs)
        if self.hparams.lecam_weight:
            extra.update({"train/lecam_anchor_real": self.lecam_anchors[0],
                          "train/lecam_anchor_fake": self.lecam_anchors[1]})
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
            **extra,
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
        if self.noise_rng is not None:  # every rank saves at the same steps: the gather is collective
            state = self.noise_rng.get_state()
            checkpoint["noise_rng_state"] = state
            if self._trainer is not None and self.trainer.world_size > 1:
                gathered = self.trainer.strategy.all_gather(state.to(self.device)).cpu()
                checkpoint["noise_rng_states"] = [s.clone() for s in gathered.unbind(0)]  # own storage each

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # applied at the first draw, once the module is on its device (see make_noise_rng)
        self._noise_rng_state, self.noise_rng = checkpoint.get("noise_rng_state"), None
        self._noise_rng_states = checkpoint.get("noise_rng_states")
