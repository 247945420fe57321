"""One metric value with its sample sizes and confidence interval, what it is (its plot panel, the
metric it is the real-data reference of, headline or not, which direction is better), and the ways it
is written out: flat logger keys, JSON records, a markdown table."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class Result:
    name: str
    value: float
    n_fake: int | None = None  # generated images (or pairs) behind the number
    n_real: int | None = None  # real images (or pairs) behind it
    ci: tuple[float, float] | None = None  # bootstrap interval over the generated samples
    # how plots and sweep summaries show it (derived from here, no list elsewhere):
    panel: str | None = None  # plot panel title; None: not plotted
    reference: str | None = None  # the metric this is the real-data reference of (dashed, same colour)
    headline: bool = False  # a column of the multirun summary table
    better: str | None = None  # "lower" or "higher"; None: neither (compare with the real reference)

    def record(self) -> dict:
        """JSON-safe: NaN (not computable, e.g. KID with < 2 samples) becomes null; unset descriptors
        (panel, reference, headline, better) are left out."""
        out = {k: v for k, v in asdict(self).items() if k != "name" and (k not in DESCRIPTORS or v)}
        out["value"] = self.value if self.value is not None and math.isfinite(self.value) else None
        out["ci"] = list(self.ci) if self.ci else None
        return out


DESCRIPTORS = ("panel", "reference", "headline", "better")


def to_log(results: list[Result]) -> dict[str, float]:
    """{name: value} of the finite values (the suite reports its sample sizes as metrics/n_* results)."""
    return {r.name: float(r.value) for r in results if r.value is not None and math.isfinite(r.value)}


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"


def markdown_table(results: list[Result], confidence: float = 0.95) -> str:
    lines = [f"| metric | value | {round(confidence * 100)}% CI | N generated | N real |", "|---|---:|---:|---:|---:|"]
    for r in results:
        ci = f"{_fmt(r.ci[0])} – {_fmt(r.ci[1])}" if r.ci else ""
        lines.append(f"| `{r.name}` | {_fmt(r.value)} | {ci} | {_fmt(r.n_fake)} | {_fmt(r.n_real)} |")
    return "\n".join(lines) + "\n"
