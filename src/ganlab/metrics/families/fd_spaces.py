"""FD / real-vs-real floor at equal n, in several domain feature spaces (metrics/fd_ratio_spaces).

The domain space is a small CNN trained in seconds; another training seed gives another space, and one
checkpoint's FD/floor moved 1.1x-6.4x between five of them (experiments/quality, session 18). This family
trains a domain classifier per seed in `seeds` (the settings of metrics.spaces.domain, cached alike),
measures the generated set and the held-out reals against the reference at equal n in each space (as
metrics/fd_domain_ratio does in the one space), and reports the geometric mean of the ratios with the
smallest and largest. Needs a held-out split; off while `seeds` is empty (the training default: each
space costs a classifier).
"""
from __future__ import annotations

import math

from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics.families.domain import EQUAL_N_PANEL, equal_n, ratio
from ganlab.metrics.frechet import FrechetReference
from ganlab.metrics.protocol import Batch, Context, Family, GeneratorInfo
from ganlab.metrics.report import Result


class FrechetAcrossSpaces(Family):
    spaces = ("domain",)

    def __init__(self, seeds: list[int] | tuple[int, ...] = (), draws: int = 10):
        seeds = [int(s) for s in (seeds or [])]
        if len(set(seeds)) != len(seeds) or draws < 1:
            raise GanlabError(f"metrics.families.fd_spaces: seeds={seeds} must be distinct and draws={draws} >= 1")
        self.seeds, self.draws = seeds, draws
        self.fields = tuple(f"feat{s}" for s in seeds)

    def applies(self, gen: GeneratorInfo, ctx: Context) -> bool:
        return bool(self.seeds) and ctx.holdout is not None

    def prepare(self, ctx: Context) -> None:
        self.ctx, self.nets, self.refs, self.held = ctx, {}, {}, {}
        for s in self.seeds:
            if s == ctx.seed:  # the suite's own domain space: its network and real features are already there
                space = ctx.space("domain")
                self.nets[s], real, held = space.net, space.real, space.of("holdout")[0]
            else:
                self.nets[s] = ctx.spaces["domain"].build(ctx, seed=s).to(ctx.device)
                real, held = ctx.embed(self.nets[s], ctx.ref_images)[0], ctx.embed(self.nets[s], ctx.holdout[0])[0]
            self.refs[s], self.held[s] = FrechetReference(real), held
        ctx.settings["fd_spaces"] = {"seeds": self.seeds, "draws": self.draws}

    def update(self, batch: Batch) -> dict[str, Tensor]:
        return {f"feat{s}": batch.features("domain")[0] if s == self.ctx.seed else net(batch.images)[0]
                for s, net in self.nets.items()}

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        per_space, n = {}, 0
        for s in self.seeds:
            fd, floor, n = equal_n(self.refs[s], samples[f"feat{s}"], self.held[s], self.draws, self.ctx.seed)
            per_space[s] = {"fd": fd, "floor": floor, "ratio": ratio(fd, floor)}
        self.ctx.settings["fd_spaces"]["per_space"] = per_space
        ratios = [v["ratio"] for v in per_space.values()]
        if len(samples[f"feat{self.seeds[0]}"]) < 2 or not all(r > 0 for r in ratios):
            return []
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        m = self.refs[self.seeds[0]].n
        return [Result("metrics/fd_ratio_spaces", geo, n, m, panel=EQUAL_N_PANEL, headline=True, better="lower"),
                Result("metrics/fd_ratio_spaces_min", min(ratios), n, m),
                Result("metrics/fd_ratio_spaces_max", max(ratios), n, m)]
