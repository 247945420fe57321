"""OmegaConf resolvers used by conf/, turning a config into plain data, and checking the types of
the numbers a config passes to the classes it instantiates."""
from __future__ import annotations

import inspect
import netrc
import os
import types
import typing

from hydra.utils import get_class
from omegaconf import DictConfig, ListConfig, OmegaConf

from ganlab.errors import GanlabError


def wandb_mode() -> str:
    """W&B stays offline unless the user chose otherwise: WANDB_MODE wins; else online only when
    an API key is configured (WANDB_API_KEY or a `wandb login` entry in ~/.netrc)."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        if netrc.netrc().authenticators(host):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("wandb_mode"):
        OmegaConf.register_new_resolver("wandb_mode", wandb_mode)


def to_plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


_NAMES = {int: "an integer", float: "a number", bool: "true or false"}


def _allowed(annotation) -> tuple[set, bool]:
    """The scalar types an annotation such as `int`, `float | None`, `Optional[Union[int, float]]`
    accepts, and whether it accepts None; an empty set for anything else (left unchecked)."""
    args = set(typing.get_args(annotation)) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else {annotation}
    types_ = args - {type(None)}
    return (types_ if types_ and types_ <= set(_NAMES) else set()), type(None) in args


def _fits(value, allowed: set) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, int) and bool({int, float} & allowed) or isinstance(value, float) and float in allowed


def _hints(target: str) -> dict:
    try:
        init = get_class(target).__init__
    except Exception:  # a function target: left to the target
        return {}
    try:
        return typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve: use the ones that are real types
        return {n: p.annotation for n, p in inspect.signature(init).parameters.items()
                if not isinstance(p.annotation, str)}


def check_call_arguments(function, options: dict) -> None:
    """An entry point's options, passed as keyword arguments to `function`: each int, float or bool its signature
    declares must be one (`overwrite=no` would be truthy), or one GanlabError naming the option."""
    for name, annotation in typing.get_type_hints(function).items():
        allowed, optional = _allowed(annotation)
        if name in options and allowed:
            value = options[name]
            if not (value is None and optional) and not _fits(value, allowed):
                names = " or ".join(_NAMES[t] for t in (int, float, bool) if t in allowed)
                raise GanlabError(f"{name}={value!r}: expected {names}")


def check_argument_types(node, key: str) -> None:
    """Raise a GanlabError naming the key when a config value does not fit what the `_target_`'s
    constructor declares as int, float or bool (`model.generator.width=abc`, `trainer.max_epochs=1.5`),
    instead of a TypeError from deep inside the class or mid-run. Walks nested configs."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_argument_types(item, f"{key}[{i}]")
        return
    if not isinstance(node, DictConfig):
        return
    hints = _hints(node._target_) if "_target_" in node else {}
    for name in node:
        if str(name).startswith("_") or OmegaConf.is_missing(node, name):
            continue
        full = f"{key}.{name}" if key else str(name)
        allowed, optional = _allowed(hints.get(name, inspect.Parameter.empty))
        if allowed:  # resolved only here: other values may name paths that exist only inside a run
            value = node[name]
            if not (value is None and optional) and not _fits(value, allowed):
                names = " or ".join(_NAMES[t] for t in (int, float, bool) if t in allowed)
                raise GanlabError(f"{full}={value!r}: expected {names}")
        child = node._get_node(name)
        if isinstance(child, (DictConfig, ListConfig)):
            check_argument_types(child, full)


register_resolvers()
