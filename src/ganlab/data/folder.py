"""Any ImageFolder-style root: `<root>/[<split>/]<class>/<image>`.

Images are decoded once into a uint8 tensor store (N, C, H, W) held in memory; batches are turned
into float [-1, 1] after the transfer to the device (`on_after_batch_transfer`), so the loader
moves 4x fewer bytes and GPU runs convert on the GPU.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from ganlab.errors import GanlabError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")


class UInt8ImageDataset(Dataset):
    """(uint8 image tensor, label) pairs from an in-memory store."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, files: Sequence[str] = ()):
        self.images, self.labels, self.files = images, labels, list(files)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def load_image(path: Path, image_size: int, channels: int, resize: str = "pad") -> np.ndarray:
    """Decode one file to uint8 (C, H, W). resize: "pad" keeps the whole image (letterbox on black),
    "crop" centre-crops to a square, "stretch" ignores the aspect ratio."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
    except Exception as exc:  # PIL raises many types for broken files
        raise GanlabError(f"cannot read image {path}: {exc.__class__.__name__}: {exc}") from exc
    size = (image_size, image_size)
    if resize == "pad":
        im = ImageOps.pad(im, size, method=Image.BICUBIC, color=0)
    elif resize == "crop":
        im = ImageOps.fit(im, size, method=Image.BICUBIC)
    elif resize == "stretch":
        im = im.resize(size, Image.BICUBIC)
    else:
        raise GanlabError(f"data.resize={resize!r}: choose pad, crop or stretch")
    arr = np.asarray(im, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


class ImageFolderDataModule(L.LightningDataModule):
    """Classes are the sub-folders of `<root>/<train_split>` (sorted, or `class_names` in that order).

    The train split is divided into train/val by `val_fraction` (deterministic for `seed`);
    `<root>/<test_split>` when present is the test split.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: int = 1,
        batch_size: int = 64,
        num_workers: int = 0,
        train_split: str | None = "train",
        test_split: str | None = "test",
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        val_fraction: float = 0.1,
        resize: str = "pad",
        balanced_sampling: bool = False,
        seed: int = 0,
    ):
        super().__init__()
        self.root = Path(root).expanduser()
        self.image_size, self.channels, self.batch_size = image_size, channels, batch_size
        self.num_workers, self.train_split, self.test_split = num_workers, train_split, test_split
        self.class_names = list(class_names) if class_names else None
        self.expected_num_classes = num_classes
        self.val_fraction, self.resize, self.balanced_sampling, self.seed = val_fraction, resize, balanced_sampling, seed
        self.datasets: dict[str, UInt8ImageDataset] = {}

    # ------------------------------------------------------------------ discovery
    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else (self.expected_num_classes or 0)

    def split_dir(self, split: str | None) -> Path:
        return self.root / split if split else self.root

    def check_root(self) -> None:
        train_dir = self.split_dir(self.train_split)
        if not train_dir.is_dir():
            raise GanlabError(f"data root {train_dir} does not exist; expected {self.expected_layout()}")

    def expected_layout(self) -> str:
        split = f"{self.train_split}/" if self.train_split else ""
        return f"<root>/{split}<class>/<image> (root={self.root})"

    def discover_classes(self) -> list[str]:
        train_dir = self.split_dir(self.train_split)
        found = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if self.class_names:
            missing = [c for c in self.class_names if c not in found]
            if missing:
                raise GanlabError(f"class folder(s) {missing} missing under {train_dir}")
            return self.class_names
        if not found:
            raise GanlabError(f"no class folders under {train_dir}; expected {self.expected_layout()}")
        if self.expected_num_classes and len(found) != self.expected_num_classes:
            raise GanlabError(f"data.num_classes={self.expected_num_classes} but {train_dir} has "
                              f"{len(found)} class folders {found}")
        return found

    def read_split(self, split: str | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        images, labels, files = [], [], []
        for label, name in enumerate(self.class_names):
            folder = self.split_dir(split) / name
            paths = list_images(folder) if folder.is_dir() else []
            if not paths and split == self.train_split:
                raise GanlabError(f"class folder {folder} has no images")
            for path in paths:
                images.append(load_image(path, self.image_size, self.channels, self.resize))
                labels.append(label)
                files.append(str(path))
        if not images:
            return torch.empty(0, self.channels, self.image_size, self.image_size, dtype=torch.uint8), \
                torch.empty(0, dtype=torch.long), []
        return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), files

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.check_root()
        self.class_names = self.discover_classes()
        images, labels, files = self.read_split(self.train_split)
        if len(labels) < self.batch_size:
            raise GanlabError(f"{self.split_dir(self.train_split)} has {len(labels)} images, fewer than one "
                              f"batch (data.batch_size={self.batch_size})")
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        n_val = int(round(len(labels) * self.val_fraction))
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        self.datasets["train"] = UInt8ImageDataset(images[train_idx], labels[train_idx],
                                                   [files[i] for i in train_idx])
        self.datasets["val"] = UInt8ImageDataset(images[val_idx], labels[val_idx], [files[i] for i in val_idx])
        if self.test_split and self.split_dir(self.test_split).is_dir():
            self.datasets["test"] = UInt8ImageDataset(*self.read_split(self.test_split))

    def class_counts(self, split: str = "train") -> dict[str, int]:
        counts = torch.bincount(self.datasets[split].labels, minlength=self.num_classes)
        return dict(zip(self.class_names, counts.tolist()))

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        sampler = None
        if self.balanced_sampling:
            counts = torch.bincount(dataset.labels, minlength=self.num_classes).clamp(min=1)
            weights = (1.0 / counts.double())[dataset.labels]
            sampler = WeightedRandomSampler(weights, num_samples=len(dataset), replacement=True,
                                            generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=sampler is None, sampler=sampler,
                          drop_last=True, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Unshuffled loader over any split, for metrics and evaluation."""
        return DataLoader(self.datasets[split], batch_size=batch_size or self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        return to_model_range(images), labels


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
