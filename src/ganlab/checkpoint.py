"""Loading a ganlab checkpoint safely (weights_only=True: tensors and plain data, no pickled code)
and rebuilding its GAN module from the recipe the checkpoint carries (see callbacks/recipe.py)."""
from __future__ import annotations

import functools
import hashlib
import inspect
import pickle
import re
from pathlib import Path

import torch
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from ganlab.errors import GanlabError, error_summary, first_line

# ----------------------------------------------------------------------------- what a checkpoint may build
# A checkpoint is plain data (weights_only=True), but its recipe goes to Hydra's instantiate, which calls
# whatever `_target_` names (and follows attribute chains: `ganlab.config.os.system`). So every
# `_target_` in a recipe must resolve to one of these very classes (compared by identity, never by name).
#
# >>> When you add a network, loss, regulariser or augment class that conf/model/ can name, add its
# >>> dotted path to RECIPE_CLASSES, or checkpoints of models that use it will be refused.
# (tests/test_checkpoint_safety.py fails for any conf/model/ or conf/data/ `_target_` missing here.)
RECIPE_CLASSES = frozenset({
    "ganlab.models.gan_module.GANModule",
    "ganlab.models.gan.MLPGenerator",
    "ganlab.models.gan.MLPDiscriminator",
    "ganlab.models.dcgan.DCGANGenerator",
    "ganlab.models.dcgan.DCGANDiscriminator",
    "ganlab.models.cdcgan.ConditionalDCGANGenerator",
    "ganlab.models.cdcgan.ConditionalDCGANDiscriminator",
    "ganlab.models.losses.NonSaturatingLoss",
    "ganlab.models.losses.HingeLoss",
    "ganlab.models.losses.LSGANLoss",
    "ganlab.models.losses.WGANGPLoss",
    "ganlab.models.losses.RelativisticPairedLoss",
})
# The data modules that the data config of a checkpoint's run (config_resolved.yaml, or a generate
# output's generate.json) may build when evaluate, audit or augment take the training data from it.
# >>> Add a new dataset's DataModule here.
DATA_CLASSES = frozenset({
    "ganlab.data.brainsim.BrainSimDataModule",
    "ganlab.data.folder.ImageFolderDataModule",
    "ganlab.data.alzheimer.AlzheimerDataModule",
    "ganlab.data.brain_tumor.BrainTumorDataModule",
    "ganlab.data.oasis.OasisDataModule",
    "ganlab.data.parquet.ParquetDataModule",
})
_HYDRA_HARMLESS = {"_target_", "_args_", "_recursive_", "_convert_"}  # `_partial_` would hand out a callable


@functools.cache
def _classes(names: frozenset) -> frozenset:
    return frozenset(get_object(name) for name in names)


def allowed_class(target, names: frozenset = RECIPE_CLASSES) -> bool:
    """True when the dotted path `target` resolves to one of the classes listed in `names`. Only
    ganlab's own modules are imported on the way (no foreign module runs its import-time code)."""
    if not isinstance(target, str) or target.split(".")[0] != "ganlab":
        return False
    try:
        obj = get_object(target)
    except Exception:
        return False
    return isinstance(obj, type) and any(obj is cls for cls in _classes(names))


def check_recipe(tree, names: frozenset, what: str, key: str = "") -> None:
    """Raise a GanlabError ("<what> ... at <key>") unless every `_target_` in the nested dicts and
    lists of `tree` is an allowed class; `_partial_`, `_args_` without such a target and
    interpolations (`${...}`, which resolve to new nodes at instantiation) are refused too."""
    where = f" at {key}" if key else ""
    if isinstance(tree, dict):
        unknown = sorted(k for k in tree if str(k).startswith("_") and str(k).endswith("_")
                         and k not in _HYDRA_HARMLESS)
        if unknown:
            raise GanlabError(f"{what} sets {unknown[0]}{where}, which a ganlab recipe never does")
        if "_target_" in tree and not allowed_class(tree["_target_"], names):
            raise GanlabError(f"{what} names {tree['_target_']!r}{where}, which is not one of the classes it may "
                              "build (ganlab.checkpoint.RECIPE_CLASSES / DATA_CLASSES)")
        if "_args_" in tree and "_target_" not in tree:
            raise GanlabError(f"{what} passes _args_{where} to nothing ganlab builds")
        for k, value in tree.items():
            check_recipe(value, names, what, f"{key}.{k}" if key else str(k))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            check_recipe(value, names, what, f"{key}[{i}]")
    elif isinstance(tree, str) and "${" in tree:
        raise GanlabError(f"{what} holds an interpolation{where} ({tree!r}); ganlab saves resolved values")


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if path.is_dir():
        raise GanlabError(f"checkpoint {path} is a folder; name the .ckpt file (e.g. {path}/checkpoints/last.ckpt)")
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
                          f"({error_summary(exc)})") from exc
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("ganlab"), dict) or "state_dict" not in ckpt:
        raise GanlabError(f"checkpoint {path} was not written by ganlab.train (no recipe inside)")
    recipe = ckpt["ganlab"].get("model")
    if not (isinstance(recipe, dict) and "_target_" in recipe and isinstance(recipe.get("generator"), dict)):
        raise GanlabError(f"refusing to load checkpoint {path}: its recipe is not a ganlab model config")
    check_recipe(recipe, RECIPE_CLASSES, f"refusing to load checkpoint {path}: its recipe")
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


def constructor_default(model_cfg: dict, key: str):
    """The default of the constructor parameter that the dotted `key` sets ("generator.ordinal" -> the
    generator class's `ordinal` default): an option added after a checkpoint was written is not a
    change as long as the resumed run leaves it at the value the old code behaved as."""
    *path, name = key.split(".")
    node = model_cfg
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    target = node.get("_target_") if isinstance(node, dict) else None
    if target is None:
        return inspect.Parameter.empty
    param = inspect.signature(get_object(target)).parameters.get(name)
    return param.default if param is not None else inspect.Parameter.empty


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
               if old.get(k) != new.get(k) and not (k not in old and new[k] == constructor_default(model_cfg, k))]
    if changed:
        raise GanlabError(f"checkpoint {path} was trained with other model settings ({'; '.join(changed[:4])}"
                          f"{'; ...' if len(changed) > 4 else ''}); resume with the run's own settings")


def check_same_data(ckpt: dict, facts: dict, path: str | Path) -> None:
    """Resuming on the data the checkpoint was trained on: same classes, image size, channels and class counts."""
    saved = ckpt["ganlab"].get("data") or {}
    keys = ("class_names", "image_size", "channels", "class_counts")
    changed = [f"{k}: {saved[k]!r} -> {facts.get(k)!r}" for k in keys if k in saved and saved[k] != facts.get(k)]
    if changed:
        raise GanlabError(f"checkpoint {path} was trained on other data ({'; '.join(changed[:2])}); resume with the "
                          "run's own data settings (its config_resolved.yaml), or start a new run without ckpt_path")


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
        raise GanlabError(f"checkpoint {path} does not match its own recipe: {first_line(exc)}") from exc
    return module.eval(), dict(ckpt["ganlab"]["data"])


def file_sha256(path: str | Path, length: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
