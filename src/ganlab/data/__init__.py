"""Datasets: image folders and the embedded offline "brainsim" data.

The datamodule contract (what train.py, the callbacks, the metrics and the CLIs read; README,
"Extending ganlab"): `prepare_data()`; an idempotent `setup(stage)` that fills `datasets` =
{"train", optional "val"/"test": UInt8ImageDataset with uint8 `images` (N, C, H, W), long `labels`,
`files`}; `class_names`, `num_classes`, `image_size`, `channels`; `class_counts(split)`;
`train_dataloader()` of (uint8 images, labels) and `on_after_batch_transfer` to float [-1, 1];
optionally `subject_of(file)`. Subclassing folder.ImageFolderDataModule gives all of it.
"""
