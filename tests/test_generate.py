"""ganlab.generate: per-class counts, manifest, no overwrite, atomic output, loads back as data."""
from __future__ import annotations

import csv
import json
import signal
import time

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image
from torchvision.datasets import ImageFolder

from conftest import REPO, assert_ok
from ganlab.config import to_plain
from ganlab.data.brainsim import CLASS_NAMES
from ganlab.data.folder import ImageFolderDataModule
from ganlab.errors import GanlabError
from ganlab.generate import generate, load_generated, plan_counts
from ganlab.utility.curate import NoveltyYardstick, fit_judge, own_class_prob, real_splits


def read_manifest(out):
    return list(csv.DictReader(open(out / "manifest.csv")))


def test_n_per_class_writes_pngs_and_manifest(run_cli, cdcgan_ckpt, tmp_path):
    out = tmp_path / "synth"
    assert_ok(run_cli("ganlab.generate", f"ckpt={cdcgan_ckpt}", f"out={out}", "n_per_class=5", "seed=3"))
    for name in CLASS_NAMES:
        assert len(list((out / name).glob("*.png"))) == 5
    rows = read_manifest(out)
    assert len(rows) == 20 and {r["class"] for r in rows} == set(CLASS_NAMES)
    assert all((out / r["file"]).exists() and r["seed"] == "3" and len(r["checkpoint_sha256"]) == 12 for r in rows)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["synth"]  # no Hydra dir, no leftovers

    assert Image.open(out / rows[0]["file"]).mode == "L" and Image.open(out / rows[0]["file"]).size == (32, 32)
    dataset = load_generated(out)  # loads back from Python as a torch Dataset, labels in the checkpoint's order
    image, label = dataset[7]
    assert len(dataset) == 20 and image.shape == (1, 32, 32) and image.dtype == torch.uint8
    assert CLASS_NAMES[int(label)] == rows[7]["class"]
    batch, _ = next(iter(torch.utils.data.DataLoader(dataset, batch_size=8)))
    assert batch.shape == (8, 1, 32, 32)
    assert len(ImageFolder(str(out))) == 20  # and through torchvision's ImageFolder
    dm = ImageFolderDataModule(str(out), image_size=32, channels=1, batch_size=4, train_split=None,
                               test_split=None, class_names=list(CLASS_NAMES), val_fraction=0.0)
    dm.setup("fit")
    assert dm.class_counts() == {name: 5 for name in CLASS_NAMES}


def test_balance_fill_tops_up_to_the_largest_class(cdcgan_ckpt, tmp_path):
    ckpt = torch.load(cdcgan_ckpt, weights_only=True)  # trained on balanced data: recorded as imbalanced
    facts = ckpt["ganlab"]["data"]["class_counts"] = dict(zip(CLASS_NAMES, (17, 12, 15, 3)))
    torch.save(ckpt, tmp_path / "imbalanced.ckpt")
    counts = generate(str(tmp_path / "imbalanced.ckpt"), str(tmp_path / "fill"), balance="fill", classes=None)
    assert counts == dict(zip(CLASS_NAMES, (0, 5, 2, 14)))
    on_disk = {name: len(list((tmp_path / "fill" / name).glob("*.png"))) for name in CLASS_NAMES}
    assert on_disk == counts and sum(counts.values()) == len(read_manifest(tmp_path / "fill"))
    assert {name: facts[name] + counts[name] for name in CLASS_NAMES} == dict.fromkeys(CLASS_NAMES, max(facts.values()))


