"""The domain feature space (a SmallCNN trained on the real images, cached) and the whole MetricSuite
with the default families on a toy dataset whose classes are easy to learn: where a bright square sits."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from ganlab.metrics.domain import DomainFeatures, DomainSpace, balanced_indices, train_domain_classifier
from ganlab.metrics.families.conditional import ConditionalAccuracy
from ganlab.metrics.families.domain import DomainDistance
from ganlab.metrics.families.prdc import PrecisionRecall
from ganlab.metrics.families.ssim import SSIMFamily
from ganlab.metrics.frechet import FrechetReference, distance_at_n
from ganlab.metrics.suite import MetricSuite

SIZE, CLASSES = 32, 4


def toy_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """uint8 (N, 1, 32, 32): class c = a bright square of side 4 + 5c somewhere on noise (a class that
    survives the classifier's shift and flip augmentation)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(labels), 1, SIZE, SIZE, generator=g) * 40
    corner = torch.randint(0, 12, (len(labels), 2), generator=g)
    for i, c in enumerate(labels.tolist()):
        top, left, side = int(corner[i, 0]), int(corner[i, 1]), 4 + 5 * c
        x[i, :, top:top + side, left:left + side] += 200
    return x.clamp(0, 255).to(torch.uint8)


class ToyGenerator:  # noqa: D101
    """Stands in for a GANModule: draws the toy class it is asked for (or `offset` classes further)."""

    latent_dim, num_classes, conditional = 8, CLASSES, True

    def __init__(self, offset: int = 0):
        self.offset, self.calls, self.requested = offset, 0, []

    def sample(self, n, labels=None, z=None):
        self.calls += 1
        self.requested.append(labels)
        wrong = (labels + self.offset) % CLASSES
        return toy_images(wrong, seed=1000 + self.calls).float() / 127.5 - 1


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def toy_data():
    labels = torch.arange(240) % CLASSES
    holdout_labels = torch.arange(40) % CLASSES
    return toy_images(labels, 0), labels, toy_images(holdout_labels, 1), holdout_labels


@pytest.fixture(scope="module")
def classifier(toy_data, tmp_path_factory):
    images, labels, _, _ = toy_data
    cache = tmp_path_factory.mktemp("classifier_cache")
    model, info = train_domain_classifier(images, labels, CLASSES, width=8, epochs=10, min_steps=0,
                                          cache_dir=cache)
    return model, info, cache


def test_classifier_is_cached_by_data_and_leaves_the_global_rng_alone(toy_data, classifier):
    images, labels, _, _ = toy_data
    model, info, cache = classifier
    assert not info["cached"] and list(cache.glob("domain_classifier-*.pt"))
    before = torch.get_rng_state()
    again, info2 = train_domain_classifier(images, labels, CLASSES, width=8, epochs=10, min_steps=0,
                                           cache_dir=cache)
    assert info2["cached"] and info2["key"] == info["key"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    other = train_domain_classifier(images[:-4], labels[:-4], CLASSES, width=8, epochs=1, min_steps=0,
                                    cache_dir=cache)[1]
    assert other["key"] != info["key"] and not other["cached"]  # other data, other classifier
    weighted = train_domain_classifier(images, labels, CLASSES, width=8, epochs=1, min_steps=0, cache_dir=cache,
                                       balance="loss")[1]
    assert weighted["key"] != other["key"]  # other training, other cache entry
    assert torch.equal(torch.get_rng_state(), before)


def test_balanced_sampling_tops_every_class_up_to_the_largest():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    idx = balanced_indices(labels, 4)
    assert torch.bincount(labels[idx], minlength=4).tolist() == [5, 5, 5, 0]
    assert set(idx.tolist()) == set(range(8))  # every image still seen


def test_domain_fd_is_zero_for_identical_sets_and_grows_with_corruption(toy_data, classifier):
    images, _, _, _ = toy_data
    domain = DomainFeatures(classifier[0])
    real = images.float() / 127.5 - 1
    ref = FrechetReference(domain(real)[0])
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(3))
    fds = [ref.distance(domain((real + s * noise).clamp(-1, 1))[0]) for s in (0.0, 0.2, 0.5, 1.0)]
    assert fds[0] == pytest.approx(0.0, abs=1e-6 * fds[1])
    assert all(a < b for a, b in zip(fds, fds[1:])), fds


def make_suite(cache, per_class: int = 16, n_samples: int = 64) -> MetricSuite:
    families = {"domain": DomainDistance(kid_subsets=10), "prdc": PrecisionRecall(),
                "ssim": SSIMFamily(samples=16, pairs=8), "conditional": ConditionalAccuracy(per_class, kid_subsets=10)}
    return MetricSuite(families, {"domain": DomainSpace(width=8, epochs=10, min_steps=0, cache_dir=str(cache))},
                       n_samples=n_samples, batch_size=32, bootstrap=30)


@pytest.fixture(scope="module")
def suite(toy_data, classifier):
    images, labels, holdout, holdout_labels = toy_data
    s = make_suite(classifier[2])
    s.prepare(images, labels, ["a", "b", "c d", "e"], holdout=(holdout, holdout_labels))
    return s


def test_conditional_accuracy_on_a_toy_generator(suite):
    right = {r.name: r for r in suite.evaluate(ToyGenerator(offset=0))}
    wrong = {r.name: r for r in suite.evaluate(ToyGenerator(offset=1))}
    assert right["metrics/cond_acc_real"].value > 0.9  # the judge itself is good on real images
    assert right["metrics/cond_acc"].value > 0.8 and wrong["metrics/cond_acc"].value < 0.2  # chance: 0.25
    per_class = [right[f"metrics/n_fake/{c}"].value for c in ("a", "b", "c_d", "e")]
    assert per_class == [16] * 4 and right["metrics/cond_acc/c_d"].n_fake == 16
    for c in ("a", "b", "c_d", "e"):  # the judge's own per-class accuracy on held-out reals, with its N
        assert right[f"metrics/cond_acc_real/{c}"].value > 0.5 and right[f"metrics/cond_acc_real/{c}"].n_real == 10
        assert right[f"metrics/cond_acc_real/{c}"].reference == f"metrics/cond_acc/{c}"
    lo, hi = right["metrics/cond_acc"].ci
    assert lo <= right["metrics/cond_acc"].value <= hi
    # images of the right class match that class's real images better than images of another class
    # (as a set, both draw the same classes: only the per-class numbers can tell them apart)
    assert right["metrics/kid_domain/a"].value < wrong["metrics/kid_domain/a"].value
    # each class's KID floor: its held-out real images against its training images, drawn as the reference
    for c in ("a", "b", "c_d", "e"):
        floor = right[f"metrics/kid_domain_real/{c}"]
        assert floor.reference == f"metrics/kid_domain/{c}" and floor.n_fake == 10
        assert floor.value < wrong[f"metrics/kid_domain/{c}"].value  # real images of a class sit nearer than another class's


def test_suite_reports_every_family_with_its_sample_sizes(suite):
    results = {r.name: r for r in suite.evaluate(ToyGenerator())}
    for name in ("metrics/fd_domain", "metrics/kid_domain", "metrics/precision", "metrics/recall",
                 "metrics/density", "metrics/coverage", "ssim/nearest_real", "ssim/diversity",
                 "ssim/diversity_real", "ssim/ms_diversity", "ssim/ms_diversity_real", "metrics/fd_domain_real"):
        assert name in results and math.isfinite(results[name].value), name
    assert results["metrics/n_fake"].value == 64 and results["metrics/fd_domain"].n_fake == 64
    assert results["metrics/n_real"].value == 64 and results["metrics/precision"].n_real == 64
    assert results["ssim/nearest_real"].n_fake == 16 and results["ssim/diversity"].n_fake == 8
    assert results["metrics/precision"].value > 0.5 and results["metrics/fd_domain"].ci is not None
    for name in ("metrics/precision", "metrics/recall", "metrics/density", "metrics/coverage",
                 "ssim/nearest_real", "metrics/cond_acc"):
        low, high = results[name].ci
        assert low <= results[name].value <= high, name  # each resampled over the set it averages
    assert suite.settings["classifier"]["cached"] and suite.settings["ms_ssim_betas"]


def test_per_class_figures_use_a_uniform_set_while_the_shared_set_follows_the_real_mix(toy_data, classifier,
                                                                                        caplog):
    """A rare class: the shared set (FD, PRDC, SSIM) draws the real class mix, the per-class figures get
    per_class images of every class; a class with few held-out reals is named in one warning and flagged."""
    images, labels, holdout, holdout_labels = toy_data
    keep = (labels != 3) | (torch.arange(len(labels)) < 40)  # class 3: 10 of 190 training images
    few = (holdout_labels != 3) | (torch.arange(len(holdout_labels)) < 20)  # and 5 held-out ones
    s = make_suite(classifier[2], per_class=20)
    with caplog.at_level(logging.WARNING, logger="ganlab.metrics"):
        s.prepare(images[keep], labels[keep], ["a", "b", "c d", "e"], holdout=(holdout[few], holdout_labels[few]),
                  generator=ToyGenerator())
    warnings = [r.getMessage() for r in caplog.records if "per-class figures for class" in r.getMessage()]
    assert len(warnings) == 1 and "class e say little" in warnings[0] and "N=5" in warnings[0]
    assert s.settings["classifier"]["weak_classes"] == ["e"]
    assert s.settings["classifier"]["holdout_per_class"]["e"]["n"] == 5
    gen = ToyGenerator()
    results = {r.name: r for r in s.evaluate(gen)}
    assert [results[f"metrics/n_fake/{c}"].value for c in ("a", "b", "c_d", "e")] == [20] * 4
    assert results["metrics/cond_acc"].n_fake == 80 and results["metrics/n_fake"].value == 64
    assert results["metrics/cond_acc_real/e"].n_real == 5
    shared = torch.cat([r for r in gen.requested if r is not None])
    assert len(shared) == 64 + 80
    counts = torch.bincount(shared[:64], minlength=CLASSES)  # the shared set is generated first
    assert counts.tolist() == torch.bincount(s.ctx.ref_labels, minlength=CLASSES).tolist()  # the reference's mix
    assert counts[3] < 8 and torch.bincount(shared[64:], minlength=CLASSES).tolist() == [20] * 4


def test_a_suite_without_families_or_with_a_non_family_is_refused():
    from ganlab.errors import GanlabError

    with pytest.raises(GanlabError, match="metrics.families: none listed"):
        MetricSuite({"ssim": None})
    with pytest.raises(GanlabError, match="metrics.families.odd: int is not a metric family"):
        MetricSuite({"odd": 3})


def test_truncation_draws_the_latents_as_generate_does_and_none_leaves_them_plain():
    from ganlab.errors import GanlabError
    from ganlab.generate import truncated_noise

    families = {"ssim": SSIMFamily(samples=16, pairs=8)}
    labels = torch.arange(256) % 4
    plain, _ = MetricSuite(families).plan(100, 4, labels)
    assert torch.equal(plain, torch.randn(256, 100, generator=torch.Generator().manual_seed(0)))  # as before
    cut, same = MetricSuite(families, truncation=1.5).plan(100, 4, labels)
    assert torch.equal(same, labels) and cut.abs().max() <= 1.5 < plain.abs().max()
    assert torch.equal(cut, truncated_noise(256, 100, 1.5, torch.Generator().manual_seed(0)))  # generate's draw
    for bad in (0, -1.0, True, "1.5"):
        with pytest.raises(GanlabError, match="metrics.truncation="):
            MetricSuite(families, truncation=bad)


def gaussian(n: int, shift: float, seed: int, dim: int = 16) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_fd_compared_at_equal_n_does_not_flatter_a_larger_generated_set():
    """FD falls with n: a perfect generator's 600 samples read well below the floor of 150 held-out reals
    (the unequal ratio flatters it), but at equal n the ratio is ~1; a shifted generator stays above."""
    from ganlab.metrics.families.domain import equal_n

    ref = FrechetReference(gaussian(1000, 0.0, 0))
    held, perfect, shifted = gaussian(150, 0.0, 1), gaussian(600, 0.0, 2), gaussian(600, 0.4, 3)
    assert distance_at_n(ref, perfect, 600, 5, 0) == pytest.approx(ref.distance(perfect))
    assert distance_at_n(ref, perfect, 150, 20, 0) > 2 * ref.distance(perfect)  # the small-n bias
    assert ref.distance(perfect) / ref.distance(held) < 0.5
    fd, floor, n = equal_n(ref, perfect, held, 20, 0)
    assert n == 150 and floor == pytest.approx(ref.distance(held)) and 0.7 < fd / floor < 1.4
    fd_shifted, _, _ = equal_n(ref, shifted, held, 20, 0)
    assert fd_shifted / floor > 1.5
    # a held-out split larger than the generated set: the floor is drawn at the generated set's n
    fd_small, floor_small, n_small = equal_n(ref, perfect[:100], held, 20, 0)
    assert n_small == 100 and floor_small > ref.distance(held) and 0.6 < fd_small / floor_small < 1.6


class NoisyGenerator(ToyGenerator):
    def __init__(self, noise: float):
        super().__init__()
        self.noise = noise

    def sample(self, n, labels=None, z=None):
        x = super().sample(n, labels, z)
        return (x + self.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(self.calls))).clamp(-1, 1)


