"""Classifier two-sample test (C2ST; Lopez-Paz & Oquab, ICLR 2017): can a classifier tell generated images
from real ones?

The project's SmallCNN is trained to separate real (0) from generated (1) images on one half of each set,
per class, and scored on the other halves: per class, the balanced accuracy (mean of the two sets'
accuracies, so unequal set sizes do not matter). 0.5 = indistinguishable; near 1 = a "synthetic look" that a
downstream classifier can learn as a cue for whatever class synthetic images fill (experiments/
synthetic_utility: 0.98-0.99 in every class for the quality preset, 0.48-0.51 for two sets of real images).
"""
from __future__ import annotations

import torch

from ganlab.classifier import predict, train_classifier


def halves(labels: torch.Tensor, num_classes: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of two disjoint halves with the same class counts (a class's odd image goes to the second)."""
    first, second = [], []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        first.append(idx[: len(idx) // 2])
        second.append(idx[len(idx) // 2:])
    return torch.cat(first), torch.cat(second)


def two_sample_test(real: torch.Tensor, real_labels: torch.Tensor, generated: torch.Tensor,
                    generated_labels: torch.Tensor, num_classes: int, *, seed: int = 0, width: int = 16,
                    epochs: int = 8, batch_size: int = 64, device: str = "cpu",
                    split: tuple | None = None) -> dict[int, float]:
    """{class: balanced accuracy of the real-vs-generated detector on the held-back halves} for every class
    with at least two images in both sets. `split` = (real halves, generated halves) to reuse a split."""
    g = torch.Generator().manual_seed(seed)
    (real_a, real_b), (gen_a, gen_b) = split or (halves(real_labels, num_classes, g),
                                                 halves(generated_labels, num_classes, g))
    images = torch.cat([real[real_a], generated[gen_a]])
    source = torch.cat([torch.zeros(len(real_a), dtype=torch.long), torch.ones(len(gen_a), dtype=torch.long)])
    detector = train_classifier(images, source, 2, width=width, epochs=epochs, batch_size=batch_size, seed=seed,
                                device=device)
    out = {}
    for c in range(num_classes):
        r, s = real_b[real_labels[real_b] == c], gen_b[generated_labels[gen_b] == c]
        if len(r) == 0 or len(s) == 0 or (real_labels[real_a] == c).sum() == 0:
            continue
        pred = predict(detector, torch.cat([real[r], generated[s]]), device=device).argmax(1)
        out[c] = 0.5 * float((pred[: len(r)] == 0).float().mean() + (pred[len(r):] == 1).float().mean())
    return out
