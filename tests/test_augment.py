"""ganlab.augment: regimes, subset sizes, scores, a leak-free real test split, the CLI's outputs."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from conftest import assert_ok
from torchmetrics.classification import MulticlassAccuracy

from ganlab.augment import (REAL, TSTR, bar_plot, check_every_class_tested, disjoint_test, image_hashes, regime_name,
                            run_benchmark, scores, summarise, synthetic_subset, write_tables)
from ganlab.data.brainsim import CLASS_NAMES
from ganlab.data.folder import UInt8ImageDataset
from ganlab.errors import GanlabError


def dataset(n, label_list, size=32, value=None):
    images = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8) if value is None else \
        torch.full((n, 1, size, size), value, dtype=torch.uint8)
    return UInt8ImageDataset(images, torch.tensor(label_list), [f"f{i}-{value}" for i in range(n)])


def test_fill_tops_up_each_class_and_ratio_counts():
    real = torch.tensor([0] * 10 + [1] * 4 + [2] * 7)
    synth = torch.tensor([0] * 5 + [1] * 8 + [2] * 8)
    g = torch.Generator().manual_seed(0)
    fill = synthetic_subset("fill", synth, real, 3, g)
    assert torch.bincount(synth[fill], minlength=3).tolist() == [0, 6, 3]
    assert len(synthetic_subset(0.5, synth, real, 3, g)) == 10  # round(0.5 * 21)
    assert len(set(synthetic_subset(1.0, synth, real, 3, g).tolist())) == 21  # without replacement
    rare = synthetic_subset(("rare", 1.5), synth, real, 3, g)  # 1.5 x the rare class's 4 real images
    assert synth[rare].tolist() == [1] * 6
    with pytest.raises(GanlabError, match="ratio x2 needs 42 synthetic images and the synthetic folder holds 21"):
        synthetic_subset(2.0, synth, real, 3, g)  # never capped: a capped ratio would duplicate another row
    with pytest.raises(GanlabError, match="rare x3 .* needs 12"):
        synthetic_subset(("rare", 3.0), synth, real, 3, g)


def test_scores_on_a_known_confusion():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])
    s = scores(torch.nn.functional.one_hot(pred, 3).float(), labels, 3)
    assert s["recall"] == pytest.approx([0.75, 0.5, 1.0])
    assert s["balanced_accuracy"] == pytest.approx(0.75)
    f1 = [2 * 0.75 * 0.75 / 1.5, 0.5, 1.0]  # precision 3/4, 1/2, 1
    assert s["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert s["accuracy"] == pytest.approx(6 / 8)
    assert s["balanced_accuracy"] == pytest.approx(float(MulticlassAccuracy(3, average="macro")(pred, labels)))


def test_a_class_absent_from_the_test_split_is_left_out_of_the_means():
    labels, pred = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 2, 1, 1])  # class 2: predicted, never true
    s = scores(torch.nn.functional.one_hot(pred, 3).float(), labels, 3)
    assert s["recall"][:2] == pytest.approx([0.5, 1.0]) and s["recall"][2] != s["recall"][2]  # NaN
    assert s["balanced_accuracy"] == pytest.approx(0.75)


def test_the_plot_does_not_switch_matplotlibs_global_backend(monkeypatch, tmp_path):
    import matplotlib

    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("matplotlib.use called"))
    entry = {"regime": REAL, "seeds": 2, **{f"{k}_{s}": 0.5 for k in ("balanced_accuracy", "macro_f1", "recall_a")
                                            for s in ("mean", "std")}}
    bar_plot([entry], "a", tmp_path / "u.png")
    assert (tmp_path / "u.png").stat().st_size > 0


def test_test_split_shares_no_image_with_training(tiny_data):
    train, test = tiny_data.datasets["train"], tiny_data.datasets["test"]
    assert len(test) > 0 and set(test.labels.tolist()) == set(range(4))
    assert not set(train.files) & set(test.files)
    assert not set(image_hashes(train.images)) & set(image_hashes(test.images))
    # brainsim draws every image (its own "subject") from its own seed; train/test are disjoint index ranges
    stems = lambda ds: {(f.split("/")[-2], f.split("/")[-1]) for f in ds.files}  # noqa: E731
    assert not stems(train) & stems(test)
    assert len(disjoint_test(train, test, tiny_data.subject_of)) == len(test)


def test_leaks_are_refused_or_dropped():
    train = dataset(4, [0, 1, 0, 1])
    with pytest.raises(GanlabError, match="shares 1 file"):
        disjoint_test(train, UInt8ImageDataset(train.images[:1], train.labels[:1], train.files[:1]))
    other = UInt8ImageDataset(torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8), torch.tensor([0, 1]),
                              ["sub-9_a.png", "sub-2_b.png"])
    train.files = ["sub-1_a.png", "sub-2_a.png", "sub-3_a.png", "sub-4_a.png"]
    subject = lambda f: f.split("_")[0]  # noqa: E731
    with pytest.raises(GanlabError, match="shares 1 subject"):
        disjoint_test(train, other, subject)
    assert len(disjoint_test(train, other)) == 2  # subjects unknown: only files and pixels are checked
    dup = UInt8ImageDataset(torch.cat([train.images[:1], other.images]), torch.tensor([0, 0, 1]), ["a", "b", "c"])
    assert len(disjoint_test(train, dup, subject)) == 2  # the pixel-identical copy is dropped


def test_all_three_regimes_and_the_table(tiny_data, tmp_path):
    real, test = tiny_data.datasets["train"], tiny_data.datasets["test"]
    synthetic = dataset(40, [3] * 20 + [0, 1, 2] * 6 + [0, 1])
    rows = run_benchmark(real, test, synthetic, 4, ratios=[0.5, "fill"], seeds=[0, 1],
                         classifier={"width": 4, "epochs": 1, "batch_size": 32})
    regimes = [REAL, regime_name(0.5), regime_name("fill"), TSTR]
    assert [r["regime"] for r in rows] == regimes * 2 and [r["seed"] for r in rows] == [0] * 4 + [1] * 4
    by = {r["regime"]: r for r in rows if r["seed"] == 0}
    assert by[REAL]["n_synthetic"] == 0 and by[REAL]["n_real"] == len(real)
    assert by[regime_name(0.5)]["n_synthetic"] == round(0.5 * len(real))
    assert by[TSTR]["n_real"] == 0 and by[TSTR]["n_synthetic"] == 40
    assert all(0 <= r["balanced_accuracy"] <= 1 and len(r["recall"]) == 4 for r in rows)

    summary = summarise(rows, list(CLASS_NAMES))
    assert [e["regime"] for e in summary] == regimes and all(e["seeds"] == 2 for e in summary)
    markdown = write_tables(summary, list(CLASS_NAMES), "ModerateDemented", tmp_path)
    lines = markdown.strip().splitlines()
    assert len(lines) == 2 + 4 and "recall ModerateDemented (minority)" in lines[0]
    assert all(" ± " in line for line in lines[2:])
    table = list(csv.DictReader(open(tmp_path / "utility.csv")))
    assert [t["regime"] for t in table] == regimes
    mean = sum(r["balanced_accuracy"] for r in rows if r["regime"] == REAL) / 2
    assert float(table[0]["balanced_accuracy_mean"]) == pytest.approx(mean)


def test_every_regime_is_drawn_before_any_classifier_trains(tiny_data, monkeypatch):
    import ganlab.augment as augment

    real, test = tiny_data.datasets["train"], tiny_data.datasets["test"]
    monkeypatch.setattr(augment, "fit_classifier", lambda *a, **k: pytest.fail("a classifier trained first"))
    n = int(0.75 * len(real))  # enough for x0.5, not for x1
    with pytest.raises(GanlabError, match=f"needs {len(real)} synthetic images and the synthetic folder holds {n}"):
        run_benchmark(real, test, dataset(n, [i % 4 for i in range(n)]), 4, ratios=[0.5, 1.0], seeds=[0, 1])


def test_a_test_split_without_some_class_is_refused_naming_it():
    check_every_class_tested(dataset(4, [0, 1, 2, 3]), list(CLASS_NAMES))
    with pytest.raises(GanlabError, match=r"no images of class\(es\) \['ModerateDemented'\]"):
        check_every_class_tested(dataset(3, [0, 1, 2]), list(CLASS_NAMES))


def test_bad_ratio_is_refused(tiny_data):
    with pytest.raises(GanlabError, match="ratios"):
        run_benchmark(tiny_data.datasets["train"], tiny_data.datasets["test"], dataset(2, [0, 1]), 4, ratios=["half"])


@pytest.mark.slow
def test_cli_writes_table_plot_and_one_wandb_run_per_regime_and_seed(run_cli, cdcgan_ckpt, tmp_path):
    from ganlab.generate import generate

    generate(str(cdcgan_ckpt), str(tmp_path / "synth"), n_per_class=9)  # enough for x0.5
    run = tmp_path / "bench"
    # no data overrides: the real data is the checkpoint's own (tiny brainsim), found through generate.json
    assert_ok(run_cli("ganlab.augment", f"synthetic={tmp_path / 'synth'}", "ratios=[0.5,fill]", "seeds=[0,1]",
                      "classifier.epochs=1", "classifier.width=4", "logger=wandb", f"hydra.run.dir={run}"))
    for name in ("utility.md", "utility.csv", "runs.csv", "utility.png", "augment.json"):
        assert (run / name).stat().st_size > 0, name
    assert (run / "utility.md").read_text().strip().splitlines()[1 + 5].startswith("| synthetic only")
    info = json.loads((run / "augment.json").read_text())
    assert info["data"].startswith(str(tmp_path / "synth" / "generate.json"))
    assert sum(info["real_train_counts"].values()) == 68  # the run's per_class=24, not brainsim's default 500
    assert len(list(csv.DictReader(open(run / "runs.csv")))) == 5 * 2  # + the oversampled baseline
    assert len(list((run / "wandb").glob("offline-run-*"))) == 5 * 2 + 1  # + the summary run

    again = [f"synthetic={tmp_path / 'synth'}", "ratios=[0.5,fill]", "seeds=[0]", "classifier.epochs=1",
             "classifier.width=4", "logger=none", f"hydra.run.dir={run}"]
    before = (run / "runs.csv").read_bytes(), (run / ".hydra" / "config.yaml").read_bytes()
    result = run_cli("ganlab.augment", *again)  # the same run dir again: refused, the earlier results kept
    assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith(f"error: {run} already holds results")
    assert ((run / "runs.csv").read_bytes(), (run / ".hydra" / "config.yaml").read_bytes()) == before
    assert_ok(run_cli("ganlab.augment", *again, "overwrite=true"))  # asked for: replaced, no earlier row mixed in
    assert [json.loads(line)["seed"] for line in open(run / "rows.jsonl")] == [0] * 5


def test_cli_without_a_test_split_is_one_clear_line(run_cli, cdcgan_ckpt, tmp_path):
    from ganlab.generate import generate

    generate(str(cdcgan_ckpt), str(tmp_path / "synth"), n_per_class=2)
    result = run_cli("ganlab.augment", f"synthetic={tmp_path / 'synth'}", "data=folder",
                     f"data.root={tmp_path / 'synth'}", "data.image_size=32", "data.batch_size=2", "logger=none")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: data: the benchmark needs a real held-out test split and this data config has none: set "
        "data.test_split (a folder of held-out images) or data.test_fraction (held out by subject with "
        "data.subject_pattern)"]
