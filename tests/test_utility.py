"""The powered utility benchmark (issue 12, part 3): regimes, paired CIs, an external test set, results.json."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_ok
from ganlab.errors import GanlabError
from ganlab.utility.paired import confusion, paired_ci, strongest_baseline, utility_results
from ganlab.utility.regimes import (OVERSAMPLED, PRETRAIN, REAL, TSTR, build_regimes, check_balanced, oversample,
                                    training_set)
from ganlab.data.folder import UInt8ImageDataset


def test_paired_ci_is_the_t_interval_over_seeds():
    mean, (lo, hi) = paired_ci([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.3027
    assert mean == 2.0 and hi - mean == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-5) and lo == pytest.approx(4 - hi)
    mean, (lo, hi) = paired_ci([0.1, 0.1, 0.1, 0.1, 0.1])
    assert (mean, lo, hi) == pytest.approx((0.1, 0.1, 0.1))


def test_results_pair_each_regime_with_the_strongest_baseline():
    names = ["a", "rare"]
    row = lambda regime, seed, ba, rare: {"regime": regime, "seed": seed, "n_real": 10, "n_synthetic": 0,  # noqa: E731
                                          "balanced_accuracy": ba, "recall": [ba, rare], "confusion": [[5, 0], [1, 1]]}
    rows = [row(REAL, s, 0.70 + s / 100, 0.5) for s in range(3)] + \
           [row(OVERSAMPLED, s, 0.72 + s / 100, 0.6) for s in range(3)] + \
           [row("mix", s, 0.80, 0.6 + s / 10) for s in range(3)]
    assert strongest_baseline(rows) == OVERSAMPLED
    r = utility_results(rows, names, "rare", {"a": 5, "rare": 2})
    assert (r["seeds"], r["baseline"], r["test_per_class"]) == (3, OVERSAMPLED, {"a": 5, "rare": 2})
    mix = r["regimes"]["mix"]
    # per seed: mix - oversampled = 0.08, 0.07, 0.06 (balanced accuracy); 0.0, 0.1, 0.2 (rare recall)
    assert mix["balanced_accuracy"]["diff"] == pytest.approx(0.07)
    assert mix["balanced_accuracy"]["ci95"] == pytest.approx([0.07 - 4.302653 * 0.01 / 3 ** 0.5,
                                                              0.07 + 4.302653 * 0.01 / 3 ** 0.5], rel=1e-4)
    assert mix["minority_recall"]["mean"] == pytest.approx(0.7) and mix["minority_recall"]["diff"] == pytest.approx(0.1)
    assert r["regimes"][OVERSAMPLED]["balanced_accuracy"]["diff"] == 0.0
    assert mix["minority_predicted_as"] == {"a": 0.5, "rare": 0.5}
    assert confusion(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1, 0]), 2) == [[0, 1], [1, 1]]


def test_regimes_build_their_training_sets():
    real = UInt8ImageDataset(torch.arange(13, dtype=torch.uint8).view(13, 1, 1, 1), torch.tensor([0] * 10 + [1] * 3))
    synth = UInt8ImageDataset(torch.full((20, 1, 1, 1), 200, dtype=torch.uint8), torch.tensor([0, 1] * 10))
    regimes = {r.name: r for r in build_regimes(ratios=["fill"], rare_ratios=[1.0], oversampled=True,
                                                weighted={"ratio": "fill", "weight": 0.25}, pretrain_epochs=2)}
    assert list(regimes) == [REAL, OVERSAMPLED, "real + synthetic rare x1", "real + synthetic fill",
                             "real + synthetic fill (w=0.25)", PRETRAIN, TSTR]
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    _, labels, _, _, _ = training_set(regimes[OVERSAMPLED], real, synth, synth, 2, g())
    assert torch.bincount(labels).tolist() == [10, 10] and regimes[OVERSAMPLED].options == {"class_balanced": False}
    images, labels, weight, n_real, idx = training_set(regimes["real + synthetic rare x1"], real, synth, synth, 2, g())
    assert (n_real, len(idx), torch.bincount(labels).tolist(), weight) == (13, 3, [10, 6], None)
    _, labels, weight, _, idx = training_set(regimes["real + synthetic fill (w=0.25)"], real, synth, synth, 2, g())
    assert torch.bincount(labels).tolist() == [10, 10] and weight.tolist() == [1.0] * 13 + [0.25] * 7
    images, labels, _, n_real, _ = training_set(regimes[TSTR], real, synth, synth, 2, g())
    assert n_real == 0 and (images == 200).all()
    assert sorted(oversample(torch.tensor([0, 0, 0, 1]), 2, g()).tolist()) == [0, 1, 2, 3, 3, 3]
    with pytest.raises(GanlabError, match="class-balanced"):
        check_balanced(torch.tensor([1] * 30 + [0] * 2), 2, "fill_set")
    with pytest.raises(GanlabError, match="weighted.weight"):
        build_regimes(weighted={"ratio": "fill", "weight": 1.5})


def test_per_class_mix_keeps_every_class_equally_synthetic():
    real = UInt8ImageDataset(torch.zeros(13, 1, 1, 1, dtype=torch.uint8), torch.tensor([0] * 10 + [1] * 3))
    synth = UInt8ImageDataset(torch.full((40, 1, 1, 1), 200, dtype=torch.uint8), torch.tensor([0, 1] * 20))
    regimes = build_regimes(ratios=[1.0], class_ratios=[2], weighted={"ratio": "per class 2", "weight": 0.5})
    names = [r.name for r in regimes]
    assert names == [REAL, "real + synthetic x1", "real + synthetic per class x2",
                     "real + synthetic per class x2 (w=0.5)", TSTR]
    _, labels, weight, n_real, idx = training_set(regimes[2], real, synth, synth, 2, torch.Generator().manual_seed(0))
    synthetic_counts = torch.bincount(labels[n_real:], minlength=2).tolist()
    assert synthetic_counts == [20, 6] and weight is None and len(set(idx.tolist())) == 26
    # the folder's mix (x1) makes the rare class mostly synthetic; per class keeps the real class shares
    _, labels, _, _, _ = training_set(regimes[1], real, synth, synth, 2, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[13:], minlength=2)[1] > 3
    _, _, weight, _, _ = training_set(regimes[3], real, synth, synth, 2, torch.Generator().manual_seed(0))
    assert weight.tolist() == [1.0] * 13 + [0.5] * 26
    assert build_regimes(weighted={"ratio": "rare x1", "weight": 0.5}, real_only=False, tstr=False)[0].ratio == ("rare", 1)
    with pytest.raises(GanlabError, match="weighted.ratio: 'per class y'"):
        build_regimes(weighted={"ratio": "per class y", "weight": 0.5})
    with pytest.raises(GanlabError, match="class_ratios"):
        build_regimes(class_ratios=["fill"])
    with pytest.raises(GanlabError, match=r"per class x3 \(class 0\)"):
        training_set(build_regimes(class_ratios=[3], real_only=False, tstr=False)[0], real, synth, synth, 2,
                     torch.Generator())


def test_weighted_loss_ignores_zero_weight_images(one_torch_thread):
    from ganlab.classifier import fit_classifier

    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 8)
    weight = torch.tensor([1.0] * 8 + [0.0] * 8)
    flipped = torch.cat([labels[:8], 1 - labels[8:]])  # other labels on the zero-weight images only
    fit = dict(epochs=2, batch_size=8, seed=0)
    a = fit_classifier(_net(), images, labels, sample_weight=weight, **fit).head.weight
    b = fit_classifier(_net(), images, flipped, sample_weight=weight, **fit).head.weight
    c = fit_classifier(_net(), images, flipped, sample_weight=weight * 0.5 + 0.5, **fit).head.weight
    assert torch.allclose(a, b) and not torch.allclose(a, c)


def test_domain_adversarial_critic_trains_only_on_mixes(one_torch_thread):
    """The gradient reversal flips and scales the gradient; with only real images (the baselines) the training
    is exactly the plain one, with real and synthetic images the critic changes it; a negative strength is
    refused before any training."""
    from ganlab.augment import run_benchmark
    from ganlab.classifier import ReverseGradient, fit_classifier

    x = torch.ones(3, requires_grad=True)
    ReverseGradient.apply(x, 0.5).sum().backward()
    assert x.grad.tolist() == [-0.5, -0.5, -0.5]

    images = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1] * 8)
    fit = dict(epochs=2, batch_size=8, seed=0)
    plain = fit_classifier(_net(), images, labels, **fit).head.weight
    real_only = fit_classifier(_net(), images, labels, domain=torch.zeros(16, dtype=torch.long),
                               domain_adversarial=1.0, **fit).head.weight
    mixed = fit_classifier(_net(), images, labels, domain=torch.tensor([0] * 8 + [1] * 8),
                           domain_adversarial=1.0, **fit).head.weight
    assert torch.equal(plain, real_only) and not torch.allclose(plain, mixed)

    data = UInt8ImageDataset(images, labels, [f"{i}.png" for i in range(16)])
    with pytest.raises(GanlabError, match="classifier.domain_adversarial"):
        run_benchmark(data, data, data, 2, classifier={"domain_adversarial": -1.0})


def test_input_blur_hides_the_pixel_scale_texture(one_torch_thread):
    """The blurred classifier reads exactly what the plain one reads of the blurred image; the blur keeps a
    smooth image and all but removes a one-pixel checkerboard; a negative sigma is refused before any training."""
    from ganlab.augment import run_benchmark
    from ganlab.classifier import SmallCNN, gaussian_blur

    x = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    plain = _net().eval()
    torch.manual_seed(0)
    blurred = SmallCNN(2, 1, 32, width=4, input_blur=1.0).eval()
    assert torch.allclose(blurred(x), plain(gaussian_blur(x, 1.0)), atol=1e-6)
    assert not torch.allclose(blurred(x), plain(x), atol=1e-3)

    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((yy + xx) % 2 * 2 - 1).float().view(1, 1, 32, 32)
    smooth = torch.sin(yy / 6.0).float().view(1, 1, 32, 32)
    assert gaussian_blur(checker, 1.0)[..., 2:-2, 2:-2].abs().max() < 0.01  # edges replicate-padded
    assert (gaussian_blur(smooth, 1.0) - smooth)[..., 4:-4, 4:-4].abs().max() < 0.05

    with pytest.raises(ValueError, match="input_blur"):
        SmallCNN(2, 1, 32, width=4, input_blur=-1.0)
    data = UInt8ImageDataset(torch.zeros(4, 1, 32, 32, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
                             [f"{i}.png" for i in range(4)])
    with pytest.raises(GanlabError, match="classifier.input_blur"):
        run_benchmark(data, data, data, 2, classifier={"input_blur": -0.5})


def _net():
    from ganlab.classifier import SmallCNN

    torch.manual_seed(0)
    return SmallCNN(2, 1, 32, width=4)


def test_cli_runs_every_regime_on_an_external_test_set(run_cli, cdcgan_ckpt, tmp_path):
    from ganlab.generate import generate

    generate(str(cdcgan_ckpt), str(tmp_path / "synth"), n_per_class=12)
    run = tmp_path / "bench"
    assert_ok(run_cli("ganlab.augment", f"synthetic={tmp_path / 'synth'}", "data.image_size=32", "data.per_class=24", "data.batch_size=8",
                      "data.imbalance={ModerateDemented: 0.5}", "test_data=brainsim", "test_data.per_class=10",
                      "ratios=[0.25,fill]", "rare_ratios=[0.5,1]", "class_ratios=[0.5]", "weighted={ratio: fill, weight: 0.5}",
                      "pretrain_epochs=1", "seeds=[0,1]", "classifier.epochs=1", "classifier.width=4",
                      "logger=none", f"hydra.run.dir={run}"))
    results = json.loads((run / "results.json").read_text())
    assert results["seeds"] == 2 and results["test_per_class"] == {c: 9 for c in results["class_names"]}
    assert results["baseline"] in (REAL, OVERSAMPLED) and results["minority"] == "ModerateDemented"
    assert list(results["regimes"]) == [REAL, OVERSAMPLED, "real + synthetic x0.25", "real + synthetic rare x0.5",
                                        "real + synthetic rare x1", "real + synthetic per class x0.5",
                                        "real + synthetic fill", "real + synthetic fill (w=0.5)", PRETRAIN, TSTR]
    for entry in results["regimes"].values():
        for key in ("balanced_accuracy", "minority_recall"):
            assert set(entry[key]) >= {"mean", "diff", "ci95"} and len(entry[key]["ci95"]) == 2
    assert results["regimes"][results["baseline"]]["balanced_accuracy"]["diff"] == 0.0
    n = {k: e["n_synthetic"] for k, e in results["regimes"].items()}
    assert 0 < n["real + synthetic rare x0.5"] < n["real + synthetic rare x1"] and n["real + synthetic fill"] > 0
    assert n[TSTR] == n[PRETRAIN] == 48
    assert abs(n["real + synthetic per class x0.5"] - 2 * n["real + synthetic x0.25"]) <= 4  # rounded per class
    assert "Δ vs" in (run / "paired.md").read_text()


def test_cli_refuses_a_ratio_the_folder_cannot_hold(run_cli, cdcgan_ckpt, tmp_path):
    from ganlab.generate import generate

    generate(str(cdcgan_ckpt), str(tmp_path / "synth"), n_per_class=2)
    result = run_cli("ganlab.augment", f"synthetic={tmp_path / 'synth'}", "data.image_size=32", "data.per_class=24", "data.batch_size=8",
                     "ratios=[4]", "seeds=[0]", "classifier.epochs=1", "classifier.width=4", "logger=none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: ratio x4 needs 272 synthetic images and the synthetic folder holds 8: generate more "
        "(ganlab.generate n_per_class=...) or leave that regime out"]


def test_external_test_set_is_rendered_apart(tmp_path):
    from omegaconf import OmegaConf

    from ganlab.augment import image_hashes
    from ganlab.data.brainsim import BrainSimDataModule
    from ganlab.utility.testset import load_external_test

    common = dict(cache_dir=str(tmp_path), image_size=32, batch_size=1, val_fraction=0.0)
    train_dm = BrainSimDataModule(per_class=8, render_seed=0, imbalance={"ModerateDemented": 0.5}, **common)
    train_dm.prepare_data()
    train_dm.setup("fit")
    train = train_dm.datasets["train"]
    cfg = OmegaConf.create({"_target_": "ganlab.data.brainsim.BrainSimDataModule", **common, "per_class": 10,
                            "test_fraction": 0.9, "render_seed": 1000})
    test = load_external_test(cfg, train, list(train_dm.class_names))
    assert torch.bincount(test.labels).tolist() == [9, 9, 9, 9]
    assert not set(image_hashes(train.images)) & set(image_hashes(test.images))
    cfg.render_seed, cfg.test_fraction = 0, 0.5  # the same render seed re-draws the training images
    with pytest.raises(GanlabError, match="equal a training image"):
        load_external_test(cfg, train, list(train_dm.class_names))
