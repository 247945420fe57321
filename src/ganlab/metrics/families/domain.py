"""Fréchet distance and KID in the domain feature space (metrics/fd_domain, metrics/kid_domain), and
the same distance for held-out real images against the reference (metrics/fd_domain_real: the floor a
perfect generator would reach with this many images).

FD falls with the number of images (its bias is roughly 1/n), and the held-out split is usually smaller
than the generated set, so fd_domain / fd_domain_real compares unlike with like and flatters the
generator. metrics/fd_domain_ratio compares at equal n: the mean FD of random generated subsets of the
held-out split's size (metrics/fd_domain_equal_n) over the floor at that size."""
from __future__ import annotations

from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics.frechet import FrechetReference, distance_at_n
from ganlab.metrics.kid import kernel_distance
from ganlab.metrics.protocol import Batch, Context, Family
from ganlab.metrics.report import Result

FD_PANEL = "Fréchet distance (domain features)"
EQUAL_N_PANEL = "FD / real-vs-real floor at equal n"


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

    def __init__(self, kid_subset_size: int = 1000, kid_subsets: int = 100, equal_n_draws: int = 10):
        if kid_subset_size < 2 or kid_subsets < 1 or equal_n_draws < 1:
            raise GanlabError(f"metrics.families.domain: kid_subset_size={kid_subset_size} must be >= 2, "
                              f"kid_subsets={kid_subsets} >= 1 and equal_n_draws={equal_n_draws} >= 1")
        self.kid_subset_size, self.kid_subsets, self.equal_n_draws = kid_subset_size, kid_subsets, equal_n_draws

    def prepare(self, ctx: Context) -> None:
        self.ctx = ctx
        space = ctx.space("domain")
        self.ref = FrechetReference(space.real)
        held = space.of("holdout")
        self.held = held[0] if held is not None and len(held[0]) >= 2 else None
        self.floor = (self.ref.distance(self.held), len(self.held)) if self.held is not None else None

    def update(self, batch: Batch) -> dict[str, Tensor]:
        return {"feat": batch.features("domain")[0]}

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        out = fd_and_kid(self.ctx, samples["feat"], self.ref, self.ctx.space("domain").real, "fd_domain",
                         "kid_domain", self.kid_subset_size, self.kid_subsets, FD_PANEL)
        if self.floor is not None:  # held-out reals vs the reference
            out.append(Result("metrics/fd_domain_real", self.floor[0], n_real=self.floor[1], panel=FD_PANEL,
                              reference="metrics/fd_domain"))
            fd, floor, n = equal_n(self.ref, samples["feat"], self.held, self.equal_n_draws, self.ctx.seed)
            out += [Result("metrics/fd_domain_equal_n", fd, n, self.ref.n, better="lower"),
                    Result("metrics/fd_domain_ratio", ratio(fd, floor), n, self.ref.n,
                           panel=EQUAL_N_PANEL, headline=True, better="lower")]
            if n < len(self.held):  # at the held-out split's own size the floor is fd_domain_real
                out.append(Result("metrics/fd_domain_real_equal_n", floor, n_real=n))
        return out


def equal_n(ref: FrechetReference, fake: Tensor, held: Tensor, draws: int, seed: int) -> tuple[float, float, int]:
    """(FD of the generated set, FD of the held-out reals, n): both against `ref` at n = the smaller of the
    two sets' sizes (random subsets of the larger one, averaged over `draws`)."""
    n = min(len(fake), len(held))
    return distance_at_n(ref, fake, n, draws, seed), distance_at_n(ref, held, n, draws, seed + 1), n


def ratio(fd: float, floor: float) -> float:
    return fd / floor if floor > 0 else float("nan")
