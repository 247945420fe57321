"""Two Kaggle brain-tumour MRI sets (mixed sizes, grayscale and RGB files: all are read as
`channels` at `image_size`, aspect kept per `resize`).

- `four_class`: "Brain Tumor MRI Dataset", `<root>/{Training,Testing}/{glioma,meningioma,notumor,
  pituitary}/*.jpg` (7023 images; the older `glioma_tumor ... no_tumor` folder names work too).
- `yes_no`: "Brain MRI Images for Brain Tumor Detection", `<root>/{no,yes}/*` (253 images, no split:
  `test_fraction` of it is held out as the test split).
Classes are in alphabetical order (as torchvision's ImageFolder numbers them). `layout=auto` picks
whichever is found under root (or one or two folders down, as the archives unpack).
"""
from __future__ import annotations

import re
from pathlib import Path

from ganlab.data.folder import ImageFolderDataModule, child
from ganlab.errors import GanlabError

LAYOUTS = {
    "four_class": {"classes": ("glioma", "meningioma", "notumor", "pituitary"), "train": "Training",
                   "test": "Testing", "kaggle": "masoudnickparvar/brain-tumor-mri-dataset"},
    "yes_no": {"classes": ("no", "yes"), "train": None, "test": None,
               "kaggle": "navoneel/brain-mri-images-for-brain-tumor-detection"},
}


def canonical(name: str) -> str | None:
    """Folder name -> class name of either layout ("glioma_tumor" -> "glioma", "no_tumor" -> "notumor")."""
    key = re.sub(r"[^a-z]", "", name.lower())
    if key.endswith("tumor") and key != "notumor":
        key = key[:-len("tumor")]
    return key if any(key in spec["classes"] for spec in LAYOUTS.values()) else None


class BrainTumorDataModule(ImageFolderDataModule):
    obtain_hint = (f"get it with `kaggle datasets download -d {LAYOUTS['four_class']['kaggle']}` (four_class) or "
                   f"`-d {LAYOUTS['yes_no']['kaggle']}` (yes_no); see experiments/datasets.md")

    def __init__(self, root: str | None, layout: str = "auto", **kwargs):
        if layout not in ("auto", *LAYOUTS):
            raise GanlabError(f"data.layout={layout!r}: choose auto, {', '.join(LAYOUTS)}")
        self.layout = layout
        super().__init__(root, **kwargs)

    def layout_help(self) -> str:
        return ("<root>/{Training,Testing}/{glioma,meningioma,notumor,pituitary}/*.jpg (four_class) or "
                "<root>/{no,yes}/* (yes_no)")

    def matches(self, layout: str, folder: Path) -> bool:
        spec = LAYOUTS[layout]
        split = child(folder, spec["train"]) if spec["train"] else folder
        if split is None:
            return False
        found = {canonical(p.name) for p in split.iterdir() if p.is_dir()}
        return set(spec["classes"]) <= found if layout == "yes_no" else bool(found & set(spec["classes"]))

    def layout_root(self) -> Path:
        for layout in ([self.layout] if self.layout != "auto" else list(LAYOUTS)):
            found = self.find_dir(lambda d: self.matches(layout, d))
            if found is not None:
                break
        else:
            other = next((k for k in LAYOUTS if k != self.layout and self.find_dir(lambda d: self.matches(k, d))),
                         None) if self.layout != "auto" else None
            if other is not None:  # the other set: name the data config that reads it
                config = "data=brain_tumor_yes_no" if other == "yes_no" else "data=brain_tumor"
                raise GanlabError(f"{self.root} holds the {other} brain-tumour set, not the {self.layout} one: "
                                  f"use {config}")
            raise GanlabError(f"no brain-tumour dataset under {self.root}; expected {self.layout_help()}; "
                              f"{self.obtain_hint}")
        self.layout, spec = layout, LAYOUTS[layout]
        self.class_names = list(spec["classes"])
        self.train_split = child(found, spec["train"]).name if spec["train"] else None
        test = child(found, spec["test"]) if spec["test"] else None
        self.test_split = test.name if test else None
        n = len(spec["classes"])
        if self.expected_num_classes and self.expected_num_classes != n:
            other = "data=brain_tumor_yes_no" if layout == "yes_no" else "data=brain_tumor"
            raise GanlabError(f"{found} holds the {layout} set ({n} classes) but data.num_classes="
                              f"{self.expected_num_classes}: use {other} (or data.num_classes={n})")
        return found

    def class_folders(self, split_dir: Path) -> dict[str, Path]:
        out = {}
        for name, path in super().class_folders(split_dir).items():
            key = canonical(name) or name
            if key in out:
                raise GanlabError(f"{split_dir} has two folders for class {key}: {out[key].name} and {name}")
            out[key] = path
        return out
