"""At the preset's 10-minute budget, which network and batch size get furthest?

    python experiments/quality/budget.py --variants preset,w24 --seeds 1,2   # train, evaluate, record
    python experiments/quality/budget.py                                     # the README table from results/
    python experiments/quality/budget.py --smoke                             # seconds; tiny networks, a temp dir
    python experiments/quality/budget.py --variants preset,adc03_common --seeds 1 --max-time 00:00:18:00
        # a longer budget (recorded): a slower machine's runs at the kimg a faster one reaches in 10 minutes
    python experiments/quality/budget.py --variants adc03_common_rise --seeds 1,2 --match-kimg s35
        # each seed trains exactly the images that seed's preset run of group s35 (target.py --group s35) trained

The ladder compares techniques at equal images shown (kimg); the issue's target is set in minutes. Every row
of the ladder used G and D of width 32 and batch 64, and on the 2-core CPUs the 10 minutes end at 140-350
kimg, far short of where the figures stop improving (README: FD/floor falls from ~15x at ~140 kimg to ~6x at
346, equal n, five spaces). A smaller network trains more images in the same minutes, a larger one learns
more from each. Each variant is the preset as a user types it (`experiment=brainsim_quality`, its 10-minute
`trainer.max_time`) plus the overrides in VARIANTS, measured by the ladder's evaluation (run.py
`evaluate_run`) and checked against issue 12's targets (target.py `checks`). A benchmark, not a test:
results/budget.jsonl and the README's budget block.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from statistics import geometric_mean
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from readme_block import check_block, write_block  # noqa: E402
from run import (QUIET, RARE, ROOT, SMOKE, budget_tag, check_max_time, evaluate_run, fmt,  # noqa: E402
                 group_suffix, group_tag, images_shown, keep, places, processor, read_records)
from target import PRESET, PRESET_FILE, checks, common_mean, preset_sha  # noqa: E402

# name: overrides on top of the preset. Width is the channel count of the image-sized layer (x2 per layer
# towards 4x4), so a layer's cost grows with its square.
VARIANTS: dict[str, list[str]] = {
    "preset": [],
    "w24": ["model.generator.width=24", "model.discriminator.width=24"],
    "w48": ["model.generator.width=48", "model.discriminator.width=48"],
    "d24": ["model.discriminator.width=24"],
    "b128": ["data.batch_size=128"],  # the preset's batch since session 20 (64 before)
    "b64": ["data.batch_size=64"],
    "b256": ["data.batch_size=256"],
    "lr4": ["model.lr_g=4.0e-4", "model.lr_d=4.0e-4"],  # both rates x2 with the batch's x2 (linear scaling)
    "g4": ["model.lr_g=4.0e-4"],  # G's rate alone x2 (the ladder's TTUR, D faster, was a negative)
    # lr4 with both rates falling linearly to 0 over the budget's second half: lr4's rare-KID gain, with the
    # late-run swings that the larger rates bring settled before the budget stops
    "lr4d": ["model.lr_g=4.0e-4", "model.lr_d=4.0e-4", "model.lr_decay_start=0.5"],
    # Adam's first moment off and a shorter second (StyleGAN2's 0, 0.99; BigGAN/SNGAN's hinge runs use beta1 0)
    # instead of DCGAN's 0.5, 0.999: less momentum to carry G and D past each other's moves
    "beta0": ["model.betas=[0.0,0.99]"],
    # the preset as typed, plus five more EMAs of its generator for ema_length.py to evaluate; its own figures are
    # the preset's (the model's EMA), trained a little slower for the tracks' updates
    "tracks": ["callbacks.ema_tracks.half_lives_kimg=[10,30]", "callbacks.ema_tracks.sigma_rels=[0.04,0.15,0.25]"],
    # the same with shorter averages, around the best of "tracks" on seed 1 (10 kimg, sigma 0.04)
    "tracks_short": ["callbacks.ema_tracks.half_lives_kimg=[5,10]", "callbacks.ema_tracks.sigma_rels=[0.02,0.04,0.06]"],
    # Collapse by Conditioning (ladder row bf16_tr16_ct, session 9, batch 64 at 346 kimg: FD lower and NonDemented's
    # accuracy higher on both seeds, the audit a little worse): unconditional for 25 kimg, conditioning blended in by 100
    "ct": ["model.cond_start_kimg=25", "model.cond_end_kimg=100"],
    # ADC-GAN (Hou et al. 2022) at the paper's weight: D's classifier tells real class k from generated class k,
    # aimed at generated NonDemented drifting to VeryMild (class_kid.py's judged shares, session 23)
    "adc": ["model.adc_weight=1.0"],
    # adc at under a third of the weight: adc's gain on the common classes, with less of the rare class's copying
    # (its generated ModerateDemented sat closer to its 22 training images than to new renders on every seed)
    "adc03": ["model.adc_weight=0.3"],
    # adc with the rare class (22 images, at most few_shot_images) left to D's projection: adc's gain on the common
    # classes without its classifier's copy of the rare class
    "adc_common": ["model.adc_weight=1.0", "model.adc_few_shot=false"],
    # adc_common, the rare class's images (real and generated) also mirrored and tilted for D (the ladder's
    # bf16_tr16_fewshot_geo, session 14: D's memory of the 22 images halved, nothing leaked into G): adc_common still
    # drew the rare class further from new renders and nearer its training images than the preset
    "adc_common_geo": ["model.adc_weight=1.0", "model.adc_few_shot=false", "model.few_shot_policy='flip,rotation'"],
    # the two that kept most: adc03's FD/floor gain (0.73x over five seeds) with adc_common's rare class left out of
    # the terms (rare 1.7 / 0.7 / 5.0x the preset's against new renders, adc03 2.9 / 4.1 / 7.6x)
    "adc03_common": ["model.adc_weight=0.3", "model.adc_few_shot=false"],
    # adc03_common drew the rare class nearer new renders than the preset at ~170 kimg (4 of 4 seeds) and further at
    # ~300 (3 of 3): ADC's signal first speeds every class up, then pulls the rare class onto its 22 images. So ADC
    # for the first 100 kimg, faded out by 150, and the plain preset for the rest of the budget
    "adc03_common_fade": ["model.adc_weight=0.3", "model.adc_few_shot=false", "model.adc_fade_start_kimg=100",
                          "model.adc_fade_end_kimg=150"],
    # adc03_common_fade kept 0.89x of the preset's FD/floor where ADC kept on gave 0.47x (other machines): ADC to
    # 150 kimg, faded out by 200, keeps it for most of a ~240-kimg budget and still leaves the rare class ~40 kimg
    # of the plain preset to settle in
    "adc03_common_late_fade": ["model.adc_weight=0.3", "model.adc_few_shot=false", "model.adc_fade_start_kimg=150",
                               "model.adc_fade_end_kimg=200"],
    # the other way round: both fades gave ADC's FD gain back, which showed only where ADC was on at the end, and
    # kept on from the start it pulled the rare class onto its 22 images. Plain preset to 100 kimg, ADC (0.3,
    # without the rare class) brought in by 130 and on to the end (~90-115 kimg of a ~220-250-kimg budget)
    "adc03_common_rise": ["model.adc_weight=0.3", "model.adc_few_shot=false", "model.adc_rise_start_kimg=100",
                          "model.adc_rise_end_kimg=130"],
    # gSR (Rangwani et al. 2022) at the paper's weight and beta: the rare class's CBN scale and shift, 14x the common
    # classes' weight here (22 against 360 images), held from growing the few large directions that collapse a
    # long-tailed class; not a schedule, a change to what the rare class's own parameters may learn
    "gsr": ["model.gsr_weight=0.5"],
    # half of gsr's weight (session 41): gsr drew the rare class nearer new renders on 4 of 5 seeds at 1.14x the preset's
    # FD/floor on 5 of 5; does a smaller dose keep the first with less of the second?
    "gsr025": ["model.gsr_weight=0.25"],
    # adc03_common's FD and common-class gain with gsr holding the rare class's CBN: ADC pulled that class onto its
    # 22 images on 2 of 4 seeds (session 36) through what it shares with the others
    "adc03_common_gsr": ["model.adc_weight=0.3", "model.adc_few_shot=false", "model.gsr_weight=0.5"],
    # R3GAN's loss (Huang et al. 2024): relativistic pairing, each real image judged against a fake of its label, so D
    # cannot call a whole class real or fake by its level alone; with R1 and R2 at the gamma R1 had on the ladder
    # (bf16_tr16_r1), lazily every 16 D steps. rpgan: the loss alone (R3GAN expects it less stable without the two)
    "rpgan_r12": ["model/loss=rpgan", "model.r1_gamma=0.2", "model.r2_gamma=0.2", "model.r1_interval=16"],
    "rpgan": ["model/loss=rpgan"],
    # D's BatchNorm normalises the real and the fake batch each with its own statistics (they pass D separately), so
    # a shift of a feature's mean or spread between real and fake images is normalised away before D can judge it
    # (why Salimans et al. 2016 proposed virtual BatchNorm); FD compares exactly those means and covariances.
    # Spectral norm in place of BatchNorm (SNGAN / BigGAN's D, with projection and hinge as here) keeps them visible
    "sn": ["model.discriminator.spectral_norm=true"],
    # the same hypothesis with D unchanged: its BatchNorm kept, real and fake images through it as one batch
    "joint": ["model.d_joint_batch=true"],
    # no normalisation in D at all (StyleGAN's D has none): nothing of the batch enters an image's logit, and nothing
    # constrains D's layers as spectral norm does
    "plain": ["model.discriminator.batch_norm=false"],
    # ... with lazy R1 at the ladder's gamma, as StyleGAN's D (no normalisation) always has it
    "plain_r1": ["model.discriminator.batch_norm=false", "model.r1_gamma=0.2", "model.r1_interval=16"],
    # D learns the 22 rare images by heart (metrics/d_overfit/ModerateDemented ~0.4-0.5 late in the preset's runs,
    # the common classes ~0): APA (Jiang et al. 2021) tells D that some of G's images of a class are real, with a
    # probability per class adapted from that class's E[sign D(real)] (target 0.6 as in the paper; ada_kimg 100 as
    # the ladder's ADA rows, since a class's p moves only with its own images). apa_rare: the rare class alone
    "apa": ["model.apa_target=0.6", "model.ada_kimg=100"],
    "apa_rare": ["model.apa_target=0.6", "model.apa_few_shot=true", "model.ada_kimg=100"],
    # apa_rare's rare class drifted towards MildDemented on three seeds while copying less: a smaller dose, p held
    # lower by a higher target
    "apa_rare08": ["model.apa_target=0.8", "model.apa_few_shot=true", "model.ada_kimg=100"],
}
# --smoke: a tiny preset for 20 s; the data overrides are also the evaluation's
SMOKE_EXTRA = SMOKE + ["data.per_class=60", "trainer.max_time=00:00:00:20", "metrics.every_n_epochs=0"]
SMOKE_DATA = [o for o in SMOKE_EXTRA if o.startswith("data.")]
# --match-kimg: the run ends at its preset run's step count; the wall-clock cap only guards against a stalled machine
MATCHED_MAX_TIME = "00:01:00:00"


def matched_presets(group: str, seeds: list[int], sha: str) -> dict[int, dict]:
    """--match-kimg: per seed, the latest CPU run of the preset as typed (target.py) in `group` of this preset
    version, whose images shown the variant then trains exactly; a missing one ends the script in one line."""
    found = {r["seed"]: r for r in typed_cpu_runs() if r.get("group") == group and r.get("preset_sha") == sha}
    missing = [s for s in seeds if s not in found]
    if missing:
        sys.exit(f"error: --match-kimg {group}: no run of preset {sha} for seed(s) {missing} in results/target.jsonl "
                 f"(run `python experiments/quality/target.py --seeds {','.join(map(str, missing))} --group {group}`)")
    return {s: found[s] for s in seeds}


def batch_of(variant: str) -> int:
    """The variant's batch size: its own override, else the preset file's."""
    from omegaconf import OmegaConf
    own = [o.split("=", 1)[1] for o in VARIANTS[variant] if o.startswith("data.batch_size=")]
    return int(own[-1]) if own else int(OmegaConf.load(PRESET_FILE).data.batch_size)


def matched_steps(preset: dict, batch: int) -> int:
    """Optimizer steps that show `preset`'s images (its kimg) at `batch`: one D and one G step per batch."""
    return 2 * round(preset["kimg"] * 1000 / batch)


