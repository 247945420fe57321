"""Paired statistics of the downstream-utility benchmark.

Every regime is trained once per seed, and a seed fixes the classifier's initialisation and its data
order generator for every regime, so regime - baseline differences are paired per seed. The 95% CI of
a mean difference is the Student t-interval over seeds: mean ± t(0.975, n-1) * sd / sqrt(n).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

from ganlab.utility.regimes import BASELINES


def confusion(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[list[int]]:
    """counts[true][predicted]."""
    pred = logits.argmax(1)
    return torch.bincount(labels * num_classes + pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes).tolist()


def paired_ci(diffs, level: float = 0.95) -> tuple[float, list[float]]:
    """(mean, [lo, hi]) of per-seed differences: t-interval; NaN bounds for fewer than 2 seeds."""
    d = np.asarray(diffs, dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, [float("nan"), float("nan")]
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    return mean, [mean - half, mean + half]


def by_seed(rows: list[dict], regime: str, key) -> dict[int, float]:
    return {r["seed"]: key(r) for r in rows if r["regime"] == regime}


def strongest_baseline(rows: list[dict], baselines=BASELINES) -> str:
    present = [b for b in baselines if any(r["regime"] == b for r in rows)]
    if not present:
        raise ValueError(f"no baseline regime ({', '.join(baselines)}) among the rows")
    return max(present, key=lambda b: np.mean(list(by_seed(rows, b, lambda r: r["balanced_accuracy"]).values())))


def utility_results(rows: list[dict], class_names: list[str], minority: str, test_counts: dict,
                    baselines=BASELINES) -> dict:
    """{"seeds", "test_per_class", "baseline", "minority", "ci": ..., "regimes": {name: {...}}}: per regime
    the mean, the paired difference to the strongest baseline and its 95% CI, for balanced accuracy and
    minority recall; plus per-class recall means and where the minority's test images go."""
    base = strongest_baseline(rows, baselines)
    m = class_names.index(minority)
    metrics = {"balanced_accuracy": lambda r: r["balanced_accuracy"], "minority_recall": lambda r: r["recall"][m]}
    regimes = {}
    for name in dict.fromkeys(r["regime"] for r in rows):
        group = [r for r in rows if r["regime"] == name]
        entry = {"n_real": group[0]["n_real"], "n_synthetic": int(round(np.mean([r["n_synthetic"] for r in group])))}
        for key, get in metrics.items():
            own, ref = by_seed(rows, name, get), by_seed(rows, base, get)
            seeds = sorted(set(own) & set(ref))
            diff, ci = paired_ci([own[s] - ref[s] for s in seeds])
            values = np.asarray(list(own.values()), dtype=float)
            entry[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                          "diff": diff, "ci95": ci, "per_seed": [own[s] for s in sorted(own)]}
        entry["recall"] = {c: float(np.nanmean([r["recall"][i] for r in group])) for i, c in enumerate(class_names)}
        if all("confusion" in r for r in group):
            cm = np.sum([np.asarray(r["confusion"], dtype=float) for r in group], axis=0)
            entry["minority_predicted_as"] = {c: float(v) for c, v in zip(class_names, cm[m] / max(cm[m].sum(), 1))}
            entry["confusion"] = (cm / len(group)).tolist()  # mean counts per seed, rows = true class
        regimes[name] = entry
    return {"seeds": len({r["seed"] for r in rows}), "test_per_class": dict(test_counts), "baseline": base,
            "minority": minority, "class_names": list(class_names),
            "ci": "paired difference to the baseline per seed; 95% Student t-interval over seeds", "regimes": regimes}


def markdown(results: dict) -> str:
    """One row per regime: means, paired differences to the baseline with their 95% CIs, and where the
    minority's test images go."""
    minority, base = results["minority"], results["baseline"]
    head = ["regime", "N synthetic", "balanced acc", f"Δ vs {base} [95% CI]", f"recall {minority}",
            "Δ [95% CI]", f"{minority} test images predicted as"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in results["regimes"].items():
        cells = [name, str(e["n_synthetic"])]
        for key in ("balanced_accuracy", "minority_recall"):
            s = e[key]
            cells += [f"{s['mean']:.3f} ± {s['std']:.3f}",
                      "—" if name == base else f"{s['diff']:+.3f} [{s['ci95'][0]:+.3f}, {s['ci95'][1]:+.3f}]"]
        where = e.get("minority_predicted_as", {})
        cells.append(", ".join(f"{c} {v:.0%}" for c, v in sorted(where.items(), key=lambda kv: -kv[1]) if v >= 0.005))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
