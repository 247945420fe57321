"""Class-conditional DCGAN on brainsim (64 px): does the generator learn the per-class structure?

    python experiments/cdcgan_brainsim/run.py             # full size: ~10 min on 2 CPU cores
    python experiments/cdcgan_brainsim/run.py --smoke     # seconds; checks the pipeline, touches nothing here
    python experiments/cdcgan_brainsim/run.py -- model.generator.conditioning=cbn  # extra overrides after --

Trains `model=cdcgan data=brainsim` through the real CLI (CSV logger, default metrics group), then
reads back the run: loss and D-output means over the last epoch, throughput, the last evaluation of
the `metrics/*` the run logged (README: `metrics/cond_acc*`, results.json: all), and a per-class
structure check that needs no trained classifier: brainsim's
classes differ by ventricle/CSF enlargement, so the fraction of dark pixels (< 25% grey) in the
central square of the slice grows with the class. It is measured on the real training images and on
256 EMA samples per class. Writes results/{results.json, per_class_grid.png, progress.gif} and the
figures block of README.md (full size only).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "experiments")]
from ganlab.checkpoint import load_gan, read_checkpoint  # noqa: E402
from readme_block import write_block  # noqa: E402

FULL = ["data.image_size=64", "data.batch_size=32", "trainer.max_epochs={epochs}",
        "trainer.max_time=00:00:{minutes:02d}:00", "trainer.log_every_n_steps=10"]
SMOKE = ["data.image_size=32", "data.per_class=24", "data.batch_size=8", "model.generator.width=8",
         "model.discriminator.width=8", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
         "trainer.log_every_n_steps=1", "trainer.max_time=00:00:05:00", "metrics=fast"]


def central_dark_fraction(images: torch.Tensor) -> float:
    """Fraction of pixels below 25% grey in the central square (3/8..5/8 of the side); [-1, 1] input."""
    n = images.shape[-1]
    centre = (images[..., n * 3 // 8:n * 5 // 8, n * 3 // 8:n * 5 // 8].float() + 1) / 2
    return float((centre < 0.25).float().mean())


def last_epoch_means(metrics_csv: Path) -> dict:
    rows = list(csv.DictReader(open(metrics_csv)))
    epochs = [int(r["epoch"]) for r in rows if r.get("epoch")]
    last = max(epochs)
    out = {"epochs_completed": last + 1}
    for key in ("train/loss_d", "train/loss_g", "train/d_real", "train/d_fake"):
        values = [float(r[key]) for r in rows if r.get(key) and r.get("epoch") and int(r["epoch"]) == last]
        out[key] = sum(values) / len(values) if values else None
    for key in rows[0].keys():
        values = [float(r[key]) for r in rows if r.get(key)]
        if values and (key.startswith("metrics/") or key == "perf/images_per_sec_mean"):
            out[key] = values[-1]
    return out


def per_class_check(run_dir: Path, n_per_class: int = 256) -> dict:
    module, facts = load_gan(run_dir / "checkpoints" / "last.ckpt")
    steps = int(read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"])
    data = instantiate(OmegaConf.load(run_dir / "config_resolved.yaml").data)
    data.prepare_data()
    data.setup("fit")
    train = data.datasets["train"]
    real_images = train.images.float() / 127.5 - 1
    g = torch.Generator().manual_seed(0)
    table = {}
    for c, name in enumerate(facts["class_names"]):
        fake = module.sample(n_per_class, labels=torch.full((n_per_class,), c), generator=g)
        table[name] = {"real": central_dark_fraction(real_images[train.labels == c]),
                       "generated": central_dark_fraction(fake)}
    gen = [v["generated"] for v in table.values()]
    return {"steps": steps, "central_dark_fraction": table,
            "generated_increases_with_class": all(a < b for a, b in zip(gen, gen[1:]))}


def figures_markdown(r: dict) -> str:
    lines = [f"Run: {r['date']}, {r['device']}, {r['wall_minutes']:.1f} min wall, "
             f"{r['epochs_completed']} epochs / {r['steps']} optimiser steps "
             f"({r.get('perf/images_per_sec_mean', float('nan')):.0f} real img/s). Command: `{r['command']}`",
             "", "| last epoch (mean) | loss_d | loss_g | D(x) | D(G(z)) |", "|---|---|---|---|---|",
             "| | {train/loss_d:.3f} | {train/loss_g:.3f} | {train/d_real:.3f} | {train/d_fake:.3f} |".format(**r),
             "", "Central dark (CSF) fraction per class, real training images vs 256 EMA samples per class:", "",
             "| class | real | generated |", "|---|---|---|"]
    lines += [f"| {name} | {v['real']:.3f} | {v['generated']:.3f} |" for name, v in r["central_dark_fraction"].items()]
    lines += ["", f"Generated fraction increases with class: **{r['generated_increases_with_class']}**."]
    cond = {k: v for k, v in r.items() if k.startswith("metrics/cond_acc")}
    lines += ["", "Conditional accuracy (a classifier trained on real images, applied to each class's samples; "
              "`_real`: on held-out real images), last evaluation:", ""] + \
             [f"- `{k}` = {v:.3f}" for k, v in cond.items()] if cond else ["", "- `metrics/cond_acc`: not logged."]
    lines += ["", "![per-class grid](results/per_class_grid.png)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run into a temporary directory")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-minutes", type=int, default=10, help="wall-clock cap on training (Lightning max_time)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides (after --)")
    args = parser.parse_args()
    os.chdir(ROOT)  # paths.data_dir defaults to ./data, shared with every other run from the checkout
    base = Path(tempfile.mkdtemp(prefix="cdcgan_brainsim_")) if args.smoke else ROOT / "outputs" / "experiments"
    run_dir = base / f"cdcgan_brainsim_{time.strftime('%Y%m%d-%H%M%S')}"
    results_dir = base / "results" if args.smoke else HERE / "results"
    preset = SMOKE if args.smoke else [o.format(epochs=args.epochs, minutes=args.max_minutes) for o in FULL]
    overrides = ["model=cdcgan", "data=brainsim", "logger=csv", "trainer.enable_progress_bar=false",
                 *preset, *args.overrides, f"hydra.run.dir={run_dir}"]
    command = "python -m ganlab.train " + " ".join(overrides[:-1])
    print(command, flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", "ganlab.train", *overrides], check=True, cwd=ROOT)
    wall = time.time() - start

    results = {"date": time.strftime("%Y-%m-%d"), "command": command, "wall_minutes": wall / 60,
               "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
               "run_dir": str(run_dir)}
    results.update(last_epoch_means(next(run_dir.glob("csv/version_*/metrics.csv"))))
    results.update(per_class_check(run_dir))
    results_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "samples" / "final.png", results_dir / "per_class_grid.png")
    if (run_dir / "samples" / "progress.gif").exists():
        shutil.copy(run_dir / "samples" / "progress.gif", results_dir / "progress.gif")
    (results_dir / "results.json").write_text(json.dumps(results, indent=1))
    markdown = figures_markdown(results)
    if not args.smoke:
        write_block(HERE / "README.md", "figures", markdown)
    print(markdown)
    print(f"\nresults: {results_dir}")


if __name__ == "__main__":
    main()
