"""Adaptive pseudo augmentation (model.apa_target, model.apa_few_shot; models/apa.py): D is told G's images are
real with probability p, per class in cdcgan, and p adapts from E[sign D(real)] over the images D was told are
real."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ganlab.config  # noqa: F401  (registers resolvers)
import ganlab.models.gan_module as gm
from conftest import REPO, TINY
from ganlab.models.apa import PseudoAugment
from ganlab.models.losses import HingeLoss, RelativisticPairedLoss
from test_models import LATENT, NUM_CLASSES, fit, make_module, networks, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LabelG(torch.nn.Module):
    """Draws every image of class c as the constant c / 10 + 0.5 (no image of tiny_loader's is constant)."""

    def __init__(self):
        super().__init__()
        self.latent_dim, self.num_classes, self.w = LATENT, NUM_CLASSES, torch.nn.Parameter(torch.zeros(()))

    def forward(self, z, labels):
        return (labels.float() / 10 + 0.5).view(-1, 1, 1, 1).expand(-1, 1, 32, 32) + self.w * z[:, :1, None, None]


class RecordingD(torch.nn.Module):
    """Scores constant images (G's) -10 and every other image +10, and keeps the images of each call."""

    def __init__(self):
        super().__init__()
        self.num_classes, self.w, self.seen = NUM_CLASSES, torch.nn.Parameter(torch.zeros(())), []

    def forward(self, x, labels=None):
        self.seen.append((x.detach().clone(), labels))
        flat = x.flatten(1)
        constant = (flat.amax(1) - flat.amin(1)) < 1e-6
        return torch.where(constant, -10.0, 10.0) + self.w * flat.mean(1)


def is_generated(images: torch.Tensor) -> torch.Tensor:
    flat = images.flatten(1)
    return (flat.amax(1) - flat.amin(1)) < 1e-6


def test_pseudo_augment_swaps_each_image_with_its_class_p_and_runs_g_only_while_a_p_is_above_0():
    apa = PseudoAugment(target=0.6, kimg=1.0, classes=3)
    real, labels = torch.zeros(30, 1, 4, 4), torch.arange(30) % 3
    calls = []

    def generate(n):
        calls.append(n)
        return torch.ones(n, 1, 4, 4)

    assert apa(real, labels, generate) is real and calls == []  # p = 0 everywhere: G is not run
    apa.p.copy_(torch.tensor([0.0, 0.0, 1.0]))
    out = apa(real, labels, generate)
    assert calls == [30] and torch.equal(out[labels == 2], torch.ones(10, 1, 4, 4))
    assert torch.equal(out[labels != 2], real[labels != 2])
    kept = apa(real, labels, generate, classes=torch.tensor([True, True, False]))  # the class with p > 0 left out
    assert torch.equal(kept, real) and calls == [30]  # and G not run for it
    apa.p.fill_(0.5)
    torch.manual_seed(0)
    share = is_generated(apa(torch.rand(4000, 1, 4, 4), torch.arange(4000) % 3, generate)).float().mean()
    assert 0.46 < share < 0.54


def cdcgan_module(**kwargs):
    return gm.GANModule(LabelG(), RecordingD(), num_classes=NUM_CLASSES, loss=HingeLoss(), ema_decay=None,
                        ada_kimg=0.2, ada_interval=2, **kwargs)


def test_d_is_told_generated_images_of_the_same_class_are_real_and_r1_still_reads_the_real_ones(tmp_path):
    module = cdcgan_module(apa_target=0.6, r1_gamma=1.0)
    module.apa.p.copy_(torch.tensor([0.0, 1.0, 0.0]))
    loader = tiny_loader(n=8, batch_size=8)
    fit(module, loader, tmp_path, max_steps=2)  # one D step, one G step
    real, labels = next(iter(loader))
    told_real, told_labels = module.discriminator.seen[0]  # D's step: the real side first
    assert torch.equal(told_labels, labels)
    swapped = labels == 1
    assert is_generated(told_real).tolist() == swapped.tolist()
    assert torch.allclose(told_real[swapped], torch.full_like(told_real[swapped], 0.6))  # G's class-1 image
    assert torch.equal(told_real[~swapped], real[~swapped])
    r1_input = module.discriminator.seen[2][0]  # after the fake side: R1's forward of the true real images
    assert torch.equal(r1_input, real)


def test_p_falls_once_the_swapped_in_images_pull_r_t_below_the_target(tmp_path):
    """D calls every generated image fake: with p = 1 for class 0 the images D is told are real read r_t < 0 for
    class 0, and its p falls by the class-0 images shown; the other classes' real images read r_t = 1 and their
    p rises from 0. Each class's p and r_t are logged by name, and p and the sums are in the checkpoint."""
    module = cdcgan_module(apa_target=0.6)
    module.apa.p.copy_(torch.tensor([1.0, 0.0, 0.0]))
    trainer = fit(module, tiny_loader(n=64, batch_size=8), tmp_path)  # 8 batches: 4 updates
    class_0 = int((torch.arange(64) % NUM_CLASSES == 0).sum())
    p = module.apa.p.tolist()
    assert p[0] == pytest.approx(1 - class_0 / 200) and p[1] > 0 and p[2] > 0
    assert float(trainer.callback_metrics["train/apa_rt/0"]) < 0
    assert float(trainer.callback_metrics["train/apa_p/2"]) == pytest.approx(p[2])
    assert {"apa.p", "apa.stats"} <= set(module.state_dict())


def test_apa_few_shot_swaps_only_the_few_shot_classes_images_and_logs_only_them(tmp_path, monkeypatch):
    module = cdcgan_module(apa_target=0.6, apa_few_shot=True, few_shot_images=10)
    monkeypatch.setattr(module, "training_counts", lambda setting: {"big": 300, "small": 300, "rare": 8})
    module.apa.p.fill_(1.0)
    loader = tiny_loader(n=8, batch_size=8)
    trainer = fit(module, loader, tmp_path, max_steps=2)
    _, labels = next(iter(loader))
    assert module.few_shot_class.tolist() == [False, False, True]
    assert is_generated(module.discriminator.seen[0][0]).tolist() == (labels == 2).tolist()
    logged = {k for k in trainer.callback_metrics if k.startswith("train/apa_")}
    assert logged == {"train/apa_p/rare", "train/apa_rt/rare"}


def test_unconditional_apa_uses_one_pooled_p(tmp_path):
    module = make_module("dcgan", apa_target=0.6, ada_kimg=0.2, ada_interval=2, loss=HingeLoss())
    assert module.apa.classes == 0
    trainer = fit(module, tiny_loader(n=32, batch_size=8), tmp_path)
    assert "train/apa_p" in trainer.callback_metrics and module.apa.p.dim() == 0


def test_apa_keys_are_in_every_model_config_off_and_bad_values_name_the_key():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        for model in ("gan", "dcgan", "cdcgan"):
            cfg = compose("train", overrides=[f"model={model}", *TINY])
            assert cfg.model.apa_target is None and cfg.model.apa_few_shot is False
        module = instantiate(compose("train", overrides=["model=cdcgan", *TINY]).model)
        on = instantiate(compose("train", overrides=["model=cdcgan", *TINY, "model.apa_target=0.6",
                                                     "model.apa_few_shot=true"]).model)
    assert module.apa is None and not hasattr(module, "few_shot_class")
    assert on.apa.classes == 4 and on.apa.target == 0.6 and hasattr(on, "few_shot_class")
    g, d = networks("cdcgan")
    for bad, match in ((dict(apa_target=1.5), "apa_target=1.5"),
                       (dict(apa_few_shot=True), "apa_few_shot=true but apa_target is null"),
                       (dict(apa_target=0.6, apa_few_shot="yes"), "apa_few_shot='yes'"),
                       (dict(apa_target=0.6, loss=RelativisticPairedLoss()), "apa_target with a relativistic loss")):
        with pytest.raises(ValueError, match=match):
            gm.GANModule(g, d, num_classes=NUM_CLASSES, **bad)
    g, d = networks("dcgan")
    with pytest.raises(ValueError, match="apa_few_shot needs a conditional model"):
        gm.GANModule(g, d, apa_target=0.6, apa_few_shot=True)
