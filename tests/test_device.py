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
