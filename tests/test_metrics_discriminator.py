"""The discriminator-overfitting family (metrics/d_overfit[/<class>]): ADA's r_v from the module's own D,
logged during training."""
from __future__ import annotations

import pytest
import torch

from ganlab.errors import GanlabError
from ganlab.metrics.families.discriminator import DiscriminatorOverfit
from ganlab.metrics.suite import MetricSuite


class MarkerD(torch.nn.Module):
    """Scores generated images (a white top-left pixel) -2, real images +1, and the training images of class
    `memorises` +4: for that class r_v = (4 - 1) / (4 + 2) = 0.5, for the others (1 - 1) / (1 + 2) = 0."""

    def __init__(self, train: torch.Tensor, train_labels: torch.Tensor, memorises: int):
        super().__init__()
        self.register_buffer("known", train[train_labels == memorises].flatten(1).float())
        self.memorises, self.anchor = memorises, torch.nn.Parameter(torch.zeros(()))
        self.modes_seen: set[bool] = set()

    def forward(self, x, labels=None):
        self.modes_seen.add(self.training)
        pixels = ((x.float() + 1) * 127.5).round()
        generated = pixels[:, 0, 0, 0] > 250
        known = (torch.cdist(pixels.flatten(1), self.known) < 0.5).any(dim=1)
        if labels is not None:
            known &= labels == self.memorises
        return torch.where(generated, -2.0, torch.where(known, 4.0, 1.0)) + 0.0 * self.anchor


class ToyGAN:
    latent_dim, num_classes = 4, 2

    def __init__(self, discriminator, conditional=True):
        self.discriminator, self.conditional = discriminator, conditional
        self.requested = []

    def sample(self, n, labels=None, z=None):
        self.requested.append(labels)
        x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(n)) * 1.6 - 0.8
        x[:, 0, 0, 0] = 1.0  # the generated-image marker
        return x


def real_split(n_per_class: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 200, (2 * n_per_class, 1, 8, 8), generator=g, dtype=torch.uint8)
    return images, torch.arange(2 * n_per_class) % 2


def evaluate(module, holdout=True, per_class=10):
    train, train_labels = real_split(20, 0)
    suite = MetricSuite({"discriminator": DiscriminatorOverfit(per_class=per_class, train_per_class=50)},
                        spaces={}, n_samples=16, bootstrap=0)
    suite.prepare(train, train_labels, ["NonDemented", "Moderate Demented"],
                  holdout=real_split(6, 1) if holdout else None, generator=module)
    return {r.name: r for r in suite.evaluate(module)} if suite.active else {}


def test_d_overfit_is_high_for_the_class_whose_training_images_d_memorised_and_d_is_left_in_train_mode():
    train, train_labels = real_split(20, 0)
    d = MarkerD(train, train_labels, memorises=1)
    module = ToyGAN(d)
    d.train()
    results = evaluate(module)
    assert results["metrics/d_overfit/NonDemented"].value == pytest.approx(0.0)
    rare = results["metrics/d_overfit/Moderate_Demented"]
    assert rare.value == pytest.approx(0.5) and rare.n_fake == 10 and rare.n_real == 6
    assert results["metrics/d_overfit"].value == pytest.approx(0.25)
    assert d.modes_seen == {False} and d.training  # scored in eval mode, handed back in train mode
    assert [r.tolist() for r in module.requested] == [[0, 1] * 10]  # its own set: uniform over classes

    unconditional = evaluate(ToyGAN(MarkerD(train, train_labels, memorises=1), conditional=False))
    # without labels: training images 2.5 averaged over the classes (+1, +4), held-out +1, generated -2
    assert unconditional["metrics/d_overfit"].value == pytest.approx(1.5 / 4.5)
    assert not any("/" in name[len("metrics/"):] for name in unconditional)


def test_d_overfit_is_left_out_without_held_out_images_or_a_discriminator_and_bad_settings_are_named():
    train, train_labels = real_split(20, 0)
    assert evaluate(ToyGAN(MarkerD(train, train_labels, 1)), holdout=False) == {}
    assert evaluate(ToyGAN(None)) == {}
    with pytest.raises(GanlabError, match="metrics.families.discriminator: per_class=0"):
        DiscriminatorOverfit(per_class=0)


def test_families_that_plan_the_same_labels_read_one_generated_set():
    """The conditional and discriminator families both draw per_class images of every class: one set serves
    both when their plans match (here two discriminator families), two sets when they do not."""
    train, train_labels = real_split(20, 0)

    def requested(second_per_class):
        module = ToyGAN(MarkerD(train, train_labels, memorises=1))
        suite = MetricSuite({"first": DiscriminatorOverfit(per_class=10, train_per_class=50),
                             "second": DiscriminatorOverfit(per_class=second_per_class, train_per_class=50)},
                            spaces={}, n_samples=16, bootstrap=0)
        suite.prepare(train, train_labels, ["a", "b"], holdout=real_split(6, 1), generator=module)
        results = {r.name: r.value for r in suite.evaluate(module)}
        return sum(len(r) for r in module.requested), results

    n_images, results = requested(10)
    assert n_images == 20 and results["metrics/d_overfit/b"] == pytest.approx(0.5)
    assert requested(12)[0] == 20 + 24
