"""How grainy are the samples? The power spectrum of generated images against the real ones.

    python experiments/quality/spectrum.py outputs/experiments/quality/preset_s1 [more run dirs]

For the run's training images and as many generated ones (EMA generator, the same class labels; see
geometry.py), the mean power of each image's 2-D Fourier transform (its mean subtracted), averaged over
rings of radial frequency (cycles per pixel; 0.5 is the Nyquist frequency) and at the three Nyquist
points. Transposed convolutions whose kernel the stride does not divide evenly leave a checkerboard: power
at (0.5, 0.5), (0, 0.5) and (0.5, 0) far above the real images'. A generator can match the real images'
low frequencies (shapes: what FD mostly sees) and still miss the top ring (texture: the grain in a grid).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from geometry import table_rows

RINGS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.3), (0.3, 0.4), (0.4, 0.5), (0.5, 0.71))
NYQUIST = {"(.5,.5)": (0.5, 0.5), "(0,.5)": (0.0, 0.5), "(.5,0)": (0.5, 0.0)}


def power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Mean |FFT|^2 over images (N, C, H, W) in [-1, 1], each image's own mean removed: (H, W)."""
    x = images.float().mean(dim=1)
    x = x - x.mean(dim=(1, 2), keepdim=True)
    return torch.fft.fft2(x).abs().pow(2).mean(0)


def spectrum_summary(images: torch.Tensor) -> dict[str, float]:
    """Mean power per frequency ring and at the Nyquist points, scaled per pixel (power / (H*W))."""
    power = power_spectrum(images)
    h, w = power.shape
    power = power / (h * w)
    fy, fx = torch.fft.fftfreq(h)[:, None].abs(), torch.fft.fftfreq(w)[None, :].abs()
    radius = (fy ** 2 + fx ** 2).sqrt()
    out = {f"{lo:g}-{hi:g}": power[(radius >= lo) & (radius < hi)].mean().item() for lo, hi in RINGS}
    for name, (y, x) in NYQUIST.items():
        out[name] = power[int(y * h), int(x * w)].item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    columns = [f"{lo:g}-{hi:g}" for lo, hi in RINGS] + list(NYQUIST)
    print("| images | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, images in table_rows(args.runs):
        s = spectrum_summary(images)
        print(f"| {name} | " + " | ".join(f"{s[c]:.4f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
