"""The preprocessed OASIS slices of UQ's COMP3710 course (256x256 grayscale PNG, no labels):
`<root>/keras_png_slices_{train,validate,test}/case_XXX_slice_N.nii.png` (9664 / 1120 / 544); the
`keras_png_slices_seg_*` mask folders are ignored. Unconditional: one class.

`case_XXX` is the subject. The on-disk splits are used as they are (a warning names any subject found
in two of them); whenever ganlab makes a split itself (`pool_splits=true`, or a missing validate/test
folder) it holds out whole subjects, never single slices.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ganlab.data.folder import ImageFolderDataModule
from ganlab.data.store import Listing
from ganlab.errors import GanlabError

SPLITS = {"train": "keras_png_slices_train", "val": "keras_png_slices_validate", "test": "keras_png_slices_test"}
SUBJECT_PATTERN = r"(case_\d+)"
log = logging.getLogger("ganlab.data")


class OasisDataModule(ImageFolderDataModule):
    obtain_hint = "see experiments/datasets.md for where to get keras_png_slices_data"

    def __init__(self, root: str | None, pool_splits: bool = False, **kwargs):
        kwargs.setdefault("subject_pattern", SUBJECT_PATTERN)
        kwargs.update(train_split=SPLITS["train"], val_split=SPLITS["val"], test_split=SPLITS["test"],
                      class_names=["slice"], num_classes=None)
        super().__init__(root, **kwargs)
        self.pool_splits = pool_splits

    def layout_help(self) -> str:
        return "<root>/keras_png_slices_{train,validate,test}/case_XXX_slice_N.nii.png"

    def layout_root(self) -> Path:
        found = self.find_dir(lambda d: (d / SPLITS["train"]).is_dir())
        if found is None:
            raise GanlabError(f"no {SPLITS['train']} folder under {self.root}; expected {self.layout_help()}; "
                              f"{self.obtain_hint}")
        return found

    def class_folders(self, split_dir: Path) -> dict[str, Path]:
        return {"slice": split_dir} if split_dir.is_dir() else {}

    def list_splits(self) -> Listing:
        listing = super().list_splits()
        if self.pool_splits:
            listing = {"train": [r for records in listing.values() for r in records]}
        unnamed = [k for records in listing.values() for k, _ in records if self.subject_of(k) is None]
        if unnamed and self.skip_bad_files:
            log.warning("skipped %d file(s) without a case_XXX subject id, e.g. %s", len(unnamed), unnamed[0])
            return {s: [r for r in records if self.subject_of(r[0])] for s, records in listing.items()}
        if unnamed:
            raise GanlabError(f"{unnamed[0]}: no subject id (case_XXX) in the file name; OASIS slices are named "
                              f"case_XXX_slice_N.nii.png ({len(unnamed)} such file(s); data.skip_bad_files=true "
                              "skips them)")
        return listing
