"""experiments/quality/cbn_norms.py: each class's CBN group spectral norms in a trained generator."""
from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO

sys.path[:0] = [str(REPO / "experiments" / "quality")]


def module_with(conditioning: str):
    from ganlab.models.cdcgan import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
    from ganlab.models.gan_module import GANModule

    torch.manual_seed(0)
    g = ConditionalDCGANGenerator(3, 16, 32, 1, width=8, conditioning=conditioning)
    return GANModule(g, ConditionalDCGANDiscriminator(3, 32, 1, width=8), num_classes=3, ema_decay=None)


def test_class_norms_show_one_class_s_grown_scale():
    from cbn_norms import class_norms

    module = module_with("cbn")
    before = class_norms(module)
    assert len(before) == 3 and len(before[0]) == 3  # classes x the generator's three CBN layers
    with torch.no_grad():
        module.generator.stem[1].gamma.weight[2, :4] += 1.0
    after = class_norms(module)
    assert after[2][0][0] > before[2][0][0] + 0.9  # class 2's first scale offset, and nothing else, grew
    assert after[:2] == before[:2] and after[2][1:] == before[2][1:] and after[2][0][1] == before[2][0][1]


def test_a_generator_without_cbn_is_refused_in_one_line():
    from cbn_norms import class_norms

    with pytest.raises(SystemExit, match="conditioning=cbn"):
        class_norms(module_with("concat"))
