"""python -m ganlab.augment synthetic=<generate output> [data=...] [ratios=[0.5,1.0,fill]] [seeds=[0,1,2]]

The downstream-utility benchmark: does synthetic data help a classifier? The project's SmallCNN is
trained on (a) the real training split only, (b) real + synthetic images at several ratios and
(c) synthetic images only (train on synthetic, test on real), once per seed, and always evaluated on
the REAL held-out test split of the data the GAN was trained on (found through the generate output's
generate.json, see run_data.py; `data=` names another, with a warning). Writes `utility.md`, `utility.csv` (mean ± std over
seeds), `runs.csv` (one row per regime and seed) and `utility.png` into the run directory, and one
logger run per regime and seed in one group (W&B offline by default; `logger=none` for none).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from ganlab.classifier import SmallCNN, fit_classifier, predict
from ganlab.cli import CONFIG_DIR, entry_point
from ganlab.config import to_plain  # also registers ${wandb_mode:} for the logger config
from ganlab.data.folder import UInt8ImageDataset
from ganlab.device import choose_device
from ganlab.errors import GanlabError
from ganlab.generate import load_generated
from ganlab.metrics.conditional import balanced_accuracy, class_recall
from ganlab.run_data import choose_data, describe, generated_data, prepared_datamodule
from ganlab.utility.paired import confusion, markdown as paired_markdown, utility_results
from ganlab.utility.regimes import (REAL, TSTR, build_regimes, check_balanced, check_ratio,  # noqa: F401
                                    ratio_name, synthetic_subset, training_set)
from ganlab.utility.testset import load_external_test

log = logging.getLogger("ganlab.augment")


def regime_name(ratio) -> str:
    return f"real + synthetic {ratio_name(ratio)}"


def scores(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Balanced accuracy (mean recall over the classes present in `labels`), macro-F1 over the same
    classes, accuracy, per-class recall (NaN for a class absent from `labels`). With every class present,
    balanced accuracy is torchmetrics' MulticlassAccuracy(average="macro"); a class that is absent but
    predicted would count there as recall 0, so the mean is taken over the present classes here."""
    pred = logits.argmax(1)
    recall, present = class_recall(pred, labels, num_classes)
    f1 = MulticlassF1Score(num_classes, average=None)(pred, labels).double()
    accuracy = MulticlassAccuracy(num_classes, average="micro")(pred, labels)
    return {"balanced_accuracy": balanced_accuracy(pred, labels, num_classes), "macro_f1": float(f1[present].mean()),
            "accuracy": float(accuracy), "recall": torch.where(present, recall, torch.nan).tolist()}


def image_hashes(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images]


def disjoint_test(train: UInt8ImageDataset, test: UInt8ImageDataset, subject_of=None) -> UInt8ImageDataset:
    """The test split without leaks: shared files or subjects (`subject_of(file)`, None when unknown)
    raise; test images whose pixels equal a training image's (duplicates in the source data) are
    dropped with a warning."""
    shared = set(train.files) & set(test.files)
    if shared:
        raise GanlabError(f"the test split shares {len(shared)} file(s) with training, e.g. {sorted(shared)[0]}")
    if subject_of is not None:
        both = ({subject_of(f) for f in train.files} & {subject_of(f) for f in test.files}) - {None}
        if both:
            raise GanlabError(f"the test split shares {len(both)} subject(s) with training, e.g. {sorted(both)[0]}; "
                              "hold out whole subjects (data.subject_pattern) for an honest benchmark")
    seen = set(image_hashes(train.images))
    keep = torch.tensor([h not in seen for h in image_hashes(test.images)], dtype=torch.bool)
    if not keep.all():
        log.warning("dropping %d test image(s) identical to a training image", int((~keep).sum()))
        test = UInt8ImageDataset(test.images[keep], test.labels[keep], [f for f, k in zip(test.files, keep) if k])
    return test


def check_every_class_tested(test: UInt8ImageDataset, names: list[str]) -> None:
    missing = [n for n, c in zip(names, torch.bincount(test.labels, minlength=len(names)).tolist()) if not c]
    if missing:
        raise GanlabError(f"the real test split has no images of class(es) {missing}: their recall cannot be measured "
                          "and balanced accuracy would leave them out; give the data a test split with every class "
                          "(or test_data=...)")


