"""Loading a ganlab checkpoint safely (weights_only=True: tensors and plain data, no pickled code)
and rebuilding its GAN module from the recipe the checkpoint carries (see callbacks/recipe.py)."""
from __future__ import annotations

import hashlib
import pickle
import re
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
    except pickle.UnpicklingError as exc:  # a class or function inside: unpickling it could run code
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise GanlabError(f"refusing to load checkpoint {path}: it holds pickled objects "
                          f"({found.group(1) if found else 'not tensors or plain data'}), which could run code "
                          "when loaded; ganlab loads only plain weights (weights_only=True)") from exc
    except Exception as exc:  # RuntimeError for a truncated or foreign file
        raise GanlabError(f"refusing to load checkpoint {path}: not a readable checkpoint "
                          f"({exc.__class__.__name__}: {str(exc).strip().splitlines()[0]})") from exc
    if not isinstance(ckpt, dict) or "ganlab" not in ckpt or "state_dict" not in ckpt:
        raise GanlabError(f"checkpoint {path} was not written by ganlab.train (no recipe inside)")
    # The recipe is instantiated: a crafted one must not name a callable outside ganlab (e.g. os.system).
    foreign = [t for key, t in flatten(ckpt["ganlab"].get("model")).items()
               if key.endswith("_target_") and not str(t).startswith("ganlab.")]
    if foreign:
        raise GanlabError(f"refusing to load checkpoint {path}: its recipe names {foreign[0]!r}, not a ganlab class")
    return ckpt


def flatten(tree, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)) if isinstance(value, dict)
                   else {f"{prefix}.{key}" if prefix else str(key): value})
    return out


def model_family(model_cfg) -> str:
    """"dcgan", "cdcgan", "gan": the module that holds the generator class."""
    return str(model_cfg["generator"]["_target_"]).rsplit(".", 2)[-2]


def check_same_model(ckpt: dict, model_cfg: dict, path: str | Path) -> None:
    """Resuming needs the very model the checkpoint was trained as: same family, same settings."""
    saved = ckpt["ganlab"]["model"]
    if model_family(saved) != model_family(model_cfg):
        raise GanlabError(f"checkpoint {path} holds a {model_family(saved)} model but this run builds "
                          f"{model_family(model_cfg)}; resume with model={model_family(saved)} and the run's "
                          "own settings, or start a new run without ckpt_path")
    old, new = flatten(saved), flatten(model_cfg)
    changed = [f"model.{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(old.keys() | new.keys())
               if old.get(k) != new.get(k)]
    if changed:
        raise GanlabError(f"checkpoint {path} was trained with other model settings ({'; '.join(changed[:4])}"
                          f"{'; ...' if len(changed) > 4 else ''}); resume with the run's own settings")


def load_gan(path: str | Path, expect_family: str | None = None):
    """(GANModule in eval mode, data facts dict) from a checkpoint file."""
    ckpt = read_checkpoint(path)
    model_cfg = OmegaConf.create(ckpt["ganlab"]["model"])
    family = model_family(ckpt["ganlab"]["model"])
    if expect_family and family != expect_family:
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
