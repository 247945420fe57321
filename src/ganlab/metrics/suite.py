"""MetricSuite: runs the metric families listed under `metrics.families` (the protocol:
ganlab/metrics/protocol.py) for the training callback and `ganlab.evaluate`.

It owns only what the families share: the fixed real reference and the feature spaces (`Context`), the
generation plan (the same latent vectors every evaluation, split over processes), the gathering of the
families' per-sample tensors across processes (every process then computes the same numbers), and the
Inception-weights check at construction (one line, before anything slow).
"""
from __future__ import annotations

import logging
import zlib
from contextlib import contextmanager
from typing import Callable, Mapping

import torch
from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.latents import truncated_noise
from ganlab.metrics import conditional as cond
from ganlab.metrics.domain import DomainSpace
from ganlab.metrics.inception import InceptionSpace
from ganlab.metrics.protocol import Batch, Context, GeneratorInfo
from ganlab.metrics.report import Result
from ganlab.metrics.store import SampleStore

log = logging.getLogger("ganlab.metrics")
SHARED = "shared"  # the generated set every family reads unless it brings its own plan


@contextmanager
def cpu_threads(n: int | None, device: torch.device):
    """Torch's intra-op threads limited to n while metrics run on the CPU. Measured on a 2-core machine
    shared with other jobs: the metrics' small convolutions ran 2-9x slower with 2 threads than with 1
    (threads wait for cores that are busy elsewhere); restored afterwards."""
    if n is None or device.type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _announce() -> bool:
    from ganlab.strategy import is_rank_zero

    return is_rank_zero()


