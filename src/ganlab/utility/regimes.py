"""The training sets of the downstream-utility benchmark: one `Regime` per way of using real and
synthetic images, and the draw of its images for one seed.

Regimes (names as they appear in the tables):
- `real only`: the real training split, class-weighted loss (baseline a);
- `real oversampled`: every class re-sampled up to the largest real class, no loss weights (baseline b);
- `real + synthetic x<r>`: round(r * N_real) synthetic images at random, keeping the folder's class mix;
- `real + synthetic rare x<r>`: round(r * n_rare) synthetic images of the rare class only, n_rare being
  the rare class's real training count (x1 doubles the rare class);
- `real + synthetic per class x<r>`: round(r * n_c) synthetic images of every class c, n_c its real
  training count: each class keeps its real share of the set and the same synthetic share, so looking
  synthetic says nothing about an image's class (with the other mixes, the rare class is mostly synthetic);
- `real + synthetic fill`: every class topped up to the largest real class;
- `... (w=<w>)`: the same set, each synthetic image weighted w in the loss;
- `synthetic pre-train -> real`: pre-trained on the class-balanced synthetic set, fine-tuned on real;
- `synthetic only`: the class-balanced synthetic set alone (train on synthetic, test on real).

A draw never caps: asking for more synthetic images than the folder holds is an error, so two regimes
can never silently train on the same set under different names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ganlab.errors import GanlabError

REAL, OVERSAMPLED, TSTR, PRETRAIN = "real only", "real oversampled", "synthetic only", "synthetic pre-train -> real"
BASELINES = (REAL, OVERSAMPLED)


@dataclass(frozen=True)
class Regime:
    name: str
    kind: str  # real | oversampled | mix | tstr | pretrain
    ratio: object = None  # mix: a float (x N_real), "fill", ("rare", r) or ("class", r)
    weight: float = 1.0  # loss weight of each synthetic image
    options: dict = field(default_factory=dict)  # fit_classifier overrides for this regime


def ratio_name(ratio) -> str:
    if ratio == "fill":
        return "fill"
    if isinstance(ratio, tuple):
        return f"{'per class' if ratio[0] == 'class' else 'rare'} x{float(ratio[1]):g}"
    return f"x{float(ratio):g}"


def check_ratio(ratio, key: str = "ratios") -> None:
    if ratio != "fill" and not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and ratio > 0):
        raise GanlabError(f"{key}: {ratio!r} is neither a positive number (a multiple of the real count) nor 'fill'")


def build_regimes(*, ratios=(), rare_ratios=(), class_ratios=(), real_only=True, oversampled=False, weighted=None,
                  pretrain_epochs=0, tstr=True) -> list[Regime]:
    """The regimes in table order: baselines, mixes, down-weighted mix, pre-training, synthetic only.
    `weighted` is None or {"ratio": <ratio>, "weight": w} with 0 < w < 1."""
    for r in ratios:
        check_ratio(r)
    for key, listed in (("rare_ratios", rare_ratios), ("class_ratios", class_ratios)):
        for r in listed:
            if r == "fill":
                raise GanlabError(f"{key}: use ratios=[fill] for fill; {key} are multiples of real counts")
            check_ratio(r, key)
    out = ([Regime(REAL, "real")] if real_only else []) + \
        ([Regime(OVERSAMPLED, "oversampled", options={"class_balanced": False})] if oversampled else [])
    mixes = [r for r in ratios if r != "fill"] + [("rare", float(r)) for r in rare_ratios] + \
        [("class", float(r)) for r in class_ratios] + (["fill"] if "fill" in ratios else [])
    out += [Regime(f"real + synthetic {ratio_name(r)}", "mix", r) for r in mixes]
    if weighted:
        ratio, w = weighted.get("ratio", "fill"), weighted.get("weight")
        for kind, prefix in (("rare", "rare"), ("class", "per class")):  # "rare 1" / "per class x0.5"
            if isinstance(ratio, str) and ratio.startswith(prefix):
                try:
                    ratio = (kind, float(ratio[len(prefix):].strip().removeprefix("x")))
                except ValueError:
                    raise GanlabError(f"weighted.ratio: {ratio!r} is not '{prefix} <multiple>', e.g. '{prefix} 1'") from None
        if not isinstance(ratio, tuple):
            check_ratio(ratio, "weighted.ratio")
        if not (isinstance(w, (int, float)) and 0 < w < 1):
            raise GanlabError(f"weighted.weight: {w!r} must be in (0, 1): the loss weight of each synthetic image")
        out.append(Regime(f"real + synthetic {ratio_name(ratio)} (w={float(w):g})", "mix", ratio, float(w)))
    if pretrain_epochs:
        if not (isinstance(pretrain_epochs, int) and pretrain_epochs > 0):
            raise GanlabError(f"pretrain_epochs: {pretrain_epochs!r} must be a positive integer (0 = no pre-training)")
        out.append(Regime(PRETRAIN, "pretrain", options={"pretrain_epochs": pretrain_epochs}))
    if tstr:
        out.append(Regime(TSTR, "tstr"))
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        raise GanlabError(f"regimes: duplicate names in {names} (a ratio listed twice?)")
    return out


def draw(pool: torch.Tensor, want: int, g: torch.Generator, what: str) -> torch.Tensor:
    """`want` of the indices in `pool`, without replacement; refuses when the pool is too small."""
    if want > len(pool):
        raise GanlabError(f"{what} needs {want} synthetic images and the synthetic folder holds {len(pool)}: "
                          "generate more (ganlab.generate n_per_class=...) or leave that regime out")
    return pool[torch.randperm(len(pool), generator=g)[:want]]


def synthetic_subset(ratio, synth_labels: torch.Tensor, real_labels: torch.Tensor, num_classes: int,
                     g: torch.Generator) -> torch.Tensor:
    """Indices of the synthetic images a mix adds (see the module docstring for the ratios)."""
    real_counts = torch.bincount(real_labels, minlength=num_classes)
    if ratio == "fill":
        return torch.cat([draw((synth_labels == c).nonzero().flatten(), int(real_counts.max() - real_counts[c]), g,
                               f"fill (class {c})") for c in range(num_classes)])
    if isinstance(ratio, tuple) and ratio[0] == "class":
        return torch.cat([draw((synth_labels == c).nonzero().flatten(), round(ratio[1] * int(real_counts[c])), g,
                               f"per class x{ratio[1]:g} (class {c})") for c in range(num_classes)])
    if isinstance(ratio, tuple):
        rare = int(real_counts.argmin())
        return draw((synth_labels == rare).nonzero().flatten(), round(ratio[1] * int(real_counts[rare])), g,
                    f"rare x{ratio[1]:g} (class {rare})")
    return draw(torch.arange(len(synth_labels)), round(float(ratio) * len(real_labels)), g, f"ratio x{float(ratio):g}")


def oversample(labels: torch.Tensor, num_classes: int, g: torch.Generator) -> torch.Tensor:
    """Indices that repeat every class up to the largest class: whole copies, then a random remainder."""
    counts = torch.bincount(labels, minlength=num_classes)
    out = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if len(idx) == 0:
            continue
        want = int(counts.max())
        copies, rest = divmod(want, len(idx))
        out += [idx.repeat(copies), idx[torch.randperm(len(idx), generator=g)[:rest]]]
    return torch.cat(out)


def check_balanced(labels: torch.Tensor, num_classes: int, source: str) -> None:
    """Synthetic-only training must see every class equally often: a fill set (mostly one class) is refused."""
    counts = torch.bincount(labels, minlength=num_classes)
    if counts.min() == 0 or counts.max() > 1.1 * counts.min():
        raise GanlabError(f"{source}: synthetic-only training needs a class-balanced set, this one holds "
                          f"{counts.tolist()} per class; generate one with n_per_class=N and pass it as tstr_synthetic "
                          "(or tstr=false, and pretrain_epochs=0, to leave synthetic-only training out)")


def training_set(regime: Regime, real, synthetic, balanced, num_classes: int, g: torch.Generator):
    """(images, labels, sample_weight or None, n_real, synthetic indices or None) for one seed's draw;
    `balanced` is the class-balanced synthetic set (synthetic-only and pre-training)."""
    if regime.kind == "tstr":
        return balanced.images, balanced.labels, None, 0, None
    if regime.kind == "oversampled":
        idx = oversample(real.labels, num_classes, g)
        return real.images[idx], real.labels[idx], None, len(real.labels), None
    if regime.kind in ("real", "pretrain"):
        return real.images, real.labels, None, len(real.labels), None
    idx = synthetic_subset(regime.ratio, synthetic.labels, real.labels, num_classes, g)
    images = torch.cat([real.images, synthetic.images[idx]])
    labels = torch.cat([real.labels, synthetic.labels[idx]])
    weight = None
    if regime.weight != 1.0:
        weight = torch.cat([torch.ones(len(real.labels)), torch.full((len(idx),), regime.weight)])
    return images, labels, weight, len(real.labels), idx
