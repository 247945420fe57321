"""python -m ganlab.audit ckpt=<run>/checkpoints/last.ckpt [data=...] [feature=cnn|pixels]
   python -m ganlab.audit synthetic=<ganlab.generate output> [data=...]

The real data is the checkpoint's own training data (its run's config_resolved.yaml, see run_data.py)
unless `data=` names another, which is warned about.

Memorisation audit. For every generated image: the distance to its nearest training image in a
feature space (the SmallCNN trained on the real training split, L2-normalised features; or raw
pixels). The same distance for held-out real images is the yardstick: a generator that samples the
data distribution without copying, in the held-out split's class mix, has about 1% / 5% of its images
closer than the held-out 1st / 5th percentile; far more means near-copies of training images.

Those fractions pool the classes, and classes differ: in a classifier's features a rare class's images
sit nearer their few training images than a large class's do, so a class-balanced set of NEW real
brainsim images scores 5.3% / 11.8% (its rare class 17.8% / 31.1%; experiments/synthetic_utility,
oracle). The per-class test is calibrated for that: with each class as a cell, the data-copying test of
Meehan, Chaudhuri & Dasgupta (AISTATS 2020) compares a class's generated distances with its held-out
images' (Mann-Whitney U as a z-score: ~N(0, 1) for new real images, strongly negative when generated
images sit nearer the training images than new real ones do, positive when farther), and C_T weighs the
classes' z by their share of the training set. `c2st=true` adds a classifier two-sample test per class
(ganlab.metrics.c2st): how well a classifier tells the generated images from the real training images.

From a checkpoint the audit also asks its discriminator, per class, whether it has learned the training
images rather than the class (`discriminator_overfit`, ADA's r_v). A D that calls new real images of a
class fake pushes G's images of that class towards its training images: the cause of near-copies,
where the distances above are the symptom.

Writes `audit.json`, `audit.csv` (one row per generated image), `audit_gallery.png` (the closest pairs)
and `audit_distances.png`.

The core (`memorisation_audit`, `cnn_features`, `pixel_features`, `save_gallery`) works on tensors,
for callers other than this entry point.
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Callable

import hydra
import numpy as np
import torch
from scipy.stats import rankdata
import torch.nn.functional as F
from omegaconf import DictConfig

from ganlab.classifier import ROTATIONS, SmallCNN, extract_features, fit_classifier, rotation_task
from ganlab.cli import CONFIG_DIR, entry_point
from ganlab.config import to_plain
from ganlab.device import choose_device
from ganlab.errors import GanlabError
from ganlab.metrics.overfit import discriminator_logits, overfit_ratio
from ganlab.run_data import choose_data, describe, generated_data, holdout_split, prepared_datamodule, training_data
from ganlab.pixels import to_model_range

log = logging.getLogger("ganlab.audit")
Features = Callable[[torch.Tensor], torch.Tensor]


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    return to_model_range(images).flatten(1)


def cnn_features(train_images: torch.Tensor, train_labels: torch.Tensor, num_classes: int, *, width: int = 16,
                 seed: int = 0, device: str = "cpu", **fit_options) -> Features:
    """The SmallCNN trained on the real training split (one class: on the rotation task, see
    ganlab.classifier.rotation_task); its pooled features, L2-normalised."""
    torch.manual_seed(seed)
    _, channels, size, _ = train_images.shape
    if num_classes < 2:
        train_images, train_labels = rotation_task(train_images)
        num_classes, fit_options = ROTATIONS, {**fit_options, "augment": False}
    model = fit_classifier(SmallCNN(num_classes, channels, size, width=width), train_images, train_labels,
                           seed=seed, device=device, **fit_options)
    return feature_space(model, device=device)


def feature_space(model: SmallCNN, device: str = "cpu") -> Features:
    """A trained SmallCNN's pooled features, L2-normalised: the space the audit's distances live in."""
    return lambda images: F.normalize(extract_features(model, images, device=device), dim=1)


def nearest(query: torch.Tensor, reference: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query row: (Euclidean distance to the nearest reference row, its index)."""
    # the matrix-product shortcut loses the exact zero of a copy to rounding, so compute differences
    out = [torch.cdist(query[i:i + chunk].double(), reference.double(), compute_mode="donot_use_mm_for_euclid_dist")
           .min(1) for i in range(0, len(query), chunk)]
    return torch.cat([o.values for o in out]).float(), torch.cat([o.indices for o in out])


