"""gSR (model.gsr_weight): the largest singular value of each class's grouped CBN scale offset and shift, in
G's loss, weighted by 1 / the class's effective number of training images."""
from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from ganlab.models.cdcgan import ConditionalDCGANGenerator
from ganlab.models.gsr import cbn_layers, class_weights, group_shape, group_spectral_norms, gsr_term
from test_models import LATENT, fit, make_module, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cbn_generator(classes: int = 3, ordinal: bool = False) -> ConditionalDCGANGenerator:
    return ConditionalDCGANGenerator(classes, LATENT, 32, 1, width=8, conditioning="cbn", ordinal=ordinal)


@torch.no_grad()
def neutral(generator) -> None:
    """Every class's scale 1 and shift 0: nothing class-specific left to regularise."""
    for layer in cbn_layers(generator):
        layer.gamma.weight.fill_(1.0)
        layer.beta.weight.zero_()


def test_group_shape_is_the_near_square_factorisation():
    assert [group_shape(n) for n in (256, 128, 64, 32, 7, 1)] == [(16, 16), (8, 16), (8, 8), (4, 8), (1, 7), (1, 1)]


def test_class_weights_average_one_and_weigh_the_few_image_class_up():
    w = class_weights([360, 360, 360, 22], 0.999)
    assert w.mean().item() == pytest.approx(1.0)
    assert w[3] / w[0] == pytest.approx((1 - 0.999 ** 360) / (1 - 0.999 ** 22), rel=1e-5)  # ~14x
    assert class_weights([50, 50, 50], 0.999).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert class_weights([360, 22], 0.0).tolist() == pytest.approx([1.0, 1.0])  # beta 0: every class alike
    with pytest.raises(ValueError, match="no training images"):
        class_weights([10, 0, 5], 0.999)


def test_the_norms_are_each_class_matrix_s_largest_singular_value():
    g = cbn_generator()
    layer = cbn_layers(g)[0]
    with torch.no_grad():
        layer.gamma.weight[1] += torch.randn(layer.gamma.weight.shape[1])
        layer.beta.weight[2] = torch.randn(layer.beta.weight.shape[1])
    gamma_norms, beta_norms = group_spectral_norms(layer)
    shape = group_shape(layer.gamma.weight.shape[1])
    for y in range(3):
        expected_gamma = np.linalg.svd((layer.gamma.weight[y] - 1).detach().numpy().reshape(shape))[1].max()
        expected_beta = np.linalg.svd(layer.beta.weight[y].detach().numpy().reshape(shape))[1].max()
        assert gamma_norms[y].item() == pytest.approx(expected_gamma, rel=1e-4)
        assert beta_norms[y].item() == pytest.approx(expected_beta, rel=1e-4, abs=1e-7)


def test_the_term_is_zero_for_neutral_classes_and_charges_the_few_image_class_more():
    weights = class_weights([360, 360, 22], 0.999)
    g = cbn_generator()
    neutral(g)
    assert gsr_term(g, weights).item() == 0.0
    spike = torch.zeros(g.stem[1].gamma.weight.shape[1])
    spike[:4] = 2.0  # a few large directions in one class's scale
    terms = []
    for y in (0, 2):
        neutral(g)
        with torch.no_grad():
            g.stem[1].gamma.weight[y] += spike
        terms.append(gsr_term(g, weights).item())
    assert terms[0] > 0 and terms[1] == pytest.approx(terms[0] * (weights[2] / weights[0]).item(), rel=1e-5)


def test_the_term_reads_the_cumulative_tables_of_an_ordinal_generator():
    g = cbn_generator(ordinal=True)
    neutral(g)  # ordinal rows are class 0's vector and increments: scales 1, 2, 3, offsets 0, 1, 2 in every entry
    norms = group_spectral_norms(cbn_layers(g)[0])[0]
    features = g.stem[1].gamma.weight.shape[1]
    assert norms.tolist() == pytest.approx([0.0, features ** 0.5, 2 * features ** 0.5], rel=1e-5, abs=1e-5)


def test_training_fills_the_weights_from_the_data_and_holds_the_few_image_class_down(tmp_path, monkeypatch):
    counts = {"a": 40, "b": 3, "c": 40}

    def run(weight: float):
        L.seed_everything(0)
        module = make_module("cdcgan", g_cond="cbn", gsr_weight=weight, lr_g=1e-2)
        monkeypatch.setattr(module, "training_counts", lambda setting: counts)  # what a ganlab datamodule gives
        L.seed_everything(1)
        fit(module, tiny_loader(n=48), tmp_path, max_epochs=2)
        rare_scale = sum(group_spectral_norms(layer)[0][1].item() for layer in cbn_layers(module.generator))
        return module, rare_scale

    off, rare_off = run(0.0)
    on, rare_on = run(50.0)
    assert not hasattr(off, "gsr_class_weight")
    assert torch.allclose(on.gsr_class_weight, class_weights(counts.values(), 0.999))
    assert rare_on < 0.5 * rare_off  # the few-image class's scale offsets held near the class-neutral 1


@pytest.mark.parametrize("kwargs, message", [
    ({"gsr_weight": -0.5}, "gsr_weight=-0.5"),
    ({"gsr_weight": 0.5, "gsr_beta": 1.0}, "gsr_beta=1.0"),
    ({"gsr_weight": 0.5, "g_cond": "concat"}, "generator.conditioning=cbn"),
])
def test_bad_settings_name_their_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_module("cdcgan", **kwargs)
