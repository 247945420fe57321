"""The metric functions on known cases, and against torchmetrics where it computes the same number."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from ganlab.metrics.bootstrap import bootstrap_ci, mean_ci
from ganlab.metrics.conditional import balanced_accuracy, label_plan, per_class_accuracy
from ganlab.metrics.frechet import FrechetReference, frechet_distance
from ganlab.metrics.kid import kernel_distance
from ganlab.metrics.prdc import prdc
from ganlab.metrics.report import Result, markdown_table, to_log
from ganlab.metrics.ssim import ms_ssim, ms_ssim_betas, nearest_real_ssim, pairwise, ssim

pytestmark = pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")


class Identity(nn.Module):
    """A torchmetrics `feature=` module for precomputed features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


MIXING = torch.randn(16, 16, generator=torch.Generator().manual_seed(0)) / 4


def features(n: int, d: int = 16, seed: int = 0, shift: float = 0.0) -> torch.Tensor:
    """Correlated Gaussian features; the same distribution for every seed (samples differ)."""
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) @ MIXING[:d, :d] + shift


def test_frechet_distance_matches_torchmetrics_fid_on_the_same_features():
    real, fake = features(300, seed=1), features(200, seed=2, shift=0.3)
    fid = FrechetInceptionDistance(feature=Identity(16))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    expected = float(fid.compute())
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-5)
    # n < d takes the Gram-matrix path: still the same number
    few = features(10, seed=3)
    fid.reset()
    fid.update(real, real=True)
    fid.update(few, real=False)
    assert frechet_distance(real, few) == pytest.approx(float(fid.compute()), rel=1e-4)


def test_frechet_is_zero_for_identical_sets_and_grows_with_corruption():
    real = features(400, seed=4)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)
    ref = FrechetReference(real)
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(5))
    values = [ref.distance(real + s * noise) for s in (0.0, 0.1, 0.3, 1.0)]
    assert values[0] < 1e-8 and all(a < b for a, b in zip(values, values[1:]))


def test_kid_works_with_fewer_samples_than_the_default_subset_size():
    real, fake = features(20, seed=6), features(24, seed=7, shift=1.0)
    kid, std, used = kernel_distance(real, fake)  # default subset_size=1000 > N
    assert used == 20 and math.isfinite(kid) and math.isfinite(std) and kid > 0
    with pytest.raises(ValueError):  # what torchmetrics does with its default
        tm = KernelInceptionDistance(feature=Identity(16))
        tm.update(real, real=True)
        tm.update(fake, real=False)
        tm.compute()
    # with the subset covering both sets, the same unbiased MMD as torchmetrics
    same = features(20, seed=8, shift=1.0)
    tm = KernelInceptionDistance(feature=Identity(16), subset_size=20, subsets=3)
    tm.update(real, real=True)
    tm.update(same, real=False)
    assert kernel_distance(real, same)[0] == pytest.approx(float(tm.compute()[0]), rel=1e-5)
    assert abs(kernel_distance(real, real.clone())[0]) < 0.2 * kid
    assert math.isnan(kernel_distance(real[:1], fake)[0])


