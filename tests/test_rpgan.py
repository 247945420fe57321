"""The relativistic pairing loss (model/loss=rpgan) and R2 (model.r2_gamma): each does what it claims."""
from __future__ import annotations

import math

import pytest
import torch

import ganlab.models.gan_module as gm
from ganlab.models.losses import RelativisticPairedLoss, r1_penalty, r2_penalty
from test_losses import Linear
from test_models import fit, make_module, moved, snapshot, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_rpgan_values_pairs_and_shift_invariance():
    loss, ln2 = RelativisticPairedLoss(), math.log(2)
    zero = torch.zeros(4)
    assert loss.discriminator(zero, zero).item() == pytest.approx(ln2)
    assert loss.generator(zero, real_logits=zero).item() == pytest.approx(ln2)
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-1.0, 0.0, 3.0])
    # pairs are image by image: softplus(fake_i - real_i), not every real against every fake
    expected = torch.nn.functional.softplus(fake - real).mean().item()
    assert loss.discriminator(real, fake).item() == pytest.approx(expected)
    assert loss.discriminator(real, fake.flip(0)).item() != pytest.approx(expected)
    # only differences count: a constant on every logit changes neither phase (hinge's or BCE's would)
    assert loss.discriminator(real + 7.0, fake + 7.0).item() == pytest.approx(expected)
    assert loss.generator(fake + 7.0, real_logits=real + 7.0).item() == pytest.approx(
        loss.generator(fake, real_logits=real).item())
    # per-pair weights: a pair at weight 0 leaves the mean
    weights = torch.tensor([1.0, 0.0, 1.0])
    assert loss.discriminator(real, fake, weights).item() == pytest.approx(
        loss.discriminator(real[[0, 2]], fake[[0, 2]]).item())
    with pytest.raises(ValueError, match="real_logits"):
        loss.generator(fake)


def test_rpgan_gradients_push_real_above_its_fake_and_g_towards_its_real():
    loss = RelativisticPairedLoss()
    real, fake = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    loss.discriminator(real, fake).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    fake_g, real_g = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    loss.generator(fake_g, real_logits=real_g).backward()
    assert (fake_g.grad < 0).all()
    assert real_g.grad is None  # real logits are constants for G


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_r2_is_r1_at_generated_images(scale):
    d, fake = Linear(scale), torch.randn(5, 1, 4, 4)
    r2 = r2_penalty(d, fake, None)
    assert r2.item() == pytest.approx(scale ** 2, abs=1e-5)
    assert r2.item() == pytest.approx(r1_penalty(d, fake, None).item())
    r2.backward()  # second-order: the penalty trains D
    assert d.w.grad.abs().sum() > 0


def test_lazy_r2_runs_every_k_d_steps_at_the_fakes_scaled_by_k(monkeypatch, tmp_path):
    calls = []

    def fake_r2(discriminator, fake, labels):
        calls.append(fake.requires_grad)
        return torch.ones((), requires_grad=True)

    monkeypatch.setattr(gm, "r2_penalty", fake_r2)
    fit(make_module("dcgan", r2_gamma=1.0, r1_interval=4), tiny_loader(n=64), tmp_path)  # 8 D steps
    assert calls == [False, False]  # at D steps 0 and 4, on detached fakes
    losses = {}
    for gamma in (0.0, 1.0):  # the penalty (patched to 1) enters D's loss as gamma/2 x interval
        torch.manual_seed(0)
        trainer = fit(make_module("dcgan", r2_gamma=gamma, r1_interval=4), tiny_loader(), tmp_path,
                      limit_train_batches=1)
        losses[gamma] = float(trainer.callback_metrics["train/loss_d"])
    assert losses[1.0] - losses[0.0] == pytest.approx(0.5 * 4, rel=1e-5)


@pytest.mark.parametrize("family,mode_seeking", [("dcgan", 0.0), ("cdcgan", 0.0), ("cdcgan", 1.0)])
def test_rpgan_trains_and_g_sees_d_logits_of_the_batch_real_images(family, mode_seeking, tmp_path, monkeypatch):
    seen = []
    original = RelativisticPairedLoss.generator

    def spy(self, fake_logits, weights=None, real_logits=None):
        seen.append((fake_logits.shape[0], None if real_logits is None else real_logits.shape[0]))
        return original(self, fake_logits, weights, real_logits=real_logits)

    monkeypatch.setattr(RelativisticPairedLoss, "generator", spy)
    module = make_module(family, loss=RelativisticPairedLoss(), r1_gamma=0.1, r2_gamma=0.1, r1_interval=2,
                         mode_seeking=mode_seeking)
    before = snapshot(module)
    trainer = fit(module, tiny_loader(n=16, batch_size=7), tmp_path)  # odd batch: mode seeking pairs 6 of 7
    after = snapshot(module)
    assert moved(before, after, "generator.") and moved(before, after, "discriminator.")
    assert all(math.isfinite(float(trainer.callback_metrics[k])) for k in ("train/loss_d", "train/loss_g"))
    expected = 6 if mode_seeking else 7
    assert seen == [(expected, expected)] * 2


def test_rpgan_refuses_ada_and_r2_gamma_is_checked():
    with pytest.raises(ValueError, match="ada_target/few_shot_ada_target with a relativistic loss"):
        make_module("dcgan", loss=RelativisticPairedLoss(), ada_target=0.6, diffaugment="translation")
    with pytest.raises(ValueError, match="r2_gamma=-1"):
        make_module("dcgan", r2_gamma=-1)
    with pytest.raises(ValueError, match="r2_gamma='abc'"):
        make_module("dcgan", r2_gamma="abc")
