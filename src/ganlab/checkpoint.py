"""Loading a ganlab checkpoint safely (weights_only=True: tensors and plain data, no pickled code)
and rebuilding its GAN module from the recipe the checkpoint carries (see callbacks/recipe.py)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ganlab.errors import GanlabError


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise GanlabError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for unsafe globals, RuntimeError for broken zips
        raise GanlabError(f"refusing to load checkpoint {path}: not a plain-weights ganlab checkpoint "
                          f"({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from exc
    if not isinstance(ckpt, dict) or "ganlab" not in ckpt or "state_dict" not in ckpt:
        raise GanlabError(f"checkpoint {path} was not written by ganlab.train (no recipe inside)")
    return ckpt


def load_gan(path: str | Path, expect_family: str | None = None):
    """(GANModule in eval mode, data facts dict) from a checkpoint file."""
    ckpt = read_checkpoint(path)
    model_cfg = OmegaConf.create(ckpt["ganlab"]["model"])
    family = model_cfg.generator._target_.rsplit(".", 1)[0]
    if expect_family and not family.endswith(expect_family):
        raise GanlabError(f"checkpoint {path} holds a {family} model, not {expect_family}")
    module = instantiate(model_cfg)
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise GanlabError(f"checkpoint {path} does not match its own recipe: {str(exc).splitlines()[0]}") from exc
    return module.eval(), dict(ckpt["ganlab"]["data"])


def file_sha256(path: str | Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
