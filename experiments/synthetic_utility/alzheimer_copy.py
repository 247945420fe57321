"""Write a Kaggle-layout Alzheimer stand-in from brainsim renders, for running the utility chain with
`data=alzheimer` on a machine without the Kaggle download:

    python experiments/synthetic_utility/alzheimer_copy.py <root> [--scale 0.25] [--size 64]

`<root>/{train,test}/{MildDemented,ModerateDemented,NonDemented,VeryMildDemented}/*.jpg` with the
real set's per-class counts (train 717/52/2560/1792, test 179/12/640/448: ≈49:1) times `--scale`
(at least 1 image per class and split), JPEG quality 90 like the download, grey-level, `--size` px.
Train and test images come from disjoint brainsim seeds. `<root>/copy.json` records how the copy was
rendered, so that new real images of its distribution can be drawn later (oracle.py's `--oracle`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ganlab.data.brainsim import CLASS_NAMES, make_slice

REAL_COUNTS = {"train": {"MildDemented": 717, "ModerateDemented": 52, "NonDemented": 2560, "VeryMildDemented": 1792},
               "test": {"MildDemented": 179, "ModerateDemented": 12, "NonDemented": 640, "VeryMildDemented": 448}}


JPEG_QUALITY = 90
COPY_INFO = "copy.json"


def save_slice(path: Path, rng_key: list[int], label: int, size: int) -> None:
    """brainsim's slice of class `label` drawn with np.random.default_rng(rng_key), as the copy stores it."""
    img = make_slice(np.random.default_rng(rng_key), label, size)
    Image.fromarray(img, "L").save(path, quality=JPEG_QUALITY)


def write_copy(root: Path, scale: float = 0.25, size: int = 64, seed: int = 7) -> dict:
    counts = {}
    for s, (split, per_class) in enumerate(REAL_COUNTS.items()):
        for name, n in per_class.items():
            k = CLASS_NAMES.index(name)
            n = max(1, round(n * scale))
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                save_slice(folder / f"{i:05d}.jpg", [seed, s, k, i], k, size)
            counts[f"{split}/{name}"] = n
    (root / COPY_INFO).write_text(json.dumps({"brainsim_seed": seed, "scale": scale, "size": size,
                                              "jpeg_quality": JPEG_QUALITY, "counts": counts}, indent=2))
    return counts


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    print(write_copy(args.root, args.scale, args.size))
