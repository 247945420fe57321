"""An external real test set for the benchmark: the test split of a second data config (`test_data`),
e.g. a large, class-balanced brainsim render with another `render_seed`, so the test images are drawn
apart from the training set and their number no longer depends on the rare class's size."""
from __future__ import annotations

from ganlab.data.folder import UInt8ImageDataset
from ganlab.errors import GanlabError
from ganlab.run_data import prepared_datamodule


def load_external_test(test_cfg, train: UInt8ImageDataset, class_names: list[str]) -> UInt8ImageDataset:
    """The test split of `test_cfg`; refuses other classes or image shapes and any file or image that
    is also in `train`."""
    from ganlab.augment import image_hashes

    datamodule = prepared_datamodule(test_cfg)
    test = datamodule.datasets.get("test")
    if test is None or len(test) == 0:
        raise GanlabError("test_data: this data config has no test split (set test_data.test_fraction > 0)")
    if list(datamodule.class_names) != list(class_names):
        raise GanlabError(f"test_data: classes {list(datamodule.class_names)} differ from data's {class_names}")
    if test.images.shape[1:] != train.images.shape[1:]:
        raise GanlabError(f"test_data: images are {tuple(test.images.shape[1:])} (C, H, W), the training data "
                          f"{tuple(train.images.shape[1:])}: set test_data.image_size/channels to match")
    shared = set(train.files) & set(test.files)
    if shared:
        raise GanlabError(f"test_data shares {len(shared)} file(s) with training, e.g. {sorted(shared)[0]}")
    same = set(image_hashes(train.images)) & set(image_hashes(test.images))
    if same:
        raise GanlabError(f"test_data: {len(same)} test image(s) equal a training image: render the test set "
                          "apart (e.g. another test_data.render_seed)")
    return test
