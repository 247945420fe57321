"""A run's memorisation audit read against new real images of its data: are the rare class's samples nearer
their few training images than new real images of the class are?

    python experiments/quality/audit_reference.py <run dirs>   # audit new real images, compare, record
    python experiments/quality/audit_reference.py              # the README block from results/

Runs: the sentence's (sentence.py, on the Kaggle-layout copy) and the preset's (budget.py / target.py, brainsim),
any folder with checkpoints/last.ckpt and the ladder's audit/. The audit's yardstick is the data's held-out
split (the copy's: 160/112/45/3 images), pooled over its classes: it cannot say where a sample of a 12-image
class should lie, and its per-class data-copying test has 3 rare held-out images, too few to flag anything
(z >= -2.95). Both data sets are brainsim, so new real images of every class can be drawn (oracle.py: 128 per
class; for the copy, stored as the copy stores its own). They go through the same audit as the samples
(same data, same seed, so the same classifier features and percentiles; checked), and per class the samples
are compared with them: the share below the held-out 1st / 5th percentile for each, and the data-copying test
with the new real images as its held-out set (Mann-Whitney z of the class's sample distances against the new
images' distances: about N(0, 1) for a generator that samples the class, strongly negative when its samples
sit nearer the training images than new images of the class do; `closer`: the share of (sample, new image)
pairs where the sample is the nearer, 0.5 without copying). In pixels too, where the run has a pixel audit.
A benchmark, not a test: results/audit_reference.jsonl and the README's audit_reference block.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "synthetic_utility")]
from readme_block import check_block, write_block  # noqa: E402
from run import RARE, ROOT, fmt, keep, read_records  # noqa: E402

from ganlab.data.brainsim import CLASS_NAMES as CLASSES  # noqa: E402  (both data sets are brainsim's classes)

PER_CLASS, RENDER_SEED = 128, 7000  # the audit's 512 samples are 128 per class
FEATURES = {"cnn": "audit", "pixels": "audit_pixels"}  # feature: the run's audit folder
RESULTS = HERE / "results" / "audit_reference.jsonl"


def read_audit(folder: Path) -> tuple[dict, list[tuple[str, float]]]:
    """(audit.json, [(class, distance) per image of audit.csv])."""
    rows = [(r["class"], float(r["distance"])) for r in csv.DictReader(open(folder / "audit.csv"))]
    return json.loads((folder / "audit.json").read_text()), rows


def new_real_set(out_root: Path, ckpt: Path, data: dict) -> Path:
    """New real images of the run's data, with its data config `data` (the audit splits the real data by it:
    data.seed follows the run's seed), drawn once per data config and reused by every run that has it."""
    from oracle import oracle_set

    config = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:8]
    name = Path(data["root"]).name if data.get("root") else data["_target_"].rsplit(".", 1)[-1]
    folder = out_root / f"new_real_{name}_r{RENDER_SEED}_{config}"
    if not folder.is_dir():
        oracle_set(folder, ckpt, PER_CLASS, RENDER_SEED)
    return folder


