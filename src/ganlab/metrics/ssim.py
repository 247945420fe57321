"""SSIM family on [-1, 1] images (data_range=2 set explicitly, Gaussian window 11 / sigma 1.5).

- nearest_real: each generated image's best SSIM against a fixed set of real images (1.0 = a copy of
  a training image). Candidates are the `candidates` nearest reals in pixel L2 distance (an exact
  copy is always among them); candidates=0 compares against every real image.
- pairwise: SSIM / MS-SSIM of disjoint image pairs of one set: its internal similarity (higher = less
  diverse); compare generated with the same number for real pairs.
- MS-SSIM's standard 5 scales need >= 176 px; `ms_ssim_betas` keeps the first scales that fit the
  image (torchmetrics' size rule) and renormalises their weights: 3 scales at 64 px, 4 at 128 px.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as _ms_ssim

from ganlab.pixels import to_model_range

DATA_RANGE = 2.0  # images in [-1, 1]
KERNEL_SIZE = 11
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def ms_ssim_betas(image_size: int, kernel_size: int = KERNEL_SIZE) -> tuple[float, ...]:
    """Largest prefix of the standard weights that torchmetrics accepts at this size, renormalised."""
    scales = 1
    for n in range(len(MS_SSIM_BETAS), 0, -1):
        if image_size >= 2 ** n and image_size // max(1, n - 1) ** 2 > kernel_size - 1:
            scales = n
            break
    betas = MS_SSIM_BETAS[:scales]
    return tuple(b / sum(betas) for b in betas)


def as_float(images: Tensor, device: str | torch.device = "cpu") -> Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float [-1, 1] on `device`."""
    images = images.to(device)
    return to_model_range(images)


def _band(n: int, kernel: Tensor) -> Tensor:
    """(n + k - 1, n) matrix whose product with a padded row applies the 1-D kernel ('valid' convolution)."""
    k = len(kernel)
    cols = torch.arange(n)
    band = torch.zeros(n + k - 1, n, dtype=kernel.dtype)
    for j in range(k):
        band[cols + j, cols] = kernel[j]
    return band


def _gaussian(sigma: float = 1.5, dtype=torch.float32) -> Tensor:
    size = int(3.5 * sigma + 0.5) * 2 + 1  # torchmetrics' window for sigma (11 for 1.5)
    d = torch.arange((1 - size) / 2, (1 + size) / 2, 1.0, dtype=dtype)
    g = torch.exp(-(d / sigma) ** 2 / 2)
    return g / g.sum()


def _ssim_batch(a: Tensor, b: Tensor, sigma: float = 1.5) -> Tensor:
    """torchmetrics' SSIM (reflect padding, Gaussian window, mean over the full image, K1=0.01, K2=0.03),
    with the separable window applied as two banded matrix products: same values, ~4x faster on CPU."""
    g = _gaussian(sigma)
    pad = (len(g) - 1) // 2
    n, _, h, w = a.shape
    a = torch.nn.functional.pad(a, (pad,) * 4, mode="reflect")
    b = torch.nn.functional.pad(b, (pad,) * 4, mode="reflect")
    x = torch.stack((a, b, a * a, b * b, a * b))
    x = _band(h, g).T.to(a.device) @ (x @ _band(w, g).to(a.device))
    mu_a, mu_b, s_aa, s_bb, s_ab = x
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    var_a, var_b = (s_aa - mu_a ** 2).clamp(min=0), (s_bb - mu_b ** 2).clamp(min=0)
    cov = s_ab - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return value.reshape(n, -1).mean(1)


def ssim(a: Tensor, b: Tensor, batch_size: int = 256) -> Tensor:
    """Per-pair SSIM of two equally long [-1, 1] image batches (data_range 2, Gaussian window 11 / 1.5)."""
    if len(a) == 0:
        return torch.empty(0, device=a.device)
    return torch.cat([_ssim_batch(a[i:i + batch_size].float(), b[i:i + batch_size].float())
                      for i in range(0, len(a), batch_size)])


def ms_ssim(a: Tensor, b: Tensor, betas: tuple[float, ...] | None = None, batch_size: int = 512) -> Tensor:
    """Per-pair MS-SSIM (negative contrast terms clipped, torchmetrics' normalize="relu")."""
    betas = betas or ms_ssim_betas(a.shape[-1])
    return torch.cat([_ms_ssim(a[i:i + batch_size].float(), b[i:i + batch_size].float(), data_range=DATA_RANGE,
                               kernel_size=KERNEL_SIZE, betas=betas, normalize="relu", reduction="none")
                      for i in range(0, len(a), batch_size)])


def nearest_real_ssim(fake: Tensor, real: Tensor, candidates: int = 8) -> tuple[Tensor, Tensor]:
    """(best SSIM, index of that real image) for every generated image."""
    fake = fake.float()
    real = real.to(fake.device, torch.float32)
    k = len(real) if candidates <= 0 else min(candidates, len(real))
    cand = torch.cdist(fake.flatten(1), real.flatten(1)).topk(k, dim=1, largest=False).indices  # (n, k)
    scores = ssim(fake.repeat_interleave(k, dim=0), real[cand.flatten()]).view(len(fake), k)
    best, pos = scores.max(1)
    return best, cand.gather(1, pos[:, None]).squeeze(1)


def pairwise(images: Tensor, max_pairs: int, betas: tuple[float, ...] | None = None) -> tuple[Tensor, Tensor]:
    """(SSIM, MS-SSIM) of the disjoint pairs (images[0], images[1]), (images[2], images[3]), ..."""
    n = min(max_pairs, len(images) // 2)
    a, b = images[0:2 * n:2], images[1:2 * n:2]
    return ssim(a, b), ms_ssim(a, b, betas)
