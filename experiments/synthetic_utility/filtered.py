"""Judge-filtered synthetic images in the utility benchmark: does dropping the samples that drifted help?

    python experiments/synthetic_utility/filtered.py --ckpt <cdcgan last.ckpt> [--min-prob 0.5] [--jobs 2]
    python experiments/synthetic_utility/filtered.py --ckpt <cdcgan last.ckpt> --novelty-percentile 5 [--no-plain]
    python experiments/synthetic_utility/filtered.py --smoke     # a pipeline check; writes to /tmp only

run.py's setting, real test set, classifier and seeds (its PRESETS), so the real-only rows here are
run.py's (same seeds, same numbers). Stages, each the real CLI: generate two fill sets from the same
checkpoint and seed, one plain and one with `filter_min_prob=P` (the rare class topped up to the largest
class with samples that a classifier trained on the run's real training split puts in their own class
with p >= P; with --novelty-percentile Q also at least as far from the nearest real training image as the
held-out real images' Q-th percentile) -> augment on each (real only and fill on both; on the filtered set also fill with synthetic
weight 0.25 and rare x1) -> audit of both sets. The two augment runs share their real-only rows, which
must agree seed by seed (checked). Full size writes results/filtered/ and the `filtered` block of
README.md (with --novelty-percentile: results/filtered_novel/ and the `filtered_novel` block). --no-plain
skips the plain set (half the time) when an earlier run of the same checkpoint and seed holds its rows.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from run import (HERE, PRESETS, ROOT, bench_facts, cli, cli_parallel, job_rows, rare_audit, recall_table, seed_major,
                 write_block)

COMMON = ["real_only=true", "oversampled=false", "tstr=false", "pretrain_epochs=0", "ratios=[fill]", "logger=none"]
REGIMES = {"plain": [*COMMON, "rare_ratios=[]", "weighted=null"],
           "filtered": [*COMMON, "rare_ratios=[1]", "weighted={ratio: fill, weight: 0.25}"]}
BASELINE = "real only"


def merged(dirs: dict[str, list[Path]]) -> tuple[dict, list[dict], float]:
    """(augment.json facts, rows with the filtered set's regimes renamed "... (filtered)", the largest
    difference in balanced accuracy between the two runs' real-only rows of one seed)."""
    rows, base = [], {}
    for kind, ds in dirs.items():
        for d in ds:
            for r in job_rows(d):
                if r["regime"] == BASELINE:
                    base.setdefault(r["seed"], []).append(r["balanced_accuracy"])
                    if len(base[r["seed"]]) > 1:
                        continue
                elif kind == "filtered":
                    r["regime"] += " (filtered)"
                rows.append(r)
    gap = max((max(v) - min(v) for v in base.values()), default=0.0)
    return bench_facts([d for ds in dirs.values() for d in ds]), seed_major(rows), gap


def bar(min_distance) -> str:
    """generate.json's novelty bar: one number (before session 10) or one per class."""
    if isinstance(min_distance, dict):
        return "per class " + ", ".join(f"{c} {v:.4f}" for c, v in min_distance.items())
    return f"{min_distance:.4f}"


def markdown(r: dict) -> str:
    from ganlab.utility.paired import markdown as paired_markdown

    f = r["filter"]
    lines = [f"Run: {r['date']}, {r['device']}, {r['wall_minutes']:.1f} min wall; generator: {r['generator']}; "
             + " and ".join(f"{k}={f[v]}" for k, v in [("filter_min_prob", "min_prob"),
                                                        ("filter_novelty_percentile", "novelty_percentile")]
                            if f.get(v) is not None)
             + (f" (nearest-training-image distance >= {bar(f['min_distance'])})" if f.get("min_distance") else "")
             + ": "
             + ", ".join(f"{c} {f['passed'][c]} of {f['drawn'][c]} draws passed ({f['passed'][c] / f['drawn'][c]:.0%})"
                         if "passed" in f else f"{c} kept {r['synthetic_counts'][c]} of {f['drawn'][c]} draws"
                         for c in f["acceptance"])
             + (f". Synthetic sets (plain and filtered): {r['synthetic_counts']}. The two augment runs' real-only "
                f"rows differ by at most {r['baseline_rows_max_gap']:.4f} in balanced accuracy (same seed, same rows)."
                if "plain" in r["audit"] else f". Synthetic set: {r['synthetic_counts']}; no plain set in this run "
                "(--no-plain: the plain fill of the same checkpoint and seed is in the `filtered` block)."),
             "", f"Paired per seed ({r['seeds']} seeds) against **{r['baseline']}**, 95% t-intervals:", "",
             paired_markdown(r).rstrip(), "", "Per-class recall (mean over seeds):", "", *recall_table(r), ""]
    for kind, ra in r["audit_rare"].items():
        nearest = sorted(ra["nearest_train_class"].items(), key=lambda kv: -kv[1])
        lines += [f"Audit of the {kind} set's {ra['n']} {r['minority']} images: {ra['frac_below_p1']:.1%} below the "
                  f"held-out 1st percentile (≈1% expected), {ra['frac_below_p5']:.1%} below the 5th (≈5%); nearest "
                  "real training image of class " + ", ".join(f"{c} {v:.0%}" for c, v in nearest) + ".", ""]
    lines += ["<details><summary>commands</summary>", "", "```"]
    lines += [f"{s['command']}    # {s['seconds']:.0f} s" for s in r["stages"]] + ["```", "", "</details>"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="a cdcgan checkpoint trained on run.py's setting (required unless --smoke)")
    parser.add_argument("--min-prob", type=float, default=0.5)
    parser.add_argument("--novelty-percentile", type=float, help="also reject samples closer to a real training "
                        "image than this percentile of the held-out real images (e.g. 5)")
    parser.add_argument("--jobs", type=int, default=2, help="augment processes per synthetic set (seeds split)")
    parser.add_argument("--no-plain", action="store_true", help="only the filtered set")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    preset = PRESETS["smoke" if args.smoke else "full"]
    os.chdir(ROOT)
    start, stages = time.time(), []
    if args.smoke:
        base = Path(tempfile.mkdtemp(prefix="synthetic_filtered_"))
        os.environ["GANLAB_DATA_DIR"] = str(base / "data")
        cli("ganlab.train", ["model=cdcgan", "data=brainsim", *preset["data"], *preset["train"],
                             "trainer.enable_progress_bar=false", f"hydra.run.dir={base / 'train'}"], stages)
        ckpt = base / "train" / "checkpoints" / "last.ckpt"
    elif args.ckpt:
        ckpt = Path(args.ckpt).resolve()
        base = ROOT / "outputs" / "experiments" / f"synthetic_filtered_{time.strftime('%Y%m%d-%H%M%S')}"
    else:
        raise SystemExit("error: --ckpt <cdcgan last.ckpt> is required (or --smoke)")
    min_prob = 0.01 if args.smoke else args.min_prob  # the smoke run's 1-epoch generator draws noise
    novelty = args.novelty_percentile or (1 if args.smoke else None)  # the smoke run checks both filters
    rules = [f"filter_min_prob={min_prob}", *([f"filter_novelty_percentile={novelty}"] if novelty else [])]
    folders = {"plain": base / "synthetic_fill", "filtered": base / "synthetic_filtered"}
    if args.no_plain:
        del folders["plain"]
    for kind, folder in folders.items():
        cli("ganlab.generate", [f"ckpt={ckpt}", f"out={folder}", "balance=fill", "seed=2",
                                *(rules if kind == "filtered" else [])], stages)
    seeds = preset["seeds"]
    split = [seeds[j::args.jobs] for j in range(min(args.jobs, len(seeds)))]
    dirs = {kind: [base / f"augment_{kind}_{j}" for j in range(len(split))] for kind in folders}
    cli_parallel("ganlab.augment", [[f"synthetic={folders[kind]}", *preset["data"], *preset["test"],
                                     *preset["augment"], *REGIMES[kind], f"seeds=[{','.join(map(str, js))}]",
                                     f"hydra.run.dir={d}"] for kind in folders for js, d in zip(split, dirs[kind])],
                 stages)
    for kind, folder in folders.items():
        cli("ganlab.audit", [f"synthetic={folder}", *preset["data"], *preset["audit"],
                             f"hydra.run.dir={base / f'audit_{kind}'}"], stages)

    from ganlab.utility.paired import utility_results

    bench, rows, gap = merged(dirs)
    paired = utility_results(rows, bench["class_names"], bench["minority"], bench["test_counts"])
    info = json.loads((folders["filtered"] / "generate.json").read_text())
    steps = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])
    results = {**paired, "date": time.strftime("%Y-%m-%d"),
               "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
               "wall_minutes": (time.time() - start) / 60, "stages": stages, "run_dir": str(base),
               "generator": f"{ckpt} ({steps} optimiser steps)", "filter": info["filter"],
               "synthetic_counts": info["counts"], "baseline_rows_max_gap": gap,
               "audit": {kind: json.loads((base / f"audit_{kind}" / "audit.json").read_text()) for kind in folders},
               "audit_rare": {kind: rare_audit(base / f"audit_{kind}", paired["minority"]) for kind in folders}}
    name = "filtered_novel" if args.novelty_percentile else "filtered"
    results_dir = base / "results" if args.smoke else HERE / "results" / name
    results_dir.mkdir(parents=True, exist_ok=True)
    for kind in folders:
        shutil.copy(base / f"audit_{kind}" / "audit_gallery.png", results_dir / f"audit_gallery_{kind}.png")
    with open(results_dir / "rows.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    (results_dir / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    if not args.smoke:
        write_block(HERE / "README.md", name, text)
    print("\n" + text + f"\n\nresults: {results_dir}")


if __name__ == "__main__":
    main()
