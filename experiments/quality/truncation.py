"""Does the truncation trick make a checkpoint's samples better? The ladder's evaluation at several truncations.

    python experiments/quality/truncation.py <run dir> [--truncations none,2,1.5,1,0.7]

BigGAN's truncation trick (`ganlab.generate truncation=T`: every latent coordinate beyond +-T drawn again) trades
variety for typical images in generators trained for it. Here each truncation is measured as the ladder measures a
run: `ganlab.evaluate` with run.py's evaluation_overrides (1024 samples with the real class mix against every
training image, FD/floor at equal n over five domain-classifier spaces) and `metrics.truncation=T`, on the same
checkpoint. Appends one record per run to results/truncation.jsonl and writes the README's truncation block.
A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from readme_block import check_block, write_block  # noqa: E402
from run import ROOT, evaluation_overrides, fmt, keep, metric, read_records  # noqa: E402

FIGURES = {"fd_ratio_spaces": "metrics/fd_ratio_spaces", "precision": "metrics/precision",
           "recall": "metrics/recall", "coverage": "metrics/coverage", "ssim_div": "ssim/diversity",
           "ssim_div_real": "ssim/diversity_real", "cond_acc": "metrics/cond_acc"}


def parse_truncations(text: str) -> list[float | None]:
    out = []
    for item in text.split(","):
        if item.strip() == "none":
            out.append(None)
            continue
        try:
            value = float(item)
        except ValueError:
            value = 0.0
        if value <= 0:
            sys.exit(f"error: --truncations: {item!r} is neither 'none' nor a positive number")
        out.append(value)
    return out


def measure(run_dir: Path, truncation: float | None) -> dict:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = run_dir / f"eval_truncation_{truncation or 'none'}"
    start = time.time()
    subprocess.run([sys.executable, "-m", "ganlab.evaluate", *evaluation_overrides(ckpt),
                    *([f"metrics.truncation={truncation}"] if truncation else []), f"out={out}"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    report = json.loads((out / "evaluation_last.json").read_text())
    return {"truncation": truncation, **{k: metric(report, name) for k, name in FIGURES.items()},
            "seconds": round(time.time() - start, 1)}


def table(records: list[dict]) -> str:
    lines = ["| run | truncation | FD/floor equal n, 5 spaces | precision | recall | coverage | SSIM div (real) | "
             "cond acc |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        for m in r["measures"]:
            lines.append(f"| {Path(r['run_dir']).name} | {m['truncation'] or 'none'} | "
                         f"{fmt(m['fd_ratio_spaces'], '.1f')}x | {fmt(m['precision'], '.2f')} | "
                         f"{fmt(m['recall'], '.2f')} | {fmt(m['coverage'], '.2f')} | "
                         f"{fmt(m['ssim_div'], '.3f')} ({fmt(m['ssim_div_real'], '.3f')}) | "
                         f"{fmt(m['cond_acc'], '.2f')} |")
    lines += ["", "`python experiments/quality/truncation.py <run dir> --truncations ...` (results/truncation.jsonl); "
              "the EMA generator of the run's last.ckpt, the ladder's evaluation with `metrics.truncation`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--truncations", default="none,2,1.5,1,0.7")
    args = parser.parse_args()
    truncations = parse_truncations(args.truncations)
    readme, results = HERE / "README.md", HERE / "results" / "truncation.jsonl"
    check_block(readme, "truncation")
    missing = [str(r) for r in args.runs if not (r / "checkpoints" / "last.ckpt").is_file()]
    if missing:
        sys.exit(f"error: no checkpoints/last.ckpt in {', '.join(missing)}")
    records = read_records(results)
    for run_dir in args.runs:
        measures = [measure(run_dir, t) for t in truncations]
        keep({"run_dir": str(run_dir.resolve()), "date": time.strftime("%Y-%m-%d %H:%M"), "measures": measures},
             records, results)
    text = table(records)
    print(text)
    write_block(readme, "truncation", text)


if __name__ == "__main__":
    main()
