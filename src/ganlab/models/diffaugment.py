"""DiffAugment (Zhao et al. 2020): differentiable augmentations applied to real AND fake images
before the discriminator, so D cannot memorise a small training set.

The policy string is the API: comma-separated ops from `OPS`, e.g. "translation,cutout"; "mri" names
`MRI_POLICY`. "color" (brightness, saturation, contrast) is the original; saturation is meaningless on
1-channel MRI and is skipped there, so "color" = "brightness,contrast" on grayscale data.
Translation and cutout fill with -1 (black), the MRI background, not the original's 0 (mid-grey).

Leaks: `cutout` can show up in generated images as black squares (data-efficient-gans issue #84:
an augmentation applied with probability 1 that cannot be undone in distribution leaks, Karras et
al. 2020), most easily on small data; no default uses it.
Translation is the safe default: a shift of the whole slice by up to 1/8 of its size (`translation_ratio`).
`flip` (left-right, half the images) and `rotation` (up to 10 degrees) are geometric ops for a class of a
few dozen images (model.few_shot_policy): brainsim's class means are left-right symmetric to 1.4-2.2 grey
levels while each slice differs from its mirror by ~25 (from another slice: ~32), so a mirrored slice is
a plausible new one. A rotation applied to every image can leak into G as tilted brains.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MRI_POLICY = "translation,brightness,contrast"


def brightness(x):
    return x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)


def saturation(x):
    if x.size(1) == 1:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + mean


def contrast(x):
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + mean


def translation(x, ratio: float = 0.125):
    """Shift by up to ratio*size pixels, filling with the background (-1 = black)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    gy = (gy.unsqueeze(0) + dy + 1).clamp(0, h + 1)
    gx = (gx.unsqueeze(0) + dx + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1], value=-1.0)
    idx = (gy * (w + 2) + gx).flatten(1)  # (b, h*w) into the padded image
    out = padded.flatten(2).gather(2, idx.unsqueeze(1).expand(-1, x.size(1), -1))
    return out.view_as(x)


def cutout(x, ratio: float = 0.5):
    """Black out one random square of ratio*size per image. Can leak into G's outputs on tiny data."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h - ch + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, w - cw + 1, (b, 1, 1), device=x.device)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    inside = (gy >= top) & (gy < top + ch) & (gx >= left) & (gx < left + cw)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, -1.0), x)


def flip(x):
    """Mirror left-right, each image with probability 1/2 (axial brain slices are nearly symmetric)."""
    mirror = torch.rand(x.size(0), 1, 1, 1, device=x.device) < 0.5
    return torch.where(mirror, x.flip(3), x)


def rotation(x, max_degrees: float = 10.0):
    """Rotate about the centre by an angle uniform in [-max_degrees, max_degrees] per image (a head's tilt in
    the scanner); bilinear, the corners it uncovers filled with -1 (black)."""
    angle = (torch.rand(x.size(0), device=x.device) * 2 - 1) * (max_degrees * torch.pi / 180)
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # grid_sample pads with 0: sample x + 1 so that the padding is -1 after shifting back
    return F.grid_sample(x + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1


OPS = {
    "color": (brightness, saturation, contrast),
    "brightness": (brightness,),
    "saturation": (saturation,),
    "contrast": (contrast,),
    "translation": (translation,),
    "cutout": (cutout,),
    "flip": (flip,),
    "rotation": (rotation,),
}


ALIASES = {"mri": MRI_POLICY}


def parse_policy(policy: str | None) -> tuple:
    """"translation,cutout" -> ("translation", "cutout"); None, "" and "none" -> ()."""
    if policy is not None and not isinstance(policy, str):
        raise ValueError(f"DiffAugment policy must be a comma-separated string, got {policy!r}")
    names = [p.strip() for p in ALIASES.get(policy, policy or "").split(",") if p.strip() and p.strip() != "none"]
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError(f"unknown DiffAugment op(s) {unknown}; choose from {sorted(OPS)} or {sorted(ALIASES)}")
    return tuple(names)


def run_op(op, x: torch.Tensor, translation_ratio: float) -> torch.Tensor:
    return op(x, translation_ratio) if op is translation else op(x)


def diff_augment(x: torch.Tensor, policy: str | tuple | None, translation_ratio: float = 0.125) -> torch.Tensor:
    names = parse_policy(policy) if isinstance(policy, str) or policy is None else policy
    for name in names:
        for op in OPS[name]:
            x = run_op(op, x, translation_ratio)
    return x.contiguous()


def augment_with_probability(x: torch.Tensor, ops: tuple, p: torch.Tensor | float,
                             translation_ratio: float = 0.125) -> torch.Tensor:
    """ADA's form (Karras et al. 2020): each op of the policy applied to each image independently with
    probability p (a 0-dim tensor: no host sync). p = 1 is DiffAugment; p = 0 leaves x unchanged."""
    for name in ops:
        for op in OPS[name]:
            apply = torch.rand(x.size(0), 1, 1, 1, device=x.device) < p
            x = torch.where(apply, run_op(op, x, translation_ratio), x)
    return x.contiguous()
