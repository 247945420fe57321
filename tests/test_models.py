"""Every network family x size x channels, every loss, EMA, mixed precision, divergence guard."""
from __future__ import annotations

import itertools
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ganlab.models.cdcgan import ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganlab.models.gan import MLPDiscriminator, MLPGenerator
from ganlab.models.gan_module import DivergenceError, GANModule
from ganlab.models.losses import HingeLoss, LSGANLoss, NonSaturatingLoss, WGANGPLoss

NUM_CLASSES = 3


def networks(family: str, size: int, channels: int):
    if family == "gan":
        return MLPGenerator(16, size, channels, width=16, depth=2), MLPDiscriminator(size, channels, width=16, depth=2)
    if family == "dcgan":
        return DCGANGenerator(16, size, channels, width=4), DCGANDiscriminator(size, channels, width=4)
    g = ConditionalDCGANGenerator(NUM_CLASSES, 16, size, channels, width=4, embed_dim=4)
    conditioning = "projection" if channels == 1 else "concat"
    return g, ConditionalDCGANDiscriminator(NUM_CLASSES, size, channels, width=4, conditioning=conditioning)


def make_module(family="dcgan", size=32, channels=1, **kwargs) -> GANModule:
    g, d = networks(family, size, channels)
    kwargs.setdefault("num_classes", NUM_CLASSES if family == "cdcgan" else 0)
    return GANModule(g, d, **kwargs)


def tiny_loader(size=32, channels=1, n=16, batch_size=8):
    images = torch.rand(n, channels, size, size) * 2 - 1
    labels = torch.arange(n) % NUM_CLASSES
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, drop_last=True)


def fit(module, loader, tmp_path, **trainer_kwargs):
    trainer_kwargs = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                      "enable_model_summary": False, "accelerator": "cpu", "default_root_dir": tmp_path,
                      "log_every_n_steps": 1, **trainer_kwargs}
    trainer = L.Trainer(**trainer_kwargs)
    trainer.fit(module, loader)
    return trainer


def snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters() if not n.startswith("generator_ema")}


@pytest.mark.parametrize("family,size,channels", list(itertools.product(["gan", "dcgan", "cdcgan"], [32, 64, 128], [1, 3])))
def test_shapes_and_one_optimisation_step(family, size, channels, tmp_path):
    module = make_module(family, size, channels)
    z = torch.randn(2, 16)
    labels = torch.tensor([0, 2])
    fake = module.generator(z, labels)
    assert fake.shape == (2, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    assert module.discriminator(fake, labels).shape == (2,)
    before = snapshot(module)
    fit(module, tiny_loader(size, channels, n=4, batch_size=2), tmp_path, max_steps=2)  # one D + one G step
    after = snapshot(module)
    for prefix in ("generator.", "discriminator."):
        assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix)), prefix


@pytest.mark.parametrize("loss", [NonSaturatingLoss(), NonSaturatingLoss(label_smoothing=0.1), HingeLoss(),
                                  LSGANLoss(), WGANGPLoss(gradient_penalty=10.0)], ids=repr)
def test_every_loss_moves_d_and_g_and_stays_finite(loss, tmp_path):
    module = make_module("dcgan", loss=loss)
    before = snapshot(module)
    trainer = fit(module, tiny_loader(), tmp_path)
    after = snapshot(module)
    for prefix in ("generator.", "discriminator."):
        assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix)), prefix
    assert math.isfinite(trainer.callback_metrics["train/loss_d"]) and math.isfinite(trainer.callback_metrics["train/loss_g"])


def test_r1_n_disc_and_diffaugment_run(tmp_path):
    module = make_module("cdcgan", r1_gamma=1.0, n_disc=2, diffaugment="translation,cutout,brightness,contrast")
    trainer = fit(module, tiny_loader(), tmp_path)
    assert trainer.global_step == 2 * 3  # per batch: 2 D steps + 1 G step


def test_sample_api_and_per_class_fixed_grid():
    module = make_module("cdcgan")
    images = module.sample(5, labels=torch.tensor([0, 1, 2, 0, 1]))
    assert images.shape == (5, 1, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert module.fixed_labels.view(NUM_CLASSES, -1).eq(torch.arange(NUM_CLASSES)[:, None]).all()  # one row per class
    unconditional = make_module("dcgan")
    assert unconditional.sample(3).shape == (3, 1, 32, 32)


def test_ema_differs_from_raw_weights_and_is_restored_from_checkpoint(tmp_path):
    module = make_module("dcgan", ema_decay=0.9)
    trainer = fit(module, tiny_loader(n=32), tmp_path, max_epochs=2)
    raw = dict(module.generator.named_parameters())
    ema = dict(module.generator_ema.module.named_parameters())
    assert any(not torch.equal(raw[n], ema[n]) for n in raw)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    restored = make_module("dcgan", ema_decay=0.9)
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for n, p in restored.generator_ema.module.named_parameters():
        assert torch.equal(p, ema[n]), n
    assert torch.equal(restored.fixed_z, module.fixed_z)


def test_bf16_mixed_trains_on_cpu(tmp_path):
    module = make_module("cdcgan", loss=WGANGPLoss())
    trainer = fit(module, tiny_loader(), tmp_path, precision="bf16-mixed")
    assert math.isfinite(trainer.callback_metrics["train/loss_d"])


class NaNAfter(NonSaturatingLoss):
    def __init__(self, calls: int):
        super().__init__()
        self.calls = calls

    def discriminator(self, real_logits, fake_logits):
        self.calls -= 1
        loss = super().discriminator(real_logits, fake_logits)
        return loss * float("nan") if self.calls < 0 else loss


def test_divergence_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    module = make_module("dcgan", loss=NaNAfter(calls=3))
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=2)
    with pytest.raises(DivergenceError, match=r"NaN/inf loss appeared at or before step \d+"):
        fit(module, tiny_loader(n=64), tmp_path, callbacks=[ckpt], enable_checkpointing=True)
    good = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert good["global_step"] <= 6  # written before the NaN (batch 4 = steps 7-8)
    assert all(torch.isfinite(t).all() for t in good["state_dict"].values() if t.is_floating_point())
