"""Memorisation audit: copies of training images are flagged, fresh images and noise are not."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, assert_ok
from ganlab.audit import (COPYING_Z, copying_test, cnn_features, discriminator_overfit, distance_plot,
                          memorisation_audit, nearest, pixel_features, save_gallery)


def test_nearest_finds_the_closest_row():
    ref = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0]])
    dist, idx = nearest(torch.tensor([[9.0, 0.0], [0.0, 4.0], [0.0, 0.0]]), ref, chunk=2)
    assert idx.tolist() == [1, 2, 0] and dist.tolist() == pytest.approx([1.0, 1.0, 0.0])


def noise_like(images: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 256, images.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("space", ["pixels", "cnn"])
def test_copies_are_flagged_and_noise_is_not(tiny_data, space):
    train, holdout = tiny_data.datasets["train"], tiny_data.datasets["test"]
    features = pixel_features if space == "pixels" else cnn_features(
        train.images, train.labels, 4, width=8, epochs=2, batch_size=32)
    copies = train.images[torch.arange(0, len(train), 7)]
    flagged = memorisation_audit(copies, train.images, holdout.images, features)
    assert flagged["summary"]["frac_below_p1"] == 1.0 and flagged["summary"]["n_exact_copies"] == len(copies)
    assert flagged["nearest_train"].tolist() == list(range(0, len(train), 7))

    noise = memorisation_audit(noise_like(copies), train.images, holdout.images, features)["summary"]
    assert noise["frac_below_p5"] == 0.0 and noise["n_exact_copies"] == 0
    # held-out real images audited against themselves as "generated": ~5% below p5 by construction
    fresh = memorisation_audit(holdout.images, train.images, holdout.images, features)["summary"]
    assert fresh["frac_below_p5"] <= 0.1 and fresh["n_exact_copies"] == 0


def test_copying_test_compares_each_class_with_its_own_held_out_images():
    """A class whose real images all sit near the training set (small distances, few held-out images):
    new images drawn like its held-out ones are 'copies' to the pooled percentile but z ~ 0 to the
    per-class test; images nearer than its held-out ones get a strongly negative z and are flagged."""
    g = torch.Generator().manual_seed(0)
    names = ["common", "rare"]
    hold_labels = torch.tensor([0] * 1000 + [1] * 6)
    d_hold = torch.cat([1.0 + 0.1 * torch.randn(1000, generator=g), 0.5 + 0.05 * torch.randn(6, generator=g)])
    train_labels = torch.tensor([0] * 360 + [1] * 22)
    syn_labels = torch.tensor([0] * 300 + [1] * 300)
    fresh = torch.cat([1.0 + 0.1 * torch.randn(300, generator=g), 0.5 + 0.05 * torch.randn(300, generator=g)])
    p1 = float(np.percentile(d_hold.numpy(), 1))
    assert float((fresh[300:] < p1).float().mean()) > 0.9  # the pooled yardstick calls new rare images copies

    result = copying_test(fresh, syn_labels, d_hold, hold_labels, train_labels, names)
    assert all(abs(e["z"]) < 3 for e in result["per_class"].values()) and result["flagged"] == []
    assert result["per_class"]["rare"]["n_holdout"] == 6 and 0.3 < result["per_class"]["rare"]["closer"] < 0.7

    near = fresh.clone()
    near[300:] = 0.3 + 0.05 * torch.randn(300, generator=g)
    result = copying_test(near, syn_labels, d_hold, hold_labels, train_labels, names)
    assert result["flagged"] == ["rare"] and result["per_class"]["rare"]["closer"] > 0.95
    assert result["c_t"] == pytest.approx((360 * result["per_class"]["common"]["z"]
                                          + 22 * result["per_class"]["rare"]["z"]) / 382)


def test_a_class_with_too_few_held_out_images_is_named_as_one_the_copying_test_cannot_flag():
    """The Kaggle copy's rare class has 3 test images: even if all 128 generated images sit on its training
    images (every one nearer than every held-out image), z only reaches -2.95, above the -3 bound. The test says
    so (cannot_flag, z_min) instead of passing the class silently; with 4 held-out images it can flag."""
    names = ["common", "rare"]
    train_labels = torch.tensor([0] * 576 + [1] * 12)
    syn_labels = torch.tensor([0] * 128 + [1] * 128)
    d_syn = torch.cat([torch.ones(128), torch.zeros(128)])  # the rare class: exact copies
    for n_rare, can_flag in ((3, False), (4, True)):
        hold_labels = torch.tensor([0] * 160 + [1] * n_rare)
        result = copying_test(d_syn, syn_labels, torch.ones(160 + n_rare), hold_labels, train_labels, names)
        rare = result["per_class"]["rare"]
        assert rare["closer"] == 1.0 and rare["z"] == pytest.approx(rare["z_min"])
        assert (rare["z_min"] < COPYING_Z) is can_flag
        assert result["flagged"] == (["rare"] if can_flag else [])
        assert result["cannot_flag"] == ([] if can_flag else ["rare"])
    assert result["per_class"]["common"]["z_min"] < -10  # 128 vs 160 images: the test has room


class LookupD(torch.nn.Module):
    """A discriminator that gives `known` images (exact pixel matches) a logit of +2 and every other image
    `other`; with labels it only knows images of class `memorises`."""

    def __init__(self, known: torch.Tensor, memorises: int | None = None, other: float = -2.0):
        super().__init__()
        self.register_buffer("known", known.flatten(1).float())
        self.memorises, self.other, self.anchor = memorises, other, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, labels=None):
        x = ((x.float() + 1) * 127.5).round().flatten(1)
        hit = (torch.cdist(x, self.known) < 0.5).any(dim=1)
        if self.memorises is not None:
            hit &= labels == self.memorises
        return torch.where(hit, 2.0, self.other) + 0.0 * x[:, 0]


def test_discriminator_overfit_is_high_only_for_the_class_whose_training_images_d_memorised():
    """r_v per class: D scoring its training images +2, new real and generated images -2 has r_v 1 for that
    class; where D scores training, new real and generated images alike (-2: a D that does not separate
    real from generated has nothing to overfit) r_v is None, as for a class with no held-out images; a D
    that separates real from generated without memorising has r_v 0."""
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)  # noqa: E731
    train, holdout, generated = images(40), images(20), images(16)
    train_y, hold_y, gen_y = torch.arange(40) % 2, torch.arange(20) % 2, torch.arange(16) % 2
    names = ["common", "rare"]
    sets = {"train": (train, train_y), "holdout": (holdout, hold_y), "generated": (generated, gen_y)}
    result = discriminator_overfit(LookupD(train, memorises=1), sets, True, names)
    assert result["rare"]["r_v"] == pytest.approx(1.0) and result["rare"]["n_holdout"] == 10
    assert result["rare"]["d_train"] == pytest.approx(2.0) and result["rare"]["d_holdout"] == pytest.approx(-2.0)
    assert result["common"]["r_v"] is None

    class RealVsFake(LookupD):  # separates real from generated without memorising: r_v ~0
        def forward(self, x, labels=None):
            is_generated = (torch.cdist(((x.float() + 1) * 127.5).round().flatten(1), self.known) < 0.5).any(dim=1)
            return torch.where(is_generated, -2.0, 2.0) + 0.0 * x.flatten(1)[:, 0]

    fair = discriminator_overfit(RealVsFake(generated), sets, True, names)
    assert all(abs(e["r_v"]) < 1e-6 for e in fair.values())
    no_rare = {**sets, "holdout": (holdout[hold_y == 0], hold_y[hold_y == 0])}
    assert discriminator_overfit(LookupD(train, memorises=1), no_rare, True, names)["rare"]["r_v"] is None
    unconditional = discriminator_overfit(LookupD(train), {k: (x, torch.zeros_like(y)) for k, (x, y) in sets.items()},
                                          False, ["all"])
    assert unconditional["all"]["r_v"] == pytest.approx(1.0)


def test_two_sample_test_tells_marked_images_apart_and_not_copies(tiny_data, one_torch_thread):
    from ganlab.metrics.c2st import two_sample_test

    train = tiny_data.datasets["train"]
    marked = train.images.clone()
    marked[:, :, :8, :8] = 255
    fit = dict(seed=0, width=8, epochs=25, batch_size=16)
    told = two_sample_test(train.images, train.labels, marked, train.labels, 4, **fit)
    same = two_sample_test(train.images, train.labels, train.images.clone(), train.labels, 4, **fit)
    assert sorted(told) == sorted(same) == [0, 1, 2, 3]
    assert min(told.values()) > 0.8 and max(same.values()) < 0.8


def test_gallery_pairs_closest_generated_with_their_training_image(tiny_data, tmp_path):
    train, holdout = tiny_data.datasets["train"], tiny_data.datasets["test"]
    synthetic = torch.cat([noise_like(train.images[:6]), train.images[5:6]])
    result = memorisation_audit(synthetic, train.images, holdout.images)
    save_gallery(synthetic, train.images, result, tmp_path / "g.png", k=3)
    gallery = Image.open(tmp_path / "g.png")
    assert gallery.height == 2 * 34 + 2 and gallery.width > 3 * 34  # 2 rows x 3 pairs of 32 px + padding
    assert result["synthetic_distance"].argsort()[0] == 6 and result["nearest_train"][6] == 5

    import matplotlib

    with pytest.MonkeyPatch.context() as mp:  # the plot leaves matplotlib's global backend alone
        mp.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("matplotlib.use called"))
        distance_plot(result, "pixels", tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").width > 0


@pytest.mark.slow
def test_cli_audits_a_checkpoint(run_cli, cdcgan_ckpt, tmp_path):
    run = tmp_path / "audit"
    result = run_cli("ganlab.audit", f"ckpt={cdcgan_ckpt}", "data.image_size=32", "data.per_class=24", "n=24",
                     "classifier.epochs=1", "classifier.width=4", "c2st=true", f"hydra.run.dir={run}")
    assert_ok(result)
    summary = json.loads((run / "audit.json").read_text())
    assert summary["n_synthetic"] == 24 and summary["holdout_split"] == "test" and summary["feature"] == "cnn"
    assert 0.0 <= summary["frac_below_p1"] <= summary["frac_below_p5"] <= 1.0
    copying = summary["copying"]  # cdcgan: one cell per class, each with its held-out images
    assert set(copying["per_class"]) == {"NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"}
    assert sum(e["n_synthetic"] for e in copying["per_class"].values()) == 24
    # 6 generated images a class and a handful held out: no class could be flagged, and the audit says which
    assert copying["cannot_flag"] == list(copying["per_class"])
    assert all(f"  {name}: " in result.stdout and "too few for this test to flag" in result.stdout
               for name in copying["cannot_flag"])
    assert set(summary["c2st"]) == set(copying["per_class"]) and all(0 <= a <= 1 for a in summary["c2st"].values())
    d = summary["discriminator"]  # the checkpoint's own D, per class
    assert set(d) == set(copying["per_class"]) and all(e["n_holdout"] > 0 for e in d.values())
    assert all(isinstance(e["d_train"], float) and isinstance(e["d_holdout"], float) for e in d.values())
    rows = list(csv.DictReader(open(run / "audit.csv")))
    assert len(rows) == 24 and all(r["nearest_train_file"].endswith(".png") for r in rows)
    assert Image.open(run / "audit_gallery.png").width > 0 and (run / "audit_distances.png").exists()


def test_cli_refuses_a_data_config_that_does_not_match_the_checkpoint(run_cli, cdcgan_ckpt, tmp_path):
    result = run_cli("ganlab.audit", f"ckpt={cdcgan_ckpt}", "data.image_size=64", "data.per_class=24",
                     f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: {cdcgan_ckpt} was trained at image_size=32 "
                                                      "but data.image_size=64")
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_cli_audits_against_the_data_the_checkpoint_was_trained_on(run_cli, tmp_path):
    """No `data=`: the audit takes the training run's own data (a folder dataset here, not the brainsim
    default); an explicit other `data=` is used, with one warning line naming both."""
    root, rng = tmp_path / "scans", np.random.default_rng(0)
    for c, name in enumerate(("flair", "t1")):
        for i in range(12):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 128, (32, 32), dtype=np.uint8) + 100 * c).save(root / name / f"{i}.png")
    run = tmp_path / "run"
    assert_ok(run_cli("ganlab.train", "model=dcgan", "data=folder", f"data.root={root}", "data.val_fraction=0.25",
                      *[o for o in TINY if not o.startswith("data.per_class")], "trainer.limit_train_batches=1",
                      "logger=none", "metrics=none", f"hydra.run.dir={run}"))
    ckpt = run / "checkpoints" / "last.ckpt"

    result = run_cli("ganlab.audit", f"ckpt={ckpt}", "feature=pixels", "n=8", f"hydra.run.dir={tmp_path / 'a'}")
    assert_ok(result)
    assert "is not the data" not in result.stdout + result.stderr
    summary = json.loads((tmp_path / "a" / "audit.json").read_text())
    assert summary["data"] == str(run / "config_resolved.yaml")
    assert summary["data_module"] == f"ImageFolderDataModule, root={root}"
    assert summary["n_train"] + summary["n_holdout"] == 24 and summary["holdout_split"] == "val"
    rows = list(csv.DictReader(open(tmp_path / "a" / "audit.csv")))
    assert len(rows) == 8 and all(r["nearest_train_file"].startswith(str(root)) for r in rows)
    assert {r["nearest_train_class"] for r in rows} <= {"flair", "t1"}
    cell = summary["copying"]["per_class"]  # dcgan: no classes, one cell against all held-out images
    assert list(cell) == ["all"] and cell["all"]["n_synthetic"] == 8 and cell["all"]["n_holdout"] == 6

    result = run_cli("ganlab.audit", f"ckpt={ckpt}", "feature=pixels", "n=8", "data=brainsim", "data.image_size=32",
                     "data.per_class=24", f"hydra.run.dir={tmp_path / 'b'}")
    assert_ok(result)
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "is not the data" in line]
    assert len(warnings) == 1, result.stdout + result.stderr
    assert "data=brainsim (BrainSimDataModule" in warnings[0] and f"(ImageFolderDataModule, root={root}" in warnings[0]
    assert json.loads((tmp_path / "b" / "audit.json").read_text())["data"] == "command line"

    moved = tmp_path / "moved"
    root.rename(moved)  # the data moved after training: data.root= points the run's own data config at it
    result = run_cli("ganlab.audit", f"ckpt={ckpt}", "feature=pixels", "n=8", f"hydra.run.dir={tmp_path / 'd'}")
    assert result.returncode == 2 and result.stderr.splitlines()[-1] == (
        f"error: the data {ckpt} was trained on is not at {root} any more (data.root in "
        f"{run / 'config_resolved.yaml'}); pass data.root=<where it is now>")
    for module, args in (("ganlab.audit", ["feature=pixels", "n=8", f"hydra.run.dir={tmp_path / 'c'}"]),
                         ("ganlab.evaluate", ["metrics=fast", "n_samples=8", f"out={tmp_path / 'e'}"])):
        result = run_cli(module, f"ckpt={ckpt}", f"data.root={moved}", *args)
        assert_ok(result)
        assert "is not the data" not in result.stdout + result.stderr
    assert json.loads((tmp_path / "c" / "audit.json").read_text())["data_module"] == \
        f"ImageFolderDataModule, root={moved}"