def test_same_seed_same_images(cdcgan_ckpt, tmp_path):
    for name in ("a", "b"):
        generate(str(cdcgan_ckpt), str(tmp_path / name), n_per_class=2, classes=["MildDemented"], seed=1)
    a, b = (sorted((tmp_path / n / "MildDemented").glob("*.png")) for n in ("a", "b"))
    assert len(a) == len(b) == 2 and [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_overwrite_true_replaces_a_non_empty_directory(run_cli, cdcgan_ckpt, tmp_path):
    """Without overwrite=true the same command is refused and the folder kept (test_bad_input's
    "generate into a non-empty directory")."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert_ok(run_cli("ganlab.generate", f"ckpt={cdcgan_ckpt}", f"out={out}", "n_per_class=1", "overwrite=true"))
    assert not (out / "keep.txt").exists() and len(read_manifest(out)) == 4


def test_unknown_class_is_one_clear_line(run_cli, cdcgan_ckpt, tmp_path):
    result = run_cli("ganlab.generate", f"ckpt={cdcgan_ckpt}", f"out={tmp_path / 'x'}", "classes=[Severe]")
    assert result.returncode == 2 and "Severe" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_filter_keeps_drawing_until_every_class_has_its_count_above_the_threshold(cdcgan_ckpt, tmp_path, monkeypatch):
    """The rejection loop, with a stand-in judge whose probabilities are random (the tiny test generator
    draws near-identical images, so a real judge would accept all or none of a class)."""
    import ganlab.generate as gen

    g = torch.Generator().manual_seed(0)
    monkeypatch.setattr(gen, "fit_judge", lambda *a, **k: object())
    monkeypatch.setattr(gen, "own_class_prob", lambda judge, images, labels: torch.rand(len(images), generator=g))
    out = tmp_path / "filtered"
    counts = generate(str(cdcgan_ckpt), str(out), n_per_class=20, batch_size=8, filter_min_prob=0.5)
    rows = read_manifest(out)
    assert counts == dict.fromkeys(CLASS_NAMES, 20) and len(rows) == 80
    assert all(float(r["judge_prob"]) >= 0.5 for r in rows)
    for name in CLASS_NAMES:  # numbered 0..19 without gaps, whichever draws were kept
        assert sorted(p.name for p in (out / name).glob("*.png")) == [f"{name}_{i:05d}.png" for i in range(20)]
    info = json.loads((out / "generate.json").read_text())["filter"]
    assert info["min_prob"] == 0.5 and all(info["drawn"][c] > 20 for c in CLASS_NAMES)  # about half rejected
    assert all(0.2 < info["acceptance"][c] < 0.9 for c in CLASS_NAMES)
    assert all(20 <= info["passed"][c] < 20 + 8 and info["acceptance"][c] == info["passed"][c] / info["drawn"][c]
               for c in CLASS_NAMES)  # the last batch (8) may pass more than it needs


def test_filter_records_the_real_judges_probability_of_each_saved_image(cdcgan_ckpt, tmp_path):
    out = tmp_path / "filtered"
    generate(str(cdcgan_ckpt), str(out), n_per_class=6, seed=1, filter_min_prob=0.1)
    rows = read_manifest(out)
    assert len(rows) == 24 and all(float(r["judge_prob"]) >= 0.1 for r in rows)
    # retrain the judge (same seed, the run's real training split) and score the PNGs as saved
    judge = fit_judge(real_splits(str(cdcgan_ckpt))[0], len(CLASS_NAMES), seed=1)
    saved = load_generated(out, list(CLASS_NAMES))
    assert torch.allclose(own_class_prob(judge, saved.images, saved.labels),
                          torch.tensor([float(r["judge_prob"]) for r in rows]), atol=1e-3)
    generate(str(cdcgan_ckpt), str(tmp_path / "plain"), n_per_class=1)
    assert all(r["judge_prob"] == "" for r in read_manifest(tmp_path / "plain"))  # no filter, no claim


def test_novelty_yardstick_rejects_copies_of_training_images_and_passes_held_out_ones(cdcgan_ckpt):
    train, holdout, _ = real_splits(str(cdcgan_ckpt))
    judge = fit_judge(train, len(CLASS_NAMES), epochs=2)
    yardstick = NoveltyYardstick(judge, train.images, holdout.images, 10, holdout.labels, list(CLASS_NAMES))
    assert len(yardstick.min_distance) == 4 and min(yardstick.min_distance) > 0
    assert not yardstick.passes(yardstick.distance(train.images), train.labels).any()  # a copy is at distance 0
    for c in range(4):  # each class's held-out images set its bar: about 90% of them clear it
        own = holdout.labels == c
        passing = yardstick.passes(yardstick.distance(holdout.images[own]), holdout.labels[own]).float().mean()
        assert 0.75 <= passing < 1, (c, passing)


def test_novelty_bar_is_each_class_s_own_and_pooled_for_a_class_with_few_held_out_images(cdcgan_ckpt):
    """Classes whose held-out images lie at different distances get different bars; a class with fewer than
    MIN_CLASS_HOLDOUT held-out images takes the pooled bar."""
    from ganlab.utility.curate import MIN_CLASS_HOLDOUT

    train, holdout, _ = real_splits(str(cdcgan_ckpt))
    judge = fit_judge(train, len(CLASS_NAMES), epochs=2)
    counts = [MIN_CLASS_HOLDOUT] * 3 + [MIN_CLASS_HOLDOUT - 1]
    few = torch.cat([(holdout.labels == c).nonzero()[:n, 0] for c, n in enumerate(counts)])
    yardstick = NoveltyYardstick(judge, train.images, holdout.images[few], 10, holdout.labels[few], list(CLASS_NAMES))
    assert yardstick.min_distance[3] == yardstick.pooled_min_distance
    assert len(set(yardstick.min_distance[:3])) == 3


def test_novelty_filter_keeps_only_samples_beyond_the_held_out_percentile(cdcgan_ckpt, tmp_path):
    out = tmp_path / "novel"
    generate(str(cdcgan_ckpt), str(out), n_per_class=6, seed=1, filter_novelty_percentile=5)
    rows, info = read_manifest(out), json.loads((out / "generate.json").read_text())["filter"]
    assert len(rows) == 24 and info["novelty_percentile"] == 5 and info["min_prob"] is None
    assert all(float(r["nearest_train_distance"]) >= info["min_distance"][r["class"]] > 0 for r in rows)
    # the same yardstick rebuilt from the run's data measures the saved PNGs at the recorded distances
    train, holdout, _ = real_splits(str(cdcgan_ckpt))
    yardstick = NoveltyYardstick(fit_judge(train, len(CLASS_NAMES), seed=1), train.images, holdout.images, 5,
                                 holdout.labels, list(CLASS_NAMES))
    assert yardstick.min_distance == pytest.approx(list(info["min_distance"].values()))
    saved = load_generated(out, list(CLASS_NAMES))
    assert torch.allclose(yardstick.distance(saved.images),
                          torch.tensor([float(r["nearest_train_distance"]) for r in rows]), atol=1e-3)


def test_filter_that_cannot_be_met_is_one_clear_line_and_leaves_nothing(run_cli, cdcgan_ckpt, tmp_path):
    out = tmp_path / "strict"
    result = run_cli("ganlab.generate", f"ckpt={cdcgan_ckpt}", f"out={out}", "n_per_class=200",
                     "filter_min_prob=0.99999", "filter_max_draws=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "filter_min_prob=0.99999: class" in result.stderr.strip().splitlines()[-1]
    assert not out.exists() and not list(tmp_path.glob(".strict.partial-*"))
    # settings out of range are refused before any judge is trained (the same GanlabError -> one line as above)
    with pytest.raises(GanlabError, match=r"filter_min_prob=1.5 must lie in \(0, 1\)"):
        generate(str(cdcgan_ckpt), str(out), filter_min_prob=1.5)
    with pytest.raises(GanlabError, match=r"filter_novelty_percentile=100 must lie in \(0, 100\)"):
        generate(str(cdcgan_ckpt), str(out), filter_novelty_percentile=100)
    assert not out.exists()


@pytest.mark.slow
def test_killed_mid_way_leaves_nothing_half_made(start_cli, cli_env, cdcgan_ckpt, tmp_path):
    out = tmp_path / "big"
    proc = start_cli(["-m", "ganlab.generate", f"ckpt={cdcgan_ckpt}", f"out={out}", "n_per_class=5000",
                      "batch_size=64"], cli_env, tmp_path / "generate.log")
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.glob("*/*.png") for p in tmp_path.glob(".big.partial-*")):
        time.sleep(0.2)
    assert proc.poll() is None, "generate finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-made where the user looks
    generate(str(cdcgan_ckpt), str(out), n_per_class=1)  # the next run succeeds and sweeps the leftovers
    assert out.exists() and not list(tmp_path.glob(".big.partial-*"))


def test_unconditional_checkpoint_writes_one_folder(tmp_path):
    """An untrained DCGAN saved with its recipe (no training needed to test the layout)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=dcgan", "data.image_size=32", "data.channels=3",
                                          "model.generator.width=8", "model.discriminator.width=8"])
    model_cfg = to_plain(cfg.model)
    module = instantiate(model_cfg)
    facts = {"class_names": [], "image_size": 32, "channels": 3, "class_counts": {}}
    torch.save({"state_dict": module.state_dict(), "ganlab": {"model": model_cfg, "data": facts}}, tmp_path / "g.ckpt")
    with pytest.raises(GanlabError, match="balance=fill: .*g.ckpt is an unconditional model"):
        generate(str(tmp_path / "g.ckpt"), str(tmp_path / "out"), n_per_class=3, balance="fill")
    assert not (tmp_path / "out").exists()
    counts = generate(str(tmp_path / "g.ckpt"), str(tmp_path / "out"), n_per_class=3)
    assert counts == {"generated": 3}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["generate.json", "generated", "manifest.csv"]
    assert {Image.open(p).mode for p in (tmp_path / "out" / "generated").glob("*.png")} == {"RGB"}  # RGB stays RGB
    assert load_generated(tmp_path / "out").images.shape == (3, 3, 32, 32)
    with pytest.raises(GanlabError, match="sampled from an unconditional model: its images have no class"):
        load_generated(tmp_path / "out", list(CLASS_NAMES))  # what augment asks for