COPYING_Z = -3.0  # a class whose z is below this is flagged (one-sided p ~ 0.001 for new real images)


def copying_test(d_syn: torch.Tensor, syn_labels: torch.Tensor, d_hold: torch.Tensor, hold_labels: torch.Tensor,
                 train_labels: torch.Tensor, class_names: list[str]) -> dict:
    """Meehan et al. (2020)'s data-copying test with the classes as cells: per class, U = the number of
    (generated, held-out) pairs where the generated image is the farther from the training set (ties
    half), z = (U - mn/2) / sqrt(mn(m+n+1)/12), and `closer` = the share of pairs where it is nearer
    (0.5 for new real images). C_T = sum of z weighted by the classes' training shares (classes with
    images in both sets). `z_min` is the most extreme z the class's counts allow (every generated image nearer
    than every held-out one): with 128 generated images and 3 held-out ones it is -2.95, so such a class can
    never be flagged and its `closer` is the only reading. Returns {"per_class": {name: ...}, "c_t",
    "flagged": [names with z < COPYING_Z], "cannot_flag": [names whose z_min is not below COPYING_Z]}."""
    per_class, weighted, mass = {}, 0.0, 0.0
    share = torch.bincount(train_labels, minlength=len(class_names)).double() / max(len(train_labels), 1)
    for c, name in enumerate(class_names):
        a, b = d_syn[syn_labels == c].double(), d_hold[hold_labels == c].double()
        m, n = len(a), len(b)
        if m == 0 or n == 0:
            continue
        # U from ranks (ties averaged): O(m + n) memory, where the pairwise differences would be O(m n)
        u = float(rankdata(torch.cat([a, b]).numpy())[:m].sum() - m * (m + 1) / 2)
        sd = float(np.sqrt(m * n * (m + n + 1) / 12))
        z = (u - m * n / 2) / sd
        per_class[name] = {"n_synthetic": m, "n_holdout": n, "closer": 1 - u / (m * n), "z": z,
                           "z_min": -m * n / 2 / sd,  # U = 0: every generated image the nearer
                           "synthetic_median": float(a.median()), "holdout_median": float(b.median())}
        weighted, mass = weighted + float(share[c]) * z, mass + float(share[c])
    return {"per_class": per_class, "c_t": weighted / mass if mass else None,
            "flagged": [name for name, e in per_class.items() if e["z"] < COPYING_Z],
            "cannot_flag": [name for name, e in per_class.items() if e["z_min"] >= COPYING_Z]}


def memorisation_audit(synthetic: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor,
                       features: Features = pixel_features, labels: tuple | None = None,
                       class_names: list[str] | None = None) -> dict:
    """Images are uint8 or [-1, 1] tensors (N, C, H, W). Returns the summary plus per-image arrays:
    `synthetic_distance`, `nearest_train` (index into train), `holdout_distance`. With `labels` =
    (synthetic, train, held-out labels) and `class_names`, the summary also holds the per-class
    data-copying test (`copying_test`)."""
    if min(len(synthetic), len(train), len(holdout)) == 0:
        raise GanlabError(f"audit needs images in all three sets (synthetic {len(synthetic)}, "
                          f"train {len(train)}, held-out {len(holdout)})")
    f_train = features(train)
    d_syn, idx = nearest(features(synthetic), f_train)
    d_hold, _ = nearest(features(holdout), f_train)
    p1, p5 = np.percentile(d_hold.numpy(), [1, 5])
    summary = {
        "n_synthetic": len(synthetic), "n_train": len(train), "n_holdout": len(holdout),
        "holdout_p1": float(p1), "holdout_p5": float(p5),
        "frac_below_p1": float((d_syn < p1).float().mean()), "frac_below_p5": float((d_syn < p5).float().mean()),
        "n_exact_copies": int((d_syn <= 1e-6).sum()),
        "synthetic_median": float(d_syn.median()), "holdout_median": float(d_hold.median()),
    }
    if labels is not None:
        syn_labels, train_labels, hold_labels = labels
        summary["copying"] = copying_test(d_syn, syn_labels, d_hold, hold_labels, train_labels, class_names)
    return {"summary": summary, "synthetic_distance": d_syn, "nearest_train": idx, "holdout_distance": d_hold}


