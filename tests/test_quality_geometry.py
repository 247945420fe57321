"""experiments/quality/geometry.py: the brain-mask geometry behind the SSIM-diversity diagnosis."""
from __future__ import annotations

import sys

import torch

from conftest import REPO

sys.path[:0] = [str(REPO / "experiments" / "quality")]
from geometry import geometry  # noqa: E402


def blob(top: int, left: int, height: int, width: int, level: float = 0.5, size: int = 32) -> torch.Tensor:
    image = torch.full((1, size, size), -1.0)
    image[:, top:top + height, left:left + width] = level
    return image


def test_geometry_finds_position_size_orientation_and_brightness():
    images = torch.stack([blob(4, 6, 10, 4), blob(12, 14, 4, 10, level=0.0)])
    g = geometry(images)
    assert g["row"].tolist() == [8.5, 13.5] and g["col"].tolist() == [7.5, 18.5]
    assert g["area"].tolist() == [40.0, 40.0]
    assert abs(g["angle"][0]) < 1e-4 and abs(abs(g["angle"][1]) - 90) < 1e-4  # tall vs wide
    assert torch.allclose(g["brightness"], torch.tensor([0.5, 0.0]))


def test_geometry_spread_tells_a_collapsed_position_from_a_varied_one():
    varied = torch.stack([blob(4 + k, 4 + 2 * k, 8, 8) for k in range(8)])
    collapsed = torch.stack([blob(8, 10, 8, 8) for _ in range(8)])
    assert geometry(varied)["col"].std() > 4 and geometry(collapsed)["col"].std() == 0


def test_spectrum_shows_a_checkerboard_at_the_nyquist_point_and_not_in_a_smooth_image():
    from spectrum import spectrum_summary
    smooth = torch.stack([blob(8, 8, 16, 16) for _ in range(4)])
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = smooth + 0.1 * ((yy + xx) % 2 * 2 - 1).float()
    s, c = spectrum_summary(smooth), spectrum_summary(checker)
    assert c["(.5,.5)"] > 100 * max(s["(.5,.5)"], 1e-6)
    assert abs(c["0-0.1"] - s["0-0.1"]) < 1e-3  # the shapes' low frequencies are the same