def test_a_plan_that_makes_nothing_is_refused():
    names = ["a", "b"]
    assert plan_counts(names, {"a": 5, "b": 2}, n_per_class=1, balance="fill", classes=None) == {"a": 0, "b": 3}
    with pytest.raises(GanlabError, match="already hold.*largest class's 4 training images, so there is nothing"):
        plan_counts(names, {"a": 4, "b": 4}, n_per_class=1, balance="fill", classes=None)
    with pytest.raises(GanlabError, match="nothing to fill"):
        plan_counts(names, {"a": 5, "b": 2}, n_per_class=1, balance="fill", classes=["a"])
    for bad in (0, -3, 1.5, True):
        with pytest.raises(GanlabError, match=f"n_per_class={bad!r}: expected a positive integer"):
            plan_counts(names, {"a": 5, "b": 2}, n_per_class=bad, balance=None, classes=None)


def test_bad_options_are_refused_before_anything_is_written(run_cli, cdcgan_ckpt, tmp_path):
    """Each a single error line, exit 2, and the user's folder as it was: overwrite=no is not true (it was
    truthy, and replaced the folder), a missing out= is not a folder named ???, and neither a truncation <= 0
    nor batch_size=0 hangs."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    (tmp_path / "afile").write_text("x")
    cases = {
        "overwrite=no": ([f"out={mine}", "overwrite=no"], "overwrite='no': expected true or false"),
        "missing out": ([], "out is required: pass out=..."),
        "truncation=-1": ([f"out={tmp_path / 'a'}", "truncation=-1"], "truncation=-1: expected a number > 0"),
        "batch_size=0": ([f"out={tmp_path / 'b'}", "batch_size=0"], "batch_size=0: expected an integer >= 1"),
        "n_per_class=abc": ([f"out={tmp_path / 'c'}", "n_per_class=abc"], "n_per_class='abc': expected an integer"),
        "out is a file": ([f"out={tmp_path / 'afile'}"], "is a file; name a folder for the images"),
        "out under a file": ([f"out={tmp_path / 'afile' / 'sub'}"], "afile is a file, so no folder can be made"),
        "out holds the checkpoint": ([f"out={cdcgan_ckpt.parent.parent}", "overwrite=true"],
                                     "holds the checkpoint"),
    }
    for name, (args, message) in cases.items():
        result = run_cli("ganlab.generate", f"ckpt={cdcgan_ckpt}", *args)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and lines and lines[-1].startswith("error: ") and message in lines[-1], \
            (name, result.stderr[-1500:])
        assert "Traceback" not in result.stderr, name
    assert [p.name for p in mine.iterdir()] == ["keep.txt"] and not (tmp_path / "???").exists()
    assert not any((tmp_path / n).exists() for n in "abc") and cdcgan_ckpt.is_file()
    result = run_cli("ganlab.generate", f"ckpt={cdcgan_ckpt}", f"out={tmp_path / 'one'}", "classes=ModerateDemented",
                     "n_per_class=2")
    assert_ok(result)
    assert [p.name for p in (tmp_path / "one").iterdir() if p.is_dir()] == ["ModerateDemented"]
