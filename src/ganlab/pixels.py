"""The two pixel ranges ganlab uses: uint8 [0, 255] on disk and in the data store, float [-1, 1] in
the networks (x / 127.5 - 1). Every conversion between them goes through these two functions."""
from __future__ import annotations

import torch


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]; float images are taken as already in [-1, 1] (returned as float32)."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)  # in place on the new float copy
    return images.float()


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded); uint8 images are returned as they are."""
    if images.dtype == torch.uint8:
        return images
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
