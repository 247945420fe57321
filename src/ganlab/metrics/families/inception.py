"""Inception FID / KID / IS (metrics/fid, metrics/kid, metrics/is) in the Inception space
(metrics.spaces.inception: a local weights file, never downloaded; checked when the suite is built)."""
from __future__ import annotations

from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics.families.domain import fd_and_kid
from ganlab.metrics.frechet import FrechetReference
from ganlab.metrics.inception import inception_score
from ganlab.metrics.protocol import Batch, Context, Family
from ganlab.metrics.report import Result


class InceptionMetrics(Family):
    spaces = ("inception",)
    fields = ("pool", "logits")

    def __init__(self, kid_subset_size: int = 1000, kid_subsets: int = 100):
        if kid_subset_size < 2 or kid_subsets < 1:
            raise GanlabError(f"metrics.families.inception: kid_subset_size={kid_subset_size} must be >= 2 and "
                              f"kid_subsets={kid_subsets} >= 1")
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets

    def prepare(self, ctx: Context) -> None:
        self.ctx = ctx
        self.ref = FrechetReference(ctx.space("inception").real)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        pool, logits = batch.features("inception")
        return {"pool": pool, "logits": logits}

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        out = fd_and_kid(self.ctx, samples["pool"], self.ref, self.ctx.space("inception").real, "fid", "kid",
                         self.kid_subset_size, self.kid_subsets, "FID (Inception)")
        n = len(samples["logits"])
        score, std = inception_score(samples["logits"], seed=self.ctx.seed)
        return out + [Result("metrics/is", score, n, panel="IS (Inception)", headline=True, better="higher"),
                      Result("metrics/is_std", std, n)]
