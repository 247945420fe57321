"""Class-conditional generators: does an image generated for class c look like class c?

- conditional accuracy: the real-trained domain classifier's accuracy on generated images, per requested
  class and balanced over classes (the classifier's accuracy on held-out real images is its ceiling);
- per-class KID: generated images of class c against the real images of class c (KID, not FID: a
  52-image class is far below what a Fréchet distance needs).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassRecall

from ganlab.metrics.kid import kernel_distance


def class_recall(pred: Tensor, target: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """(per-class recall, mask of the classes present in `target`), via torchmetrics."""
    pred, target = pred.cpu(), target.cpu()
    present = torch.bincount(target, minlength=num_classes) > 0
    return MulticlassRecall(num_classes, average=None)(pred, target).double(), present


def per_class_accuracy(pred: Tensor, target: Tensor, num_classes: int) -> dict[int, tuple[float, int]]:
    """{class: (accuracy, number of samples)} for classes with at least one sample."""
    recall, present = class_recall(pred, target, num_classes)
    counts = torch.bincount(target.cpu(), minlength=num_classes)
    return {c: (float(recall[c]), int(counts[c])) for c in range(num_classes) if present[c]}


def balanced_accuracy(pred: Tensor, target: Tensor, num_classes: int) -> float:
    """Mean recall over the classes present in `target`: torchmetrics' MulticlassAccuracy(average="macro")
    when every class is present (which would count an absent but predicted class as 0)."""
    recall, present = class_recall(pred, target, num_classes)
    return float(recall[present].mean()) if present.any() else float("nan")


def per_class_kid(real: Tensor, real_labels: Tensor, fake: Tensor, fake_labels: Tensor, num_classes: int,
                  subset_size: int = 1000, subsets: int = 100, seed: int = 0) -> dict[int, dict]:
    """{class: {kid, kid_std, n_real, n_fake}}; kid is NaN for a class with fewer than 2 samples on a side."""
    out = {}
    real_labels, fake_labels = real_labels.cpu(), fake_labels.cpu()
    for c in range(num_classes):
        r, f = real[real_labels == c], fake[fake_labels == c]
        if len(f) == 0:
            continue
        kid, std, _ = kernel_distance(r, f, subset_size, subsets, seed + c)
        out[c] = {"kid": kid, "kid_std": std, "n_real": len(r), "n_fake": len(f)}
    return out


def label_plan(n: int, class_counts: Tensor, mode: str = "proportional") -> Tensor:
    """n requested labels: in proportion to the real class counts (so set-level metrics compare like
    with like; every class gets at least one) or uniform; deterministic, interleaved by class."""
    k = len(class_counts)
    if mode == "uniform" or class_counts.sum() == 0:
        weights = torch.ones(k, dtype=torch.float64)
    elif mode == "proportional":
        weights = class_counts.double()
    else:
        raise ValueError(f"fake_labels must be proportional or uniform, got {mode!r}")
    quota = weights / weights.sum() * n
    counts = quota.floor().long().clamp(min=1 if n >= k else 0)
    for c in torch.argsort(quota - quota.floor(), descending=True).tolist():  # largest remainders first
        if counts.sum() >= n:
            break
        counts[c] += 1
    while counts.sum() > n:
        counts[counts.argmax()] -= 1
    labels = torch.cat([torch.full((int(m),), c, dtype=torch.long) for c, m in enumerate(counts)])
    order = torch.argsort(torch.cat([torch.arange(int(m), dtype=torch.float64) / max(int(m), 1) for m in counts]),
                          stable=True)
    return labels[order]
