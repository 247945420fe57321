"""The metric protocol: what a metric family is, and the shared real side it receives.

A family is one class in one file (ganlab/metrics/families/), listed by `_target_` under
`metrics.families` in conf/metrics/*.yaml; adding a metric is that file plus that YAML entry.
`MetricSuite` only orchestrates: it builds the `Context` (the real reference, the feature spaces several
families share), generates the images (split over DDP processes), hands each `Batch` to the families,
gathers what they return across processes and collects their `Result`s.

    class Sharpness(Family):
        fields = ("score",)                      # per-sample tensors update() returns (gathered)

        def prepare(self, ctx):                  # real side, once
            self.real = score(ctx.ref_images).mean()

        def update(self, batch):                 # one batch of this process's generated images
            return {"score": score(batch.images)}

        def results(self, samples):              # all processes' samples: the same numbers everywhere
            s = samples["score"]
            return [Result("metrics/sharpness", float(s.mean()), len(s), panel="sharpness", headline=True),
                    Result("metrics/sharpness_real", float(self.real), reference="metrics/sharpness")]

Optional: `spaces` (feature spaces it reads through `ctx.space(name)` / `batch.features(name)`: built
once, shared), `applies(gen, ctx)` (e.g. conditional generators only), `plan(ctx)` (its own requested
labels instead of the shared set; families that plan the same labels read one generated set), `reset()`
and `bind(module)` (before each evaluation; bind receives the module being evaluated). `Result`'s `panel`,
`reference`, `headline` and `better` tell the plots and the sweep summary where a number belongs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics.bootstrap import bootstrap_cis, mean_ci
from ganlab.metrics.report import Result


@dataclass(frozen=True)
class GeneratorInfo:
    latent_dim: int
    num_classes: int
    conditional: bool
    discriminator: bool = False  # the module carries its D (a GANModule; not a bare generator)

    @classmethod
    def of(cls, module) -> GeneratorInfo:
        return cls(int(module.latent_dim), int(getattr(module, "num_classes", 0) or 0),
                   bool(getattr(module, "conditional", False)),
                   isinstance(getattr(module, "discriminator", None), torch.nn.Module))


class Embedded:
    """A feature space's network and the real images in it: `real` (features, logits) of the reference;
    `of("holdout")` / `of("train")` computed on first use."""

    def __init__(self, ctx: Context, net):
        self.ctx, self.net = ctx, net
        self.real, self.real_logits = ctx.embed(net, ctx.ref_images)
        self._cache: dict[str, tuple[Tensor, Tensor] | None] = {}

    def of(self, split: str) -> tuple[Tensor, Tensor] | None:
        if split not in self._cache:
            images = {"train": self.ctx.images, "holdout": self.ctx.holdout[0] if self.ctx.holdout else None}[split]
            self._cache[split] = None if images is None else self.ctx.embed(self.net, images)
        return self._cache[split]


class Context:
    """The real side every family shares: the training split, a fixed reference subset of it, held-out
    reals, the feature spaces (built on first use), DDP facts, bootstrap settings and `settings` (written
    to the metrics history)."""

    def __init__(self, images: Tensor, labels: Tensor, class_names: list[str],
                 holdout: tuple[Tensor, Tensor] | None, *, n_ref: int, seed: int, bootstrap: int, confidence: float,
                 batch_size: int, device: torch.device, rank: int = 0, world: int = 1,
                 broadcast: Callable | None = None, spaces: dict | None = None):
        self.images, self.labels = images, labels.cpu()
        self.holdout = (holdout[0], holdout[1].cpu()) if holdout is not None and len(holdout[1]) else None
        self.class_names, self.num_classes = list(class_names), len(class_names)
        self.image_size = images.shape[-1]
        idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n_ref]
        self.ref_images, self.ref_labels = images[idx], self.labels[idx]
        self.seed, self.bootstrap, self.confidence, self.batch_size = seed, bootstrap, confidence, batch_size
        self.device, self.rank, self.world, self.broadcast = device, rank, world, broadcast
        self.spaces = dict(spaces or {})
        self.settings: dict = {}
        self._embedded: dict[str, Embedded] = {}

    @property
    def announce(self) -> bool:
        """True in the one process that logs."""
        return self.rank == 0

    def embed(self, net, images: Tensor) -> tuple[Tensor, ...]:
        outs = [net(images[i:i + self.batch_size].to(self.device)) for i in range(0, len(images), self.batch_size)]
        return tuple(torch.cat([o[j] for o in outs]).cpu() for j in range(len(outs[0])))

    def space(self, name: str) -> Embedded:
        if name not in self._embedded:
            if name not in self.spaces:
                raise GanlabError(f"metrics.spaces.{name}: no such feature space; configured: {sorted(self.spaces)}")
            self._embedded[name] = Embedded(self, self.spaces[name].build(self).to(self.device))
        return self._embedded[name]

    def ci(self, statistic: Callable[[Tensor], dict[str, float]], n: int, offset: int) -> dict:
        """Bootstrap intervals over `n` samples; `offset` gives each statistic its own (fixed) draws."""
        return bootstrap_cis(statistic, n, self.bootstrap, self.confidence, self.seed + offset)

    def mean_ci(self, values: Tensor, offset: int):
        return mean_ci(values, self.bootstrap, self.confidence, self.seed + offset)


class Batch:
    """Generated images ([-1, 1]) of one step, their requested labels, and their features per space
    (computed once per batch, whichever family asks first). `start`: position of the first image in
    this process's share."""

    def __init__(self, images: Tensor, labels: Tensor, start: int, ctx: Context):
        self.images, self.labels, self.start, self.ctx = images, labels.to(images.device), start, ctx
        self._features: dict[str, tuple[Tensor, ...]] = {}

    def __len__(self) -> int:
        return len(self.images)

    def features(self, space: str) -> tuple[Tensor, ...]:
        if space not in self._features:
            self._features[space] = self.ctx.space(space).net(self.images)
        return self._features[space]


class Family:
    """Base class with the optional parts of the protocol; see the module docstring."""

    spaces: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()

    def applies(self, gen: GeneratorInfo, ctx: Context) -> bool:
        return True

    def plan(self, ctx: Context) -> Tensor | None:
        return None

    def reset(self) -> None:
        pass

    def bind(self, module) -> None:
        """Called before each evaluation with the module being evaluated, for a family that reads more of it
        than its samples (e.g. its discriminator)."""

    def prepare(self, ctx: Context) -> None:
        raise NotImplementedError

    def update(self, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        raise NotImplementedError
