"""Does the EMA generator's BatchNorm need its own statistics? A diagnosis on trained ladder runs.

G's BatchNorm layers keep running means and variances of the *training* generator's activations; the
EMA copy averages those buffers along with the weights, but its weights are an average too, so its
activations need not have those statistics (BigGAN's "standing statistics" recompute them). Here, for
each run: the run's own evaluation (`eval_prop`, the EMA G with its averaged buffers) beside the same
evaluation of a copy of its checkpoint whose EMA G has its BatchNorm statistics recomputed from `batches`
batches of 64 with labels uniform over the classes, as balanced training draws them (`raw`: the training
generator in the EMA's place; `raw_standing`: that, statistics recomputed).

    python experiments/quality/standing_stats.py <run dir> [<run dir> ...] [--batches 32] [--variants ema,raw]

Writes <run dir>/standing_<variant>/ (a run folder: the checkpoint copy, the run's config, its evaluation)
and prints FD/floor, recall, coverage and SSIM diversity for both.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from run import evaluate_checkpoint, with_ema_generator  # noqa: E402
from ganlab.checkpoint import load_gan, read_checkpoint  # noqa: E402
from ganlab.models.standing_stats import recompute_batchnorm  # noqa: E402


def figures(evaluation: Path) -> dict:
    m = json.loads(evaluation.read_text())["metrics"]
    v = lambda k: m[k]["value"] if isinstance(m.get(k), dict) else m.get(k)  # noqa: E731
    return {"fd/floor": v("metrics/fd_domain") / v("metrics/fd_domain_real"), "recall": v("metrics/recall"),
            "coverage": v("metrics/coverage"), "ssim_div": v("ssim/diversity")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--variants", default="ema", help="comma-separated: ema, raw, raw_standing")
    args = parser.parse_args()
    for run in args.runs:
        line = [run.name]
        if not (run / "eval_prop" / "evaluation_last.json").is_file():  # not a ladder run: evaluate it as it is
            evaluate_checkpoint(run / "checkpoints" / "last.ckpt", run / "eval_prop")
        before = figures(run / "eval_prop" / "evaluation_last.json")
        for variant in args.variants.split(","):
            out = run / f"standing_{variant}"
            (out / "checkpoints").mkdir(parents=True, exist_ok=True)
            shutil.copy(run / "config_resolved.yaml", out / "config_resolved.yaml")  # evaluate rebuilds the data
            torch.save(variant_checkpoint(run / "checkpoints" / "last.ckpt", variant, args.batches),
                       out / "checkpoints" / "last.ckpt")
            evaluate_checkpoint(out / "checkpoints" / "last.ckpt", out / "eval_prop")
            after = figures(out / "eval_prop" / "evaluation_last.json")
            line.append(f"[{variant}] " + " ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in before))
        print("\n  ".join(line), flush=True)


def variant_checkpoint(ckpt_path: Path, variant: str, batches: int) -> dict:
    """The run's checkpoint with its EMA generator replaced: `ema` its BatchNorm statistics recomputed,
    `raw` the training generator as it is, `raw_standing` the training generator, statistics recomputed."""
    module, _ = load_gan(ckpt_path)
    # the EMA generator itself (sampling_generator() would hand a copy already recomputed, with standing_stats)
    net = module.generator if variant.startswith("raw") else module.generator_ema.module
    if variant != "raw":
        recompute_batchnorm(net, module.latent_dim, module.num_classes,
                            batches=batches, batch_size=64, seed=0)
    return with_ema_generator(read_checkpoint(ckpt_path), dict([*net.named_parameters(), *net.named_buffers()]))


if __name__ == "__main__":
    main()