def test_prdc_known_cases():
    real = features(200, seed=9)
    same = prdc(real, real.clone(), k=5)
    assert same == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(1.0), "coverage": 1.0}
    far = prdc(real, real + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # mode collapse: every generated sample is (nearly) one real sample
    collapsed = real[:1].repeat(200, 1) + 1e-6 * features(200, seed=10)
    c = prdc(real, collapsed, k=5)
    assert c["precision"] == 1.0 and c["coverage"] <= 6 / 200 and c["recall"] <= 0.05
    # half of the generated set is off the real manifold: precision ~ 0.5, density ~ 0.5
    half = torch.cat([features(100, seed=11), real[:100] + 100.0])
    h = prdc(real, half, k=5)
    assert 0.3 < h["precision"] < 0.6 and h["density"] < 0.7


def test_ssim_matches_torchmetrics_and_nearest_real_finds_a_copy():
    g = torch.Generator().manual_seed(12)
    a = torch.rand(6, 1, 32, 32, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    expected = tm_ssim(a, b, data_range=2.0, reduction="none")
    assert torch.allclose(ssim(a, b), expected, atol=1e-5)
    rgb = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(ssim(rgb, rgb.flip(0)), tm_ssim(rgb, rgb.flip(0), data_range=2.0, reduction="none"),
                          atol=1e-5)
    reals = torch.rand(40, 1, 32, 32, generator=g) * 2 - 1
    fakes = torch.cat([reals[17:18].clone(), torch.rand(3, 1, 32, 32, generator=g) * 2 - 1])
    best, index = nearest_real_ssim(fakes, reals, candidates=4)
    assert best[0].item() == pytest.approx(1.0, abs=1e-6) and index[0].item() == 17
    assert (best[1:] < 0.5).all()
    exhaustive, _ = nearest_real_ssim(fakes, reals, candidates=0)
    assert torch.allclose(exhaustive[0], best[0]) and (exhaustive >= best - 1e-6).all()


def test_ms_ssim_scales_fit_the_image_size():
    assert len(ms_ssim_betas(32)) == 2 and len(ms_ssim_betas(64)) == 3
    assert len(ms_ssim_betas(128)) == 4 and len(ms_ssim_betas(256)) == 5
    for size in (32, 64, 128):
        betas = ms_ssim_betas(size)
        assert sum(betas) == pytest.approx(1.0)
        x = torch.rand(4, 1, size, size) * 2 - 1
        same = ms_ssim(x, x.clone())
        assert torch.allclose(same, torch.ones(4), atol=1e-4)
        other = ms_ssim(x, torch.rand(4, 1, size, size) * 2 - 1)
        assert torch.isfinite(other).all() and (other < 0.5).all()
    s, ms = pairwise(torch.rand(9, 1, 64, 64) * 2 - 1, max_pairs=10)
    assert len(s) == len(ms) == 4


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_n():
    g = torch.Generator().manual_seed(13)
    small, large = torch.rand(50, generator=g), torch.rand(2000, generator=g)
    lo, hi = mean_ci(small, resamples=200)
    assert lo < float(small.mean()) < hi
    lo2, hi2 = mean_ci(large, resamples=200)
    assert hi2 - lo2 < (hi - lo) / 3
    assert bootstrap_ci(lambda idx: float(small[idx].mean()), 50, resamples=0) is None
    assert mean_ci(small, 50, seed=1) == mean_ci(small, 50, seed=1)  # same interval on every process


def test_label_plan_follows_the_real_class_counts_and_interleaves():
    labels = label_plan(100, torch.tensor([700, 50, 200, 50]))
    assert torch.bincount(labels, minlength=4).tolist() == [70, 5, 20, 5]
    assert set(labels[:10].tolist()) >= {0, 2}  # interleaved, so every process shard gets a mix
    assert torch.bincount(label_plan(8, torch.tensor([100, 1, 1, 1])), minlength=4).min() >= 1
    assert torch.bincount(label_plan(12, torch.tensor([9, 1, 1]), "uniform")).tolist() == [4, 4, 4]


def test_conditional_accuracy_per_class_and_balanced():
    target = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])
    assert per_class_accuracy(pred, target, 4) == {0: (0.75, 4), 1: (0.5, 2), 2: (1.0, 2)}
    assert balanced_accuracy(pred, target, 4) == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_report_rows_and_log_keys():
    results = [Result("metrics/fd_domain", 1.5, 64, 64, (1.2, 1.9)), Result("metrics/kid", float("nan"), 64, 64)]
    assert to_log(results) == {"metrics/fd_domain": 1.5}
    table = markdown_table(results)
    assert "| `metrics/fd_domain` | 1.5 | 1.2 – 1.9 | 64 | 64 |" in table and "n/a" in table


def test_a_record_carries_what_plots_and_summaries_need_and_nothing_unset():
    plain = Result("metrics/n_fake", 64).record()
    assert set(plain) == {"value", "n_fake", "n_real", "ci"}
    described = Result("metrics/fd_domain_real", 0.1, n_real=32, panel="FD", reference="metrics/fd_domain").record()
    assert described["panel"] == "FD" and described["reference"] == "metrics/fd_domain" and "headline" not in described
    assert Result("metrics/fd_domain", 1.0, headline=True, better="lower").record()["better"] == "lower"