def save_gallery(synthetic: torch.Tensor, train: torch.Tensor, result: dict, path: str | Path, k: int = 8) -> None:
    """Top row: the k generated images closest to the training set; bottom row: their nearest training image."""
    from ganlab.callbacks.sample_grid import grid_image

    order = result["synthetic_distance"].argsort()[:k]
    pairs = torch.cat([to_model_range(synthetic[order]), to_model_range(train[result["nearest_train"][order]])])
    grid_image(pairs, nrow=len(order), row_names=["generated", "nearest train"]).save(path)


def distance_plot(result: dict, feature: str, path: str | Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = result["summary"]
    d_syn, d_hold = result["synthetic_distance"].numpy(), result["holdout_distance"].numpy()
    bins = np.linspace(0, max(d_syn.max(), d_hold.max()) * 1.02, 40)
    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(d_hold, bins, alpha=0.6, density=True, label=f"held-out real (n={len(d_hold)})")
    ax.hist(d_syn, bins, alpha=0.6, density=True, label=f"generated (n={len(d_syn)})")
    for q, name in ((s["holdout_p1"], "p1"), (s["holdout_p5"], "p5")):
        ax.axvline(q, color="k", ls=":" if name == "p1" else "--", lw=1, label=f"held-out {name}")
    ax.set_xlabel(f"distance to the nearest training image ({'CNN' if feature == 'cnn' else 'pixel'} features)")
    ax.set_title(f"below p1: {s['frac_below_p1']:.1%}   below p5: {s['frac_below_p5']:.1%}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def load_checked(ckpt: str, datamodule):
    """The checkpoint's GANModule (eval mode), refused unless its data facts match the data config."""
    from ganlab.checkpoint import load_gan

    module, facts = load_gan(ckpt)
    for key in ("image_size", "channels"):
        if facts[key] != getattr(datamodule, key):
            raise GanlabError(f"{ckpt} was trained at {key}={facts[key]} but data.{key}={getattr(datamodule, key)}")
    if module.conditional and list(facts["class_names"]) != list(datamodule.class_names):
        raise GanlabError(f"{ckpt} was trained on classes {facts['class_names']}, the data config has "
                          f"{datamodule.class_names}")
    return module


def sample_checkpoint(module, n: int, seed: int, ema: bool, batch_size: int = 256):
    """(uint8 images, labels) sampled from a loaded GANModule, classes in turn; the labels are None for an
    unconditional generator."""
    from ganlab.pixels import to_uint8

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % max(module.num_classes, 1)
    images = []
    for i in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - i), module.latent_dim, generator=g)
        y = labels[i:i + len(z)] if module.conditional else None
        images.append(to_uint8(module.sample(len(z), y, z=z, ema=ema)))
    return torch.cat(images), labels if module.conditional else None


def discriminator_overfit(discriminator, sets: dict, conditional: bool, class_names: list[str],
                          batch_size: int = 256) -> dict:
    """How much D has learned its training images rather than the class: ADA's r_v per class
    (ganlab.metrics.overfit). `sets` maps "train", "holdout" and "generated" to (uint8 images, labels);
    an unconditional D gets no labels. A class without images in a set gets None."""
    logits = {name: (discriminator_logits(discriminator, images, labels if conditional else None, batch_size), labels)
              for name, (images, labels) in sets.items()}
    per_class = {}
    for c, class_name in enumerate(class_names):
        means, counts = {}, {}
        for name, (values, labels) in logits.items():
            own = values[labels == c]
            means[name], counts[name] = (float(own.mean()) if len(own) else None), len(own)
        per_class[class_name] = {**{f"d_{k}": v for k, v in means.items()}, "n_holdout": counts["holdout"],
                                 "r_v": overfit_ratio(means["train"], means["holdout"], means["generated"])}
    return per_class


