"""Part 1 of issue 12: which demo does `make train` ship? Variants of the demo, same data, same epochs.

    python experiments/demo/run.py --variants old_demo,bf16_e36     # one run each (skips recorded ones)
    python experiments/demo/run.py --table                        # rebuild the README table

Each variant is `python -m ganlab.train <variant overrides>` on the embedded brainsim data (64 px,
balanced, 1440 training images) with the metrics the run computes at its end (512 samples, the real
class mix, domain features): FD against the real-vs-real floor, recall, coverage, SSIM diversity
against real pairs. One JSON line per run in results/demo.jsonl; the wall time is the training
command's, on whatever the machine was doing (recorded beside it), so read it as a record.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "experiments")]
from bench_throughput import processor  # noqa: E402
from readme_block import write_block  # noqa: E402

QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
VARIANTS: dict[str, list[str]] = {
    "old_demo": ["model=cdcgan", "trainer.max_epochs=24"],  # shipped before session 4
    # shipped now (Makefile DEMO): bf16_e36
    "batch32": ["model=cdcgan", "trainer.max_epochs=24", "data.batch_size=32"],
    "no_diffaug": ["model=cdcgan", "trainer.max_epochs=24", "model.diffaugment=null"],
    "ema_kimg": ["model=cdcgan", "trainer.max_epochs=24", "model.ema_kimg=10", "model.ema_rampup=0.05"],
    "lr4e-4": ["model=cdcgan", "trainer.max_epochs=24", "model.lr_g=4.0e-4", "model.lr_d=4.0e-4"],
    "mode_seeking": ["model=cdcgan", "trainer.max_epochs=24", "model.mode_seeking=1.0"],
    "mode_seeking0.3": ["model=cdcgan", "trainer.max_epochs=24", "model.mode_seeking=0.3"],
    "mode_seeking0.3_ema": ["model=cdcgan", "trainer.max_epochs=24", "model.mode_seeking=0.3", "model.ema_kimg=10",
                            "model.ema_rampup=0.05"],
    # bf16 autocast: the CPU's bf16 units (avx512_bf16) make a step ~1.6x faster: same epochs, then same time
    "bf16": ["model=cdcgan", "trainer.max_epochs=24", "trainer.precision=bf16-mixed"],
    "bf16_e40": ["model=cdcgan", "trainer.max_epochs=40", "trainer.precision=bf16-mixed"],
    "bf16_e36": ["model=cdcgan", "trainer.max_epochs=36", "trainer.precision=bf16-mixed"],
    "bf16_e36_ms1": ["model=cdcgan", "trainer.max_epochs=36", "trainer.precision=bf16-mixed", "model.mode_seeking=1.0"],
    "bf16_e36_ms0.6": ["model=cdcgan", "trainer.max_epochs=36", "trainer.precision=bf16-mixed",
                       "model.mode_seeking=0.6"],
    # translation on a share of the images only (model.augment_p): the ladder's fix for brains gathered
    # at the centre; channels_last: ~10-15% more images per second on this CPU
    "bf16_e36_p05": ["model=cdcgan", "trainer.max_epochs=36", "trainer.precision=bf16-mixed", "model.augment_p=0.5"],
    "bf16_e36_p025": ["model=cdcgan", "trainer.max_epochs=36", "trainer.precision=bf16-mixed",
                      "model.augment_p=0.25"],
    "cl_e40_p05": ["model=cdcgan", "trainer.max_epochs=40", "trainer.precision=bf16-mixed", "model.augment_p=0.5",
                   "trainer.strategy.channels_last=true"],
    "cl_e40_p025": ["model=cdcgan", "trainer.max_epochs=40", "trainer.precision=bf16-mixed", "model.augment_p=0.25",
                    "trainer.strategy.channels_last=true"],
    # every image shifted, but by at most 1/16 of the image (the quality preset's setting since session 6)
    "cl_e40_tr16": ["model=cdcgan", "trainer.max_epochs=40", "trainer.precision=bf16-mixed",
                    "model.translation_ratio=0.0625", "trainer.strategy.channels_last=true"],
    # the shipped demo (Makefile DEMO since session 27): cl_e40_p025 stopped at 2 min 40 s of training if the 40
    # epochs take longer, so that `make train` keeps its 5 minutes with set-up on a slower 2-core machine
    "cl_e40_p025_cap": ["model=cdcgan", "trainer.max_epochs=40", "trainer.precision=bf16-mixed",
                        "model.augment_p=0.25", "trainer.strategy.channels_last=true", "trainer.max_time=00:00:02:40"],
    # session 32: the same at 2 min 20 s, for margin: fresh clones of `make train` took 4:42-5:05 with the 2:40 cap
    "cl_e40_p025_cap140": ["model=cdcgan", "trainer.max_epochs=40", "trainer.precision=bf16-mixed",
                           "model.augment_p=0.25", "trainer.strategy.channels_last=true",
                           "trainer.max_time=00:00:02:20"],
}


def figures(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    g = m.get
    fd, floor = g("metrics/fd_domain"), g("metrics/fd_domain_real")
    return {"fd": fd, "fd_floor": floor, "fd_ratio": fd / floor if fd and floor else None,
            "recall": g("metrics/recall"), "coverage": g("metrics/coverage"), "precision": g("metrics/precision"),
            "ssim_div": g("ssim/diversity"), "ssim_div_real": g("ssim/diversity_real"),
            "cond_acc": g("metrics/cond_acc"), "cond_acc_real": g("metrics/cond_acc_real"),
            "img_per_s": g("perf/images_per_sec_mean"), "epochs": last_epoch(run_dir)}


def last_epoch(run_dir: Path) -> int | None:
    """How many epochs the run trained (a time cap may stop it before max_epochs): its CSV log's last epoch + 1."""
    epochs = [int(row["epoch"]) for log in run_dir.rglob("metrics.csv")
              for row in csv.DictReader(log.open()) if row.get("epoch")]
    return max(epochs) + 1 if epochs else None


