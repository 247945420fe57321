"""`device=auto|cpu|cuda|cuda:N` of the entry points that run outside a Trainer (audit, augment, evaluate)."""
from __future__ import annotations

import torch

from ganlab.errors import GanlabError


def choose_device(name: str, key: str = "device") -> torch.device:
    """auto: the first CUDA GPU when there is one, else the CPU; any other torch device name as given.
    A name torch does not know, or a GPU this machine lacks, is one error line naming `key`."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except RuntimeError as exc:
        raise GanlabError(f"{key}={name!r}: not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise GanlabError(f"{key}={name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use auto or cpu")
    return device
