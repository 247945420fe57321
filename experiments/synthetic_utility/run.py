"""Does synthetic data help? A powered downstream-utility benchmark (issue 12, part 3).

    python experiments/synthetic_utility/run.py --ckpt <cdcgan last.ckpt>   # full size with a given generator
    python experiments/synthetic_utility/run.py                            # full size, trains the generator (10 min)
    python experiments/synthetic_utility/run.py --smoke                    # a pipeline check; writes to /tmp only
    python experiments/synthetic_utility/run.py --alzheimer <root>         # the same chain on a Kaggle-layout copy
    python experiments/synthetic_utility/run.py --ckpt <ckpt> --core NAME  # a new generator, the deciding regimes
    python experiments/synthetic_utility/run.py --ckpt <ckpt> --oracle 7000 --core oracle  # new REAL images instead

Setting: brainsim 64 px, 500 per class, ModerateDemented at 6% (22 training images; the quality ladder's
setting), and a separate, class-balanced real test set of 270 images per class rendered with another
render_seed (`test_data=brainsim`; augment refuses any test image equal to a training image).
Chain, every stage the real CLI: [train cdcgan: cbn + hinge + balanced sampling, 10 min] -> generate a
class-balanced synthetic set large enough for every regime -> augment (all regimes, 5 seeds, paired
differences to the strongest baseline with 95% t-intervals) -> audit of the synthetic set. Full size
writes results/ and the results block of README.md; W&B runs are offline under each stage's dir.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "experiments"))
from readme_block import check_block, write_block  # noqa: E402

RARE = "ModerateDemented"
RARE_RATIOS = [0.1, 0.5, 1.0]  # x the rare class's real training count, added to the rare class
# ratios: x1 adds as many synthetic images as there are real ones, drawn from the class-balanced set (every
# class gets ~N/4): synthetic images in every class, not only the rare one, so "synthetic-looking" cannot
# stand for "rare" the way it can with fill (94% of fill's rare class is synthetic, 0% of the others)
MIX_RATIOS = [1.0]  # x the real training count, drawn from every class
REGIMES = [f"rare_ratios=[{','.join(f'{r:g}' for r in RARE_RATIOS)}]",
           f"ratios=[{','.join(f'{r:g}' for r in MIX_RATIOS)},fill]", "oversampled=true",
           "weighted={ratio: fill, weight: 0.25}", "tstr=true", "logger=none"]
# --core: the regimes that decide whether a new generator helps, against real only (the strongest baseline of
# every full run so far: oversampling lowers rare recall, 0.54 vs 0.73); ~1/3 of the full run's time. Given
# after the preset's augment settings, so that they win over its pretrain_epochs.
CORE = ["rare_ratios=[0.5,1]", "ratios=[fill]", "oversampled=false", "weighted={ratio: fill, weight: 0.25}",
        "tstr=false", "pretrain_epochs=0", "logger=none"]
PRESETS = {
    "full": {
        # seed=1: the data seed (train/val split) of the generator's run, as in experiments/quality (_s1)
        "data": ["data.image_size=64", "data.per_class=500", f"data.imbalance={{{RARE}: 0.06}}", "seed=1"],
        "test": ["test_data=brainsim"],  # 270 per class, rendered apart
        "train": ["data.batch_size=64", "data.balanced_sampling=true", "model.generator.conditioning=cbn",
                  "model/loss=hinge", "trainer.max_epochs=100000", "trainer.max_time=00:00:10:00",
                  "trainer.log_every_n_steps=50", "metrics=none", "logger=csv"],
        "seeds": [0, 1, 2, 3, 4],
        "augment": ["classifier.width=16", "classifier.epochs=8", "pretrain_epochs=3"],
        "audit": ["feature=cnn", "classifier.width=16", "classifier.epochs=8"],
    },
    "smoke": {
        "data": ["data.image_size=32", "data.per_class=40", f"data.imbalance={{{RARE}: 0.3}}", "data.batch_size=8"],
        "test": ["test_data=brainsim", "test_data.per_class=20"],
        "train": ["data.balanced_sampling=true", "model.generator.width=8", "model.discriminator.width=8",
                  "model.generator.conditioning=cbn", "model/loss=hinge", "trainer.max_epochs=1",
                  "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1", "metrics=none", "logger=none"],
        "seeds": [0, 1],
        "augment": ["classifier.width=4", "classifier.epochs=1", "pretrain_epochs=1"],
        "audit": ["feature=cnn", "classifier.width=4", "classifier.epochs=1"],
    },
}
# The Kaggle Alzheimer layout at CPU scale (see --alzheimer and alzheimer_copy.py): 32 px, its own test
# split (a handful of rare images: no power, recorded as such), a 5-min generator.
ALZHEIMER = {"data": ["data=alzheimer", "data.image_size=32", "data.batch_size=32", "seed=1"], "test": [],
             "train": ["data.balanced_sampling=true", "model.generator.conditioning=cbn", "model/loss=hinge",
                       "model.generator.width=32", "model.discriminator.width=32", "trainer.max_epochs=100000",
                       "trainer.max_time=00:00:05:00", "trainer.log_every_n_steps=20", "metrics=none", "logger=csv"],
             "augment": ["classifier.width=8", "classifier.epochs=8", "pretrain_epochs=3"],
             "audit": ["feature=cnn", "classifier.width=8", "classifier.epochs=8"]}


def cli(module: str, args: list[str], log: list[dict]) -> None:
    command = f"python -m {module} " + " ".join(args)
    print(f"\n$ {command}", flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", module, *args], check=True, cwd=ROOT)
    log.append({"command": command, "seconds": round(time.time() - start, 1)})


def cli_parallel(module: str, jobs: list[list[str]], log: list[dict]) -> None:
    """Run one CLI call per argument list at the same time (seeds split over processes)."""
    commands = [f"python -m {module} " + " ".join(a) for a in jobs]
    print("".join(f"\n$ {c} &" for c in commands), flush=True)
    start = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", module, *a], cwd=ROOT) for a in jobs]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"error: {module} failed (exit codes {codes})")
    log.append({"command": " & ".join(commands), "seconds": round(time.time() - start, 1)})


def job_rows(d: Path) -> list[dict]:
    """One augment job's (regime, seed) rows."""
    return [json.loads(line) for line in (d / "rows.jsonl").read_text().splitlines()]


