"""ganlab.device: `device=` of audit / augment / evaluate."""
from __future__ import annotations

import pytest
import torch

from ganlab.device import choose_device
from ganlab.errors import GanlabError


def test_auto_takes_a_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device("auto") == torch.device("cuda")
    assert choose_device("cpu") == torch.device("cpu")


def test_bad_names_are_one_line_naming_the_key(monkeypatch):
    with pytest.raises(GanlabError, match=r"^device='gpu0': not a device"):
        choose_device("gpu0")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(GanlabError, match="0 CUDA GPU"):
        choose_device("cuda:1")


def test_bf16_on_a_cpu_without_bf16_units_falls_back_to_float32_in_one_line(monkeypatch, caplog):
    from omegaconf import OmegaConf

    from ganlab import training as train

    def cfg(precision, accelerator="cpu"):
        return OmegaConf.create({"trainer": {"precision": precision, "accelerator": accelerator}})

    monkeypatch.setattr(train, "cpu_has_bf16", lambda: False)
    slow = cfg("bf16-mixed")
    with caplog.at_level("WARNING", logger="ganlab.train"):
        train.check_precision(slow)
    assert slow.trainer.precision == "32-true"
    assert len(caplog.records) == 1 and "no bf16 units" in caplog.records[0].getMessage()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = cfg("bf16-mixed", accelerator="auto")  # auto with a GPU: bf16 stays
    train.check_precision(on_gpu)
    assert on_gpu.trainer.precision == "bf16-mixed"
    monkeypatch.setattr(train, "cpu_has_bf16", lambda: True)
    fast = cfg("bf16-mixed")
    train.check_precision(fast)
    assert fast.trainer.precision == "bf16-mixed"
    full = cfg("32-true")
    train.check_precision(full)
    assert full.trainer.precision == "32-true"
