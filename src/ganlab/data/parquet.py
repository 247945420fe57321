"""Parquet files with an `image` column (encoded bytes, or the `{"bytes", "path"}` struct that Hugging
Face mirrors ship) and a `label` column, e.g. `<root>/data/train-00000-of-00001.parquet`.

The split of a file comes from its name or its folder (`train`, `test`, `val`/`valid`/`validation`);
a single file, or files with no split in their names, are the train split.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence

from ganlab.data.folder import ImageFolderDataModule
from ganlab.data.readers import parquet_key, parquet_labels
from ganlab.data.store import Listing
from ganlab.errors import GanlabError

_SPLITS = {"train": "train", "training": "train", "test": "test", "testing": "test", "val": "val",
           "valid": "val", "validation": "val", "validate": "val"}


def split_of(path: Path) -> str | None:
    for name in (re.split(r"[-_.]", path.name)[0].lower(), path.parent.name.lower()):
        if name in _SPLITS:
            return _SPLITS[name]
    return None


def parquet_files(root: Path) -> dict[str, list[Path]]:
    """Split -> parquet files under root (a file, or a folder searched two levels down)."""
    files = [root] if root.is_file() else sorted(
        {*root.glob("*.parquet"), *root.glob("*/*.parquet"), *root.glob("*/*/*.parquet")})
    out: dict[str, list[Path]] = {}
    for f in files:
        out.setdefault(split_of(f) or "train", []).append(f)
    return out


def read_parquet_listing(files: dict[str, list[Path]], image_column: str, label_column: str | None,
                         to_label: Callable[[object, Path], int]) -> Listing:
    """Split -> [(`<file>#<row>`, class index)], the label of each row mapped through `to_label`."""
    return {split: [(parquet_key(f, row), to_label(value, f))
                    for f in paths for row, value in enumerate(parquet_labels(f, image_column, label_column))]
            for split, paths in files.items()}


class ParquetDataModule(ImageFolderDataModule):
    """`label_names` names the label values 0..K-1 of integer labels (default "0".."K-1"; string labels
    name themselves); `class_names` sets ganlab's class order (default: label_names, or sorted).
    `label_column: null` reads every row as one class (unconditional)."""

    def __init__(self, root: str | None, *, image_column: str = "image", label_column: str | None = "label",
                 label_names: Sequence[str] | None = None, **kwargs):
        kwargs.setdefault("train_split", None)
        kwargs.setdefault("test_split", None)
        super().__init__(root, **kwargs)
        self.image_column, self.label_column = image_column, label_column
        self.label_names = list(label_names) if label_names else None
        self._raw: Listing = {}

    def layout_help(self) -> str:
        return "<root>/[data/]{train,test}-*.parquet with columns image (bytes) + label, or one .parquet file"

    def check_root(self) -> None:
        if not self.root.exists():
            raise GanlabError(f"data root {self.root} does not exist; expected {self.layout_help()}; "
                              f"{self.obtain_hint}")
        self.parquet_files = parquet_files(self.root)
        if not self.parquet_files:
            raise GanlabError(f"no .parquet files under {self.root}; expected {self.layout_help()}")
        if "train" not in self.parquet_files:
            raise GanlabError(f"no train split among {sorted(map(str, sum(self.parquet_files.values(), [])))}; name "
                              f"the training file(s) train-*.parquet")

    def discover_classes(self) -> list[str]:
        self._raw = read_parquet_listing(self.parquet_files, self.image_column, self.label_column, lambda v, f: v)
        values = {v for records in self._raw.values() for _, v in records}
        if self.label_column is None:
            return list(self.class_names or ["image"])
        if None in values:
            raise GanlabError(f"column {self.label_column!r} has empty labels in {self.root}")
        if all(isinstance(v, str) for v in values):
            names = sorted(values)
        elif all(isinstance(v, int) and v >= 0 for v in values):
            names = self.label_names or [str(i) for i in range(max(values) + 1)]
            if max(values) >= len(names):
                raise GanlabError(f"label {max(values)} in {self.root} but data.label_names has {len(names)} names")
        else:
            raise GanlabError(f"column {self.label_column!r} in {self.root} must hold class indices or names")
        self._names = names
        order = self.class_names or names
        missing = sorted(set(self.name_of(v) for v in values) - set(order))
        if missing:
            raise GanlabError(f"labels {missing} in {self.root} are not among data.class_names={order}")
        return list(order)

    def name_of(self, value) -> str:
        return value if isinstance(value, str) else self._names[value]

    def list_splits(self) -> Listing:
        index = {name: i for i, name in enumerate(self.class_names)}
        if self.label_column is None:
            return {s: [(k, 0) for k, _ in recs] for s, recs in self._raw.items()}
        return {s: [(k, index[self.name_of(v)]) for k, v in recs] for s, recs in self._raw.items()}
