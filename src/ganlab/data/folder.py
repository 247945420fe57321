"""Any ImageFolder-style root: `<root>/[<split>/]<class>/<image>`, and the base of every real dataset.

Images are decoded once into a uint8 tensor store (N, C, H, W) held in memory (and cached on disk
under `cache_dir` when given); batches are turned into float [-1, 1] after the transfer to the
device (`on_after_batch_transfer`), so the loader moves 4x fewer bytes and GPU runs convert on the GPU.
Subclasses adapt a dataset's layout through `layout_root`, `class_folders` and `list_splits`, and
name its subjects through `subject_of` (so no subject ends up on both sides of a split ganlab makes).
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ganlab.data.readers import IMAGE_EXTENSIONS, RESIZE_POLICIES, list_files, source_file
from ganlab.data.splits import holdout
from ganlab.data.store import Listing, build_store, fingerprint
from ganlab.errors import GanlabError
from ganlab.pixels import to_model_range

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataModule", "UInt8ImageDataset"]
log = logging.getLogger("ganlab.data")


class UInt8ImageDataset(Dataset):
    """(uint8 image tensor, label) pairs from an in-memory store."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, files: Sequence[str] = ()):
        self.images, self.labels, self.files = images, labels, list(files)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]

    def subset(self, idx: Sequence[int]) -> "UInt8ImageDataset":
        idx = torch.as_tensor(list(idx), dtype=torch.long)
        return UInt8ImageDataset(self.images[idx], self.labels[idx], [self.files[i] for i in idx.tolist()])


def child(folder: Path, name: str) -> Path | None:
    """The sub-folder called `name`, ignoring case."""
    if not folder.is_dir():
        return None
    return next((p for p in sorted(folder.iterdir()) if p.is_dir() and p.name.lower() == name.lower()), None)