def seed_major(rows: list[dict]) -> list[dict]:
    """Rows ordered by seed, then by each regime's first appearance."""
    order = list(dict.fromkeys(r["regime"] for r in rows))
    return sorted(rows, key=lambda r: (r["seed"], order.index(r["regime"])))


def bench_facts(dirs: list[Path]) -> dict:
    """The augment.json (classes, minority, test counts) of the first job that wrote one."""
    return json.loads(next(d / "augment.json" for d in dirs if (d / "augment.json").is_file()).read_text())


def merged_results(dirs: list[Path]) -> tuple[dict, dict]:
    """(augment.json of the first job, paired results over the rows of all jobs)."""
    from ganlab.utility.paired import utility_results

    bench = bench_facts(dirs)
    rows = seed_major([r for d in dirs for r in job_rows(d)])
    return bench, utility_results(rows, bench["class_names"], bench["minority"], bench["test_counts"])


def recall_table(r: dict) -> list[str]:
    """Markdown lines: each regime's per-class recall, the mean over seeds."""
    names = r["class_names"]
    return (["| regime | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            + ["| " + name + " | " + " | ".join(f"{e['recall'][c]:.3f}" for c in names) + " |"
               for name, e in r["regimes"].items()])


def per_class_needed(counts: dict[str, int]) -> int:
    """Synthetic images per class so that no regime asks for more than the folder holds."""
    largest, rare = max(counts.values()), min(counts.values())
    mixed = math.ceil(max(MIX_RATIOS) * sum(counts.values()) / len(counts))
    return max(largest - rare, math.ceil(max(RARE_RATIOS) * rare), mixed, 1)