def checkpoint_discriminator_overfit(ckpt: str | Path, n: int, seed: int, new_real: str | Path | None = None) -> dict:
    """`discriminator_overfit` for a checkpoint, on the data it was trained on: its training split, n samples
    of its EMA generator (classes in turn, `seed`) and, as the held-out set, the data's held-out split or the
    images of `new_real` (a folder in ganlab.generate's layout, e.g. brainsim's new renders)."""
    from omegaconf import OmegaConf

    from ganlab.generate import load_generated

    datamodule = prepared_datamodule(OmegaConf.create(training_data(ckpt)[0]))
    module = load_checked(str(ckpt), datamodule)
    names, train = list(datamodule.class_names), datamodule.datasets["train"]
    holdout = load_generated(new_real, names) if new_real else datamodule.datasets[holdout_split(datamodule)]
    images, labels = sample_checkpoint(module, n, seed, ema=True)
    return discriminator_overfit(module.discriminator, {"train": (train.images, train.labels),
                                                        "holdout": (holdout.images, holdout.labels),
                                                        "generated": (images, labels)}, module.conditional, names)


def write_csv(path: Path, result: dict, synth_labels, synth_files, train, class_names) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "file", "class", "distance", "nearest_train_file", "nearest_train_class"])
        for i, (d, j) in enumerate(zip(result["synthetic_distance"].tolist(), result["nearest_train"].tolist())):
            writer.writerow([i, synth_files[i] if synth_files else "", class_names[int(synth_labels[i])],
                             f"{d:.6g}", train.files[j] if train.files else j, class_names[int(train.labels[j])]])


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="audit")
@entry_point
def main(cfg: DictConfig) -> None:
    if bool(cfg.ckpt) == bool(cfg.synthetic):
        raise GanlabError("give exactly one of ckpt=<checkpoint> (sample from it) or synthetic=<generate output>")
    if cfg.feature not in ("cnn", "pixels"):
        raise GanlabError(f"feature={cfg.feature!r}: choose cnn or pixels")
    out_dir = Path(cfg.paths.output_dir)
    if cfg.ckpt:
        from ganlab.checkpoint import read_checkpoint

        read_checkpoint(cfg.ckpt)  # a crafted or broken checkpoint is refused before anything else
    trained = training_data(cfg.ckpt) if cfg.ckpt else generated_data(cfg.synthetic)
    data_cfg, data_source = choose_data(cfg, trained, str(cfg.ckpt or cfg.synthetic))
    log.info("real data: %s (from %s)", describe(to_plain(data_cfg)), data_source)
    datamodule = prepared_datamodule(data_cfg)
    names, train = list(datamodule.class_names), datamodule.datasets["train"]
    split = holdout_split(datamodule)
    holdout = datamodule.datasets[split]
    module = load_checked(cfg.ckpt, datamodule) if cfg.ckpt else None
    if module is not None:
        synth_images, synth_labels = sample_checkpoint(module, cfg.n, cfg.seed, cfg.ema)
        synth_files = []
    else:
        from ganlab.generate import load_generated
        synthetic = load_generated(cfg.synthetic, names)
        synth_images, synth_labels, synth_files = synthetic.images, synthetic.labels, synthetic.files
        if len(synthetic) and synth_images.shape[1:] != train.images.shape[1:]:
            raise GanlabError(f"images in {cfg.synthetic} are {tuple(synth_images.shape[1:])} (C, H, W), the real data "
                              f"{tuple(train.images.shape[1:])}: set data.image_size/data.channels to match")
    device = choose_device(cfg.device)
    features = pixel_features if cfg.feature == "pixels" else cnn_features(
        train.images, train.labels, len(names), seed=cfg.seed, device=device, **to_plain(cfg.classifier))
    if synth_labels is None:  # an unconditional generator's images have no class: one cell, all held-out images
        synth_labels = torch.zeros(len(synth_images), dtype=torch.long)
        cells = ((synth_labels, torch.zeros_like(train.labels), torch.zeros_like(holdout.labels)), ["all"])
    else:
        cells = ((synth_labels, train.labels, holdout.labels), names)
    result = memorisation_audit(synth_images, train.images, holdout.images, features, *cells)
    summary = {"feature": cfg.feature, "holdout_split": split, "source": str(cfg.ckpt or cfg.synthetic),
               "data": data_source, "data_module": describe(to_plain(data_cfg)),
               **result["summary"]}
    if cfg.c2st:
        from ganlab.metrics.c2st import two_sample_test

        (syn_cells, train_cells, _), cell_names = cells
        accuracy = two_sample_test(train.images, train_cells, synth_images, syn_cells, len(cell_names), seed=cfg.seed,
                                   device=device, **to_plain(cfg.classifier))
        summary["c2st"] = {cell_names[c]: a for c, a in accuracy.items()}
    if module is not None:
        (syn_cells, train_cells, hold_cells), cell_names = cells
        summary["discriminator"] = discriminator_overfit(
            module.discriminator, {"train": (train.images, train_cells), "holdout": (holdout.images, hold_cells),
                                   "generated": (synth_images, syn_cells)}, module.conditional, cell_names)
    (out_dir / "audit.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_csv(out_dir / "audit.csv", result, synth_labels, synth_files, train, names)
    save_gallery(synth_images, train.images, result, out_dir / "audit_gallery.png", k=cfg.gallery_size)
    distance_plot(result, cfg.feature, out_dir / "audit_distances.png")
    space = "CNN" if cfg.feature == "cnn" else "pixel"
    print(f"memorisation audit ({space} features, {summary['n_synthetic']} generated vs "
          f"{summary['n_train']} train, {summary['n_holdout']} held-out {split}): "
          f"{summary['frac_below_p1']:.1%} closer than the held-out 1st percentile, "
          f"{summary['frac_below_p5']:.1%} closer than the 5th (~1% / ~5% for new real images mixed like the "
          "held-out split), "
          f"{summary['n_exact_copies']} exact copies; results in {out_dir}")
    copying = summary["copying"]
    print("data-copying test per class (z ~ N(0,1) for new real images, < -3 = nearer the training images): "
          + ", ".join(f"{name} z={e['z']:+.1f} (n={e['n_synthetic']}/{e['n_holdout']} held-out)"
                      for name, e in copying["per_class"].items())
          + (f"; C_T={copying['c_t']:+.2f}" if copying["c_t"] is not None else "")
          + (f"; FLAGGED: {', '.join(copying['flagged'])}" if copying["flagged"] else ""))
    for name in copying["cannot_flag"]:
        e = copying["per_class"][name]
        print(f"  {name}: {e['n_holdout']} held-out images are too few for this test to flag (its z cannot go "
              f"below {e['z_min']:+.2f}); read its share of pairs with the generated image nearer: "
              f"{e['closer']:.2f} (0.5 for new real images, 1 when every generated image is nearer)")
    if "discriminator" in summary:
        print("discriminator overfitting per class (r_v: 0 = D scores new real images like its training images, "
              "1 = like generated ones): "
              + ", ".join(f"{name} " + ("n/a" if e["r_v"] is None else f"{e['r_v']:.2f}")
                          + f" (n={e['n_holdout']} held-out)" for name, e in summary["discriminator"].items()))
    if "c2st" in summary:
        print("classifier two-sample test per class (0.5 = generated images cannot be told from real ones): "
              + ", ".join(f"{name} {a:.2f}" for name, a in summary["c2st"].items()))


if __name__ == "__main__":
    main()
