"""A run's discriminator, per class, against new real images instead of the test split's few.

    python experiments/quality/discriminator_overfit.py --real <generate-layout folder of new real images> <run dir> [...]

ganlab.audit measures ADA's r_v per class on the data's test split, which holds only 6 rare images in the
ladder's setting. brainsim can render as many new real images as needed (experiments/synthetic_utility,
oracle.py): with those as the held-out set, each class's r_v rests on hundreds of images. Prints, per class,
r_v and D's mean logit on the training images, the new real images and 512 generated ones (EMA G,
classes in turn, seed 1).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main() -> None:
    from ganlab.audit import checkpoint_discriminator_overfit

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True, help="new real images in ganlab.generate's layout")
    parser.add_argument("runs", nargs="+", help="run folders (checkpoints/last.ckpt inside)")
    args = parser.parse_args()
    for run in args.runs:
        result = checkpoint_discriminator_overfit(Path(run) / "checkpoints" / "last.ckpt", 512, 1, new_real=args.real)
        print(run)
        for name, e in result.items():
            r_v = "n/a" if e["r_v"] is None else f"{e['r_v']:.2f}"
            print(f"  {name}: r_v {r_v} (n={e['n_holdout']} new real); mean D logit train {e['d_train']:+.2f}, "
                  f"new real {e['d_holdout']:+.2f}, generated {e['d_generated']:+.2f}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
