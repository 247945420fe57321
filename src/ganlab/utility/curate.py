"""Judge-filtered sampling (`ganlab.generate filter_min_prob=P`): keep only the samples of a conditional
generator that a classifier trained on the run's own real training split puts in their own class with
probability >= P. Rejection sampling with a classifier, not with D: it asks "does this image carry its
class as the real images taught it?", which is what a downstream classifier will learn from it.

Why: in experiments/synthetic_utility the quality preset's synthetic ModerateDemented images sit nearer
MildDemented than the real ones (a real-trained classifier labels about half of them Mild), and topping the
rare class up with them sends real rare test images to Mild. Filtering cannot add what the generator
never draws; it only drops what drifted.
"""
from __future__ import annotations

import logging
import time

import torch
from ganlab.classifier import SmallCNN, fit_classifier, predict
from ganlab.data.folder import UInt8ImageDataset
from ganlab.errors import GanlabError
from ganlab.run_data import prepared_datamodule, training_data

log = logging.getLogger("ganlab.generate")


def real_training_split(ckpt: str) -> tuple[UInt8ImageDataset, list[str]]:
    """(real training split, class names) of the run that wrote `ckpt` (its data config and seed)."""
    trained = training_data(ckpt)
    if trained is None:
        raise GanlabError(f"filter_min_prob needs the training run's data: no config_resolved.yaml next to {ckpt}")
    datamodule = prepared_datamodule(trained[0])
    return datamodule.datasets["train"], list(datamodule.class_names)


def fit_judge(ckpt: str, class_names: list[str], *, width: int = 16, epochs: int = 8, seed: int = 0) -> SmallCNN:
    """A SmallCNN on the run's real training split: class-weighted loss and flips/shifts, as the utility
    benchmark's real-only baseline."""
    real, names = real_training_split(ckpt)
    if names != list(class_names):
        raise GanlabError(f"{ckpt}: the run's data has classes {names}, the checkpoint {list(class_names)}")
    start = time.time()
    with torch.random.fork_rng():  # the same judge for the same seed, and the caller's RNG left as it was
        torch.manual_seed(seed)
        judge = SmallCNN(len(class_names), channels=real.images.shape[1], image_size=real.images.shape[-1],
                         width=width)
        fit_classifier(judge, real.images, real.labels, epochs=epochs, seed=seed)
    log.info("filter: judge trained on %d real training images in %.0f s", len(real.labels), time.time() - start)
    return judge


def own_class_prob(judge: SmallCNN, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N,) the judge's softmax probability of each image's conditioning class."""
    return predict(judge, images).softmax(1).gather(1, labels[:, None])[:, 0]
