"""OmegaConf resolvers used by conf/, and turning a config into plain data."""
from __future__ import annotations

import netrc
import os

from omegaconf import DictConfig, OmegaConf


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


def gan_strategy(devices, num_nodes) -> str:
    from ganlab.strategy import choose_strategy  # registers "gan_ddp" with Lightning

    return choose_strategy(devices, num_nodes)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("wandb_mode"):
        OmegaConf.register_new_resolver("wandb_mode", wandb_mode)
    if not OmegaConf.has_resolver("gan_strategy"):
        OmegaConf.register_new_resolver("gan_strategy", gan_strategy)


def to_plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


register_resolvers()