def rare_audit(audit_dir: Path, minority: str) -> dict:
    """The audit's fractions for the rare class's synthetic images alone (same held-out yardstick), and
    the classes of their nearest real training images (in the audit's CNN feature space)."""
    summary = json.loads((audit_dir / "audit.json").read_text())
    rows = [r for r in csv.DictReader(open(audit_dir / "audit.csv")) if r["class"] == minority]
    d, n = [float(r["distance"]) for r in rows], max(len(rows), 1)
    nearest = {}
    for r in rows:
        nearest[r["nearest_train_class"]] = nearest.get(r["nearest_train_class"], 0) + 1 / n
    return {"n": len(d), "frac_below_p1": sum(x < summary["holdout_p1"] for x in d) / n,
            "frac_below_p5": sum(x < summary["holdout_p5"] for x in d) / n, "nearest_train_class": nearest}


def results_markdown(r: dict) -> str:
    a, ra, names = r["audit"], r["audit_rare"], r["class_names"]
    tstr = r["regimes"].get("synthetic only", {}).get("recall", {})
    base = r["regimes"][r["baseline"]]["recall"]
    lines = [f"Run: {r['date']}, {r['device']}, {r['wall_minutes']:.1f} min wall in all; generator: {r['generator']}. "
             f"Real training split {r['real_train_counts']}; real test set {r['test_per_class']} "
             f"({r['test_source']}). Synthetic set: {r['synthetic_counts']}.", "",
             f"Classifier (SmallCNN) on the real test set, {r['seeds']} seeds, paired per seed; Δ = regime − "
             f"strongest baseline (**{r['baseline']}**), 95% Student t-interval over seeds:", "",
             r["table"].rstrip(), "",
             "Per-class recall (mean over seeds):", "", *recall_table(r)]
    if tstr:
        lines += ["", "Per-class TSTR (synthetic only) against the baseline: "
                  + ", ".join(f"{c} {tstr[c]:.2f} vs {base[c]:.2f}" for c in names) + "."]
    lines += ["", f"Memorisation audit of the synthetic set ({a['n_synthetic']} images, CNN features, vs {a['n_train']} "
              f"training / {a['n_holdout']} held-out real images): **{a['frac_below_p1']:.1%}** closer to a training "
              f"image than the held-out 1st percentile (≈1% expected), **{a['frac_below_p5']:.1%}** below the 5th "
              f"(≈5%); its {ra['n']} {r['minority']} images alone: {ra['frac_below_p1']:.1%} / "
              f"{ra['frac_below_p5']:.1%}; their nearest real training image is of class "
              + ", ".join(f"{c} {v:.0%}" for c, v in sorted(ra["nearest_train_class"].items(), key=lambda kv: -kv[1]))
              + ".", "",
              "<details><summary>commands</summary>", "", "```"]
    lines += [f"{s['command']}    # {s['seconds']:.0f} s" for s in r["stages"]]
    lines += ["```", "", "</details>"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run into a temporary directory")
    parser.add_argument("--ckpt", help="a cdcgan checkpoint trained on this data setting (default: train one)")
    parser.add_argument("--alzheimer", metavar="ROOT", help="run on a Kaggle-layout Alzheimer copy at ROOT "
                        "at CPU scale; results go to results/alzheimer/")
    parser.add_argument("--jobs", type=int, default=1, help="augment processes in parallel (seeds split over them)")
    parser.add_argument("--core", metavar="NAME", help="only the deciding regimes (real only, rare x0.5 and x1, fill, "
                        "fill w=0.25); results to results/NAME/ and the README block NAME")
    parser.add_argument("--augment", metavar="OVERRIDE", action="append", default=[],
                        help="an extra ganlab.augment override for every regime, e.g. classifier.domain_adversarial=1 "
                        "(repeatable)")
    parser.add_argument("--oracle", metavar="RENDER_SEED", type=int, help="in place of the generator's samples, new "
                        "real brainsim images of --ckpt's data config rendered with this seed (oracle.py): the "
                        "benchmark's ceiling")
    args = parser.parse_args()
    if args.oracle is not None and not args.ckpt:
        parser.error("--oracle needs --ckpt: the data config of that generator's run is the one rendered")
    preset = dict(PRESETS["smoke" if args.smoke else "full"])
    if args.alzheimer:
        preset.update(ALZHEIMER, data=[*ALZHEIMER["data"], f"data.root={Path(args.alzheimer).resolve()}"])
    os.chdir(ROOT)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.smoke:  # nothing in the checkout: run, data and W&B files all in /tmp
        base = Path(tempfile.mkdtemp(prefix="synthetic_utility_"))
        os.environ["GANLAB_DATA_DIR"] = str(base / "data")
    else:
        base = ROOT / "outputs" / "experiments" / f"synthetic_utility_{stamp}"
    block = "alzheimer" if args.alzheimer else args.core or "results"
    results_dir = base / "results" if args.smoke else HERE / "results" / ("" if block == "results" else block)
    if not args.smoke:
        check_block(HERE / "README.md", block)
    data, stages = preset["data"], []
    start = time.time()

    if args.ckpt:
        ckpt = Path(args.ckpt).resolve()
    else:
        data_args = data if args.alzheimer else ["data=brainsim", *data]
        cli("ganlab.train", ["model=cdcgan", *data_args, *preset["train"], "trainer.enable_progress_bar=false",
                             f"hydra.run.dir={base / 'train'}"], stages)
        ckpt = base / "train" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    counts = saved["ganlab"]["data"]["class_counts"]
    synthetic, n_per_class = base / "synthetic_balanced", per_class_needed(counts)
    if args.oracle is not None:
        from oracle import oracle_set

        began = time.time()
        oracle_set(synthetic, ckpt, n_per_class, args.oracle)
        stages.append({"command": f"oracle_set({synthetic}, {ckpt}, per_class={n_per_class}, "
                                  f"render_seed={args.oracle})  # experiments/synthetic_utility/oracle.py",
                       "seconds": round(time.time() - began, 1)})
    else:
        cli("ganlab.generate", [f"ckpt={ckpt}", f"out={synthetic}", f"n_per_class={n_per_class}",
                                "seed=2"], stages)
    seeds = preset["seeds"]
    jobs = [seeds[j::args.jobs] for j in range(min(args.jobs, len(seeds)))]
    dirs = [base / f"augment_{j}" for j in range(len(jobs))]
    cli_parallel("ganlab.augment", [[f"synthetic={synthetic}", f"tstr_synthetic={synthetic}", *data, *preset["test"],
                                     *(preset["augment"] + CORE if args.core else REGIMES + preset["augment"]),
                                     *args.augment,
                                     f"seeds=[{','.join(map(str, js))}]",
                                     f"hydra.run.dir={d}"] for js, d in zip(jobs, dirs)], stages)
    cli("ganlab.audit", [f"synthetic={synthetic}", *data, *preset["audit"], f"hydra.run.dir={base / 'audit'}"], stages)

    from ganlab.utility.paired import markdown as paired_markdown

    bench, paired = merged_results(dirs)
    results = {
        **paired,
        "date": time.strftime("%Y-%m-%d"), "preset": "smoke" if args.smoke else "full",
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "wall_minutes": (time.time() - start) / 60, "stages": stages, "run_dir": str(base),
        "generator": f"{ckpt} ({int(saved['global_step'])} optimiser steps)" if args.oracle is None else
        f"none: ORACLE, new real brainsim images (render_seed={args.oracle}) in place of samples, data config of {ckpt}",
        "real_train_counts": bench["real_train_counts"], "test_source": "test_data=brainsim (render_seed 1000, "
        "rendered apart, no image shared with training)" if preset["test"] else "the data config's test split",
        "synthetic_counts": {c: n_per_class for c in counts},
        "table": paired_markdown(paired),
        "audit": json.loads((base / "audit" / "audit.json").read_text()),
        "audit_rare": rare_audit(base / "audit", paired["minority"]),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in ("audit.json", "audit_gallery.png", "audit_distances.png"):
        shutil.copy(base / "audit" / name, results_dir / name)
    with open(results_dir / "rows.jsonl", "w") as fh:  # one line per (regime, seed), with confusion matrices
        fh.writelines((d / "rows.jsonl").read_text() for d in dirs)
    (results_dir / "results.json").write_text(json.dumps(results, indent=1))
    markdown = results_markdown(results)
    if not args.smoke:
        write_block(HERE / "README.md", block, markdown)
    print("\n" + markdown + f"\n\nresults: {results_dir}")


if __name__ == "__main__":
    main()
