"""Stores, in every checkpoint, what is needed to rebuild the model without the run's config files:
the resolved model config and the data facts (class names, size, channels, counts)."""
from __future__ import annotations

import lightning as L


def data_facts(datamodule) -> dict:
    return {"class_names": list(datamodule.class_names), "image_size": datamodule.image_size,
            "channels": datamodule.channels, "class_counts": datamodule.class_counts()}


class Recipe(L.Callback):
    def __init__(self, model_config: dict):
        self.model_config = model_config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["ganlab"] = {"model": self.model_config, "data": data_facts(trainer.datamodule)}
