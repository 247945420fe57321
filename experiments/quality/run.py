"""The quality ladder (issue 12, part 2): one row per technique on the hard imbalanced setting.

    python experiments/quality/run.py --rows baseline,cbn_hinge        # run rows (skips rows already recorded)
    python experiments/quality/run.py --rows final --seeds 1,2          # more seeds of one row
    python experiments/quality/run.py --table                           # rebuild README table from results
    python experiments/quality/run.py --smoke                           # seconds; tiny, into a temp dir
    python experiments/quality/run.py --rows X --gpu                    # same rows on a GPU (trainer=gpu)

Setting: brainsim 64 px, cdcgan, ModerateDemented kept at 6% of the others (22 training images vs 360),
and every row gets the same training budget in images shown to D (`--kimg`, default 120), so rows
compare techniques at equal data, independent of how busy the machine was (wall time is recorded
beside it). Each run: train (metrics every 10 epochs, for the curve), then evaluate the EMA generator twice —
1024 samples with the real class mix (overall FD/KID/PRDC/SSIM against all real training images:
like with like) and uniform labels (the conditional family draws its own 100 per class: per-class accuracy and KID) —
then the memorisation audit (512 samples, classes in turn). One JSON line per run lands in
results/ladder.jsonl as soon as it finishes; checkpoints stay under outputs/experiments/quality/ so a
row can be re-evaluated when the metrics change.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT / "experiments")]
from readme_block import write_block  # noqa: E402

RARE = "ModerateDemented"
DATA = ["data=brainsim", "data.image_size=64", "data.per_class=500", f"data.imbalance={{{RARE}:0.06}}",
        "data.batch_size=64"]
QUIET = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
# in-training metrics every 10 epochs (~11-14 kimg) give each row's curve; the row's figures come from
# the evaluations after training
BASE = ["model=cdcgan", *DATA, *QUIET, "metrics.every_n_epochs=10", "trainer.max_epochs=100000",
        "trainer.log_every_n_steps=50"]
# the domain classifiers' seeds whose feature spaces FD/floor is averaged over (one space alone moved one
# checkpoint's FD/floor 1.1x-6.4x: README, session 18); 0 is the space of every other figure
SPACE_SEEDS = (0, 1, 2, 3, 4)
SMOKE = ["data.image_size=32", "data.per_class=40", "data.batch_size=8", "model.generator.width=8",
         "model.discriminator.width=8"]

# name: (parent row, overrides added on top of the parent's). Each row adds one technique to the best
# row so far; a row that loses stays here and in the table as a measured negative.
ROWS: dict[str, tuple[str | None, list[str]]] = {
    # cdcgan as shipped before this study: concat G, projection D, BCE, translation DiffAugment, EMA
    "baseline": (None, ["model.generator.conditioning=concat", "model/loss=bce"]),
    "cbn_hinge": ("baseline", ["model.generator.conditioning=cbn", "model/loss=hinge"]),
    "balanced": ("cbn_hinge", ["data.balanced_sampling=true"]),
    # candidates on top of `balanced` (the best so far when they were queued)
    "ada": ("balanced", ["model.diffaugment=mri", "model.ada_target=0.6", "model.ada_kimg=100"]),
    "ordinal": ("balanced", ["model.generator.ordinal=true"]),
    "mbstd": ("balanced", ["model.discriminator.mbstd_group=4"]),
    "lecam": ("balanced", ["model.lecam_weight=0.3"]),
    "cond_transition": ("balanced", ["model.cond_start_kimg=0", "model.cond_end_kimg=40"]),
    "mode_seeking": ("balanced", ["model.mode_seeking=1.0"]),
    "ema_kimg": ("balanced", ["model.ema_kimg=10", "model.ema_rampup=0.05"]),
    "class_weights": ("cbn_hinge", ["model.class_weights=inverse_sqrt"]),
    "diffaug_mri": ("balanced", ["model.diffaugment=mri"]),
    "diffaug_cutout": ("balanced", ["model.diffaugment='translation,cutout'"]),
    "spectral_norm": ("balanced", ["model.discriminator.spectral_norm=true"]),
    "ttur": ("balanced", ["model.lr_d=4.0e-4", "model.lr_g=1.0e-4"]),
    "lazy_r1": ("balanced", ["model.r1_gamma=0.2", "model.r1_interval=16"]),
    # not a technique but a speed: bf16 autocast (CPU bf16 units); same kimg, so it shows the quality cost
    "bf16": ("balanced", ["trainer.precision=bf16-mixed"]),
    "bf16_ms": ("bf16", ["model.mode_seeking=0.3"]),
    # on top of bf16, aimed at the preset's open targets: the rare class's near-copies (audit) and diversity
    "bf16_sqrt": ("bf16", ["data.balanced_sampling=0.5"]),
    "bf16_mri": ("bf16", ["model.diffaugment=mri"]),
    "bf16_ada8": ("bf16", ["model.diffaugment=mri", "model.ada_target=0.8", "model.ada_kimg=100"]),
    # translation applied to every image (p = 1) hides where real brains sit: generated centroids spread
    # 0.7-1.1 px against 1.3 for real ones. ADA's p < 1 leaves part of the images unshifted
    "bf16_ada_tr": ("bf16", ["model.ada_target=0.6", "model.ada_kimg=100"]),
    "bf16_noaug": ("bf16", ["model.diffaugment=none"]),
    "bf16_p05": ("bf16", ["model.augment_p=0.5"]),
    "bf16_p025": ("bf16", ["model.augment_p=0.25"]),
    # the revised preset's open problem: the rare class pulled to its 22 images on some splits (seed 2)
    "bf16_p05_b75": ("bf16_p05", ["data.balanced_sampling=0.75"]),
    # FD with diversity: every image shifted (p = 1 keeps D regularised, the best FD) but by less, so the
    # spread of positions (SD ~1.3 px) is not drowned in the shift's (SD ~4.9 px at 1/8, ~2.4 at 1/16)
    "bf16_tr16": ("bf16", ["model.translation_ratio=0.0625"]),
    "bf16_tr32": ("bf16", ["model.translation_ratio=0.03125"]),
    # the samples' grain is a checkerboard: power at the Nyquist point (0.5, 0.5) ~4-5x the real images'
    # (spectrum.py); nearest-neighbour upsampling + 3x3 conv in G cannot make one from a flat input
    "bf16_resize": ("bf16", ["model.generator.upsample=resize"]),
    # the session-6 preset's open problem, the rare class drifting onto its 22 images by ~350 kimg on seed 2:
    # brightness and contrast on top of the small translation give D more than 81 versions of each image
    # (run at the preset's budget: --kimg 350 --seeds 2)
    "bf16_tr16_mri": ("bf16_tr16", ["model.diffaugment=mri"]),
    # the rare class's narrowness (synthetic_utility: its samples sit nearer the 22 training images than new
    # real brains do): Collapse by Conditioning (Shahbazi et al., ICLR 2022) trains unconditionally first, so
    # the rare class starts from what all 1100 brains share, then blends the labels in (run at --kimg 346)
    "bf16_tr16_ct": ("bf16_tr16", ["model.cond_start_kimg=25", "model.cond_end_kimg=100"]),
    # a classifier tells the samples from real brains (C2ST 0.86-0.98 at ~350 kimg) although they pass as their
    # class and copy nothing; brainsim's slices, like MRI, carry per-pixel scanner noise, which a conv stack fed
    # one latent vector has no source for: StyleGAN's noise inputs give it one (run at --kimg 346)
    "bf16_tr16_noise": ("bf16_tr16", ["model.generator.noise_inputs=true"]),
    # that classifier needs only the pixel-scale residual (image - 1-px blur: C2ST 0.99-1.00; blurred images
    # 0.68-0.76), and the noise scales G learned stayed ~0: D's strided first layer barely judges the grain.
    # A texture branch in D (full-resolution convs on the residual, its logit added) does; with the noise
    # inputs G has the means to answer it (run at --kimg 346)
    "bf16_tr16_tex": ("bf16_tr16", ["model.discriminator.texture_width=16"]),
    "bf16_tr16_tex_noise": ("bf16_tr16_tex", ["model.generator.noise_inputs=true"]),
    # the noise scales stayed ~0 even with the texture branch asking for grain (0.0001-0.015): at 0 a scale's
    # expected gradient is 0, and those values are what a random walk of ~5000 Adam steps gives. Started at
    # 0.1 (brainsim's residual SD in the brain is 0.12 in [-1, 1] units) the gradient has a direction
    "bf16_tr16_tex_noise_init": ("bf16_tr16_tex_noise", ["model.generator.noise_init=0.1"]),
    # G removed the noise it was given (scales 0.1 -> ~0.0003), and the texture C2ST stayed 0.99-1.00. What
    # texture_stats names is the residual's skew (real slices hold more sharp dark pixels), and G's last
    # upsampling draws each pixel as a linear function of the half-resolution features under it: one more
    # layer at the image's size puts a ReLU at the pixel scale (run at --kimg 346)
    "bf16_tr16_tex_fullres": ("bf16_tr16_tex", ["model.generator.full_res_width=16"]),
    # with the texture branch the layer halved the residual's skew gap (texture_stats: d +1.6 -> +0.9 in
    # NonDemented) but D's branch costs 2.2x the time per image: the layer alone, on the preset's line
    "bf16_tr16_fullres": ("bf16_tr16", ["model.generator.full_res_width=16"]),
    # ganlab.audit's discriminator r_v: on every measured run D scores new real rare brains halfway to generated
    # ones (0.48-0.52 against 338 new renders; common classes 0.03-0.09): it has learned the 22 images by heart
    # and pulls G's rare class onto them. Brightness and contrast on the rare class only, real and generated,
    # give D more versions of each of its images without the FD cost they had on every class (bf16_tr16_mri)
    "bf16_tr16_fewshot": ("bf16_tr16", ["model.few_shot_policy='brightness,contrast'"]),
    # brightness and contrast left the rare class's r_v at 0.52 (against new renders): D learns the 22 brains'
    # shapes, not their grey levels. Mirror images and small tilts change the shapes it sees
    "bf16_tr16_fewshot_geo": ("bf16_tr16", ["model.few_shot_policy='flip,rotation'"]),
    # flip + rotation on the rare class lowered its r_v (~0.5 -> 0.24-0.33) but not its KID or the audit. Two
    # standard regularisers against a D that learns its real images by heart, on every class:
    # StyleGAN's mirror augmentation (brainsim's slices are left-right symmetric in distribution, so a mirrored
    # image cannot leak: G's mirrored samples are as real as its own), doubling each class's distinct images
    "bf16_tr16_flip": ("bf16_tr16", ["model.diffaugment='translation,flip'"]),
    # and R1 on real images (Mescheder et al. 2018), lazily every 16 D steps as in StyleGAN2: it flattens D
    # around each training image, the sharp peak memorisation makes
    "bf16_tr16_r1": ("bf16_tr16", ["model.r1_gamma=0.2", "model.r1_interval=16"]),
    # D learns the 22 rare images by heart, but ADA's pooled r_t is the large classes' figure and cannot see it:
    # the few-shot ops' probability adapted per class, from the rare class's own E[sign D(real)] (p stays 0
    # while D does not overfit it; ADA's finding that ops at p < ~0.8 do not leak into G)
    "bf16_tr16_flip_fsada": ("bf16_tr16_flip", ["model.few_shot_policy='rotation,brightness,contrast'",
                                                "model.few_shot_ada_target=0.6", "model.ada_kimg=100"]),
    # mirror images lowered FD/floor on both seeds but raised SSIM diversity (0.51 vs 0.48, real 0.46); R1
    # alone gave the real images' diversity (0.45) at seed 2: the two together
    "bf16_tr16_flip_r1": ("bf16_tr16_flip", ["model.r1_gamma=0.2", "model.r1_interval=16"]),
    # the runs' FD/floor swings 2-5x between evaluations 10 epochs apart late in training (bf16_tr16_flip s1:
    # 8.4 at epoch 139, 1.1 at 179, 3.4 at 209), so a row's figure depends on where the budget happens to stop
    # it. SNGAN's linear decay of both learning rates to 0, here over the second half of the budget, ends each
    # run on a settled generator (run at --kimg 346)
    "bf16_tr16_lrdecay": ("bf16_tr16", ["model.lr_decay_start=0.5"]),
}


def overrides_of(row: str) -> list[str]:
    parent, own = ROWS[row]
    return (overrides_of(parent) if parent else []) + own


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def metric(report: dict, name: str):
    m = report.get("metrics", {}).get(name)
    return None if m is None else m.get("value")


def summarise(run_dir: Path, class_names: list[str], ckpt: str = "last") -> dict:
    """The figures of checkpoints/<ckpt>.ckpt from its evaluations (evaluate_run)."""
    suffix = "" if ckpt == "last" else f"_{ckpt}"
    prop = read_json(run_dir / f"eval_prop{suffix}" / f"evaluation_{ckpt}.json")
    uni = read_json(run_dir / f"eval_uniform{suffix}" / f"evaluation_{ckpt}.json")
    audit = read_json(run_dir / f"audit{suffix}" / "audit.json")
    keys = lambda c: c.replace(" ", "_")  # noqa: E731
    out = {
        "fd": metric(prop, "metrics/fd_domain"), "fd_floor": metric(prop, "metrics/fd_domain_real"),
        "fd_ci": (prop.get("metrics", {}).get("metrics/fd_domain") or {}).get("ci"),
        "kid": metric(prop, "metrics/kid_domain"),
        "precision": metric(prop, "metrics/precision"), "recall": metric(prop, "metrics/recall"),
        "recall_ci": (prop.get("metrics", {}).get("metrics/recall") or {}).get("ci"),
        "coverage": metric(prop, "metrics/coverage"),
        "coverage_ci": (prop.get("metrics", {}).get("metrics/coverage") or {}).get("ci"),
        "ssim_div": metric(prop, "ssim/diversity"), "ssim_div_real": metric(prop, "ssim/diversity_real"),
        "ms_div": metric(prop, "ssim/ms_diversity"), "ms_div_real": metric(prop, "ssim/ms_diversity_real"),
        "cond_acc": metric(uni, "metrics/cond_acc"), "cond_acc_real": metric(uni, "metrics/cond_acc_real"),
        "cond_acc_class": {c: metric(uni, f"metrics/cond_acc/{keys(c)}") for c in class_names},
        "cond_acc_real_class": {c: metric(uni, f"metrics/cond_acc_real/{keys(c)}") for c in class_names},
        "kid_class": {c: metric(uni, f"metrics/kid_domain/{keys(c)}") for c in class_names},
        "kid_real_class": {c: metric(uni, f"metrics/kid_domain_real/{keys(c)}") for c in class_names},
        "audit_p1": audit.get("frac_below_p1"), "audit_p5": audit.get("frac_below_p5"),
        # the per-class data-copying test (calibrated for the class mix; ganlab.audit's docstring)
        "audit_copying_z": {c: e["z"] for c, e in (audit.get("copying") or {}).get("per_class", {}).items()} or None,
        "audit_c_t": (audit.get("copying") or {}).get("c_t"),
        # a classifier two-sample test per class against the training images (0.5: indistinguishable)
        "c2st_class": audit.get("c2st"),
        # the checkpoint's D per class: 0 = new real images scored like its training images, 1 = like generated
        "d_overfit_class": {c: e["r_v"] for c, e in audit["discriminator"].items()} if "discriminator" in audit else None,
    }
    out["fd_ratio"] = out["fd"] / out["fd_floor"] if out["fd"] and out["fd_floor"] else None
    # like with like (session 19): at the held-out split's n, geometric mean over SPACE_SEEDS' feature spaces
    out["fd_ratio_spaces"] = metric(prop, "metrics/fd_ratio_spaces")
    out["fd_ratio_spaces_range"] = [metric(prop, f"metrics/fd_ratio_spaces_{k}") for k in ("min", "max")]
    out["fd_spaces_n"] = len(prop.get("settings", {}).get("fd_spaces", {}).get("seeds", [])) or None
    return out


def evaluation_overrides(ckpt: Path, labels: str = "proportional", smoke: bool = False) -> list[str]:
    """`ganlab.evaluate`'s settings as the ladder uses them: 1024 samples (64 smoke) with `labels` (proportional:
    the real class mix; uniform) against every real training image; with the real mix, FD/floor at equal n
    also in the feature spaces of SPACE_SEEDS' domain classifiers."""
    spaces = SPACE_SEEDS[:2] if smoke else SPACE_SEEDS
    return [f"ckpt={ckpt}", f"n_samples={64 if smoke else 1024}", "metrics.n_real=100000", "metrics.every_n_epochs=0",
            f"metrics.fake_labels={labels}",
            *([f"metrics.families.fd_spaces.seeds=[{','.join(map(str, spaces))}]"] if labels == "proportional" else [])]


