"""experiments/quality/class_kid.py: per-class KID against new renders tells drawing a class from copying it."""
from __future__ import annotations

import sys

import torch
from conftest import REPO

sys.path[:0] = [str(REPO / "experiments" / "quality"), str(REPO / "experiments")]
from class_kid import class_figures, judged_shares  # noqa: E402


def features(n: int, centre: float, seed: int) -> torch.Tensor:
    return torch.randn(n, 8, generator=torch.Generator().manual_seed(seed)) + centre


def test_a_generator_that_repeats_its_training_images_scores_them_not_the_class():
    new, new_other = features(300, 0.0, 1), features(300, 0.0, 2)
    train = features(22, 0.0, 3) + 0.8  # a few images off the class's centre, as 22 draws can be
    copier = train.repeat(14, 1)[:300]
    drawer = features(300, 0.0, 4)
    copied, drawn = class_figures(new, new_other, train, copier, 0), class_figures(new, new_other, train, drawer, 0)
    assert copied["generated_vs_training"] < drawn["generated_vs_training"]  # the ladder's figure prefers the copier
    assert drawn["generated"] < copied["generated"]  # against new renders, the one that draws the class wins
    assert abs(drawn["generated"] - drawn["real_draw"]) < 0.5 * copied["generated"]
    assert copied["training_images"] > 2 * drawn["generated"]


def test_judged_shares_count_where_the_classifier_puts_each_image():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 1.0], [0.0, 1.0, 3.0], [0.0, 5.0, 0.0]])
    assert judged_shares(logits, 4) == [0.25, 0.5, 0.25, 0.0]  # a class no image goes to has a share of 0
