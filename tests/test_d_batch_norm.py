"""D's BatchNorm and the real-vs-fake batch: model.d_joint_batch (one batch, a shift between them stays visible)
and model.discriminator.batch_norm=false (no BatchNorm in D)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganlab.models.losses import RelativisticPairedLoss
from ganlab.models.gan_module import GANModule
from test_models import NUM_CLASSES, fit, make_module, moved, networks, snapshot, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class BatchNormOnly(nn.Module):
    """A 'discriminator' that is one BatchNorm and a mean: it can only judge what batch statistics leave."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm2d(1, affine=False)

    def forward(self, x, labels=None):
        return self.norm(x).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("joint", [False, True])
def test_a_shift_between_real_and_fake_is_visible_only_in_a_joint_batch(joint):
    module = make_module("dcgan", d_joint_batch=joint)
    real = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    fake = real + 3.0  # every generated image brighter by the same amount
    real_logits, fake_logits = module.judge(BatchNormOnly().train(), real, fake, None, None)
    gap = (fake_logits.mean() - real_logits.mean()).item()
    if joint:
        both = torch.cat([real, fake])  # (x - mean) / std over both batches: the shift over their common std
        assert gap == pytest.approx(3.0 / math.sqrt(both.var(unbiased=False).item() + 1e-5), rel=1e-4)
    else:
        assert gap == pytest.approx(0.0, abs=1e-5)  # each batch normalised by its own statistics


@pytest.mark.parametrize("family,extra", [("dcgan", {}), ("cdcgan", {"adc_weight": 1.0}),
                                          ("cdcgan", {"loss": RelativisticPairedLoss(), "mode_seeking": 1.0})])
def test_joint_batch_trains_with_one_forward_of_both_per_step(family, extra, tmp_path):
    module = make_module(family, d_joint_batch=True, **extra)
    sizes = []
    module.discriminator.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    before = snapshot(module)
    trainer = fit(module, tiny_loader(n=16, batch_size=7), tmp_path)  # odd batch: mode seeking makes 6 fakes
    after = snapshot(module)
    assert moved(before, after, "generator.") and moved(before, after, "discriminator.")
    assert all(math.isfinite(float(trainer.callback_metrics[k])) for k in ("train/loss_d", "train/loss_g"))
    g_fakes = 6 if extra.get("mode_seeking") else 7
    assert sizes == [7 + 7, 7 + g_fakes] * 2  # D step: 7 real + 7 fake; G step: the real batch beside the fakes


def test_joint_batch_is_checked():
    with pytest.raises(ValueError, match="d_joint_batch='yes'"):
        make_module("dcgan", d_joint_batch="yes")


@pytest.mark.parametrize("family", ["dcgan", "cdcgan"])
def test_discriminator_without_batch_norm_has_none_and_trains(family, tmp_path):
    g, d = networks(family)
    kwargs = {"num_classes": NUM_CLASSES} if family == "cdcgan" else {}
    plain = type(d)(**kwargs, image_size=32, width=4, batch_norm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    x, labels = torch.randn(4, 1, 32, 32), (torch.arange(4) % NUM_CLASSES if kwargs else None)
    # no batch statistics in training mode: an image's logit is the same alone as in a batch
    assert torch.allclose(plain.train()(x, labels)[:1], plain(x[:1], None if labels is None else labels[:1]),
                          atol=1e-6)
    module = GANModule(g, plain, **kwargs)
    before = snapshot(module)
    fit(module, tiny_loader(), tmp_path)
    assert moved(before, snapshot(module), "discriminator.")
    with pytest.raises(ValueError, match="batch_norm='no'"):
        type(d)(**kwargs, image_size=32, width=4, batch_norm="no")
