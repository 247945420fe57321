"""Which averaging of the generator should the preset be sampled from? Several on one training run.

The preset's EMA is set as `model.ema_decay=0.999`, but that decay never takes effect: the warm-up
min(decay, (1 + n) / (10 + n)) stays below 0.999 until the 8,990th batch, and the preset trains ~2,300 in its 10
minutes. So it samples a power-function average whose window grows with the run (step t weighted about t ** 8,
EDM2's sigma_rel ~0.09: half the weight on the last ~7% of the run, ~22 kimg of 300), not a 89-kimg EMA.
Whether a shorter or longer window draws better is measured here. One run per averaging would compare different
trajectories, whose seed-to-seed spread is larger than most effects. Instead the preset trains as typed plus
`callbacks.ema_tracks` (ganlab/callbacks/ema_tracks.py): more averages of the same generator, saved in its
checkpoint. Each track is evaluated as the run's EMA generator, exactly as the ladder evaluates a run (run.py
`evaluate_run`: five-space FD/floor at equal n, recall, coverage, diversity, per-class figures, the audit), and
read against the model's own EMA of the same run.

    python experiments/quality/ema_length.py --seeds 1,2,3     # train (budget.py variant "tracks"), evaluate
    python experiments/quality/ema_length.py --seeds 4 --tracks tracks_short   # shorter averages
    python experiments/quality/ema_length.py                   # the README block from results/ema_length.jsonl

A benchmark, not a test: results/ema_length.jsonl (one record per run and track); the training run's own
record (the model's EMA) goes to results/budget.jsonl as variant "tracks".
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from statistics import geometric_mean

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
import budget  # noqa: E402
from readme_block import check_block, write_block  # noqa: E402
from run import RARE, evaluate_run, fmt, keep, places, processor, with_ema_generator  # noqa: E402
from target import preset_sha  # noqa: E402
from ganlab.callbacks.ema_tracks import EMATracks  # noqa: E402
from ganlab.checkpoint import read_checkpoint  # noqa: E402

TRACKS_KEY = EMATracks.__qualname__  # Lightning's key for the callback's state in checkpoint["callbacks"]
MODEL = "model"  # the track name of the model's own EMA in the table


def track_order(name: str) -> tuple:
    """The model's EMA first, then constant half-lives from short to long, then power-function widths."""
    if name == MODEL:
        return (0, 0.0)
    if name.endswith("kimg"):
        return (1, float(name[:-4]))
    return (2, float(name.removeprefix("sigma")))


def track_checkpoint(ckpt: dict, name: str) -> dict:
    """`ckpt` with the EMA generator replaced by track `name` (and the tracks dropped: one generator per file)."""
    tracks = ckpt["callbacks"][TRACKS_KEY]["tracks"]
    if name not in tracks:
        raise KeyError(f"no EMA track {name!r} in this checkpoint (it has {sorted(tracks)})")
    callbacks = {k: v for k, v in ckpt["callbacks"].items() if k != TRACKS_KEY}
    return {**with_ema_generator(ckpt, tracks[name]), "callbacks": callbacks}


def evaluate_tracks(run_dir: Path, seed: int, smoke: bool) -> list[dict]:
    """Each track of the run's last.ckpt, written as checkpoints/ema<half-life>.ckpt and evaluated like the run."""
    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    data = budget.SMOKE_DATA if smoke else []
    out = []
    for name in ckpt["callbacks"][TRACKS_KEY]["tracks"]:
        torch.save(track_checkpoint(ckpt, name), run_dir / "checkpoints" / f"ema{name}.ckpt")
        figures = evaluate_run(run_dir, seed, data, smoke, ckpt=f"ema{name}")
        out.append({"seed": seed, "track": name,
                    "preset_sha": preset_sha(), "cpu": processor(), "date": time.strftime("%Y-%m-%d %H:%M"),
                    "run_dir": str(run_dir), **figures})
    return out


