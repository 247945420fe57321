"""Per-sample tensors of the generated images (features, labels, SSIM scores), gathered across
processes with torchmetrics' state synchronisation: every process computes the same numbers from the
union of all processes' samples (no rank-0-only collective that could hang)."""
from __future__ import annotations

from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class SampleStore(Metric):
    full_state_update = False

    def __init__(self, fields: tuple[str, ...]):
        super().__init__(compute_with_cache=False)
        self.fields = tuple(fields)
        for name in self.fields:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, **tensors: Tensor) -> None:
        for name, value in tensors.items():
            getattr(self, name).append(value.detach())

    def compute(self) -> dict[str, Tensor]:
        out = {}
        for name in self.fields:
            value = getattr(self, name)  # a list locally, one tensor once synchronised
            if isinstance(value, Tensor) or value:
                out[name] = dim_zero_cat(value).cpu()
        return out
