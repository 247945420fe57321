"""The experiments' --smoke runs: each script still drives the current CLIs and configs end to end,
writes its results outside the checkout and leaves its README alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, assert_ok


@pytest.mark.slow
@pytest.mark.parametrize("name,script,extra", [
    ("cdcgan_brainsim", "run.py", []), ("synthetic_utility", "run.py", []),
    # the filtered set alone, one augment process: the plain set's stages are run.py's (above); merging
    # the two sets' rows is test_filtered_merges_two_sets_rows below
    ("synthetic_utility", "filtered.py", ["--no-plain", "--jobs", "1"])],
    ids=["cdcgan_brainsim-run.py", "synthetic_utility-run.py", "synthetic_utility-filtered.py"])
def test_experiment_smoke_run(name, script, extra, cli_env, tmp_path):
    readme = REPO / "experiments" / name / "README.md"
    before = readme.read_bytes()
    result = subprocess.run([sys.executable, str(REPO / "experiments" / name / script), "--smoke", *extra],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=900)
    assert_ok(result)
    results_dir = Path(result.stdout.strip().splitlines()[-1].split("results: ", 1)[1])
    assert REPO not in results_dir.parents
    results = json.loads((results_dir / "results.json").read_text())
    assert results["wall_minutes"] > 0
    assert readme.read_bytes() == before


def utility_scripts(monkeypatch) -> None:
    """Make experiments/synthetic_utility's run.py, filtered.py and oracle.py importable by name for one
    test (experiments/quality has a run.py too: whichever a worker imported first is in sys.modules)."""
    for name in ("run", "filtered", "oracle", "pair_runs"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))  # undone after the test: restored or removed
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(REPO / "experiments" / "synthetic_utility"))


def test_filtered_merges_two_sets_rows(tmp_path, monkeypatch):
    """filtered.py's merge: the filtered set's regimes are renamed, the real-only rows that both augment runs
    wrote are kept once per seed, and the largest gap between them is reported."""
    utility_scripts(monkeypatch)
    from filtered import merged

    def job(name, rows):
        d = tmp_path / name
        d.mkdir()
        (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "augment.json").write_text(json.dumps({"class_names": ["a", "b"]}))
        return d

    def row(regime, seed, acc):
        return {"regime": regime, "seed": seed, "balanced_accuracy": acc}

    plain = job("plain", [row("real only", 0, 0.70), row("fill", 0, 0.60), row("real only", 1, 0.72),
                          row("fill", 1, 0.62)])
    filtered = job("filtered", [row("real only", 0, 0.70), row("fill", 0, 0.65), row("real only", 1, 0.74),
                                row("fill", 1, 0.66)])
    facts, rows, gap = merged({"plain": [plain], "filtered": [filtered]})
    assert facts == {"class_names": ["a", "b"]}
    assert [(r["regime"], r["seed"]) for r in rows] == [
        ("real only", 0), ("fill", 0), ("fill (filtered)", 0), ("real only", 1), ("fill", 1), ("fill (filtered)", 1)]
    assert [r["balanced_accuracy"] for r in rows if r["regime"] == "real only"] == [0.70, 0.72]
    assert gap == pytest.approx(0.02)


def test_pair_runs_pairs_seeds_only_when_the_baseline_matches(monkeypatch):
    utility_scripts(monkeypatch)
    from pair_runs import compare

    def row(regime, seed, acc, rare):
        return {"regime": regime, "seed": seed, "balanced_accuracy": acc, "recall": [0.9, rare]}

    base = [row("real only", s, 0.70 + s / 100, 0.5) for s in range(3)]
    new = base + [row("mix", s, 0.72 + s / 100, 0.6 + s / 10) for s in range(3)]
    old = base + [row("fill", s, 0.60 + s / 50, 0.2) for s in range(3)]
    r = compare(new, "mix", old, "fill", minority=1)
    # per seed: 0.12, 0.11, 0.10 (balanced accuracy); 0.4, 0.5, 0.6 (rare recall)
    assert r["seeds"] == [0, 1, 2] and r["balanced_accuracy"]["diff"] == pytest.approx(0.11)
    assert r["minority_recall"]["ci95"] == pytest.approx([0.5 - 4.302653 * 0.1 / 3 ** 0.5,
                                                          0.5 + 4.302653 * 0.1 / 3 ** 0.5], rel=1e-4)
    other = [row("real only", s, 0.70 + s / 100, 0.4 if s == 2 else 0.5) for s in range(3)] + old[3:]
    with pytest.raises(SystemExit, match=r"differs between the runs on seed\(s\) \[2\]"):
        compare(new, "mix", other, "fill", minority=1)
    with pytest.raises(SystemExit, match="no regime 'x'"):
        compare(new, "x", old, "fill", minority=1)
    # runs that differ on purpose in every regime (e.g. classifier.input_blur): paired without the check
    assert compare(new, "mix", other, "fill", minority=1, baseline="none")["seeds"] == [0, 1, 2]


def test_utility_core_runs_only_the_deciding_regimes(monkeypatch):
    """run.py --core: the full preset's augment settings, then CORE, compose to real only, rare x0.5 and x1,
    fill and fill w=0.25 (CORE's pretrain_epochs=0 wins over the preset's 3)."""
    from hydra import compose, initialize_config_dir

    from ganlab.utility.regimes import build_regimes

    utility_scripts(monkeypatch)
    from run import CORE, PRESETS

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("augment", overrides=["synthetic=x", *PRESETS["full"]["augment"], *CORE])
    regimes = build_regimes(ratios=list(cfg.ratios), rare_ratios=list(cfg.rare_ratios), real_only=cfg.real_only,
                            oversampled=cfg.oversampled, weighted=dict(cfg.weighted), tstr=cfg.tstr,
                            pretrain_epochs=cfg.pretrain_epochs)
    assert [r.name for r in regimes] == ["real only", "real + synthetic rare x0.5", "real + synthetic rare x1",
                                         "real + synthetic fill", "real + synthetic fill (w=0.25)"]


def test_oracle_set_holds_new_real_images_in_generate_layout(tmp_path, monkeypatch):
    """--oracle's set: brainsim images of the generator run's data config, drawn with another render seed
    (exactly brainsim's image i of class k for that seed), none equal to a training image, readable as a
    generate output with that data config; the render seeds of the training and test images are refused,
    and so is a non-empty folder, left as it was."""
    import numpy as np
    import torch
    import yaml

    from ganlab.augment import image_hashes
    from ganlab.data.brainsim import make_slice, render_brainsim
    from ganlab.data.readers import read_image
    from ganlab.errors import GanlabError
    from ganlab.generate import load_generated
    from ganlab.run_data import generated_data

    utility_scripts(monkeypatch)
    from oracle import oracle_set

    data = {"_target_": "ganlab.data.brainsim.BrainSimDataModule", "cache_dir": str(tmp_path / "data"),
            "image_size": 32, "channels": 1, "num_classes": 4, "per_class": 6,
            "imbalance": {"ModerateDemented": 0.5}, "test_fraction": 0.2, "render_seed": 0, "seed": 1}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config_resolved.yaml").write_text(yaml.safe_dump({"data": data}))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    counts = oracle_set(tmp_path / "oracle", ckpt, per_class=3, render_seed=7000)
    assert counts == {"NonDemented": 3, "VeryMildDemented": 3, "MildDemented": 3, "ModerateDemented": 3}
    assert generated_data(tmp_path / "oracle")[0] == data
    images = load_generated(tmp_path / "oracle", ["NonDemented", "VeryMildDemented", "MildDemented",
                                                  "ModerateDemented"])
    assert images.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    expected = make_slice(np.random.default_rng([7000, 3, 2]), 3, 32)
    assert np.array_equal(images.images[11, 0].numpy(), expected)
    train = render_brainsim(tmp_path / "train_render", image_size=32, per_class=6,
                            imbalance={"ModerateDemented": 0.5}, test_fraction=0.2, seed=0)
    train_hashes = set(image_hashes(torch.from_numpy(np.stack([read_image(str(f), 32, 1)
                                                               for f in train.rglob("*.png")]))))
    assert not train_hashes & set(image_hashes(images.images))

    for seed in (0, 1000):
        with pytest.raises(GanlabError, match="training or test"):
            oracle_set(tmp_path / f"oracle_{seed}", ckpt, per_class=3, render_seed=seed)
    before = sorted(p.name for p in (tmp_path / "oracle").rglob("*"))
    with pytest.raises(GanlabError, match="not empty"):
        oracle_set(tmp_path / "oracle", ckpt, per_class=3, render_seed=7001)
    assert sorted(p.name for p in (tmp_path / "oracle").rglob("*")) == before


def test_oracle_set_draws_new_images_of_an_alzheimer_copy_as_the_copy_stores_its_own(tmp_path, monkeypatch):
    """--oracle on a run trained on an alzheimer_copy.py copy: JPEG images drawn like the copy's (the same bytes
    save_slice gives for the stream [render_seed, class, i]), none equal to a copy image; the copy's own seed and
    a Kaggle-layout root without copy.json (real data: nothing to draw from) are refused."""
    import filecmp

    import yaml

    from ganlab.errors import GanlabError
    from ganlab.generate import load_generated

    utility_scripts(monkeypatch)
    monkeypatch.delitem(sys.modules, "alzheimer_copy", raising=False)
    from alzheimer_copy import save_slice, write_copy
    from oracle import oracle_set

    counts = write_copy(tmp_path / "copy", scale=0.005, size=32, seed=7)
    assert json.loads((tmp_path / "copy" / "copy.json").read_text())["counts"] == counts
    data = {"_target_": "ganlab.data.alzheimer.AlzheimerDataModule", "root": str(tmp_path / "copy"),
            "image_size": 32, "channels": 1}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config_resolved.yaml").write_text(yaml.safe_dump({"data": data}))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    oracle_set(tmp_path / "new", ckpt, per_class=2, render_seed=7000)
    names = ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"]
    new = load_generated(tmp_path / "new", names)
    assert new.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    save_slice(tmp_path / "expected.jpg", [7000, 3, 1], 3, 32)
    assert filecmp.cmp(tmp_path / "new" / "ModerateDemented" / "ModerateDemented_00001.jpg",
                       tmp_path / "expected.jpg", shallow=False)
    copy_images = {p.read_bytes() for p in (tmp_path / "copy").rglob("*.jpg")}
    assert not copy_images & {p.read_bytes() for p in (tmp_path / "new").rglob("*.jpg")}

    with pytest.raises(GanlabError, match="training or test"):
        oracle_set(tmp_path / "new_7", ckpt, per_class=2, render_seed=7)
    (tmp_path / "copy" / "copy.json").unlink()
    with pytest.raises(GanlabError, match="copy.json"):
        oracle_set(tmp_path / "new_real_data", ckpt, per_class=2, render_seed=7000)
    assert not (tmp_path / "new_real_data").exists()


def test_diagnose_tells_marked_images_from_real_ones_and_judges_every_class(tiny_data, monkeypatch):
    """diagnose.py on one seed: 'synthetic' images that are the real ones with a bright corner patch are told
    apart by the C2ST in every class, while identical copies of real images are not; the balanced judge's
    label shares are a distribution per class and its severity lies in 0..3."""
    import torch

    from ganlab.data.folder import UInt8ImageDataset

    monkeypatch.syspath_prepend(str(REPO / "experiments" / "synthetic_utility"))
    monkeypatch.delitem(sys.modules, "diagnose", raising=False)
    from diagnose import diagnose_seed

    train = tiny_data.datasets["train"]
    real = UInt8ImageDataset(train.images, train.labels, list(train.files))
    marked = train.images.clone()
    marked[:, :, :8, :8] = 255
    recipe = {"width": 8, "epochs": 25, "batch_size": 16}
    told = diagnose_seed(real, UInt8ImageDataset(marked, train.labels, list(train.files)), 4, 0, recipe)
    assert min(told["c2st"].values()) > 0.8
    same = diagnose_seed(real, UInt8ImageDataset(train.images.clone(), train.labels, list(train.files)), 4, 0, recipe)
    assert max(same["c2st"].values()) < 0.8
    for which in ("real", "synthetic"):
        for entry in told["judge"][which].values():
            assert abs(sum(entry["predicted"]) - 1) < 1e-6 and 0 <= entry["severity"] <= 3


def test_diagnose_views_keep_one_kind_of_cue(tiny_data, monkeypatch):
    """A pixel-scale pattern (a +-16 checkerboard inside the brain) is seen by the C2ST on the raw and `texture`
    views and lost in the `blur` view; `silhouette` and `dark0` do what their names say."""
    import torch

    from ganlab.data.folder import UInt8ImageDataset

    monkeypatch.syspath_prepend(str(REPO / "experiments" / "synthetic_utility"))
    monkeypatch.delitem(sys.modules, "diagnose", raising=False)
    from diagnose import VIEWS, diagnose_seed

    train = tiny_data.datasets["train"]
    real = UInt8ImageDataset(train.images, train.labels, list(train.files))
    h, w = train.images.shape[-2:]
    board = ((torch.arange(h)[:, None] + torch.arange(w)[None]) % 2) * 32 - 16
    inside = train.images.int() > 40
    marked = torch.where(inside, (train.images.int() + board).clamp(0, 255), train.images.int()).to(torch.uint8)
    recipe = {"width": 8, "epochs": 25, "batch_size": 16}
    told = diagnose_seed(real, UInt8ImageDataset(marked, train.labels, list(train.files)), 4, 0, recipe,
                         views=("blur", "texture"))
    assert min(told["c2st"].values()) > 0.8 and min(told["c2st_views"]["texture"].values()) > 0.8
    assert max(told["c2st_views"]["blur"].values()) < 0.8

    u8 = torch.tensor([[[[0, 8, 9, 200]]]], dtype=torch.uint8)
    assert VIEWS["silhouette"](u8).tolist() == [[[[0, 0, 255, 255]]]]
    assert VIEWS["dark0"](u8).tolist() == [[[[0, 0, 9, 200]]]]
    flat = torch.full((1, 1, 9, 9), 100, dtype=torch.uint8)
    assert torch.equal(VIEWS["blur"](flat), flat) and (VIEWS["texture"](flat) == 128).all()


def test_texture_stats_name_a_correlated_grain_and_see_nothing_between_two_draws(tiny_data, monkeypatch):
    """Grain whose neighbours along a row are correlated (like a generator's) against white grain (like
    scanner noise) on the same brains: the residual's horizontal correlation differs (d > 1) and the
    logistic C2ST on the statistics tells the sets apart; two draws of white grain it cannot."""
    import torch

    from ganlab.data.folder import UInt8ImageDataset

    monkeypatch.syspath_prepend(str(REPO / "experiments" / "synthetic_utility"))
    monkeypatch.delitem(sys.modules, "texture_stats", raising=False)
    from texture_stats import NAMES, compare

    train = tiny_data.datasets["train"]
    base, one_class = train.images.float(), torch.zeros(len(train.labels), dtype=torch.long)
    inside = train.images > 40
    g = torch.Generator().manual_seed(0)

    def grain(smooth: bool) -> UInt8ImageDataset:
        noise = torch.randn(base.shape, generator=g) * 24
        if smooth:
            noise = (noise + noise.roll(1, dims=-1)) / 2 ** 0.5
        images = torch.where(inside, base + noise, base).round().clamp(0, 255).to(torch.uint8)
        return UInt8ImageDataset(images, one_class)

    white = grain(smooth=False)
    told = compare(white, grain(smooth=True), ["brain"])["brain"]
    assert told["stats"]["corr 0,1"]["d"] > 1 and abs(told["stats"]["corr 1,0"]["d"]) < 1
    assert min(told["c2st"]) > 0.85
    same = compare(white, grain(smooth=False), ["brain"])["brain"]
    assert max(same["c2st"]) < 0.75 and set(same["stats"]) == set(NAMES)