def test_fd_across_spaces_averages_the_equal_n_ratio_over_classifier_seeds(toy_data, classifier):
    from ganlab.metrics.families.fd_spaces import FrechetAcrossSpaces

    images, labels, holdout, holdout_labels = toy_data
    s = make_suite(classifier[2])
    s.families["fd_spaces"] = FrechetAcrossSpaces(seeds=[0, 1, 2], draws=10)
    s.prepare(images, labels, ["a", "b", "c d", "e"], holdout=(holdout, holdout_labels))
    clean = {r.name: r for r in s.evaluate(ToyGenerator())}
    per_space = {k: dict(v) for k, v in s.settings["fd_spaces"]["per_space"].items()}
    noisy = {r.name: r for r in s.evaluate(NoisyGenerator(0.6))}
    assert clean["metrics/fd_domain_ratio"].n_fake == 40  # 64 generated, 40 held out: compared at 40
    # seed 0 is the suite's own space (metrics.seed 0): with the same draws, the one-space figure
    assert per_space[0]["ratio"] == pytest.approx(clean["metrics/fd_domain_ratio"].value)
    assert len({round(v["floor"], 9) for v in per_space.values()}) == 3  # three different spaces
    geo = clean["metrics/fd_ratio_spaces"].value
    assert clean["metrics/fd_ratio_spaces_min"].value <= geo <= clean["metrics/fd_ratio_spaces_max"].value
    assert noisy["metrics/fd_ratio_spaces"].value > 2 * geo
    s.families["fd_spaces"] = FrechetAcrossSpaces(seeds=[])  # the training default: not measured
    s.prepare(images, labels, ["a", "b", "c d", "e"], holdout=(holdout, holdout_labels))
    assert "metrics/fd_ratio_spaces" not in {r.name for r in s.evaluate(ToyGenerator())}


