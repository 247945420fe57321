"""Does synthetic data help? The whole chain on brainsim with one class made rare (ModerateDemented 7%).

    python experiments/synthetic_utility/run.py            # full size: ~5 min on 2 quiet CPU cores (measured)
    python experiments/synthetic_utility/run.py --smoke    # a pipeline check; writes to /tmp only

train cdcgan (ganlab.train) -> generate balance=fill (the augmentation set) and a class-balanced set
for the synthetic-only regime (ganlab.generate) -> downstream-utility benchmark (ganlab.augment) ->
memorisation audit of the augmentation set (ganlab.audit). Every stage is the real CLI. Full size
writes results/ and the results block of README.md; W&B runs are offline under each stage's dir.
"""
from __future__ import annotations

import argparse
import json
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
from readme_block import write_block  # noqa: E402

PRESETS = {
    "full": {
        "data": ["data.image_size=32", "data.per_class=600", "data.imbalance={ModerateDemented: 0.07}",
                 "data.test_fraction=0.25"],
        "train": ["data.batch_size=32", "data.balanced_sampling=true", "model.generator.width=32",
                  "model.discriminator.width=32", "model.generator.conditioning=cbn", "model/loss=hinge",
                  "trainer.max_epochs=30", "trainer.max_time=00:00:05:00",
                  "trainer.log_every_n_steps=20", "metrics=none"],
        "augment": ["ratios=[0.1,fill]", "seeds=[0,1,2]", "classifier.width=8", "classifier.epochs=10"],
        "audit": ["feature=cnn", "classifier.width=8", "classifier.epochs=8"],
    },
    "smoke": {
        "data": ["data.image_size=32", "data.per_class=40", "data.imbalance={ModerateDemented: 0.2}",
                 "data.test_fraction=0.25"],
        "train": ["data.batch_size=8", "data.balanced_sampling=true", "model.generator.width=8",
                  "model.discriminator.width=8", "trainer.max_epochs=1", "trainer.max_time=00:00:05:00",
                  "trainer.limit_train_batches=3",
                  "trainer.log_every_n_steps=1", "metrics=none"],
        "augment": ["ratios=[0.1,fill]", "seeds=[0,1]", "classifier.width=4", "classifier.epochs=1"],
        "audit": ["feature=cnn", "classifier.width=4", "classifier.epochs=1"],
    },
}


def cli(module: str, args: list[str], log: list[dict]) -> None:
    command = f"python -m {module} " + " ".join(args)
    print(f"\n$ {command}", flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", module, *args], check=True, cwd=ROOT)
    log.append({"command": command, "seconds": round(time.time() - start, 1)})


def results_markdown(r: dict) -> str:
    a = r["audit"]
    lines = [f"Run: {r['date']}, {r['device']}, {r['wall_minutes']:.1f} min wall in all "
             f"(GAN training {r['stages'][0]['seconds'] / 60:.1f} min, {r['gan_steps']} optimiser steps). "
             f"Real training split {r['real_train_counts']}; real test split {r['test_counts']}.", "",
             f"Classifier on the real test split, mean ± std over {r['seeds']} seeds "
             f"(minority class: {r['minority']}):", "", r["table"].rstrip(), "",
             f"Memorisation audit of the augmentation set ({a['n_synthetic']} images, CNN features, "
             f"vs {a['n_train']} training / {a['n_holdout']} held-out real images): "
             f"**{a['frac_below_p1']:.1%}** closer to a training image than the held-out 1st percentile "
             f"(≈1% expected without copying), **{a['frac_below_p5']:.1%}** below the 5th (≈5%), "
             f"{a['n_exact_copies']} exact copies.", "",
             "![utility](results/utility.png)", "", "![closest pairs](results/audit_gallery.png)", "",
             "![distances](results/audit_distances.png)", "", "![samples](results/samples.png)", "",
             "<details><summary>commands</summary>", "", "```"]
    lines += [f"{s['command']}    # {s['seconds']:.0f} s" for s in r["stages"]]
    lines += ["```", "", "</details>"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run into a temporary directory")
    args = parser.parse_args()
    preset = PRESETS["smoke" if args.smoke else "full"]
    os.chdir(ROOT)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if args.smoke:  # nothing in the checkout: run, data and W&B files all in /tmp
        base = Path(tempfile.mkdtemp(prefix="synthetic_utility_"))
        os.environ["GANLAB_DATA_DIR"] = str(base / "data")
    else:
        base = ROOT / "outputs" / "experiments" / f"synthetic_utility_{stamp}"
    results_dir = base / "results" if args.smoke else HERE / "results"
    data, group, stages = preset["data"], f"group=synthetic_utility_{stamp}", []
    start = time.time()

    cli("ganlab.train", ["model=cdcgan", "data=brainsim", *data, *preset["train"], group,
                         "trainer.enable_progress_bar=false", f"hydra.run.dir={base / 'train'}"], stages)
    ckpt = base / "train" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    counts = saved["ganlab"]["data"]["class_counts"]
    cli("ganlab.generate", [f"ckpt={ckpt}", f"out={base / 'synthetic_fill'}", "balance=fill", "seed=1"], stages)
    cli("ganlab.generate", [f"ckpt={ckpt}", f"out={base / 'synthetic_balanced'}",
                            f"n_per_class={max(counts.values())}", "seed=2"], stages)
    cli("ganlab.augment", [f"synthetic={base / 'synthetic_fill'}", f"tstr_synthetic={base / 'synthetic_balanced'}",
                           *data, *preset["augment"], group, f"hydra.run.dir={base / 'augment'}"], stages)
    cli("ganlab.audit", [f"synthetic={base / 'synthetic_fill'}", *data, *preset["audit"],
                         f"hydra.run.dir={base / 'audit'}"], stages)

    bench = json.loads((base / "augment" / "augment.json").read_text())
    results = {
        "date": time.strftime("%Y-%m-%d"), "preset": "smoke" if args.smoke else "full",
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "wall_minutes": (time.time() - start) / 60, "stages": stages, "run_dir": str(base),
        "gan_steps": int(saved["global_step"]), "real_train_counts": bench["real_train_counts"],
        "test_counts": bench.get("test_counts"), "minority": bench["minority"],
        "seeds": bench["summary"][0]["seeds"], "summary": bench["summary"],
        "table": (base / "augment" / "utility.md").read_text(),
        "audit": json.loads((base / "audit" / "audit.json").read_text()),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    copies = {"augment": ["utility.md", "utility.csv", "runs.csv", "utility.png"],
              "audit": ["audit.json", "audit_gallery.png", "audit_distances.png"]}
    for stage, names in copies.items():
        for name in names:
            shutil.copy(base / stage / name, results_dir / name)
    shutil.copy(base / "train" / "samples" / "final.png", results_dir / "samples.png")
    (results_dir / "results.json").write_text(json.dumps(results, indent=1))
    markdown = results_markdown(results)
    if not args.smoke:
        write_block(HERE / "README.md", "results", markdown)
    print("\n" + markdown + f"\n\nresults: {results_dir}")


if __name__ == "__main__":
    main()