def fmt(v, spec=".2f") -> str:
    return "–" if v is None else format(v, spec)


def table(records: list[dict]) -> str:
    lines = ["| variant | seed | overrides | CPU | epochs | train min | FD/floor | recall | coverage | SSIM div (real) | "
             "cond acc (real) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['variant']} | {r['seed']} | `{' '.join(r['overrides'])}` | {r.get('cpu', '–')} | "
                     f"{r.get('epochs') or '–'} | {fmt(r['wall_s'] / 60, '.1f')} | "
                     f"{fmt(r['fd_ratio'], '.1f')} | {fmt(r['recall'])} | {fmt(r['coverage'])} | "
                     f"{fmt(r['ssim_div'])} ({fmt(r['ssim_div_real'])}) | {fmt(r['cond_acc'])} ({fmt(r['cond_acc_real'])}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    os.chdir(ROOT)
    results = HERE / "results" / "demo.jsonl"
    done = [json.loads(x) for x in results.read_text().splitlines()] if results.is_file() else []
    for name in [v for v in args.variants.split(",") if v]:
        if name not in VARIANTS:
            sys.exit(f"error: unknown variant {name!r}; known: {', '.join(VARIANTS)}")
        if any(d["variant"] == name and d["seed"] == args.seed for d in done):
            print(f"{name}: already recorded, skipped")
            continue
        run_dir = ROOT / "outputs" / "experiments" / "demo" / f"{name}_s{args.seed}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        cmd = [*VARIANTS[name], *QUIET, f"seed={args.seed}", f"hydra.run.dir={run_dir}"]
        print(f"[{time.strftime('%H:%M:%S')}] {name}: python -m ganlab.train {' '.join(cmd[:-1])}", flush=True)
        start = time.time()
        subprocess.run([sys.executable, "-m", "ganlab.train", *cmd], check=True, cwd=ROOT)
        record = {"variant": name, "seed": args.seed, "overrides": VARIANTS[name], "cpu": processor(),
                  "wall_s": round(time.time() - start, 1),
                  "date": time.strftime("%Y-%m-%d %H:%M"), **figures(run_dir)}
        done.append(record)
        results.parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)
    if done:
        print(table(done))
        if (HERE / "README.md").is_file():
            write_block(HERE / "README.md", "demo", table(done))


if __name__ == "__main__":
    main()