class MetricSuite:
    def __init__(self, families: Mapping, spaces: Mapping | None = None, n_samples: int = 512,
                 n_real: int | None = None, batch_size: int = 128, seed: int = 0, bootstrap: int = 100,
                 confidence: float = 0.95, fake_labels: str = "proportional", cpu_threads: int | None = 1,
                 truncation: float | None = None):
        """families: {name: family or None (left out)}; spaces: {name: feature space} (default: domain,
        inception). n_samples images are generated per evaluation for the shared set, requested labels
        `fake_labels` (proportional to the real reference, or uniform); n_real reference images (null:
        n_samples). `truncation`: the latent vectors drawn as ganlab.generate draws them with that truncation
        (null: plain normal), to measure what a truncated export holds."""
        checks = {"n_samples": n_samples >= 4, "batch_size": batch_size >= 2, "bootstrap": bootstrap >= 0,
                  "confidence": 0 < confidence < 1, "fake_labels": fake_labels in ("proportional", "uniform"),
                  "truncation": truncation is None or (isinstance(truncation, (int, float))
                                                       and not isinstance(truncation, bool) and truncation > 0)}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise GanlabError(f"metrics.{bad[0]}={locals()[bad[0]]!r} is not valid")
        self.families = {str(k): f for k, f in dict(families or {}).items() if f is not None}
        if not self.families:
            raise GanlabError("metrics.families: none listed; use metrics=none for no metrics")
        for name, family in self.families.items():
            if not all(callable(getattr(family, m, None)) for m in ("prepare", "update", "results")):
                raise GanlabError(f"metrics.families.{name}: {type(family).__name__} is not a metric family "
                                  "(needs prepare/update/results; see ganlab/metrics/protocol.py)")
        self.spaces = {"domain": DomainSpace(), "inception": InceptionSpace(), **dict(spaces or {})}
        self.skipped = self._check_spaces()
        self.n_samples, self.n_real, self.batch_size, self.seed = n_samples, n_real, batch_size, seed
        self.bootstrap, self.confidence, self.fake_labels = bootstrap, confidence, fake_labels
        self.cpu_threads, self.truncation = cpu_threads, truncation
        self.prepared = False
        self.settings: dict = {}

    def _check_spaces(self) -> dict[str, str]:
        """Each needed space checked once at start-up (Inception: its weights file); families whose space
        is unavailable are left out. Returns {family: why}."""
        needed = {s for f in self.families.values() for s in getattr(f, "spaces", ())}
        unknown = sorted(needed - set(self.spaces))
        if unknown:
            raise GanlabError(f"metrics.spaces.{unknown[0]}: a family reads it but it is not configured")
        missing = {s for s in sorted(needed) if not self.spaces[s].check(announce=_announce())}
        skipped = {name: f"{'/'.join(sorted(missing & set(f.spaces)))} space unavailable"
                   for name, f in self.families.items() if missing & set(getattr(f, "spaces", ()))}
        for name in skipped:
            del self.families[name]
        return skipped

    # ------------------------------------------------------------------ real side, once
    def prepare(self, images: Tensor, labels: Tensor, class_names: list[str],
                holdout: tuple[Tensor, Tensor] | None = None, device: str | torch.device = "cpu",
                rank: int = 0, world: int = 1, broadcast: Callable | None = None, generator=None) -> None:
        """`images`/`labels`: the real training split (uint8); `holdout`: real images the classifier never
        saw; `generator`: the module to be evaluated (families that do not apply to it are not prepared;
        None: prepare all). Network construction draws random numbers: the caller's global RNG stream is
        left as it was."""
        device = torch.device(device)
        with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []), torch.no_grad(), \
                cpu_threads(self.cpu_threads, device):
            self._prepare(images, labels, class_names, holdout, device, rank, world, broadcast, generator)

    def _prepare(self, images, labels, class_names, holdout, device, rank, world, broadcast, generator) -> None:
        if self.n_samples < 2 * world:
            raise GanlabError(f"metrics.n_samples={self.n_samples} is too small for {world} processes")
        ctx = Context(images, labels, class_names, holdout, n_ref=self.n_real or self.n_samples, seed=self.seed,
                      bootstrap=self.bootstrap, confidence=self.confidence, batch_size=self.batch_size,
                      device=device, rank=rank, world=world, broadcast=broadcast, spaces=self.spaces)
        ctx.settings.update(n_samples=self.n_samples, n_real=len(ctx.ref_labels), fake_labels=self.fake_labels,
                            bootstrap=self.bootstrap, confidence=self.confidence, seed=self.seed,
                            families=list(self.families))
        if self.truncation:
            ctx.settings["truncation"] = self.truncation
        if self.skipped:
            ctx.settings["skipped"] = dict(self.skipped)
            if any("inception" in why for why in self.skipped.values()):
                ctx.settings["inception"] = "skipped: weights not found"
        gen = GeneratorInfo.of(generator) if generator is not None else None
        self.active = {k: f for k, f in self.families.items() if gen is None or f.applies(gen, ctx)}
        for family in self.active.values():
            family.prepare(ctx)
        self.ctx, self.settings, self.prepared = ctx, ctx.settings, True

    # ------------------------------------------------------------------ generated side, every evaluation
    def plan(self, latent_dim: int, num_classes: int, labels: Tensor | None = None,
             name: str = SHARED) -> tuple[Tensor, Tensor]:
        """The same latent vectors and requested labels at every evaluation (comparable across epochs);
        the shared set's labels follow the real reference's class mix (or are uniform)."""
        if labels is None:
            if num_classes == self.ctx.num_classes:
                counts = torch.bincount(self.ctx.ref_labels, minlength=self.ctx.num_classes)
                labels = cond.label_plan(self.n_samples, counts, self.fake_labels)
            else:
                labels = cond.label_plan(self.n_samples, torch.ones(max(num_classes, 1)), "uniform")
        seed = self.seed if name == SHARED else self.seed + zlib.crc32(name.encode())
        return truncated_noise(len(labels), latent_dim, self.truncation, torch.Generator().manual_seed(seed)), labels

    def evaluate(self, module) -> list[Result]:
        """Generate this process's share of every planned set with `module.sample(n, labels, z)` and
        compute every family's numbers from all processes' samples. Call on every process at once."""
        if not self.prepared:
            raise RuntimeError("MetricSuite.prepare() must run before evaluate()")
        with torch.no_grad(), cpu_threads(self.cpu_threads, self.ctx.device):
            return self._evaluate(module)

    def _evaluate(self, module) -> list[Result]:
        gen = GeneratorInfo.of(module)
        families = {k: f for k, f in self.active.items() if f.applies(gen, self.ctx)}
        sets: dict[str, tuple[Tensor | None, list[str]]] = {}
        for name, family in families.items():
            family.reset()
            family.bind(module)
            own = family.plan(self.ctx)
            # families that plan the same labels read one generated set (named after the first of them)
            key = SHARED if own is None else next(
                (k for k, (labels, _) in sets.items() if labels is not None and torch.equal(labels, own)), name)
            sets.setdefault(key, (own, []))[1].append(name)
        store = SampleStore(tuple(f"{name}__{field}" for name, f in families.items() for field in f.fields)
                            + (("label",) if SHARED in sets else ())).to(self.ctx.device)
        for set_name, (own, members) in sets.items():
            z, labels = self.plan(gen.latent_dim, gen.num_classes if gen.conditional else 0, own, set_name)
            self._generate(module, gen, z, labels, [(m, families[m]) for m in members], store, set_name == SHARED)
        data = store.compute()  # synchronised across processes
        out = []
        if "label" in data:
            out += [Result("metrics/n_fake", len(data["label"])), Result("metrics/n_real", len(self.ctx.ref_labels))]
        for name, family in families.items():
            samples = {field: data[f"{name}__{field}"] for field in family.fields if f"{name}__{field}" in data}
            out += family.results(samples)
        return out

    def _generate(self, module, gen, z, labels, members, store, shared: bool) -> None:
        mine = torch.arange(len(labels))[self.ctx.rank::self.ctx.world]
        start = 0
        for chunk in mine.split(self.batch_size):
            fake = module.sample(len(chunk), labels=labels[chunk] if gen.conditional else None, z=z[chunk])
            batch = Batch(fake.float().clamp(-1, 1), labels[chunk], start, self.ctx)
            fields = {"label": batch.labels} if shared else {}
            for name, family in members:
                fields.update({f"{name}__{k}": v for k, v in family.update(batch).items()})
            store.update(**fields)
            start += len(chunk)
