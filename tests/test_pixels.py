"""ganlab.pixels: the one uint8 <-> [-1, 1] conversion."""
from __future__ import annotations

import torch

from ganlab.pixels import to_model_range, to_uint8


def test_uint8_round_trips_exactly_and_ends_map_to_minus_one_and_one():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    y = to_model_range(x)
    assert y.dtype == torch.float32 and y.min() == -1 and y.max() == 1
    assert torch.equal(to_uint8(y), x)


def test_float_input_is_left_alone_and_out_of_range_values_are_clamped():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0])
    assert to_model_range(x) is x  # no copy, and never modified in place
    assert to_uint8(x).tolist() == [0, 0, 128, 255, 255]
    u = torch.tensor([7], dtype=torch.uint8)
    assert to_uint8(u) is u