def test_one_class_data_trains_the_domain_space_on_rotations():
    """OASIS slices have one class, on which a classifier of class labels learns nothing (its loss is 0 from the
    start): the space is trained to tell each image's rotation instead, which needs the image's layout."""
    from ganlab.classifier import SmallCNN, rotation_task
    from ganlab.metrics.domain import resize

    def upright(n, seed):  # a bright bar somewhere in the top quarter, on noise
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(n, 1, SIZE, SIZE, generator=g) * 40
        for i, (top, left) in enumerate(torch.randint(0, 5, (n, 2), generator=g).tolist()):
            x[i, :, top:top + 3, 4 + left:20 + left] += 200
        return x.clamp(0, 255).to(torch.uint8)

    images = upright(120, 0)
    model, info = train_domain_classifier(images, torch.zeros(120, dtype=torch.long), 1, width=8, epochs=4,
                                          min_steps=0)
    assert info["task"] == "rotation" and info["num_classes"] == 4
    torch.manual_seed(0)
    initial = SmallCNN(4, 1, SIZE, width=8)
    assert not torch.allclose(next(model.parameters()), next(initial.parameters()))
    turned, turns = rotation_task(upright(40, 1))
    assert len(turned) == 8 * 40 and turns.bincount().tolist() == [80] * 4
    with torch.no_grad():
        accuracy = (model(resize(turned, SIZE)).argmax(1) == turns).float().mean()
    assert accuracy > 0.9
