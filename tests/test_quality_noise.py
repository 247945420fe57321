"""experiments/quality/noise_scales.py: what a generator's noise inputs contribute to its images."""
from __future__ import annotations

import sys

import torch

from conftest import REPO

sys.path[:0] = [str(REPO / "experiments" / "quality")]


def test_noise_effect_is_zero_at_zero_scales_and_grows_with_them():
    from noise_scales import noise_effect

    from ganlab.models.cdcgan import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
    from ganlab.models.gan_module import GANModule

    torch.manual_seed(0)
    g = ConditionalDCGANGenerator(4, 16, 32, 1, width=8, conditioning="cbn", noise_inputs=True)
    module = GANModule(g, ConditionalDCGANDiscriminator(4, 32, 1, width=8), num_classes=4, ema_decay=0.0)
    before = noise_effect(module, n=8)
    assert len(before["scales"]) == 3 and before["redraw_sd_grey_levels"] == 0.0
    with torch.no_grad():
        g.to_image[1].weight.fill_(0.05)
    small = noise_effect(module, n=8)["redraw_sd_grey_levels"]
    with torch.no_grad():
        g.to_image[1].weight.fill_(0.5)
    assert 0 < small < noise_effect(module, n=8)["redraw_sd_grey_levels"]
