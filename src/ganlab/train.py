"""python -m ganlab.train [group=option ...] [key=value ...]

Composes conf/train.yaml, instantiates the DataModule, the GAN LightningModule, callbacks, logger and
Trainer from it, and fits. Every run writes into its own Hydra run directory.
"""
from __future__ import annotations

import logging
import os
import warnings

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ganlab.callbacks.recipe import Recipe, data_facts
from ganlab.cli import entry_point
from ganlab.config import to_plain
from ganlab.strategy import NAME as _GAN_DDP  # noqa: F401  (registers the gan_ddp strategy)

log = logging.getLogger("ganlab.train")
# Lightning 2.6 on torch 2.14 warns about its own use of a deprecated torch API on every run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_logger(cfg: DictConfig):
    return instantiate(cfg.logger) if cfg.get("logger") else False


def train(cfg: DictConfig) -> dict:
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    if "LOCAL_RANK" not in os.environ:
        # The launching process reads the data before anything is written, so bad input fails fast;
        # processes that DDP starts later find it prepared and only load it.
        datamodule.prepare_data()
        datamodule.setup("fit")
        log.info("data: %s", data_facts(datamodule))
    model = instantiate(cfg.model)
    callbacks = build_callbacks(cfg) + [Recipe(to_plain(cfg.model))]
    logger = build_logger(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    if logger:
        logger.log_hyperparams(to_plain(cfg))
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
@entry_point
def main(cfg: DictConfig) -> float | None:
    OmegaConf.save(cfg, f"{cfg.paths.output_dir}/config_resolved.yaml", resolve=True)
    metrics = train(cfg)
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else None


if __name__ == "__main__":
    main()
