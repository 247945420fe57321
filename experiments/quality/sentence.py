"""The user's sentence on the Kaggle Alzheimer layout, as shipped and as it was before class-balanced sampling
became cdcgan's default:

    python experiments/quality/sentence.py --arms default,unbalanced --seeds 1,2   # train, evaluate, record
    python experiments/quality/sentence.py                                          # the README table from results/
    python experiments/quality/sentence.py --smoke                                  # seconds; tiny networks, a temp dir

Each run is `python -m ganlab.train model=cdcgan data=alzheimer trainer.devices=2` on a Kaggle-layout copy
(experiments/synthetic_utility/alzheimer_copy.py, the real set's counts x0.25: 12 ModerateDemented training
images, ~49:1), for the same wall-clock budget (--max-time), plus the arm's overrides, then the ladder's
evaluation (run.py `evaluate_run`: uniform labels for the per-class figures, 100 samples per class, and the
memorisation audit). Training runs without the in-training metrics so both arms spend the budget on training.
A benchmark, not a test: results/sentence.jsonl and the README's sentence block.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "synthetic_utility")]
from ganlab.data.brainsim import CLASS_NAMES  # noqa: E402
from readme_block import check_block, write_block  # noqa: E402
from run import (QUIET, RARE, ROOT, SMOKE, budget_tag, check_max_time, evaluate_run, fmt, images_shown, keep,  # noqa: E402
                 places, processor)

SENTENCE = ["model=cdcgan", "data=alzheimer", "trainer.devices=2"]
# name: overrides on top of the sentence
ARMS: dict[str, list[str]] = {
    "default": [],  # as shipped: cdcgan brings class-balanced sampling (conf/data/for_model/cdcgan.yaml)
    "unbalanced": ["data.balanced_sampling=false"],  # the sentence before that default
    # DiffAugment's shift at most 1/16 of the image instead of 1/8 (the quality preset's since session 6: the 1/8
    # shift hid where real brains sit and G's gathered at the centre): a candidate for cdcgan's default
    "tr16": ["model.translation_ratio=0.0625"],
    # square-root balancing: class c gets sqrt(n_max * n_c) images (12 rare images repeated 7x instead of 48x),
    # a candidate against the near-copies that full balancing brings on long runs
    "sqrt": ["data.balanced_sampling=0.5"],
    # between the two: the 12 rare images repeated ~18x per epoch instead of 48x (sqrt: 7x), against the rare
    # samples' pull toward their training images at 24 minutes (audit_reference.py: z -3.2 / -0.4 / -2.7)
    "b75": ["data.balanced_sampling=0.75"],
    # StyleGAN's mirror augmentation on every image D sees (axial slices are left-right symmetric in
    # distribution): twice the distinct images of the dozen-image class for D to learn
    "flip": ["model.diffaugment='translation,flip'"],
}
SCALE, SMOKE_SCALE = 0.25, 0.1
SMOKE_EXTRA = [o for o in SMOKE if not o.startswith("data.per_class")] + ["trainer.max_time=00:00:00:20"]


def copy_root(smoke: bool) -> Path:
    """The Kaggle-layout copy (written once; its images are fixed by alzheimer_copy's seed)."""
    from alzheimer_copy import write_copy

    root = Path(tempfile.mkdtemp(prefix="sentence_copy_")) if smoke else ROOT / "data" / f"alzheimer_copy_x{SCALE}"
    if not (root / "train").is_dir():
        write_copy(root, scale=SMOKE_SCALE if smoke else SCALE, size=32 if smoke else 64)
    return root


def run(arm: str, seed: int, args, root: Path, out_root: Path) -> dict:
    run_dir = out_root / f"sentence_{arm}_s{seed}{budget_tag(args.max_time)}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted earlier attempt
    extra = SMOKE_EXTRA if args.smoke else [f"trainer.max_time={args.max_time}"]
    train = [*SENTENCE, f"data.root={root}", *QUIET, "metrics=none", "trainer.max_epochs=100000", *extra,
             *ARMS[arm], f"seed={seed}", f"hydra.run.dir={run_dir}"]
    print(f"[{time.strftime('%H:%M:%S')}] {arm}: python -m ganlab.train {' '.join(train[:-1])}", flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", "ganlab.train", *train], check=True, cwd=ROOT)
    wall = time.time() - start
    figures = evaluate_run(run_dir, seed, [], args.smoke)
    return {"variant": arm, "overrides": ARMS[arm], "seed": seed, "max_time": None if args.smoke else args.max_time,
            "scale": SMOKE_SCALE if args.smoke else SCALE, "cpu": processor(), "wall_s": round(wall, 1),
            "kimg": round(images_shown(run_dir) / 1000, 1),
            "date": time.strftime("%Y-%m-%d %H:%M"), "run_dir": str(run_dir), **figures}


def per_class(values: dict | None, spec: str) -> str:
    return "/".join(fmt((values or {}).get(c), spec) for c in CLASS_NAMES)


def table(records: list[dict]) -> str:
    latest = {(r["variant"], r["seed"], r.get("max_time"), r.get("cpu")): r for r in records}
    lines = ["| arm | seed | budget | kimg | FD/floor equal n, 5 spaces | recall | coverage | SSIM div (real) | "
             "cond acc Non/Ver/Mil/Mod | judge on real Non/Ver/Mil/Mod | KID Non/Ver/Mil/Mod | "
             "audit <p1 / <p5 | rare data-copying z |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(latest.values(), key=lambda r: (r.get("max_time") or "", r["seed"], list(ARMS).index(r["variant"])
                                                     if r["variant"] in ARMS else len(ARMS))):
        z = (r.get("audit_copying_z") or {}).get(RARE)
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r.get('max_time') or '–'} | {fmt(r['kimg'], '.0f')} | "
            f"{fmt(r.get('fd_ratio_spaces'), '.1f')}x | {fmt(r['recall'], '.2f')} | {fmt(r['coverage'], '.2f')} | "
            f"{fmt(r['ssim_div'], '.3f')} ({fmt(r['ssim_div_real'], '.3f')}) | {per_class(r['cond_acc_class'], '.2f')} | "
            f"{per_class(r['cond_acc_real_class'], '.2f')} | {per_class(r['kid_class'], '.2f')} | "
            f"{fmt(r['audit_p1'], '.1%')} / {fmt(r['audit_p5'], '.1%')} | {fmt(z, '+.1f')} |")
    cpus = sorted({r.get("cpu") or "?" for r in records})
    lines += ["", f"2 cores of {' / '.join(cpus)}. `python -m ganlab.train {' '.join(SENTENCE)}` on a Kaggle-layout "
              f"copy at x{SCALE} of the real counts (training split 576/403/161/12), the budget's minutes of training "
              "(metrics=none), then the ladder's evaluation: cond acc and KID per class on 100 uniform samples per "
              "class against the training images (KID as the ladder table gives it); the judge's accuracy on the "
              "copy's held-out real images beside it (ModerateDemented: 3 test images, read it as rough; they also "
              "keep the rare data-copying z above -2.95, so it cannot flag). Arms: " +
              "; ".join(f"{a}: {' '.join(o) or '(as shipped)'}" for a, o in ARMS.items()) +
              ". `python experiments/quality/sentence.py --arms A --seeds S` (results/sentence.jsonl)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default="", help=f"comma-separated, from: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--max-time", default="00:00:06:00", help="training budget per run, DD:HH:MM:SS")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    arms = [a for a in args.arms.split(",") if a] or (list(ARMS) if args.smoke else [])
    check_max_time(args.max_time)
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"error: unknown arm(s) {unknown}; known: {', '.join(ARMS)}")
    out_root, results, records = places(args.smoke, "sentence.jsonl")
    readme = HERE / "README.md"
    if not args.smoke:
        check_block(readme, "sentence")
    root = copy_root(args.smoke) if arms else None
    for seed in [int(s) for s in args.seeds.split(",") if s]:  # seed-major: each seed's arms side by side
        for arm in arms:
            keep(run(arm, seed, args, root, out_root), records, results)
    text = table(records)
    print(text)
    if not args.smoke:
        write_block(readme, "sentence", text)


if __name__ == "__main__":
    main()
