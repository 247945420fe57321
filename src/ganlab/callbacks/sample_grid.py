"""Fixed-noise sample grids: one PNG per epoch (same latent vectors all run long), a final grid,
a GIF of the whole run, and the grid as an image in the logger (W&B / TensorBoard)."""
from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from ganlab.pixels import to_uint8


def grid_image(images: torch.Tensor, nrow: int = 8, row_names: list[str] | None = None) -> Image.Image:
    """[-1, 1] images -> one PIL grid; with `row_names`, each row is labelled on the left."""
    grid = make_grid(to_uint8(images).cpu(), nrow=nrow, padding=2, pad_value=255)
    arr = grid.permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
    if not row_names:
        return im
    margin = 8 + 6 * max(len(n) for n in row_names)
    labelled = Image.new("RGB", (im.width + margin, im.height), "white")
    labelled.paste(im, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    row_h = im.height / len(row_names)
    for i, name in enumerate(row_names):
        draw.text((4, int(row_h * (i + 0.5)) - 5), name, fill="black")
    return labelled


class SampleGrid(L.Callback):
    def __init__(self, every_n_epochs: int = 1, dirname: str = "samples", gif: bool = True):
        self.every_n_epochs, self.dirname, self.gif = every_n_epochs, dirname, gif

    def out_dir(self, trainer: L.Trainer) -> Path:
        path = Path(trainer.default_root_dir) / self.dirname
        path.mkdir(parents=True, exist_ok=True)
        return path

    def render(self, trainer: L.Trainer, pl_module) -> Image.Image:
        names = None
        if pl_module.conditional:
            names = list(getattr(trainer.datamodule, "class_names", None) or [])[: pl_module.num_classes] or None
        return grid_image(pl_module.fixed_samples(), nrow=8, row_names=names)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch
        if not trainer.is_global_zero or (epoch + 1) % self.every_n_epochs:
            return
        image = self.render(trainer, pl_module)
        image.save(self.out_dir(trainer) / f"epoch_{epoch:04d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples/fixed_noise", [image], step=trainer.global_step,
                                 caption=[f"epoch {epoch}"])
            elif isinstance(logger, TensorBoardLogger):
                import numpy as np
                logger.experiment.add_image("samples/fixed_noise", np.asarray(image), trainer.global_step,
                                            dataformats="HWC")

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        out = self.out_dir(trainer)
        self.render(trainer, pl_module).save(out / "final.png")
        frames = sorted(out.glob("epoch_*.png"))
        if self.gif and frames:
            images = [Image.open(f).convert("P", palette=Image.ADAPTIVE) for f in frames]
            images[0].save(out / "progress.gif", save_all=True, append_images=images[1:], duration=400, loop=0)
