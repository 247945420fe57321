"""Where the generated brains sit, against the real ones: a diagnostic for the SSIM-diversity gap.

    python experiments/quality/geometry.py outputs/experiments/quality/preset_s1 [more run dirs]

For the run's training images and as many generated ones (EMA generator, the same class labels), the
brain mask (pixels brighter than the black background) gives each image's centroid row/column, area,
principal-axis angle and mean brightness inside the brain. The table shows each quantity's mean and
standard deviation. SSIM compares images pixel by pixel, so a generator whose brains all sit at the
same place looks less diverse to it even when each brain is realistic; a spread well below the real
one says which variation the generator lost.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from hydra.utils import instantiate

from ganlab.checkpoint import load_gan
from ganlab.pixels import to_model_range
from ganlab.run_data import training_data

BACKGROUND = -0.85  # [-1, 1] images: skull-stripped slices are black (-1) outside the brain
QUANTITIES = ("row", "col", "area", "angle", "brightness")


def geometry(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image centroid (px), area (px), principal-axis angle (degrees) and mean brightness of the
    brain mask of [-1, 1] images (N, C, H, W)."""
    x = images.float().mean(dim=1)
    mask = (x > BACKGROUND).float()
    _, h, w = mask.shape
    rows = torch.arange(h, dtype=torch.float32)[None, :, None]
    cols = torch.arange(w, dtype=torch.float32)[None, None, :]
    area = mask.sum((1, 2)).clamp(min=1)
    row = (mask * rows).sum((1, 2)) / area
    col = (mask * cols).sum((1, 2)) / area
    dr, dc = rows - row[:, None, None], cols - col[:, None, None]
    var_r, var_c = (mask * dr ** 2).sum((1, 2)) / area, (mask * dc ** 2).sum((1, 2)) / area
    cov = (mask * dr * dc).sum((1, 2)) / area
    angle = 0.5 * torch.atan2(2 * cov, var_r - var_c) * 180 / math.pi
    brightness = (x * mask).sum((1, 2)) / area
    return dict(zip(QUANTITIES, (row, col, area, angle, brightness)))


def real_and_generated(run_dir: Path, seed: int = 0) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(the run's data config, its training images, as many generated images with the same labels)."""
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    data, _ = training_data(ckpt)
    data = {k: v for k, v in data.items() if k != "balanced_sampling"}
    dm = instantiate(data)
    dm.prepare_data()
    dm.setup("fit")
    train = dm.datasets["train"]
    real, labels = to_model_range(train.images), train.labels
    module, _ = load_gan(ckpt)
    module.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        fake = torch.cat([module.sample(len(b), labels=b if module.conditional else None, ema=True).float()
                          for b in labels.split(256)])
    return data, real, fake


def table_rows(runs: list[Path]):
    """(row name, images) per run: its generated images, after the real training images of its data
    config when no earlier run had the same data (runs on the same data share one real row)."""
    real_shown = set()
    for run in runs:
        data, real, fake = real_and_generated(run)
        key = json.dumps(data, sort_keys=True)
        if key not in real_shown:
            real_shown.add(key)
            yield f"{run.name}: real (train)", real
        yield f"{run.name}: generated", fake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| images | " + " | ".join(f"{q} mean (sd)" for q in QUANTITIES) + " |")
    print("|---" * (len(QUANTITIES) + 1) + "|")
    for name, images in table_rows(args.runs):
        g = geometry(images)
        print(f"| {name} | " + " | ".join(f"{v.mean():.2f} ({v.std():.2f})" for v in g.values()) + " |")


if __name__ == "__main__":
    main()
