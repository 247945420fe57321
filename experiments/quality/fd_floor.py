"""How repeatable is a run's FD/floor? Both sides of the ratio, measured on trained ladder runs.

The ladder's FD/floor divides the domain Fréchet distance of 1024 generated images (the real class mix) to
every real training image by the same distance for the held-out test split (306 real images): one latent draw
over one held-out draw, and the held-out split changes with the run's seed. brainsim renders new real images
from the training distribution, so here, for each run, with the ladder's own evaluation (`ganlab.evaluate`'s
suite, domain family only):
- generated: FD of 1024 samples over `--draws` latent draws (the suite's seed 0, 1, ... for the latents;
  the feature space, trained with seed 0 as in the ladder, stays);
- real: FD of new real renders with the training class mix (render seed `--render-seed`), `--draws` draws each
  of 306 images (the held-out split's size: the recorded floor's n) and of 1024 (the generated set's n);
- the recorded floor (the run's held-out split);
- with `--space-seeds 0,1,...`, all of it again in the feature spaces of domain classifiers trained with other
  seeds (the ladder trains its classifier with seed 0; the FD's scale depends on which).

    python experiments/quality/fd_floor.py <run dir> [<run dir> ...] [--draws 5] [--render-seed 9000]
    python experiments/quality/fd_floor.py                      # the README table again from results/

Prints one line per run, appends it to results/fd_floor.jsonl and rewrites the README's fd_floor block (the
last record of each run). A diagnosis, not a test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from readme_block import check_block, write_block  # noqa: E402
from run import ROOT, evaluation_overrides  # noqa: E402
from ganlab.checkpoint import load_gan  # noqa: E402
from ganlab.data.brainsim import CLASS_NAMES, render_brainsim  # noqa: E402
from ganlab.data.readers import read_image  # noqa: E402
from ganlab.evaluate import build_suite  # noqa: E402
from ganlab.metrics.frechet import FrechetReference  # noqa: E402
from ganlab.run_data import holdout_split, prepared_datamodule, training_data  # noqa: E402

# its own loop over spaces (--space-seeds) replaces the fd_spaces family the ladder evaluates with
ONLY_DOMAIN = [f"metrics.families.{f}=null" for f in ("fd_spaces", "prdc", "ssim", "conditional", "discriminator")]


def suite_for(ckpt: Path, seed: int):
    """ganlab.evaluate's metrics as the ladder runs them (run.py: evaluation_overrides), domain family only."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[*evaluation_overrides(ckpt), f"metrics.seed={seed}",
                                             "metrics.bootstrap=0", *ONLY_DOMAIN])
    return build_suite(cfg)


def render_pool(image_size: int, per_class: int, render_seed: int, root: Path) -> dict[int, torch.Tensor]:
    """New real brainsim images, `per_class` of every class: {label: uint8 (N, 1, H, W)}."""
    out = render_brainsim(root, image_size=image_size, per_class=per_class, test_fraction=0.0, seed=render_seed)
    return {k: torch.from_numpy(np.stack([read_image(str(p), image_size, 1)
                                          for p in sorted((out / "train" / name).glob("*.png"))]))
            for k, name in enumerate(CLASS_NAMES)}


