"""Adversarial losses, gradient penalties, and every model family composed with every loss config."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ganlab.config  # noqa: F401  (registers resolvers)
from conftest import REPO
from ganlab.models.dcgan import DCGANDiscriminator
from ganlab.models.losses import (HingeLoss, LSGANLoss, NonSaturatingLoss, RelativisticPairedLoss, WGANGPLoss,
                                  r1_penalty, wgan_gradient_penalty)
from test_models import fit, make_module, moved, snapshot, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOSSES = [NonSaturatingLoss(), NonSaturatingLoss(label_smoothing=0.1), HingeLoss(), LSGANLoss(), WGANGPLoss()]


def test_values_at_known_logits():
    zero, ln2 = torch.zeros(4), math.log(2)
    assert NonSaturatingLoss().discriminator(zero, zero).item() == pytest.approx(2 * ln2)
    assert NonSaturatingLoss().generator(zero).item() == pytest.approx(ln2)
    # one-sided: only the real target moves (1 -> 0.9); at a confident real logit the loss no longer vanishes
    big = torch.full((4,), 10.0)
    assert NonSaturatingLoss().discriminator(big, -big).item() < 1e-3
    assert NonSaturatingLoss(label_smoothing=0.1).discriminator(big, -big).item() > 0.9
    assert NonSaturatingLoss(label_smoothing=0.1).generator(zero).item() == pytest.approx(ln2)
    assert HingeLoss().discriminator(zero, zero).item() == 2.0
    assert HingeLoss().discriminator(big, -big).item() == 0.0  # margins met
    assert LSGANLoss().discriminator(zero, zero).item() == 0.5 and LSGANLoss().generator(zero).item() == 0.5
    assert WGANGPLoss().discriminator(torch.tensor([3.0]), torch.tensor([1.0])).item() == -2.0


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_gradients_push_real_up_and_fake_down(loss):
    real, fake = torch.full((4,), 0.5, requires_grad=True), torch.full((4,), 0.5, requires_grad=True)
    loss.discriminator(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()  # D descends: real logits up, fake down
    fake_g = torch.full((4,), 0.5, requires_grad=True)
    loss.generator(fake_g).backward()
    assert (fake_g.grad < 0).all()  # G descends: its logits go up


def test_bad_loss_settings_are_refused():
    with pytest.raises(ValueError, match="label_smoothing=1.5"):
        NonSaturatingLoss(label_smoothing=1.5)
    with pytest.raises(ValueError, match="label_smoothing=nan"):
        NonSaturatingLoss(label_smoothing=float("nan"))
    with pytest.raises(ValueError, match="gradient_penalty=-1"):
        WGANGPLoss(gradient_penalty=-1)


class Linear(torch.nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere, so the penalties have closed forms."""

    def __init__(self, scale: float):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((1, 1, 4, 4), scale / 4.0))  # ||w|| = scale

    def forward(self, x, labels=None):
        return (x * self.w).sum(dim=(1, 2, 3))


@pytest.mark.parametrize("scale", [1.0, 2.0, 3.0])
def test_penalties_have_their_closed_forms_and_reach_d(scale):
    d, real, fake = Linear(scale), torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    gp = wgan_gradient_penalty(d, real, fake, None)
    r1 = r1_penalty(d, real, None)
    assert gp.item() == pytest.approx((scale - 1) ** 2, abs=1e-5)
    assert r1.item() == pytest.approx(scale ** 2, abs=1e-5)
    (gp + r1).backward()  # second-order: the penalties train D
    assert d.w.grad.abs().sum() > 0


def test_penalties_run_in_float32_under_autocast():
    # in float16 the double backward overflows: under 16-mixed, GradScaler would skip nearly every D step
    d, real, fake = DCGANDiscriminator(32, 1, width=4).eval(), torch.randn(5, 1, 32, 32), torch.randn(5, 1, 32, 32)
    torch.manual_seed(0)
    expected = r1_penalty(d, real, None), wgan_gradient_penalty(d, real, fake, None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert d(real).dtype == torch.bfloat16  # autocast is on for D's own forward
        torch.manual_seed(0)
        got = r1_penalty(d, real, None), wgan_gradient_penalty(d, real, fake, None)
    for e, g in zip(expected, got):
        assert g.dtype == torch.float32 and g.item() == pytest.approx(e.item(), rel=1e-5)


@pytest.mark.parametrize("loss", LOSSES, ids=repr)
def test_every_loss_moves_d_and_g_and_stays_finite(loss, tmp_path):
    module = make_module("dcgan", loss=loss)
    before = snapshot(module)
    trainer = fit(module, tiny_loader(), tmp_path)
    after = snapshot(module)
    assert moved(before, after, "generator.") and moved(before, after, "discriminator.")
    assert all(math.isfinite(trainer.callback_metrics[k]) for k in ("train/loss_d", "train/loss_g"))


def test_r1_n_disc_and_diffaugment(tmp_path):
    module = make_module("cdcgan", r1_gamma=1.0, n_disc=2, diffaugment="translation,cutout,brightness,contrast")
    trainer = fit(module, tiny_loader(), tmp_path)
    assert trainer.global_step == 2 * 3  # per batch: 2 D steps + 1 G step
    assert math.isfinite(trainer.callback_metrics["train/loss_d"])


@pytest.mark.parametrize("model,loss", list(itertools.product(["gan", "dcgan", "cdcgan"],
                                                              ["bce", "hinge", "lsgan", "wgan_gp", "rpgan"])))
def test_model_and_loss_configs_compose_and_train(model, loss, tmp_path):
    overrides = [f"model={model}", f"model/loss={loss}", "data.image_size=32", "model.latent_dim=16",
                 "model.r1_gamma=0.1", "model.r2_gamma=0.1"]
    overrides += ["model.generator.width=4", "model.discriminator.width=4"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    module = instantiate(cfg.model)
    expected = {"bce": NonSaturatingLoss, "hinge": HingeLoss, "lsgan": LSGANLoss, "wgan_gp": WGANGPLoss,
                "rpgan": RelativisticPairedLoss}[loss]
    assert type(module.loss) is expected
    assert module.num_classes == (cfg.data.num_classes if model == "cdcgan" else 0)
    before = snapshot(module)
    trainer = fit(module, tiny_loader(n=16, batch_size=8), tmp_path, max_steps=2)
    assert moved(before, snapshot(module), "discriminator.") and moved(before, snapshot(module), "generator.")
    assert math.isfinite(trainer.callback_metrics["train/loss_d"])