def evaluate_checkpoint(ckpt: Path, out: Path, labels: str = "proportional", smoke: bool = False) -> None:
    """`ganlab.evaluate` as the ladder runs it (evaluation_overrides), into `out`."""
    subprocess.run([sys.executable, "-m", "ganlab.evaluate", *evaluation_overrides(ckpt, labels, smoke), f"out={out}"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)


def evaluate_run(run_dir: Path, seed: int, data: list[str], smoke: bool = False, ckpt: str = "last") -> dict:
    """A trained run's figures: the EMA generator of checkpoints/<ckpt>.ckpt evaluated with the real class mix
    and with uniform labels, then the memorisation audit on `data` (the run's data overrides, without balanced
    sampling: the audit compares with the images as they are). Also the run's mean training throughput.
    With ckpt="last", the same for best.ckpt (the best in-training evaluation) under "best" when the run has one."""
    py = sys.executable
    path, suffix = run_dir / "checkpoints" / f"{ckpt}.ckpt", "" if ckpt == "last" else f"_{ckpt}"
    for labels, sub in (("proportional", "eval_prop"), ("uniform", "eval_uniform")):
        evaluate_checkpoint(path, run_dir / f"{sub}{suffix}", labels, smoke)
    subprocess.run([py, "-m", "ganlab.audit", f"ckpt={path}", "n=128" if smoke else "n=512", "c2st=true",
                    *data, f"seed={seed}", f"hydra.run.dir={run_dir / f'audit{suffix}'}"], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    classes = json.loads((run_dir / f"eval_uniform{suffix}" / f"evaluation_{ckpt}.json").read_text())
    class_names = [k.split("/", 2)[2] for k in classes["metrics"] if k.startswith("metrics/cond_acc/")]
    if ckpt != "last":
        return {**summarise(run_dir, class_names, ckpt), "kimg": images_shown(run_dir, ckpt) / 1000}
    best = evaluate_best(run_dir, seed, data, smoke)
    throughput = None
    csvs = sorted(run_dir.glob("csv/version_*/metrics.csv"))
    if csvs:
        import csv
        vals = [float(r["perf/images_per_sec"]) for r in csv.DictReader(open(csvs[-1]))
                if r.get("perf/images_per_sec")]
        throughput = sum(vals) / len(vals) if vals else None
    return {"img_per_s": throughput, **summarise(run_dir, class_names), **({"best": best} if best else {})}


def evaluate_best(run_dir: Path, seed: int, data: list[str], smoke: bool = False) -> dict | None:
    """best.ckpt's figures (evaluate_run), or None when the run kept none."""
    if not (run_dir / "checkpoints" / "best.ckpt").is_file():
        return None
    return evaluate_run(run_dir, seed, data, smoke, ckpt="best")


def with_ema_generator(ckpt: dict, tensors: dict) -> dict:
    """A copy of checkpoint `ckpt` whose EMA generator holds `tensors` (by its parameter and buffer names), so that
    evaluate, generate and audit sample another generator through the run's own config."""
    state = dict(ckpt["state_dict"])
    for key, tensor in tensors.items():
        full = "generator_ema.module." + key
        if full not in state:
            raise KeyError(f"{key}: the checkpoint's EMA generator has no such tensor")
        state[full] = tensor.detach().clone()
    return {**ckpt, "state_dict": state}


def images_shown(run_dir: Path, ckpt: str = "last") -> int:
    """Real images D saw up to checkpoints/<ckpt>.ckpt: batches trained (the Throughput callback's count) x batch
    size x processes."""
    import torch
    from omegaconf import OmegaConf
    state = torch.load(run_dir / "checkpoints" / f"{ckpt}.ckpt", map_location="cpu", weights_only=True)
    cfg = OmegaConf.load(run_dir / "config_resolved.yaml")
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    return state["callbacks"]["Throughput"]["batches"] * cfg.data.batch_size * devices


def runs_on_disk(records: list[dict]) -> list[dict]:
    """The records whose checkpoints are still there: a run folder is reused by the next run of the same row (or
    preset) and seed, so only the latest record of a folder describes what is in it."""
    return [r for i, r in enumerate(records) if all(x["run_dir"] != r["run_dir"] for x in records[i + 1:])
            and (Path(r["run_dir"]) / "checkpoints" / "last.ckpt").is_file()]


def measure_discriminator(record: dict) -> dict | None:
    """For a run recorded before ganlab.audit asked the discriminator: its per-class r_v (the audit's
    `discriminator_overfit`: same data, 512 samples at the audit's seed), added to the run's audit.json.
    None when the run's checkpoint is gone."""
    from ganlab.audit import checkpoint_discriminator_overfit

    run_dir = Path(record["run_dir"])
    ckpt, audit_file = run_dir / "checkpoints" / "last.ckpt", run_dir / "audit" / "audit.json"
    if not ckpt.is_file() or not audit_file.is_file():
        return None
    audit = read_json(audit_file)
    audit["discriminator"] = checkpoint_discriminator_overfit(ckpt, 512, record["seed"])
    audit_file.write_text(json.dumps(audit, indent=2) + "\n")
    return {c: e["r_v"] for c, e in audit["discriminator"].items()}


def add_discriminator_figures(records: list[dict]) -> None:
    """measure_discriminator for the recorded runs that lack it, each folder's latest run only (runs_on_disk)."""
    for record in runs_on_disk(records):
        if record.get("d_overfit_class") is None:
            record["d_overfit_class"] = measure_discriminator(record)
            print(record["row"], record["seed"], record["d_overfit_class"], flush=True)


def device_label(gpu: bool) -> str:
    """What a record says it ran on (rows and seeds are skipped or grouped by it)."""
    return "cuda" if gpu else f"cpu ({os.cpu_count()} cores)"


def check_max_time(value: str | None) -> None:
    """A --max-time budget (target.py, budget.py) as Lightning reads it, DD:HH:MM:SS, or one error line."""
    if value and not re.fullmatch(r"\d{2}:\d{2}:\d{2}:\d{2}", value):
        sys.exit(f"error: --max-time {value!r}: expected DD:HH:MM:SS, e.g. 00:00:18:00")


def budget_tag(max_time: str | None) -> str:
    """A run folder's budget suffix (budget.py, sentence.py): `_t00001800` for 00:00:18:00, none without a budget."""
    return f"_t{max_time.replace(':', '')}" if max_time else ""


def group_suffix(group: str | None) -> str:
    """A run folder's tail for --group: `_s35`, so one group's runs never replace another's checkpoints."""
    return f"_{group}" if group else ""


def group_tag(record: dict) -> str:
    """A record's --group (target.py, budget.py) as its tables show it: ` [s34]`, nothing without one."""
    return f" [{record['group']}]" if record.get("group") else ""


def processor() -> str:
    """bench_throughput.processor, imported only when a run is recorded: it loads torch and Lightning."""
    from bench_throughput import processor as name

    return name()


def run_one(row: str, seed: int, args, out_root: Path) -> dict:
    py = sys.executable
    run_dir = out_root / f"{row}_s{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted earlier attempt: start the row again
    extra = overrides_of(row) + (SMOKE if args.smoke else []) + (["trainer=gpu"] if args.gpu else [])
    batch = 8 if args.smoke else 64
    steps = 2 * math.ceil(args.kimg * 1000 / batch)  # one batch = one D step + one G step (n_disc=1)
    train = [*BASE, *extra, f"seed={seed}", f"trainer.max_steps={steps}", f"hydra.run.dir={run_dir}"]
    if args.max_minutes:
        train.append(f"trainer.max_time=00:00:{args.max_minutes:02d}:00")
    print(f"[{time.strftime('%H:%M:%S')}] {row} seed {seed}: python -m ganlab.train {' '.join(train[:-1])}",
          flush=True)
    start = time.time()
    subprocess.run([py, "-m", "ganlab.train", *train], check=True, cwd=ROOT)
    wall = time.time() - start
    data = [o for o in [*DATA, *extra] if o.startswith("data.") and "balanced" not in o]
    figures = evaluate_run(run_dir, seed, data, args.smoke)
    return {"row": row, "seed": seed, "overrides": overrides_of(row), "kimg": args.kimg, "steps": steps,
            "device": device_label(args.gpu), "cpu": processor(), "wall_s": round(wall, 1),
            "date": time.strftime("%Y-%m-%d %H:%M"), "run_dir": str(run_dir), **figures}


def fmt(v, spec=".3f") -> str:
    return "–" if v is None else format(v, spec)


def table(records: list[dict]) -> str:
    """Mean over seeds per (row, device); per-class figures abbreviated by initials. A run that kept best.ckpt
    (its best in-training evaluation) gives a second line, `<row> (best.ckpt)`, under the same budget."""
    records = [x for r in records
               for x in [r] + ([{**r, **r["best"], "row": f"{r['row']} (best.ckpt)", "kimg": r["kimg"]}]
                               if r.get("best") else [])]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["row"], r["device"], r["kimg"]), []).append(r)

    def mean(rs, key, sub=None):
        vals = [(r.get(key) or {}).get(sub) if sub else r.get(key) for r in rs]
        vals = [v for v in vals if v is not None]
        return sum(vals) / len(vals) if vals else None

    def spread(rs, key, spec, over_floor=False):
        """One seed: the value and its bootstrap 95% CI; more seeds: the mean and each seed's value."""
        value = mean(rs, key)
        if value is None:
            return "–"
        if len(rs) > 1:
            return f"{fmt(value, spec)} ({', '.join(fmt(r[key], spec) for r in rs if r[key] is not None)})"
        r = rs[0]
        ci = r.get(key.replace("_ratio", "") + "_ci")
        div = r.get("fd_floor") if over_floor else 1.0
        if not ci or not div:
            return fmt(value, spec)
        return f"{fmt(value, spec)} [{fmt(ci[0] / div, spec)}, {fmt(ci[1] / div, spec)}]"

    def spaces(rs):
        """FD/floor at equal n over the feature spaces: one seed, its geometric mean [min, max]; more seeds,
        the mean and each seed's value."""
        rs = [r for r in rs if r.get("fd_ratio_spaces") is not None]
        if not rs:
            return "–"
        if len(rs) > 1:
            return f"{fmt(mean(rs, 'fd_ratio_spaces'), '.1f')} ({', '.join(fmt(r['fd_ratio_spaces'], '.1f') for r in rs)})"
        low, high = rs[0].get("fd_ratio_spaces_range") or (None, None)
        return f"{fmt(rs[0]['fd_ratio_spaces'], '.1f')} [{fmt(low, '.1f')}, {fmt(high, '.1f')}]"

    classes = list(records[0]["cond_acc_class"]) if records else []
    short = [c[:3] for c in classes]
    head = (f"| row | seeds | kimg | min | FD/floor | FD/floor equal n, {len(SPACE_SEEDS)} spaces | recall | coverage | SSIM div (real) | MS-SSIM div (real) | "
            f"cond acc {'/'.join(short)} | KID {'/'.join(short)} | audit <p1 / <p5 | C2ST {'/'.join(short)} | "
            f"D r_v {'/'.join(short)} |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (row, device, kimg), rs in groups.items():
        acc = "/".join(fmt(mean(rs, "cond_acc_class", c), ".2f") for c in classes)
        kid = "/".join(fmt(mean(rs, "kid_class", c), ".2f") for c in classes)
        c2st = ("/".join(fmt(mean(rs, "c2st_class", c), ".2f") for c in classes)
                if any(r.get("c2st_class") for r in rs) else "–")
        r_v = ("/".join(fmt(mean(rs, "d_overfit_class", c), ".2f") for c in classes)
               if any(r.get("d_overfit_class") for r in rs) else "–")
        gpu = " (GPU)" if device == "cuda" else ""
        lines.append(
            f"| {row}{gpu} | {len(rs)} | {kimg} | {fmt(mean(rs, 'wall_s') / 60, '.1f')} | {spread(rs, 'fd_ratio', '.1f', over_floor=True)} | {spaces(rs)} | "
            f"{spread(rs, 'recall', '.2f')} | {spread(rs, 'coverage', '.2f')} | "
            f"{fmt(mean(rs, 'ssim_div'), '.2f')} ({fmt(mean(rs, 'ssim_div_real'), '.2f')}) | "
            f"{fmt(mean(rs, 'ms_div'), '.2f')} ({fmt(mean(rs, 'ms_div_real'), '.2f')}) | {acc} | {kid} | "
            f"{fmt(mean(rs, 'audit_p1'), '.1%')} / {fmt(mean(rs, 'audit_p5'), '.1%')} | {c2st} | {r_v} |")
    lines += ["", "FD/floor, recall, coverage: one seed, the bootstrap 95% CI in brackets (FD's CI over the "
              "floor's point value); more seeds, the mean and each seed's value in parentheses. FD/floor equal n: "
              "generated subsets of the held-out split's size (306) against the same floor, in the feature spaces of "
              f"domain classifiers trained with seeds {', '.join(map(str, SPACE_SEEDS))}, their geometric mean [min, max] (session 19; rows before it "
              "were measured with 1024 generated images against the 306-image floor in space 0 only). C2ST: a classifier "
              "trained to tell the row's samples from the real training images, per class (0.5: it cannot; "
              "ganlab.audit c2st=true; rows before session 11 were not measured). D r_v: the run's own discriminator "
              "per class, ADA's overfitting measure (E[D(train)] − E[D(held-out)]) / (E[D(train)] − E[D(generated)]): "
              "0 = it scores new real images like its training images, 1 = like generated ones (ganlab.audit; rows "
              "before session 14 were not measured, or measured afterwards from their checkpoints where those remain)."]
    judge = next((r["cond_acc_real_class"] for r in records if any(r.get("cond_acc_real_class", {}).values())), None)
    if judge:
        lines += ["", "The judge (the metrics' domain classifier) on held-out real images, per class: "
                  + ", ".join(f"{c} {fmt(v, '.2f')}" for c, v in judge.items())
                  + " (N held-out: 100 for each common class, 6 for the rare one: read that value as rough)."]
    return "\n".join(lines)


def keep(record: dict, records: list[dict], results: Path) -> None:
    """A finished run's record: into `records` and, at once, a line of the results file (a later crash keeps it)."""
    records.append(record)
    with open(results, "a") as f:
        f.write(json.dumps(record) + "\n")


def places(smoke: bool, name: str) -> tuple[Path, Path, list[dict]]:
    """(run folder root, results file, its records): outputs/ and results/, or a temp dir for --smoke."""
    if smoke:
        out_root = Path(tempfile.mkdtemp(prefix="quality_"))
        results = out_root / name
    else:
        out_root = ROOT / "outputs" / "experiments" / "quality"
        results = HERE / "results" / name
    results.parent.mkdir(parents=True, exist_ok=True)
    return out_root, results, read_records(results)


def read_records(path: Path) -> list[dict]:
    """One record per line of a results file; none when it does not exist yet."""
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def write_records(path: Path, records: list[dict]) -> None:
    """The results file rewritten from `records` (after figures were added to recorded runs)."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="", help=f"comma-separated, from: {', '.join(ROWS)}")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--kimg", type=float, default=120.0, help="training budget: thousands of real images shown")
    parser.add_argument("--max-minutes", type=int, default=0, help="wall-clock cap as well (0: none)")
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--redo", action="store_true", help="run rows even if already recorded")
    parser.add_argument("--table", action="store_true", help="only rebuild the README table")
    parser.add_argument("--measure-d", action="store_true",
                        help="add the discriminator's per-class r_v to recorded runs that lack it (their checkpoints)")
    args = parser.parse_args()
    os.chdir(ROOT)
    if args.smoke:
        args.kimg = 0.1
    out_root, results, done = places(args.smoke, "ladder.jsonl")
    unknown = [r for r in args.rows.split(",") if r and r not in ROWS]
    if unknown:
        sys.exit(f"error: unknown row(s) {unknown}; known: {', '.join(ROWS)}")
    if args.measure_d:
        add_discriminator_figures(done)
        write_records(results, done)
    for row in [r for r in args.rows.split(",") if r]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            device = device_label(args.gpu)
            if not args.redo and any(d["row"] == row and d["seed"] == seed and d["device"] == device
                                     and d["kimg"] == args.kimg for d in done):
                print(f"{row} seed {seed}: already recorded, skipped (--redo to run again)")
                continue
            record = run_one(row, seed, args, out_root)
            grid = out_root / f"{row}_s{seed}" / "samples" / "final.png"
            if not args.smoke and seed == 1 and not args.gpu and grid.is_file():
                shutil.copyfile(grid, HERE / "results" / f"{row}_grid.png")
            keep(record, done, results)
            print(json.dumps(record, indent=1), flush=True)
    if done:
        markdown = table(done)
        print(markdown)
        if not args.smoke and (HERE / "README.md").is_file():
            write_block(HERE / "README.md", "ladder", markdown)


if __name__ == "__main__":
    main()
