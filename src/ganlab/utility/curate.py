"""Filtered sampling for `ganlab.generate`: a classifier trained on the run's own real training split (the
judge) decides which samples of a conditional generator are kept.

- `filter_min_prob=P`: the judge puts the sample in its own class with probability >= P. A classifier, not
  D: it asks "does this image carry its class as the real images taught it?", which is what a downstream
  classifier will learn from it.
- `filter_novelty_percentile=Q`: the sample lies at least as far from its nearest real training image
  (the judge's L2-normalised features) as the Q-th percentile of the distances of the held-out real images
  *of its class*. Held-out real images are new by construction; a sample closer to the training set than
  almost all of them is a near-copy. Per class, because classes differ: in a classifier's features a rare
  class's images sit nearer its few training images than a large class's do, and a bar pooled over the
  classes rejects about a third of new real rare images at Q=5 (experiments/synthetic_utility, oracle). A
  class with fewer than MIN_CLASS_HOLDOUT held-out images takes the pooled bar, with a warning.

Filtering cannot add what the generator never draws; it only drops what drifted or copied. Measured in
experiments/synthetic_utility: neither filter turned the utility of a fill set positive.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch
from ganlab.audit import feature_space, nearest
from ganlab.classifier import SmallCNN, predict, train_classifier
from ganlab.data.folder import UInt8ImageDataset
from ganlab.errors import GanlabError
from ganlab.run_data import holdout_split, prepared_datamodule, training_data

log = logging.getLogger("ganlab.generate")


def real_splits(ckpt: str) -> tuple[UInt8ImageDataset, UInt8ImageDataset, list[str]]:
    """(real training split, held-out split (test, else val), class names) of the run that wrote `ckpt`."""
    trained = training_data(ckpt)
    if trained is None:
        raise GanlabError(f"generate's filters need the training run's data: no config_resolved.yaml next to {ckpt}")
    datamodule = prepared_datamodule(trained[0])
    held_out = datamodule.datasets[holdout_split(datamodule)]
    return datamodule.datasets["train"], held_out, list(datamodule.class_names)


def fit_judge(real: UInt8ImageDataset, num_classes: int, *, width: int = 16, epochs: int = 8,
              seed: int = 0) -> SmallCNN:
    """A SmallCNN on the real training split: class-weighted loss and flips/shifts, as the utility
    benchmark's real-only baseline."""
    start = time.time()
    judge = train_classifier(real.images, real.labels, num_classes, width=width, epochs=epochs, seed=seed)
    log.info("filter: judge trained on %d real training images in %.0f s", len(real.labels), time.time() - start)
    return judge


def own_class_prob(judge: SmallCNN, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) the judge's softmax probability of each image's conditioning class."""
    return predict(judge, images).softmax(1).gather(1, labels[:, None])[:, 0]


MIN_CLASS_HOLDOUT = 5


class NoveltyYardstick:
    """Distances to the nearest real training image in the judge's feature space, and per class the held-out
    real images' `percentile`-th distance as the least a kept sample of that class must have
    (`min_distance[c]`; the pooled one for a class with too few held-out images)."""

    def __init__(self, judge: SmallCNN, train: torch.Tensor, holdout: torch.Tensor, percentile: float,
                 holdout_labels: torch.Tensor, class_names: list[str]):
        if len(holdout) == 0:
            raise GanlabError("filter_novelty_percentile needs held-out real images: the run's data has no test "
                              "or val split")
        self.features = feature_space(judge)
        self.train_features = self.features(train)
        d = self.distance(holdout).numpy()
        self.pooled_min_distance = float(np.percentile(d, percentile))
        self.min_distance, few = [], []
        for c, name in enumerate(class_names):
            own = d[(holdout_labels == c).numpy()]
            if len(own) < MIN_CLASS_HOLDOUT:
                few.append(f"{name} ({len(own)})")
            self.min_distance.append(float(np.percentile(own, percentile)) if len(own) >= MIN_CLASS_HOLDOUT
                                     else self.pooled_min_distance)
        if few:
            log.warning("filter_novelty_percentile: fewer than %d held-out images of %s; those classes take the "
                        "bar pooled over all classes", MIN_CLASS_HOLDOUT, ", ".join(few))

    def distance(self, images: torch.Tensor) -> torch.Tensor:
        return nearest(self.features(images), self.train_features)[0]

    def passes(self, distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return distances >= torch.tensor(self.min_distance)[labels]
