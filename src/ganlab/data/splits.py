"""Deterministic hold-out splits that keep each group (a subject) on one side and each class's share."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Sequence

import numpy as np


def quotas(sizes: Sequence[int], fraction: float) -> list[int]:
    """round(sum(sizes) * fraction) spread over the strata in proportion (largest remainder)."""
    exact = [n * fraction for n in sizes]
    out = [int(e) for e in exact]
    rest = round(sum(sizes) * fraction) - sum(out)
    for i in sorted(range(len(sizes)), key=lambda i: (out[i] - exact[i], i))[:max(rest, 0)]:
        out[i] += 1
    return out


def holdout(labels: Sequence[int], groups: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into (kept, held_out).

    About `fraction` of each class is held out, whole groups at a time (a group goes with its
    majority class; groups are taken while they bring the count closer to the class's quota), in
    an order fixed by `seed`; every class keeps at least one group.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    strata: dict[int, list[str]] = defaultdict(list)
    for g in sorted(members):
        counts = Counter(labels[i] for i in members[g])
        strata[min(counts, key=lambda c: (-counts[c], c))].append(g)
    rng = np.random.default_rng(seed)
    classes = sorted(strata)
    targets = quotas([sum(len(members[g]) for g in strata[c]) for c in classes], fraction)
    held: list[int] = []
    for c, target in zip(classes, targets):
        order = [strata[c][j] for j in rng.permutation(len(strata[c]))]
        taken = 0
        for g in order[:-1]:
            if taken + len(members[g]) / 2 < target:  # only when it brings the count closer to the target
                held.extend(members[g])
                taken += len(members[g])
    held_set = set(held)
    return [i for i in range(len(labels)) if i not in held_set], sorted(held)
