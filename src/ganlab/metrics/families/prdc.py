"""Precision / recall / density / coverage (metrics/precision|recall|density|coverage) with k nearest
neighbours in the domain or the Inception feature space; each CI resampled over the set it averages."""
from __future__ import annotations

from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics.prdc import NAMES, PRDC
from ganlab.metrics.protocol import Batch, Context, Family
from ganlab.metrics.report import Result

PANEL = "precision / recall / density / coverage"


class PrecisionRecall(Family):
    fields = ("feat",)

    def __init__(self, k: int = 5, space: str = "domain"):
        if k < 1 or space not in ("domain", "inception"):
            raise GanlabError(f"metrics.families.prdc: k={k} must be >= 1 and space={space!r} domain or inception")
        self.k, self.space = k, space
        self.spaces = (space,)

    def prepare(self, ctx: Context) -> None:
        self.ctx = ctx
        self.prdc = PRDC(ctx.space(self.space).real, self.k)
        ctx.settings.update(prdc_space=self.space, prdc_k=self.prdc.k)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        return {"feat": batch.features(self.space)[0]}

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        fake = samples["feat"]
        n, n_real = len(fake), len(self.prdc.real)
        state = self.prdc.prepare(fake)
        values = self.prdc.compute(state)
        by_fake = self.ctx.ci(lambda idx: self.prdc.compute(state, fake_idx=idx), n, 1)
        by_real = self.ctx.ci(lambda idx: self.prdc.compute(state, real_idx=idx), n_real, 5)
        cis = {"precision": by_fake, "density": by_fake, "recall": by_real, "coverage": by_real}
        return [Result(f"metrics/{k}", values[k], n, n_real, cis[k].get(k), panel=PANEL, headline=True,
                       better=None if k == "density" else "higher") for k in NAMES]