def budget_label(r: dict) -> str | None:
    """A run's budget when not the preset's 10 minutes: --max-time's, or --match-kimg's."""
    return r.get("max_time") or ("its preset run's kimg" if r.get("kimg_of") else None)


def run(variant: str, seed: int, args, out_root: Path) -> dict:
    preset = args.matched.get(seed)
    tail = "_kimg_of" if preset else budget_tag(args.max_time)
    run_dir = out_root / f"budget_{variant}_s{seed}{tail}{group_suffix(args.group)}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # an interrupted earlier attempt
    extra = (SMOKE_EXTRA if args.smoke else []) + ([f"trainer.max_time={args.max_time}"] if args.max_time else [])
    if preset:
        steps = matched_steps(preset, batch_of(variant))
        extra += [f"trainer.max_steps={steps}", f"trainer.max_time={MATCHED_MAX_TIME}"]
    train = [PRESET, *QUIET, *extra, *VARIANTS[variant], f"seed={seed}", f"hydra.run.dir={run_dir}"]
    print(f"[{time.strftime('%H:%M:%S')}] {variant}: python -m ganlab.train {' '.join(train[:-1])}", flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", "ganlab.train", *train], check=True, cwd=ROOT)
    wall = time.time() - start
    figures = evaluate_run(run_dir, seed, SMOKE_DATA if args.smoke else [], args.smoke)
    return {"variant": variant, "overrides": VARIANTS[variant], "seed": seed, "preset_sha": preset_sha(),
            **({"max_time": args.max_time} if args.max_time else {}), **({"group": args.group} if args.group else {}),
            "cpu": processor(), "wall_s": round(wall, 1),
            **({"kimg_of": preset["run_dir"], "pair_cpu": preset.get("cpu")} if preset else {}),
            "kimg": round(images_shown(run_dir) / 1000, 1),
            "date": time.strftime("%Y-%m-%d %H:%M"), "run_dir": str(run_dir), **figures}


def preset_runs_of_target(records: list[dict]) -> list[dict]:
    """target.py's runs of the preset as typed, on a CPU and preset version that `records` hold: the same command
    and evaluation as the variant "preset", so they serve as its runs (marked source "target.py") and a new preset
    version needs no second run per seed."""
    wanted = {version(r) for r in records}
    return [dict(r, variant="preset", source="target.py") for r in typed_cpu_runs() if version(r) in wanted]


def typed_cpu_runs() -> list[dict]:
    """target.py's recorded CPU runs of the preset as typed, less those marked excluded."""
    return [r for r in read_records(HERE / "results" / "target.jsonl")
            if not r.get("excluded") and str(r.get("device", "cpu")).startswith("cpu")]


def version(r: dict) -> tuple:
    """What a variant's run is compared within: its preset file, machine and budget (the kimg that the minutes
    give is the CPU's), and its --group: two machines that report one CPU name can differ in speed (the Xeon of
    sessions 24-25 trained the preset at 547-619 img/s, session 34's at 481). A --match-kimg run trained its preset
    run's images on whichever machine: it counts as of that run's CPU."""
    return r.get("preset_sha"), r.get("pair_cpu") or r.get("cpu"), r.get("max_time"), r.get("group")


def preset_fd(records: list[dict]) -> dict[tuple, float | None]:
    """The preset's five-space FD/floor per (seed, version): its latest run of each."""
    return {(r["seed"], *version(r)): r.get("fd_ratio_spaces") for r in records if r["variant"] == "preset"}


def ratio_to_preset(r: dict, base: dict[tuple, float | None]) -> float | None:
    """A variant's FD/floor over the preset's on the same seed, preset version and CPU: seeds differ more than most
    settings do (README), so a variant is read against the same seed. None for the preset itself or without a pair."""
    fd, ref = r.get("fd_ratio_spaces"), base.get((r["seed"], *version(r)))
    return fd / ref if r["variant"] != "preset" and fd and ref else None


def paired_fd(records: list[dict]) -> dict[tuple[str, str | None], list[float]]:
    """Per (variant, budget), ratio_to_preset of its latest run on each seed that has a pair."""
    base = preset_fd(records)
    latest = {(r["variant"], r["seed"], budget_label(r), *version(r)): r for r in records}
    out: dict[tuple[str, str | None], list[float]] = {}
    for r in latest.values():
        ratio = ratio_to_preset(r, base)
        if ratio:
            out.setdefault((r["variant"], budget_label(r)), []).append(ratio)
    return out


def cells(r: dict) -> dict[str, str]:
    """A run's figures as table cells (this table's and ema_length.py's)."""
    low, high = r.get("fd_ratio_spaces_range") or (None, None)
    common = common_mean(r["kid_class"])
    bound = None if common is None else 2 * common
    met = [ok for name, _, ok in checks(r) if not name.startswith("(")]
    return {"fd": f"{fmt(r.get('fd_ratio_spaces'), '.1f')}x [{fmt(low, '.1f')}, {fmt(high, '.1f')}]",
            "recall": fmt(r["recall"], ".2f"), "coverage": fmt(r["coverage"], ".2f"),
            "ssim": f"{fmt(r['ssim_div'], '.3f')} ({fmt(r['ssim_div_real'], '.3f')})",
            "rare_kid": f"{fmt(r['kid_class'].get(RARE), '.2f')} ({fmt(bound, '.2f')})",
            "audit": f"{fmt(r['audit_p1'], '.1%')} / {fmt(r['audit_p5'], '.1%')}",
            "met": f"{sum(map(bool, met))}/{len(met)}"}


def table(records: list[dict]) -> str:
    base = preset_fd(records)
    lines = ["| variant | seed | kimg | img/s | FD/floor equal n, 5 spaces [min, max] | FD / preset's, same seed | "
             "recall | coverage | SSIM div (real) | rare KID (2 x common) | audit <p1 / <p5 | targets met |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (list(VARIANTS).index(r["variant"]) if r["variant"] in VARIANTS
                                            else len(VARIANTS), r["variant"], r["seed"])):
        c = cells(r)
        lines.append(
            f"| {r['variant']}{' (target.py)' if r.get('source') else ''}"
            f"{', ' + budget_label(r) if budget_label(r) else ''}{group_tag(r)} | "
            f"{r['seed']} | {fmt(r['kimg'], '.0f')} | "
            f"{fmt(r.get('img_per_s'), '.0f')} | {c['fd']} | {fmt(ratio_to_preset(r, base), '.2f')} | "
            f"{c['recall']} | {c['coverage']} | {c['ssim']} | {c['rare_kid']} | {c['audit']} | {c['met']} |")
    for (variant, label), ratios in paired_fd(records).items():
        geo = geometric_mean(ratios)
        lines.append(f"| {variant}{', ' + label if label else ''} / preset, geometric mean over "
                     f"{len(ratios)} seed(s) | | | | | {geo:.2f} ({min(ratios):.2f}-{max(ratios):.2f}) | | | | | | |")
    cpus = sorted({r.get("cpu") or "?" for r in records})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    shas = sorted({r.get("preset_sha") or "?" for r in records})
    lines += ["", f"2 cores of {' / '.join(cpus)}; the preset's 10 minutes of training (or the budget a row names), "
              f"then the ladder's evaluation; preset file {' / '.join(shas)} (a variant is compared with the preset "
              "of its own version, CPU and budget). "
              "Overrides: " + "; ".join(f"{v}: {' '.join(VARIANTS[v]) or '(none)'}" for v in variants) +
              ". `python experiments/quality/budget.py --variants V --seeds S` (results/budget.jsonl)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="", help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--max-time", help="a budget other than the preset's 10 min, as DD:HH:MM:SS (recorded; "
                        "compared only with the preset's runs at the same budget)")
    parser.add_argument("--group", help="a tag recorded with the runs: a variant is then compared only with the "
                        "preset's runs of the same tag (budget.py's or target.py --group's), e.g. one machine's session")
    parser.add_argument("--match-kimg", metavar="GROUP", help="train each seed exactly as many images as that seed's "
                        "preset run of GROUP (target.py --group GROUP) did, and pair it with that run: the machine's "
                        "speed then leaves the comparison (the runs' minutes differ instead)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v] or (["preset", "w24"] if args.smoke else [])
    check_max_time(args.max_time)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    args.matched = {}
    if args.match_kimg:
        if args.max_time or args.group:
            sys.exit("error: --match-kimg sets the budget and the group itself; leave out --max-time and --group")
        if "preset" in variants:
            sys.exit("error: --match-kimg pairs variants with target.py's preset runs; leave 'preset' out")
        args.matched, args.group = matched_presets(args.match_kimg, seeds, preset_sha()), args.match_kimg
    out_root, results, records = places(args.smoke, "budget.jsonl")
    readme = HERE / "README.md"
    if not args.smoke:
        check_block(readme, "budget")
    for seed in seeds:  # seed-major: each seed's variants side by side
        for variant in variants:
            keep(run(variant, seed, args, out_root), records, results)
    text = table(([] if args.smoke else preset_runs_of_target(records)) + records)  # budget's own runs win a pair
    print(text)
    if not args.smoke:
        write_block(readme, "budget", text)


if __name__ == "__main__":
    main()
