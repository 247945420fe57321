"""Is best.ckpt (the state at the run's best in-training evaluation) better than last.ckpt?

    python experiments/quality/best_vs_last.py --minutes 30 --seeds 2,3     # train, evaluate both, record
    python experiments/quality/best_vs_last.py                              # the README table from results/
    python experiments/quality/best_vs_last.py --smoke                      # seconds; tiny networks, a temp dir

Each seed trains the preset (`experiment=brainsim_quality`) for --minutes with the in-training metrics every
--every epochs; the metrics callback keeps best.ckpt at the lowest in-training domain FD (512 samples, the
feature space of domain classifier seed 0). Both checkpoints are then measured by the ladder's evaluation
(run.py `evaluate_run`: 1024 other samples, FD/floor at equal n averaged over the spaces of classifier seeds
0-4 — four of them spaces the selection never saw — recall, coverage, SSIM diversity, per-class figures and
the audit). The record also keeps the in-training curve. A diagnosis, not a test: results/best_vs_last.jsonl
and the README's best_vs_last block.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from readme_block import check_block, write_block  # noqa: E402
from run import QUIET, RARE, ROOT, SMOKE, evaluate_run, fmt, images_shown, keep, places, processor  # noqa: E402
from target import PRESET  # noqa: E402


def curve(run_dir: Path) -> list[list[float]]:
    """[epoch, in-training FD/floor at equal n] of every evaluation."""
    out = []
    for line in (run_dir / "metrics_history.jsonl").read_text().splitlines():
        r = json.loads(line)
        ratio = r.get("metrics", {}).get("metrics/fd_domain_ratio", {}).get("value")
        if r["event"] == "evaluation" and ratio is not None:
            out.append([r["epoch"], round(ratio, 3)])
    return out


def run(seed: int, args, out_root: Path) -> dict:
    run_dir = out_root / f"best_vs_last_{args.minutes}min_s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted earlier attempt
    extra = SMOKE + ["data.per_class=60"] if args.smoke else []
    limit = "00:00:00:20" if args.smoke else f"00:00:{args.minutes:02d}:00"
    train = [PRESET, *QUIET, *extra, f"trainer.max_time={limit}", f"metrics.every_n_epochs={args.every}",
             f"seed={seed}", f"hydra.run.dir={run_dir}"]
    print(f"[{time.strftime('%H:%M:%S')}] python -m ganlab.train {' '.join(train[:-1])}", flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", "ganlab.train", *train], check=True, cwd=ROOT)
    wall = time.time() - start
    figures = evaluate_run(run_dir, seed, [o for o in extra if o.startswith("data.")], args.smoke)
    return {"seed": seed, "minutes": args.minutes, "every": args.every, "cpu": processor(), "wall_s": round(wall, 1),
            "kimg": round(images_shown(run_dir) / 1000, 1), "date": time.strftime("%Y-%m-%d %H:%M"),
            "run_dir": str(run_dir), "curve": curve(run_dir), **figures}


def table(records: list[dict]) -> str:
    def both(r, key, spec):
        return f"{fmt(r.get(key), spec)} → {fmt(r['best'].get(key), spec)}"

    lines = ["| run | kimg last / best | FD/floor equal n, 5 spaces: last → best | (space 0, 1024 vs 306) | recall | "
             "coverage | SSIM div (real) | audit <p1 | audit <p5 | rare cond acc | rare KID | in-training FD/floor "
             "(epoch: value) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if not r.get("best"):
            continue
        b = r["best"]
        lines.append(
            f"| {r['minutes']} min, seed {r['seed']} | {fmt(r['kimg'], '.0f')} / {fmt(b['kimg'], '.0f')} | "
            f"{both(r, 'fd_ratio_spaces', '.1f')} | {both(r, 'fd_ratio', '.1f')} | {both(r, 'recall', '.2f')} | "
            f"{both(r, 'coverage', '.2f')} | {both(r, 'ssim_div', '.3f')} ({fmt(r.get('ssim_div_real'), '.3f')}) | "
            f"{both(r, 'audit_p1', '.1%')} | {both(r, 'audit_p5', '.1%')} | "
            f"{fmt(r['cond_acc_class'].get(RARE), '.2f')} → {fmt(b['cond_acc_class'].get(RARE), '.2f')} | "
            f"{fmt(r['kid_class'].get(RARE), '.2f')} → {fmt(b['kid_class'].get(RARE), '.2f')} | "
            f"{', '.join(f'{e}: {v:.1f}' for e, v in r['curve'])} |")
    cpus = sorted({r.get("cpu") or "?" for r in records})
    lines += ["", f"The preset trained for the minutes shown on 2 cores of {' / '.join(cpus)}, in-training metrics every "
              f"{'/'.join(sorted({str(r['every']) for r in records}))} epochs; best.ckpt is the lowest in-training domain FD "
              "(512 samples, classifier seed 0). Both checkpoints measured by the ladder's evaluation. `python "
              "experiments/quality/best_vs_last.py --minutes M --seeds S` (results/best_vs_last.jsonl)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="")
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--every", type=int, default=10, help="in-training evaluation every k epochs")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.every, args.seeds = 1, args.seeds or "1"
    out_root, results, records = places(args.smoke, "best_vs_last.jsonl")
    readme = HERE / "README.md"
    if not args.smoke:
        check_block(readme, "best_vs_last")
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        keep(run(seed, args, out_root), records, results)
    text = table(records)
    print(text)
    if not args.smoke:
        write_block(readme, "best_vs_last", text)


if __name__ == "__main__":
    main()