def with_model_ema(records: list[dict], budget_records: list[dict]) -> list[dict]:
    """`records` plus, per run, the model's own EMA: the run's record in budget.jsonl (a variant "tracks*")."""
    model = {}
    for r in budget_records:
        if r["variant"].startswith("tracks"):
            model[r["run_dir"]] = r  # the latest record of a run folder
    rows = list(records)
    for run_dir, r in model.items():
        of_run = [x for x in records if x["run_dir"] == run_dir]
        if of_run:
            rows.append({**r, "track": MODEL})
    return rows


def latest(records: list[dict]) -> list[dict]:
    """The latest record of each (run folder, track): a reused folder is described by its last run."""
    out: dict[tuple, dict] = {}
    for r in records:
        out[(r["run_dir"], r["track"])] = r
    return list(out.values())


def table(rows: list[dict]) -> str:
    lines = ["| seed | averaging | FD/floor equal n, 5 spaces [min, max] | FD / model EMA's | recall | coverage "
             "| SSIM div (real) | rare KID (2 x common) | rare cond acc | audit <p1 / <p5 | targets met |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    model_fd = {r["run_dir"]: r.get("fd_ratio_spaces") for r in rows if r["track"] == MODEL}
    ratios: dict[str, list[float]] = {}
    for r in sorted(rows, key=lambda r: (r["seed"], r["run_dir"], track_order(r["track"]))):
        fd, ref = r.get("fd_ratio_spaces"), model_fd.get(r["run_dir"])
        ratio = fd / ref if fd and ref and r["track"] != MODEL else None
        if ratio:
            ratios.setdefault(r["track"], []).append(ratio)
        c = budget.cells(r)
        lines.append(
            f"| {r['seed']} | {r['track']} | {c['fd']} | {fmt(ratio, '.2f')} | {c['recall']} | {c['coverage']} | "
            f"{c['ssim']} | {c['rare_kid']} | {fmt(r['cond_acc_class'].get(RARE), '.2f')} | {c['audit']} | "
            f"{c['met']} |")
    for name, values in sorted(ratios.items(), key=lambda kv: track_order(kv[0])):
        lines.append(f"| geometric mean over {len(values)} run(s) | {name} | | {geometric_mean(values):.2f} "
                     f"({min(values):.2f}-{max(values):.2f}) | | | | | | | |")
    cpus = sorted({r.get("cpu") or "?" for r in rows})
    variants = sorted({r["variant"] for r in rows if r["track"] == MODEL})
    tracks = " or ".join(f"{v} (`{' '.join(budget.VARIANTS[v])}`)" for v in variants)
    lines += ["", f"2 cores of {' / '.join(cpus)}. Each run is the preset as typed plus the tracks of budget.py's "
              f"{tracks}; every track averages that one run's generator and is "
              "evaluated like a ladder row: `<h>kimg` a constant half-life, `sigma<s>` EDM2's power-function "
              "average of relative width s, `model` the model's own EMA (warm-up decay (1 + n) / (10 + n), close "
              "to sigma 0.09); \"FD / model EMA's\" divides by the model's of the same run. "
              "`python experiments/quality/ema_length.py --seeds S` (results/ema_length.jsonl)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="")
    parser.add_argument("--tracks", default="tracks", choices=[v for v in budget.VARIANTS if v.startswith("tracks")],
                        help="budget.py's variant that sets the tracks")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    out_root, results, records = places(args.smoke, "ema_length.jsonl")
    budget_results = results.parent / "budget.jsonl"
    budget_records = budget.read_records(budget_results) if budget_results.is_file() else []
    readme = HERE / "README.md"
    if not args.smoke:
        check_block(readme, "ema_length")
    for seed in [int(s) for s in args.seeds.split(",") if s] or ([1] if args.smoke else []):
        run = budget.run(args.tracks, seed, args, out_root)
        keep(run, budget_records, budget_results)
        for record in evaluate_tracks(Path(run["run_dir"]), seed, args.smoke):
            keep(record, records, results)
    text = table(with_model_ema(latest(records), budget_records))
    print(text)
    if not args.smoke:
        write_block(readme, "ema_length", text)


if __name__ == "__main__":
    main()
