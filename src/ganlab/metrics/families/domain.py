"""Fréchet distance and KID in the domain feature space (metrics/fd_domain, metrics/kid_domain), and
the same distance for held-out real images against the reference (metrics/fd_domain_real: the floor a
perfect generator would reach with this many images)."""
from __future__ import annotations

from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics.frechet import FrechetReference
from ganlab.metrics.kid import kernel_distance
from ganlab.metrics.protocol import Batch, Context, Family
from ganlab.metrics.report import Result

FD_PANEL = "Fréchet distance (domain features)"


def fd_and_kid(ctx: Context, fake: Tensor, ref: FrechetReference, real: Tensor, fd_name: str, kid_name: str,
               subset_size: int, subsets: int, fd_panel: str) -> list[Result]:
    """Fréchet distance (bootstrap CI over the generated set) and KID (mean, std over subsets)."""
    fake, n_real = fake.double(), len(real)
    projected = ref.project(fake)
    fd = ref.distance_projected(fake, projected)
    ci = ctx.ci(lambda idx: {"fd": ref.distance_projected(fake[idx], projected[idx])}, len(fake), 3).get("fd")
    kid, kid_std, m = kernel_distance(real, fake, subset_size, subsets, ctx.seed)
    ctx.settings[f"{kid_name}_subset_size"] = m
    out = [Result(f"metrics/{fd_name}", fd, len(fake), n_real, ci, panel=fd_panel, headline=True, better="lower"),
           Result(f"metrics/{kid_name}", kid, len(fake), n_real, panel="KID", headline=True, better="lower")]
    if kid_std == kid_std:  # NaN when one subset covered both sets
        out.append(Result(f"metrics/{kid_name}_std", kid_std, len(fake), n_real))
    return out


class DomainDistance(Family):
    spaces = ("domain",)
    fields = ("feat",)

    def __init__(self, kid_subset_size: int = 1000, kid_subsets: int = 100):
        if kid_subset_size < 2 or kid_subsets < 1:
            raise GanlabError(f"metrics.families.domain: kid_subset_size={kid_subset_size} must be >= 2 and "
                              f"kid_subsets={kid_subsets} >= 1")
        self.kid_subset_size, self.kid_subsets = kid_subset_size, kid_subsets

    def prepare(self, ctx: Context) -> None:
        self.ctx = ctx
        space = ctx.space("domain")
        self.ref = FrechetReference(space.real)
        held = space.of("holdout")
        self.floor = (self.ref.distance(held[0]), len(held[0])) if held is not None and len(held[0]) >= 2 else None

    def update(self, batch: Batch) -> dict[str, Tensor]:
        return {"feat": batch.features("domain")[0]}

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        out = fd_and_kid(self.ctx, samples["feat"], self.ref, self.ctx.space("domain").real, "fd_domain",
                         "kid_domain", self.kid_subset_size, self.kid_subsets, FD_PANEL)
        if self.floor is not None:  # held-out reals vs the reference
            out.append(Result("metrics/fd_domain_real", self.floor[0], n_real=self.floor[1], panel=FD_PANEL,
                              reference="metrics/fd_domain"))
        return out
