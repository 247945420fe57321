"""Kaggle "Alzheimer's Dataset (4 class of Images)" and its common variants, in one fixed class order.

Accepted layouts under `root` (or one or two folders down, as the Kaggle archives unpack):
- `{train,test}/{MildDemented,ModerateDemented,NonDemented,VeryMildDemented}/*.jpg` (176x208, 6400 images);
- `{Mild_Demented,Moderate_Demented,Non_Demented,Very_Mild_Demented}/*.jpg`, no split (128x128 variant,
  6400 images): `test_fraction` of it is held out as the test split;
- the Hugging Face parquet mirror `[data/]{train,test}-*.parquet` (label 0 Mild, 1 Moderate, 2 Non,
  3 VeryMild).
Classes are always numbered in severity order (CLASS_NAMES, as brainsim). The images carry no
subject ids, so a split cannot be made subject-disjoint: neighbouring slices of one scan may sit on
both sides (Yagis et al. 2021), which flatters any classifier trained and tested on it.
"""
from __future__ import annotations

import re
from pathlib import Path

from ganlab.data.folder import ImageFolderDataModule, child
from ganlab.data.parquet import parquet_files, read_parquet_listing
from ganlab.data.store import Listing
from ganlab.errors import GanlabError

CLASS_NAMES = ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented")  # severity order
PARQUET_LABELS = ("MildDemented", "ModerateDemented", "NonDemented", "VeryMildDemented")  # mirror's label ids


def canonical(name: str) -> str | None:
    """`Mild_Demented`, `mild demented`, `MildDemented` -> "MildDemented"; None for other names."""
    return {c.lower(): c for c in CLASS_NAMES}.get(re.sub(r"[^a-z]", "", name.lower()))


class AlzheimerDataModule(ImageFolderDataModule):
    obtain_hint = ("get it with `kaggle datasets download -d tourist55/alzheimers-dataset-4-class-of-images` "
                   "(see experiments/datasets.md)")

    def __init__(self, root: str | None, **kwargs):
        kwargs["class_names"] = CLASS_NAMES
        kwargs.setdefault("train_split", "train")
        kwargs.setdefault("test_split", "test")
        super().__init__(root, **kwargs)
        self.parquet: dict[str, list[Path]] = {}

    def layout_help(self) -> str:
        return ("<root>/{train,test}/{NonDemented,VeryMildDemented,MildDemented,ModerateDemented}/*.jpg "
                "(or Mild_Demented-style names, with or without train/test, or the parquet mirror)")

    def has_classes(self, folder: Path) -> bool:
        return folder.is_dir() and any(canonical(p.name) for p in folder.iterdir() if p.is_dir())

    def has_split(self, folder: Path, split: str) -> bool:
        found = child(folder, split)  # Train/Test as well as train/test
        return found is not None and self.has_classes(found)

    def layout_root(self) -> Path:
        found = self.find_dir(lambda d: self.has_split(d, "train") or any(d.glob("*.parquet"))
                              or any(d.glob("data/*.parquet")))
        if found is None:
            found = self.find_dir(self.has_classes)
            if found is None:
                raise GanlabError(f"no Alzheimer class folders under {self.root}; expected {self.layout_help()}; "
                                  f"{self.obtain_hint}")
            split = found.name.lower()
            if split in ("train", "test") and self.has_split(found.parent, "test" if split == "train" else "train"):
                raise GanlabError(f"data.root={self.root} is the {found.name} split of a train/test copy; point "
                                  f"data.root at the folder above it, {found.parent}, so that both splits are used")
            self.train_split = self.test_split = None  # the unsplit 128x128 variant
        elif not self.has_split(found, "train"):
            self.parquet = parquet_files(found)
            self.train_split = self.test_split = None
        else:
            self.train_split = child(found, "train").name
            test = child(found, "test")
            self.test_split = test.name if test is not None else None
        return found

    def class_folders(self, split_dir: Path) -> dict[str, Path]:
        if self.parquet:  # the parquet mirror has no folders: every class is present by construction
            return {name: split_dir for name in CLASS_NAMES}
        out = {}
        for name, path in super().class_folders(split_dir).items():
            key = canonical(name) or name
            if key in out and key in CLASS_NAMES:
                raise GanlabError(f"{split_dir} has two folders for class {key}: {out[key].name} and {name}")
            out[key] = path
        return out

    def list_splits(self) -> Listing:
        if not self.parquet:
            return super().list_splits()

        def to_label(value, path) -> int:
            name = PARQUET_LABELS[value] if isinstance(value, int) and 0 <= value < 4 else canonical(str(value))
            if name is None:
                raise GanlabError(f"{path}: label {value!r} is not one of 0..3 or an Alzheimer class name")
            return CLASS_NAMES.index(name)

        listing = read_parquet_listing(self.parquet, "image", "label", to_label)
        for label, name in enumerate(CLASS_NAMES):
            if not any(lab == label for _, lab in listing.get("train", [])):
                raise GanlabError(f"class {name} has no images in the train parquet file(s) under {self.root}")
        return listing
