"""python -m ganlab.train [group=option ...] [key=value ...]

Composes conf/train.yaml, instantiates the DataModule, the GAN LightningModule, callbacks, logger and
Trainer from it (ganlab.training), and fits. Every run writes into its own Hydra run directory.
Lightning is imported only once Hydra has composed the command line: a mistyped key or group is one
line in about half a second, not after the ~5 s that loading Lightning takes (checking a value's type
needs the target classes, so that check comes after it).
"""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ganlab.cli import CONFIG_DIR, entry_point
from ganlab.config import check_argument_types
from ganlab.errors import GanlabError
from ganlab.sweep import METRICS_FILE, sweep_group


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@entry_point
def main(cfg: DictConfig) -> float | None:
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int):
        raise GanlabError(f"seed={cfg.seed!r}: expected an integer")
    if cfg.model.get("num_classes", 0) is None and cfg.data.get("num_classes") is None:
        from ganlab.training import count_classes  # a conditional model on data that names its classes itself

        cfg.data.num_classes = count_classes(cfg.data)
    for group in ("model", "data", "trainer"):
        check_argument_types(cfg[group], group)  # named, before anything is built or rendered
    if cfg.get("group") is None:
        cfg.group = sweep_group()  # the jobs of one multirun share a W&B group
    from ganlab.strategy import is_rank_zero
    from ganlab.training import train

    metrics = train(cfg)
    if is_rank_zero():  # final logged values, read by the multirun summary (ganlab.sweep)
        Path(cfg.paths.output_dir, METRICS_FILE).write_text(json.dumps(metrics, indent=1, sort_keys=True))
    objective = cfg.get("optimized_metric")
    if objective and objective not in metrics:
        raise GanlabError(f"optimized_metric={objective!r} was not logged by this run; logged: {sorted(metrics)}")
    return metrics[objective] if objective else None


if __name__ == "__main__":
    main()