def check_non_negative(key: str, value, meaning: str):
    """A classifier option that must be a number >= 0, or one line naming its config key."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0):
        raise GanlabError(f"classifier.{key}: {value!r} must be a number >= 0 ({meaning})")
    return value


def run_benchmark(real: UInt8ImageDataset, test: UInt8ImageDataset, synthetic: UInt8ImageDataset,
                  num_classes: int, *, ratios=(0.5, 1.0, "fill"), seeds=(0, 1, 2), real_only: bool = True,
                  tstr: bool = True, tstr_synthetic: UInt8ImageDataset | None = None, classifier: dict | None = None,
                  device: str = "cpu", on_result=None, rare_ratios=(), class_ratios=(), oversampled: bool = False,
                  weighted: dict | None = None, pretrain_epochs: int = 0) -> list[dict]:
    """One row per (regime, seed): the regime, counts, test scores and confusion matrix (regimes: see
    ganlab.utility.regimes). A seed fixes the initialisation and the data-order generator of every
    regime (paired comparisons). `on_result(row)` is called as each finishes (for loggers)."""
    regimes = build_regimes(ratios=ratios, rare_ratios=rare_ratios, class_ratios=class_ratios, real_only=real_only,
                            oversampled=oversampled, weighted=weighted, pretrain_epochs=pretrain_epochs, tstr=tstr)
    balanced = tstr_synthetic if tstr_synthetic is not None else synthetic
    options = dict(classifier or {})
    check_non_negative("domain_adversarial", options.get("domain_adversarial", 0.0), "0 = off")
    width = options.pop("width", 16)
    blur = check_non_negative("input_blur", options.pop("input_blur", 0.0), "a Gaussian's sigma in pixels; 0 = off")
    _, channels, size, _ = real.images.shape
    check_draws(regimes, real, synthetic, balanced, num_classes, seeds[0])  # before any classifier trains
    rows = []
    for seed in seeds:
        for regime in regimes:
            g = torch.Generator().manual_seed(int(seed))
            images, labels, weight, n_real, idx = training_set(regime, real, synthetic, balanced, num_classes, g)
            fit = {**options, **regime.options}
            pretrain = fit.pop("pretrain_epochs", 0)
            torch.manual_seed(int(seed))
            model = SmallCNN(num_classes, channels, size, width=width, input_blur=blur)
            if pretrain:
                fit_classifier(model, balanced.images, balanced.labels, seed=int(seed), device=device,
                               **{**fit, "epochs": pretrain})
            # real (0) / synthetic (1) for classifier.domain_adversarial: the mixes' synthetic images follow the real
            domain = None if idx is None else torch.cat([torch.zeros(n_real, dtype=torch.long),
                                                         torch.ones(len(idx), dtype=torch.long)])
            fit_classifier(model, images, labels, seed=int(seed), device=device, sample_weight=weight, domain=domain,
                           **fit)
            logits = predict(model, test.images, device=device)
            n_synthetic = {"oversampled": 0, "pretrain": len(balanced.labels)}.get(regime.kind, len(labels) - n_real)
            row = {"regime": regime.name, "seed": int(seed), "n_real": n_real, "n_synthetic": n_synthetic,
                   **scores(logits, test.labels, num_classes),
                   "confusion": confusion(logits, test.labels, num_classes)}
            log.info("%s seed %s: balanced acc %.3f, macro-F1 %.3f", regime.name, seed, row["balanced_accuracy"],
                     row["macro_f1"])
            rows.append(row)
            if on_result:
                on_result(row)
    return rows


def check_draws(regimes, real, synthetic, balanced, num_classes: int, seed: int) -> None:
    """Every regime's training set can be drawn (the synthetic folder holds enough of each class), is not empty,
    and no two regimes draw the same set under two names: checked on one seed's draws (the others draw as many)."""
    drawn = {}
    for regime in regimes:
        g = torch.Generator().manual_seed(int(seed))
        _, labels, _, _, idx = training_set(regime, real, synthetic, balanced, num_classes, g)
        if idx is not None:
            key = (regime.weight, tuple(sorted(idx.tolist())))
            if key in drawn:
                raise GanlabError(f"regimes '{drawn[key]}' and '{regime.name}' draw the same synthetic images")
            drawn[key] = regime.name
        if len(labels) == 0:
            raise GanlabError(f"regime '{regime.name}' has no training images")


