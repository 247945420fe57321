"""SSIM family: nearest-real SSIM of generated images (1.0 = a copy of a training image), and the
internal SSIM / MS-SSIM of disjoint generated pairs beside the same number for real pairs
(ssim/nearest_real, ssim/diversity[_real], ssim/ms_diversity[_real])."""
from __future__ import annotations

import torch
from torch import Tensor

from ganlab.errors import GanlabError
from ganlab.metrics import ssim as ssim_lib
from ganlab.metrics.protocol import Batch, Context, Family
from ganlab.metrics.report import Result


class SSIMFamily(Family):
    fields = ("nearest", "pair_ssim", "pair_ms")

    def __init__(self, samples: int = 128, candidates: int = 8, pairs: int = 64, reference: int = 2048):
        """samples: generated images compared with up to `reference` training images (the `candidates`
        nearest in pixel distance; 0: all of them); pairs: disjoint pairs for the internal similarity."""
        if samples < 1 or pairs < 1 or reference < 1:
            raise GanlabError(f"metrics.families.ssim: samples={samples}, pairs={pairs} and reference={reference} "
                              "must be >= 1")
        self.samples, self.candidates, self.pairs, self.reference = samples, candidates, pairs, reference

    def prepare(self, ctx: Context) -> None:
        self.ctx = ctx
        g = torch.Generator().manual_seed(ctx.seed + 2)
        idx = torch.randperm(len(ctx.images), generator=g)[: self.reference]
        self.ref = ssim_lib.as_float(ctx.images[idx], ctx.device)
        self.betas = ssim_lib.ms_ssim_betas(ctx.image_size)
        s, ms = ssim_lib.pairwise(ssim_lib.as_float(ctx.ref_images[: 2 * self.pairs], ctx.device), self.pairs,
                                  self.betas)
        self.real = {"ssim/diversity_real": s.cpu(), "ssim/ms_diversity_real": ms.cpu()}
        ctx.settings.update(ssim_reference=len(idx), ssim_candidates=self.candidates,
                            ms_ssim_betas=[round(b, 4) for b in self.betas], ssim_data_range=ssim_lib.DATA_RANGE)

    def reset(self) -> None:  # this process's share of the compared images and pairs
        self.left = -(-self.samples // self.ctx.world)
        self.pairs_left = -(-self.pairs // self.ctx.world)

    def update(self, batch: Batch) -> dict[str, Tensor]:
        out, fake = {}, batch.images
        take = min(self.left, len(fake))
        if take:
            out["nearest"] = ssim_lib.nearest_real_ssim(fake[:take], self.ref, self.candidates)[0]
            self.left -= take
        pairs = min(self.pairs_left, len(fake) // 2)
        if pairs:
            out["pair_ssim"], out["pair_ms"] = ssim_lib.pairwise(fake, pairs, self.betas)
            self.pairs_left -= pairs
        return out

    def results(self, samples: dict[str, Tensor]) -> list[Result]:
        near = samples["nearest"]
        out = [Result("ssim/nearest_real", float(near.mean()), len(near), len(self.ref), self.ctx.mean_ci(near, 2),
                      panel="SSIM", headline=True)]
        for name, values in (("ssim/diversity", samples["pair_ssim"]), ("ssim/ms_diversity", samples["pair_ms"])):
            real = self.real[f"{name}_real"]
            out.append(Result(name, float(values.mean()), n_fake=len(values), panel="SSIM",
                              headline=name == "ssim/diversity"))
            out.append(Result(f"{name}_real", float(real.mean()), n_real=len(real), panel="SSIM", reference=name))
        return out