def draw_with_mix(pool: dict[int, torch.Tensor], mix: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """`n` images from the pool with the class proportions `mix` (each class at least one), no repeats."""
    counts = (mix / mix.sum() * n).round().long().clamp(min=1)
    g = torch.Generator().manual_seed(seed)
    parts = []
    for k, c in enumerate(counts.tolist()):
        if c > len(pool[k]):
            raise SystemExit(f"--per-class {len(pool[k])} is too small for {c} images of class {k}")
        parts.append(pool[k][torch.randperm(len(pool[k]), generator=g)[:c]])
    return torch.cat(parts)


def spread(values: list[float]) -> dict:
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def measure_space(module, train, holdout, class_names, ckpt: Path, space_seed: int, draws: int,
                  pool: dict[int, torch.Tensor]) -> dict:
    """Both sides in the feature space of the domain classifier trained with `space_seed` (the ladder's: 0)."""
    suite = suite_for(ckpt, space_seed)
    suite.prepare(train.images, train.labels, class_names, holdout=(holdout.images, holdout.labels),
                  generator=module)
    generated = []
    for seed in range(draws):
        suite.seed = seed  # the latent vectors only: the classifier and the reference stay
        results = {r.name: r.value for r in suite.evaluate(module)}
        generated.append(results["metrics/fd_domain"])
    space = suite.ctx.space("domain")
    ref = FrechetReference(space.real.double())
    mix = torch.bincount(train.labels.cpu(), minlength=len(CLASS_NAMES)).double()
    real = {n: spread([ref.distance(suite.ctx.embed(space.net, draw_with_mix(pool, mix, n, d))[0].double())
                       for d in range(draws)]) for n in (len(holdout), suite.n_samples)}
    return {"floor_recorded": results["metrics/fd_domain_real"], "generated_1024": spread(generated),
            "real_new": {str(n): v for n, v in real.items()}}


def measure(run_dir: Path, draws: int, render_seed: int, per_class: int, pool_root: Path,
            space_seeds: tuple[int, ...] = (0,)) -> dict:
    """The run's figures in each feature space; the top-level ones are the first space's (the ladder's: 0)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    module, _ = load_gan(ckpt)
    data_cfg, _ = training_data(ckpt)
    datamodule = prepared_datamodule(data_cfg)
    train = datamodule.datasets["train"]
    holdout = datamodule.datasets[holdout_split(datamodule)]
    pool = render_pool(data_cfg["image_size"], per_class, render_seed, pool_root)
    spaces = {str(seed): measure_space(module, train, holdout, list(datamodule.class_names), ckpt, seed, draws, pool)
              for seed in space_seeds}
    return {"run": str(run_dir), "draws": draws, "render_seed": render_seed, "holdout_n": len(holdout),
            **spaces[str(space_seeds[0])], "spaces": spaces}


def equal_n_ratio(space: dict) -> float:
    return space["generated_1024"]["mean"] / space["real_new"]["1024"]["mean"]


def table(records: list[dict]) -> str:
    """The README block: the last record of each run, in the order first measured."""
    last = {r["run"]: r for r in records}
    f = lambda d, p=3: f"{d['mean']:.{p}f} ± {d['sd']:.{p}f}"  # noqa: E731
    lines = ["| run | generated FD (n=1024) | floor as recorded (held-out, n=306) | new real FD, n=306 | "
             "new real FD, n=1024 | FD/floor as recorded | FD/floor at equal n (1024) | at equal n, mean over "
             "feature spaces [min, max] |", "|---|---|---|---|---|---|---|---|"]
    for r in last.values():
        g, small, big = r["generated_1024"], r["real_new"][str(r["holdout_n"])], r["real_new"]["1024"]
        ratios = [equal_n_ratio(v) for v in r.get("spaces", {}).values()]
        over = (f"{statistics.mean(ratios):.1f} [{min(ratios):.1f}, {max(ratios):.1f}] ({len(ratios)})"
                if len(ratios) > 1 else "–")
        lines.append(f"| {Path(r['run']).name} | {f(g)} | {r['floor_recorded']:.4f} | {f(small, 4)} | {f(big, 4)} | "
                     f"{g['mean'] / r['floor_recorded']:.1f} | {g['mean'] / big['mean']:.1f} | {over} |")
    draws = "/".join(str(d) for d in sorted({r["draws"] for r in last.values()}))
    seeds = "/".join(str(d) for d in sorted({r["render_seed"] for r in last.values()}))
    lines += ["", f"Mean ± SD over {draws} draws: latent vectors for the generated side (the ladder's feature space, "
              "classifier seed 0, and reference fixed), new real renders with the training class mix for the real side "
              f"(render seed {seeds}). Last column: the same ratio at equal n in each of the domain classifiers trained "
              "with seeds 0, 1, ... (their number in brackets). `python experiments/quality/fd_floor.py <run dirs> "
              "[--space-seeds 0,1,2,3,4]` (results/fd_floor.jsonl)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--render-seed", type=int, default=9000)
    parser.add_argument("--per-class", type=int, default=1100, help="new real images rendered per class")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fd_floor.jsonl")
    parser.add_argument("--space-seeds", default="0", help="domain classifier seeds, the ladder's (0) first")
    parser.add_argument("--readme", type=Path, default=HERE / "README.md", help="whose fd_floor block to rewrite")
    args = parser.parse_args()
    check_block(args.readme, "fd_floor")
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        for run_dir in args.runs:
            r = measure(run_dir, args.draws, args.render_seed, args.per_class, Path(tmp) / "pool",
                        tuple(int(x) for x in args.space_seeds.split(",")))
            g, r306, r1024 = r["generated_1024"], r["real_new"][str(r["holdout_n"])], r["real_new"]["1024"]
            print(f"{run_dir.name}: generated (1024) {g['mean']:.3f} ± {g['sd']:.3f} [{g['min']:.3f}, {g['max']:.3f}]"
                  f" | floor recorded {r['floor_recorded']:.4f} (n={r['holdout_n']})"
                  f" | new real n={r['holdout_n']} {r306['mean']:.4f} ± {r306['sd']:.4f}"
                  f" | new real n=1024 {r1024['mean']:.4f} ± {r1024['sd']:.4f}"
                  f" | at equal n per space {[round(equal_n_ratio(v), 1) for v in r['spaces'].values()]}", flush=True)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    if args.out.is_file():
        write_block(args.readme, "fd_floor", table([json.loads(line) for line in args.out.read_text().splitlines()]))


if __name__ == "__main__":
    main()
