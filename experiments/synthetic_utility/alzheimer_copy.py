"""Write a Kaggle-layout Alzheimer stand-in from brainsim renders, for running the utility chain with
`data=alzheimer` on a machine without the Kaggle download:

    python experiments/synthetic_utility/alzheimer_copy.py <root> [--scale 0.25] [--size 64]

`<root>/{train,test}/{MildDemented,ModerateDemented,NonDemented,VeryMildDemented}/*.jpg` with the
real set's per-class counts (train 717/52/2560/1792, test 179/12/640/448: ≈49:1) times `--scale`
(at least 1 image per class and split), JPEG quality 90 like the download, grey-level, `--size` px.
Train and test images come from disjoint brainsim seeds.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from ganlab.data.brainsim import CLASS_NAMES, make_slice

REAL_COUNTS = {"train": {"MildDemented": 717, "ModerateDemented": 52, "NonDemented": 2560, "VeryMildDemented": 1792},
               "test": {"MildDemented": 179, "ModerateDemented": 12, "NonDemented": 640, "VeryMildDemented": 448}}


def write_copy(root: Path, scale: float = 0.25, size: int = 64, seed: int = 7) -> dict:
    counts = {}
    for s, (split, per_class) in enumerate(REAL_COUNTS.items()):
        for name, n in per_class.items():
            k = CLASS_NAMES.index(name)
            n = max(1, round(n * scale))
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = make_slice(np.random.default_rng([seed, s, k, i]), k, size)
                Image.fromarray(img, "L").save(folder / f"{i:05d}.jpg", quality=90)
            counts[f"{split}/{name}"] = n
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    print(write_copy(args.root, args.scale, args.size))