class ImageFolderDataModule(L.LightningDataModule):
    """Classes are the sub-folders of `<root>/<train_split>` (sorted, or `class_names` in that order).

    `<root>/<val_split>` and `<root>/<test_split>`, when present, are the val and test splits;
    otherwise `test_fraction`, then `val_fraction`, of the train split is held out (deterministic for
    `seed`, stratified by class, whole subjects at a time when `subject_pattern` names them).
    """

    obtain_hint = "see experiments/datasets.md"  # where to get the dataset, shown when the root is missing

    def __init__(
        self,
        root: str | None,
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
        balanced_sampling: bool | float = False,
        seed: int = 0,
        val_split: str | None = None,
        test_fraction: float = 0.0,
        subject_pattern: str | None = None,
        cache_dir: str | None = None,
        skip_bad_files: bool = False,
    ):
        super().__init__()
        if not root:
            raise GanlabError(f"data.root is not set: pass data.root=/path/to/dataset, laid out as "
                              f"{self.layout_help()}; {self.obtain_hint}")
        self.root = Path(root).expanduser()
        self.image_size, self.channels, self.batch_size = image_size, channels, batch_size
        self.num_workers, self.train_split, self.test_split = num_workers, train_split, test_split
        self.class_names = list(class_names) if class_names else None
        self.expected_num_classes = num_classes
        self.val_fraction, self.resize, self.balanced_sampling, self.seed = val_fraction, resize, balanced_sampling, seed
        self.val_split, self.test_fraction, self.skip_bad_files = val_split, test_fraction, skip_bad_files
        try:
            self.subject_pattern = re.compile(subject_pattern) if subject_pattern else None
        except re.error as exc:
            raise GanlabError(f"data.subject_pattern={subject_pattern!r} is not a regular expression: {exc}") from exc
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.image_column = "image"
        self.datasets: dict[str, UInt8ImageDataset] = {}
        self.validate_options()

    def validate_options(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise GanlabError(f"data.num_workers={self.num_workers!r}: expected an integer >= 0 (0: load in the "
                              "training process)")
        if self.channels not in (1, 3):
            raise GanlabError(f"data.channels={self.channels}: images are read as 1 (grayscale) or 3 (RGB) channels")
        if self.resize not in RESIZE_POLICIES:
            raise GanlabError(f"data.resize={self.resize!r}: choose one of {', '.join(RESIZE_POLICIES)}")
        if not (isinstance(self.image_size, int) and self.image_size >= 4):
            raise GanlabError(f"data.image_size={self.image_size!r}: expected an integer >= 4")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise GanlabError(f"data.batch_size={self.batch_size!r}: expected an integer >= 1")
        for key in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise GanlabError(f"data.{key}={getattr(self, key)}: expected a fraction in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise GanlabError("data.val_fraction + data.test_fraction must be below 1")
        b = self.balanced_sampling
        if not (isinstance(b, bool) or (isinstance(b, (int, float)) and 0.0 <= b <= 1.0)):
            raise GanlabError(f"data.balanced_sampling={b!r}: expected true, false or a strength in [0, 1]")

    # ------------------------------------------------------------------ layout (subclasses adapt these)
    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.class_names else (self.expected_num_classes or 0)

    def split_dir(self, split: str | None) -> Path:
        return self.root / split if split else self.root

    def layout_help(self) -> str:
        split = f"{self.train_split}/" if getattr(self, "train_split", None) else ""
        return f"<root>/{split}<class>/<image>"

    def expected_layout(self) -> str:
        return f"{self.layout_help()} (root={self.root})"

    def layout_root(self) -> Path:
        """The folder where the layout starts (subclasses look inside the download, see `find_dir`)."""
        return self.root

    def find_dir(self, matches: Callable[[Path], bool], depth: int = 2) -> Path | None:
        """self.root when it `matches`, else the one sub-folder (at the shallowest depth) that does."""
        level = [self.root]
        for _ in range(depth + 1):
            hits = [d for d in level if matches(d)]
            if len(hits) == 1:
                return hits[0]
            if hits:
                raise GanlabError(f"{self.root} holds several datasets ({', '.join(map(str, hits))}): "
                                  f"point data.root at one of them")
            level = [c for d in level for c in sorted(d.iterdir()) if c.is_dir() and not c.name.startswith(".")]
        return None

    def check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise GanlabError(f"data root {self.root} is a file, not a folder (unpack an archive first); expected "
                              f"{self.layout_help()}")
        if not self.root.is_dir():
            raise GanlabError(f"data root {self.root} does not exist; expected {self.layout_help()}; "
                              f"{self.obtain_hint}")
        self.root = self.layout_root()
        train_dir = self.split_dir(self.train_split)
        if not train_dir.is_dir():
            raise GanlabError(f"{train_dir} does not exist; expected {self.expected_layout()}; {self.obtain_hint}")

    def class_folders(self, split_dir: Path) -> dict[str, Path]:
        """Class name -> its folder under split_dir (the ones present)."""
        if not split_dir.is_dir():
            return {}
        skip = {self.val_split, self.test_split} if self.train_split is None else set()
        return {p.name: p for p in sorted(split_dir.iterdir())
                if p.is_dir() and not p.name.startswith(".") and p.name not in skip}

    def discover_classes(self) -> list[str]:
        train_dir = self.split_dir(self.train_split)
        found = self.class_folders(train_dir)
        if self.class_names:
            missing = [c for c in self.class_names if c not in found]
            if missing:
                raise GanlabError(f"class folder(s) {missing} missing under {train_dir}; expected "
                                  f"{self.expected_layout()}")
            extra = sorted(set(found) - set(self.class_names))
            if extra:
                log.warning("ignoring folder(s) %s under %s: not among the classes %s", extra, train_dir,
                            self.class_names)
            return list(self.class_names)
        if not found:
            raise GanlabError(f"no class folders under {train_dir}; expected {self.expected_layout()}")
        splits = {"train", "training", "test", "testing", "val", "valid", "validation"}
        if len(found) > 1 and {n.lower() for n in found} <= splits:
            names = sorted(found)
            raise GanlabError(f"{train_dir} holds split folders {names}, not class folders: name them with "
                              f"data.train_split=<one of {names}> (and data.test_split / data.val_split)")
        return sorted(found)

    def list_split(self, split_dir: Path, required: bool) -> list[tuple[str, int]]:
        folders = self.class_folders(split_dir)
        records = []
        for label, name in enumerate(self.class_names):
            folder = folders.get(name)
            files = list_files(folder) if folder else []
            if required and not files:
                raise GanlabError(f"class folder {folder or split_dir / name} has no images")
            records += [(str(p), label) for p in files]
        return records

    def list_splits(self) -> Listing:
        """Split name ("train", and "val"/"test" when on disk) -> [(record key, label)]."""
        listing = {"train": self.list_split(self.split_dir(self.train_split), required=True)}
        for name, split in (("val", self.val_split), ("test", self.test_split)):
            if split and self.split_dir(split).is_dir():
                listing[name] = self.list_split(self.split_dir(split), required=False)
        return listing

    def subject_of(self, key: str) -> str | None:
        """The subject a record belongs to (None: unknown, every record its own group)."""
        m = self.subject_pattern.search(Path(source_file(key)).name) if self.subject_pattern else None
        return (m.group(1) if m.groups() else m.group(0)) if m else None

    # ------------------------------------------------------------------ Lightning hooks
    def cache_file(self, listing: Listing) -> Path | None:
        if self.cache_dir is None:
            return None
        cache_dir, root = self.cache_dir.resolve(), self.root.resolve()
        if cache_dir == root or root in cache_dir.parents:
            log.warning("data.cache_dir %s is inside the dataset %s: not caching", cache_dir, root)
            return None
        key = fingerprint(listing, image_size=self.image_size, channels=self.channels, resize=self.resize,
                          image_column=self.image_column)
        return cache_dir / f"{type(self).__name__.lower().removesuffix('datamodule')}-{key}.pt"

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self.check_root()
        self.class_names = self.discover_classes()
        if self.expected_num_classes and self.expected_num_classes != len(self.class_names):
            raise GanlabError(f"data.num_classes={self.expected_num_classes} but {self.root} has "
                              f"{len(self.class_names)} classes {self.class_names}")
        listing = self.list_splits()
        store = build_store(listing, image_size=self.image_size, channels=self.channels, resize=self.resize,
                            image_column=self.image_column, skip_bad_files=self.skip_bad_files,
                            cache_file=self.cache_file(listing))
        splits = {k: UInt8ImageDataset(v["images"], v["labels"], v["files"]) for k, v in store["splits"].items()}
        train = splits["train"]
        empty = [n for n, c in zip(self.class_names, torch.bincount(train.labels, minlength=self.num_classes)) if not c]
        if empty and self.num_classes > 1:
            raise GanlabError(f"class(es) {empty} have no readable training images under {self.root}")
        # test first: the test split does not depend on val_fraction
        for name, fraction, seed in (("test", self.test_fraction, self.seed + 1), ("val", self.val_fraction, self.seed)):
            if name not in splits:
                groups = [self.subject_of(f) or f for f in train.files]
                keep, held = holdout(train.labels.tolist(), groups, fraction, seed)
                train, splits[name] = train.subset(keep), train.subset(held)
        if len(train) < self.batch_size:
            raise GanlabError(f"{self.split_dir(self.train_split)}: {len(train)} training images (after holding out "
                              f"val/test), fewer than one batch (data.batch_size={self.batch_size})")
        splits["train"] = train
        self.datasets = {k: splits[k] for k in ("train", "val", "test") if k in splits}
        self.warn_subject_overlap()
        log.info("data %s: classes %s; %s", type(self).__name__, self.class_names,
                 "; ".join(f"{k} {len(v)} {self.class_counts(k)}" for k, v in self.datasets.items()))

    def warn_subject_overlap(self) -> None:
        subjects = {k: {self.subject_of(f) for f in v.files} - {None} for k, v in self.datasets.items()}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            shared = subjects.get(a, set()) & subjects.get(b, set())
            if shared:
                log.warning("%d subject(s) appear in both %s and %s (e.g. %s): the on-disk split leaks subjects",
                            len(shared), a, b, sorted(shared)[0])

    def class_counts(self, split: str = "train") -> dict[str, int]:
        counts = torch.bincount(self.datasets[split].labels, minlength=self.num_classes)
        return dict(zip(self.class_names, counts.tolist()))

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if self.balanced_sampling:
            dataset = class_balanced(dataset, self.seed, float(self.balanced_sampling))
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def dataloader(self, split: str, batch_size: int | None = None) -> DataLoader:
        """Unshuffled loader over any split, for metrics and evaluation."""
        return DataLoader(self.datasets[split], batch_size=batch_size or self.batch_size, shuffle=False,
                          num_workers=self.num_workers)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        return to_model_range(images), labels


def class_balanced(dataset: UInt8ImageDataset, seed: int, strength: float = 1.0) -> UInt8ImageDataset:
    """The training set with rarer classes topped up by repeating their images: class c gets
    n_max^s * n_c^(1 - s) images (s = `strength`), so s = 1 gives every class the largest class's
    count and s = 0.5 the geometric mean of its own and the largest (square-root sampling: 22 rare
    images among 360 per class are repeated 4x instead of 16x). Each image of a class appears once or
    repeated as evenly as possible (which images get the one extra repeat is fixed by `seed`). It is
    then shuffled like any dataset, so each epoch sees every image at least once (epochs get longer),
    and resume and DDP sharding work exactly as without balancing. When no class needs topping up it is the
    training set itself, untouched: a class-conditional model balances by default
    (conf/data/for_model/cdcgan.yaml) and trains on balanced data exactly as it did before."""
    classes = torch.unique(dataset.labels)
    counts = torch.bincount(dataset.labels)[classes]
    largest = int(counts.max())
    if int(counts.min()) == largest:
        return dataset
    g = torch.Generator().manual_seed(seed)
    idx = []
    for c in classes.tolist():
        members = torch.nonzero(dataset.labels == c).flatten()
        count = max(len(members), round(largest ** strength * len(members) ** (1.0 - strength)))
        order = members[torch.randperm(len(members), generator=g)]
        idx.append(order.repeat(math.ceil(count / len(members)))[:count])
    return dataset.subset(torch.cat(idx).tolist())