def reference_audit(new_real: Path, feature: str, seed: int, out_root: Path) -> Path:
    """`ganlab.audit` of the new real images with the run's seed and feature (run once per seed and feature)."""
    folder = out_root / f"{new_real.name}_audit_{feature}_s{seed}"
    if not (folder / "audit.json").is_file():
        c2st = ["c2st=true"] if feature == "cnn" else []  # as the runs' CNN audits (run.py evaluate_run)
        subprocess.run([sys.executable, "-m", "ganlab.audit", f"synthetic={new_real}", f"feature={feature}",
                        *c2st, f"seed={seed}", f"hydra.run.dir={folder}"], check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
    return folder


def compare(run_audit: Path, ref_audit: Path) -> dict:
    """Per class: the samples' and the new real images' shares below the held-out percentiles, and the
    data-copying test of the samples against the new real images. Refuses audits in different feature spaces."""
    import torch

    from ganlab.audit import copying_test

    run, samples = read_audit(run_audit)
    ref, new = read_audit(ref_audit)
    for key in ("holdout_p1", "holdout_p5", "n_train", "n_holdout", "feature"):
        same = abs(run[key] - ref[key]) <= 1e-6 if isinstance(run[key], float) else run[key] == ref[key]
        if not same:
            raise SystemExit(f"error: {run_audit} and {ref_audit} differ in {key} ({run[key]} vs {ref[key]}): "
                             "not the same feature space, so their distances cannot be compared")

    def tensors(rows):
        return (torch.tensor([d for _, d in rows]), torch.tensor([CLASSES.index(c) for c, _ in rows]))

    (d_syn, syn_labels), (d_new, new_labels) = tensors(samples), tensors(new)
    test = copying_test(d_syn, syn_labels, d_new, new_labels, syn_labels, CLASSES)["per_class"]

    def below(rows, name, p):
        values = [d for c, d in rows if c == name or name is None]
        return sum(d < ref[p] for d in values) / len(values)

    per_class = {name: {"samples_p1": below(samples, name, "holdout_p1"), "samples_p5": below(samples, name, "holdout_p5"),
                        "new_p1": below(new, name, "holdout_p1"), "new_p5": below(new, name, "holdout_p5"),
                        "z": test[name]["z"], "closer": test[name]["closer"],
                        "c2st_samples": (run.get("c2st") or {}).get(name), "c2st_new": (ref.get("c2st") or {}).get(name)}
                 for name in CLASSES}
    return {"feature": run["feature"], "per_class": per_class,
            "pooled": {k: below(rows, None, p) for k, rows, p in
                       (("samples_p1", samples, "holdout_p1"), ("samples_p5", samples, "holdout_p5"),
                        ("new_p1", new, "holdout_p1"), ("new_p5", new, "holdout_p5"))}}


def measure(run_dir: Path, out_root: Path) -> list[dict]:
    config = yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
    seed, ckpt = int(config["seed"]), run_dir / "checkpoints" / "last.ckpt"
    new_real = new_real_set(out_root, ckpt, config["data"])
    records = []
    for feature, sub in FEATURES.items():
        if (run_dir / sub / "audit.csv").is_file():
            began = time.time()
            ref = reference_audit(new_real, feature, seed, out_root)
            records.append({"run_dir": str(run_dir), "run": run_dir.name, "seed": seed, "new_real": str(new_real),
                            "reference_audit": str(ref), "date": time.strftime("%Y-%m-%d %H:%M"),
                            "seconds": round(time.time() - began, 1), **compare(run_dir / sub, ref)})
    return records


def table(records: list[dict]) -> str:
    latest = {(r["run"], r["feature"]): r for r in records}
    lines = ["| run | feature | rare: samples / new real <p1 | rare <p5 | rare z (closer) | rare C2ST samples / new | "
             "other classes' z | pooled samples / new real <p1 | pooled <p5 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(latest.values(), key=lambda r: (r["feature"], r["run"])):
        rare, pooled = r["per_class"][RARE], r["pooled"]
        others = " / ".join(fmt(r["per_class"][c]["z"], "+.1f") for c in CLASSES if c != RARE)
        lines.append(f"| {r['run'].removeprefix('sentence_')} | {r['feature']} | {fmt(rare['samples_p1'], '.0%')} / "
                     f"{fmt(rare['new_p1'], '.0%')} | {fmt(rare['samples_p5'], '.0%')} / {fmt(rare['new_p5'], '.0%')} | "
                     f"{fmt(rare['z'], '+.1f')} ({fmt(rare['closer'], '.2f')}) | {fmt(rare['c2st_samples'], '.2f')} / "
                     f"{fmt(rare['c2st_new'], '.2f')} | {others} | {fmt(pooled['samples_p1'], '.1%')} / "
                     f"{fmt(pooled['new_p1'], '.1%')} | {fmt(pooled['samples_p5'], '.1%')} / "
                     f"{fmt(pooled['new_p5'], '.1%')} |")
    lines += ["", f"Runs: the sentence's (`sentence_<arm>_s<seed>_t<budget>`, the sentence block above: the Kaggle-"
              "layout copy, 12 rare training images) and the preset's (`budget_preset_s<seed>[_t<budget>]`, brainsim, "
              f"22), each against {PER_CLASS} new real images per class of its data (render seed {RENDER_SEED}; for "
              "the copy, JPEG as the copy) audited with the run's seed and data config. `<p1` / `<p5`: share below "
              "the held-out 1st / 5th percentile (the data's test split, pooled); z: the data-copying test of the "
              f"class's {PER_CLASS} samples against its {PER_CLASS} new real "
              "images (below -3 flags copying; closer: share of pairs where the sample is nearer its training image, "
              "0.5 without copying); other classes' z: NonDemented / VeryMild / Mild. C2ST: a classifier telling the "
              "class's images from its training images (0.5: it cannot). `python experiments/quality/"
              "audit_reference.py <run dirs>` (results/audit_reference.jsonl)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run folders (with audit/ and checkpoints/last.ckpt)")
    args = parser.parse_args()
    readme = HERE / "README.md"
    check_block(readme, "audit_reference")
    out_root = ROOT / "outputs" / "experiments" / "quality" / "audit_reference"
    records = read_records(RESULTS)
    for run_dir in args.runs:
        if not (run_dir / "audit" / "audit.json").is_file():
            sys.exit(f"error: {run_dir}: no audit/audit.json (a run of experiments/quality/sentence.py?)")
    for run_dir in args.runs:
        for record in measure(run_dir.resolve(), out_root):
            keep(record, records, RESULTS)
            print(f"[{time.strftime('%H:%M:%S')}] {run_dir.name} {record['feature']}: rare z "
                  f"{record['per_class'][RARE]['z']:+.1f}", flush=True)
    text = table(records)
    print(text)
    write_block(readme, "audit_reference", text)


if __name__ == "__main__":
    main()