def summarise(rows: list[dict], class_names: list[str]) -> list[dict]:
    """Per regime (in first-seen order): counts, seeds, and mean/std of every score."""
    out = []
    for regime in dict.fromkeys(r["regime"] for r in rows):
        group = [r for r in rows if r["regime"] == regime]
        entry = {"regime": regime, "n_real": group[0]["n_real"],
                 "n_synthetic": int(round(np.mean([r["n_synthetic"] for r in group]))), "seeds": len(group)}
        series = {"balanced_accuracy": [r["balanced_accuracy"] for r in group],
                  "macro_f1": [r["macro_f1"] for r in group]}
        for c, name in enumerate(class_names):
            series[f"recall_{name}"] = [r["recall"][c] for r in group]
        for key, values in series.items():
            values = np.asarray(values, dtype=float)
            entry[f"{key}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            entry[f"{key}_std"] = float(np.nanstd(values)) if np.isfinite(values).any() else float("nan")
        out.append(entry)
    return out


def write_tables(summary: list[dict], class_names: list[str], minority: str, out_dir: Path) -> str:
    """utility.csv and utility.md; returns the markdown."""
    with open(out_dir / "utility.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    others = [n for n in class_names if n != minority]
    head = ["regime", "N real", "N synthetic", "seeds", "balanced acc", "macro-F1", f"recall {minority} (minority)",
            *[f"recall {n}" for n in others]]
    fmt = lambda e, k: f"{e[k + '_mean']:.3f} ± {e[k + '_std']:.3f}"  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in summary:
        cells = [e["regime"], str(e["n_real"]), str(e["n_synthetic"]), str(e["seeds"]), fmt(e, "balanced_accuracy"),
                 fmt(e, "macro_f1"), fmt(e, f"recall_{minority}"), *[fmt(e, f"recall_{n}") for n in others]]
        lines.append("| " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    (out_dir / "utility.md").write_text(markdown)
    return markdown


def bar_plot(summary: list[dict], minority: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro-F1"),
               (f"recall_{minority}", f"recall {minority} (minority)")]
    x, width = np.arange(len(summary)), 0.8 / len(metrics)
    fig = Figure(figsize=(max(6.0, 1.6 * len(summary)), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (key, label) in enumerate(metrics):
        ax.bar(x + (i - 1) * width, [e[f"{key}_mean"] for e in summary], width,
               yerr=[e[f"{key}_std"] for e in summary], capsize=3, label=label)
    ax.set_xticks(x, [e["regime"].replace("real + synthetic ", "real+synth\n") for e in summary], fontsize=8)
    ax.set_ylim(0, 1.2)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel(f"real test split (mean ± std over {summary[0]['seeds']} seeds)")
    ax.legend(fontsize=8, loc="upper center", ncol=len(metrics), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def make_logger(logger_cfg, name: str):
    if not logger_cfg:
        return None
    return instantiate(logger_cfg, **({"name": name} if "name" in logger_cfg else {}))


def close_logger(logger) -> None:
    logger.finalize("success")
    finish = getattr(getattr(logger, "experiment", None), "finish", None)
    if callable(finish):  # W&B: one run per regime/seed, so end this one before the next starts
        finish()


def log_row(logger_cfg, row: dict, class_names: list[str]) -> None:
    logger = make_logger(logger_cfg, f"{row['regime']} / seed {row['seed']}")
    if logger is None:
        return
    logger.log_hyperparams({k: row[k] for k in ("regime", "seed", "n_real", "n_synthetic")})
    metrics = {f"test/{k}": row[k] for k in ("balanced_accuracy", "macro_f1", "accuracy")}
    metrics.update({f"test/recall/{n}": r for n, r in zip(class_names, row["recall"]) if r == r})
    logger.log_metrics(metrics, step=0)
    close_logger(logger)


def append_row(out_dir: Path, row: dict) -> None:
    """rows.jsonl: every finished (regime, seed) at once, so a cut-short run still has its rows."""
    with open(out_dir / "rows.jsonl", "a") as fh:
        fh.write(json.dumps(row) + "\n")


def load_real(cfg: DictConfig):
    data_cfg, source = choose_data(cfg, generated_data(cfg.synthetic), str(cfg.synthetic))
    log.info("real data: %s (from %s)", describe(to_plain(data_cfg)), source)
    cfg.data = data_cfg  # what test_data's ${data.image_size} and ${data.channels} read
    datamodule = prepared_datamodule(data_cfg)
    if "test" not in datamodule.datasets or len(datamodule.datasets["test"]) == 0:
        raise GanlabError("data: the benchmark needs a real held-out test split and this data config has none: "
                          "set data.test_split (a folder of held-out images) or data.test_fraction (held out "
                          "by subject with data.subject_pattern)")
    return datamodule, source


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="augment")
@entry_point
def main(cfg: DictConfig) -> None:
    out_dir = Path(cfg.paths.output_dir)
    if cfg.get("overwrite"):  # asked for (the run dir guard refused a used dir otherwise): no rows mixed in
        (out_dir / "rows.jsonl").unlink(missing_ok=True)
    datamodule, data_source = load_real(cfg)
    names = list(datamodule.class_names)
    real = datamodule.datasets["train"]
    if cfg.get("test_data"):  # an external test set (e.g. large, balanced, rendered apart)
        test = load_external_test(cfg.test_data, real, names)
    else:
        test = disjoint_test(real, datamodule.datasets["test"], getattr(datamodule, "subject_of", None))
    check_every_class_tested(test, names)
    synthetic = load_generated(cfg.synthetic, names)
    tstr_synthetic = load_generated(cfg.tstr_synthetic, names) if cfg.tstr_synthetic else None
    for path, data in ((cfg.synthetic, synthetic), (cfg.tstr_synthetic, tstr_synthetic)):
        if data is not None and not len(data):
            raise GanlabError(f"{path} holds no generated images (balance=fill on balanced data makes none)")
        if data is not None and data.images.shape[1:] != real.images.shape[1:]:
            raise GanlabError(f"synthetic images in {path} are {tuple(data.images.shape[1:])} (C, H, W) but the real "
                              f"data is {tuple(real.images.shape[1:])}: set data.image_size/data.channels to match")
    if cfg.tstr or cfg.get("pretrain_epochs"):
        check_balanced((tstr_synthetic if tstr_synthetic is not None else synthetic).labels, len(names), str(cfg.tstr_synthetic or cfg.synthetic))
    counts = torch.bincount(real.labels, minlength=len(names))
    minority = names[int(counts.argmin())]
    log.info("real train %s, test %s, synthetic %d", dict(zip(names, counts.tolist())),
             dict(zip(names, torch.bincount(test.labels, minlength=len(names)).tolist())), len(synthetic))
    device = choose_device(cfg.device)
    rows = run_benchmark(real, test, synthetic, len(names), ratios=list(cfg.ratios), seeds=list(cfg.seeds),
                         real_only=cfg.real_only, tstr=cfg.tstr, tstr_synthetic=tstr_synthetic,
                         classifier=to_plain(cfg.classifier), device=device,
                         rare_ratios=list(cfg.get("rare_ratios") or []),
                         class_ratios=list(cfg.get("class_ratios") or []), oversampled=bool(cfg.get("oversampled")),
                         weighted=to_plain(cfg.weighted) if cfg.get("weighted") else None, pretrain_epochs=int(cfg.get("pretrain_epochs") or 0),
                         on_result=lambda row: (log_row(cfg.logger, row, names), append_row(out_dir, row)))
    with open(out_dir / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["regime", "seed", "n_real", "n_synthetic", "balanced_accuracy",
                                                "macro_f1", "accuracy", *[f"recall_{n}" for n in names]])
        writer.writeheader()
        for r in rows:
            writer.writerow({**{k: v for k, v in r.items() if k not in ("recall", "confusion")},
                             **{f"recall_{n}": v for n, v in zip(names, r["recall"])}})
    summary = summarise(rows, names)
    markdown = write_tables(summary, names, minority, out_dir)
    test_counts = dict(zip(names, torch.bincount(test.labels, minlength=len(names)).tolist()))
    paired = utility_results(rows, names, minority, test_counts)
    (out_dir / "results.json").write_text(json.dumps(paired, indent=1))
    (out_dir / "paired.md").write_text(paired_markdown(paired))
    markdown += f"\nPaired differences to the strongest baseline ({paired['baseline']}), {paired['seeds']} seeds:\n\n" \
        + paired_markdown(paired)
    bar_plot(summary, minority, out_dir / "utility.png")
    (out_dir / "augment.json").write_text(json.dumps({
        "synthetic": str(cfg.synthetic), "data": data_source, "minority": minority, "class_names": names,
        "real_train_counts": dict(zip(names, counts.tolist())),
        "test_counts": dict(zip(names, torch.bincount(test.labels, minlength=len(names)).tolist())),
        "summary": summary}, indent=2))
    logger = make_logger(cfg.logger, "summary")
    if logger is not None:
        if hasattr(logger, "log_table"):
            logger.log_table("utility", columns=list(summary[0]), data=[list(e.values()) for e in summary])
            logger.log_image("utility_plot", [str(out_dir / "utility.png")])
        close_logger(logger)
    print(markdown, end="")


if __name__ == "__main__":
    main()
