"""Small-data GAN techniques (issue 12's quality ladder), each off by default: ADA, LeCam, minibatch
stddev, lazy R1, EMA half-life in kimg, unconditional -> conditional transition, mode seeking, ordinal
class embeddings, class-weighted losses (ADC-GAN's own tests: test_adc.py). Each test shows the option does what it claims."""
from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ganlab.config  # noqa: F401  (registers resolvers)
import ganlab.models.gan_module as gm
from conftest import REPO, TINY
from ganlab.callbacks.checkpoint import ResumableCheckpoint
from ganlab.callbacks.reseed import ReseedRNG
from ganlab.models.ada import AdaptiveAugment
from ganlab.models.cdcgan import ConditionalBatchNorm2d, ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
from ganlab.models.dcgan import DCGANDiscriminator, MinibatchStd, TextureBranch
from ganlab.models.diffaugment import augment_with_probability
from ganlab.models.ema import ema_beta
from ganlab.models.losses import HingeLoss, NonSaturatingLoss, lecam_penalty
from test_models import LATENT, NUM_CLASSES, fit, make_module, networks, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ConstantD(torch.nn.Module):
    """A discriminator that answers `logit` for every image (and still passes G a gradient)."""

    def __init__(self, logit: float):
        super().__init__()
        self.logit = logit
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, labels=None):
        return self.logit + self.w * x.flatten(1).mean(1)


def metric(trainer, key) -> float:
    return float(trainer.callback_metrics[key])


# ----------------------------------------------------------------------------- ADA
def test_ada_p_rises_while_d_is_confident_on_reals_and_falls_otherwise():
    ada = AdaptiveAugment(("translation",), target=0.6, kimg=1.0, interval=4)
    for _ in range(3):
        ada.accumulate(torch.full((8,), 5.0))  # r_t = 1 > 0.6: D overfits
        ada.update(images=100)  # 100 of the 1000 images that take p from 0 to 1
    assert ada.p.item() == pytest.approx(0.3) and ada.rt.item() == 1.0
    ada.accumulate(torch.tensor([1.0, -1.0, 1.0, -1.0]))  # r_t = 0 < 0.6
    ada.update(images=200)
    assert ada.p.item() == pytest.approx(0.1)
    ada.accumulate(torch.full((8,), -3.0))
    ada.update(images=1000)
    assert ada.p.item() == 0.0  # clamped to [0, 1]
    ada.update(images=1000)  # no logits since the last update: p stays
    assert ada.p.item() == 0.0 and ada.stats.eq(0).all()


def test_ada_applies_each_op_with_probability_p_per_image():
    x = torch.zeros(400, 1, 8, 8)
    assert torch.equal(augment_with_probability(x, ("brightness",), torch.tensor(0.0)), x)
    assert (augment_with_probability(x, ("brightness",), torch.tensor(1.0)) != 0).flatten(1).all(1).all()
    changed = (augment_with_probability(x, ("brightness",), torch.tensor(0.3)) != 0).flatten(1).all(1).float().mean()
    assert 0.2 < changed < 0.4


@pytest.mark.parametrize("logit,rises", [(10.0, True), (-10.0, False)])
def test_ada_in_training_p_moves_with_d_overfitting_and_is_logged_and_saved(logit, rises, tmp_path):
    g, _ = networks("dcgan")
    module = gm.GANModule(g, ConstantD(logit), diffaugment="translation,brightness", ada_target=0.6,
                          ada_kimg=0.2, ada_interval=2, loss=HingeLoss())
    module.ada.p.fill_(0.5)
    trainer = fit(module, tiny_loader(n=64, batch_size=8), tmp_path)  # 8 batches: 4 updates of 16 images
    assert metric(trainer, "train/ada_p") == module.ada.p.item()
    assert module.ada.p.item() == pytest.approx(0.5 + 4 * 16 / 200 if rises else 0.5 - 4 * 16 / 200)
    assert {"ada.p", "ada.stats"} <= set(module.state_dict())


def test_ada_settings_are_checked():
    g, d = networks("dcgan")
    with pytest.raises(ValueError, match="ada_target is set but model.diffaugment is null"):
        gm.GANModule(g, d, ada_target=0.6, diffaugment=None)
    with pytest.raises(ValueError, match="ada_target=1.5"):
        gm.GANModule(g, d, ada_target=1.5, diffaugment="translation")
    with pytest.raises(ValueError, match="ada_kimg=0"):
        gm.GANModule(g, d, ada_target=0.6, diffaugment="translation", ada_kimg=0)
    with pytest.raises(ValueError, match="ada_interval=0"):
        gm.GANModule(g, d, ada_interval=0)


def test_augment_p_lets_a_share_of_the_images_reach_d_untranslated():
    g, d = networks("dcgan")
    x = torch.rand(400, 1, 8, 8) * 2 - 1
    moved = lambda m: (m.augment(x) != x).flatten(1).any(1).float().mean().item()  # noqa: E731
    assert moved(gm.GANModule(g, d, diffaugment="translation")) > 0.85  # p = 1: DiffAugment as published
    assert moved(gm.GANModule(g, d, diffaugment="translation", augment_p=0.0)) == 0.0
    assert 0.3 < moved(gm.GANModule(g, d, diffaugment="translation", augment_p=0.5)) < 0.6
    with pytest.raises(ValueError, match="augment_p=1.5"):
        gm.GANModule(g, d, diffaugment="translation", augment_p=1.5)
    with pytest.raises(ValueError, match="ADA sets the probability itself"):
        gm.GANModule(g, d, diffaugment="translation", augment_p=0.5, ada_target=0.6)


def test_translation_ratio_bounds_the_shift_for_diffaugment_and_augment_p():
    g, d = networks("dcgan")
    x = torch.full((400, 1, 32, 32), -1.0)
    x[:, :, 16, 16] = 1.0  # one bright pixel: where it lands is the shift

    def largest_shift(m):
        out = m.augment(x)
        where = out.flatten(1).argmax(1)
        return max((where // 32 - 16).abs().max().item(), (where % 32 - 16).abs().max().item())

    assert largest_shift(gm.GANModule(g, d, diffaugment="translation")) == 4  # 1/8 of 32 px
    assert largest_shift(gm.GANModule(g, d, diffaugment="translation", translation_ratio=0.0625)) == 2
    assert largest_shift(gm.GANModule(g, d, diffaugment="translation", translation_ratio=0.0625,
                                      augment_p=0.5)) == 2
    with pytest.raises(ValueError, match="translation_ratio=0"):
        gm.GANModule(g, d, diffaugment="translation", translation_ratio=0)


# ----------------------------------------------------------------------------- LeCam
def test_lecam_penalty_pulls_real_towards_the_fake_anchor_and_fake_towards_the_real_anchor():
    real, fake = torch.tensor([2.0, -1.0], requires_grad=True), torch.tensor([-2.0, 1.0], requires_grad=True)
    value = lecam_penalty(real, fake, anchor_real=torch.tensor(0.5), anchor_fake=torch.tensor(-0.5))
    assert value.item() == pytest.approx((2.5 ** 2) / 2 + (2.5 ** 2) / 2)  # one-sided: only 2.0 and -2.0 count
    value.backward()
    assert real.grad[0] > 0 and real.grad[1] == 0 and fake.grad[0] < 0 and fake.grad[1] == 0


def test_lecam_changes_d_loss_and_its_anchors_follow_d(tmp_path):
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        module = make_module("dcgan", loss=HingeLoss(), lecam_weight=weight)
        trainer = fit(module, tiny_loader(), tmp_path, limit_train_batches=1)
        losses[weight] = metric(trainer, "train/loss_d")
    assert losses[1.0] > losses[0.0]  # the first update copies the means: the penalty is > 0 at once
    torch.manual_seed(0)
    module = make_module("dcgan", loss=HingeLoss(), lecam_weight=0.1)
    trainer = fit(module, tiny_loader(n=32), tmp_path)
    assert module.lecam_updates.item() == 4 and module.lecam_anchors.abs().min() > 0
    assert metric(trainer, "train/lecam_anchor_real") == module.lecam_anchors[0].item()
    assert "lecam_anchors" in module.state_dict()


# ----------------------------------------------------------------------------- minibatch stddev
@pytest.mark.parametrize("family", ["dcgan", "cdcgan"])
def test_mbstd_makes_d_see_the_batch(family):
    """Without BatchNorm (spectral norm) and in eval mode D is per-sample: an image's logit is the same
    whatever else is in the batch. With mbstd_group=4 a batch of copies (std 0) changes it."""
    def build(group):
        torch.manual_seed(0)
        if family == "dcgan":
            return DCGANDiscriminator(32, 1, width=4, spectral_norm=True, mbstd_group=group).eval()
        return ConditionalDCGANDiscriminator(NUM_CLASSES, 32, 1, width=4, spectral_norm=True,
                                             mbstd_group=group).eval()

    x = torch.rand(4, 1, 32, 32) * 2 - 1
    repeated, labels = x[:1].expand(4, -1, -1, -1), torch.zeros(4, dtype=torch.long)
    for group, sees_batch in ((0, False), (4, True)):
        d = build(group)
        with torch.no_grad():
            same = d(repeated, labels)[0].item() == pytest.approx(d(x, labels)[0].item(), abs=1e-6)
        assert same != sees_batch, group
    assert MinibatchStd(4)(torch.rand(6, 3, 4, 4)).shape == (6, 4, 4, 4)  # 6 not divisible by 4: groups of 2
    assert MinibatchStd(4)(x[:1].expand(4, -1, -1, -1))[:, 1].abs().max() < 1e-3  # copies: std ~ 0
    with pytest.raises(ValueError, match="mbstd_group=-1"):
        DCGANDiscriminator(32, 1, width=4, mbstd_group=-1)


# ----------------------------------------------------------------------------- texture branch
def test_texture_branch_sees_the_fine_grain_and_not_brightness_or_shape():
    """The branch judges only the residual x - blur(x): a brightness offset leaves its logit unchanged,
    Gaussian noise the size of scanner noise changes it, and a few Adam steps teach it to tell noisy from
    clean copies of the same smooth images. In a conditional concat D it sees the image channels only."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    centres = torch.rand(64, 2, 1, 1) - 0.5
    smooth = torch.exp(-((yy - centres[:, :1]) ** 2 + (xx - centres[:, 1:]) ** 2) * 4) * 1.6 - 0.8
    noisy = smooth + 0.04 * torch.randn_like(smooth)
    branch = TextureBranch(1, 8)
    with torch.no_grad():
        assert torch.allclose(branch(smooth + 0.3), branch(smooth), atol=1e-5)
        assert (branch(noisy) - branch(smooth)).abs().max() > 1e-3
    opt = torch.optim.Adam(branch.parameters(), lr=1e-2)
    target = torch.cat([torch.ones(64), torch.zeros(64)])
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(branch(torch.cat([noisy, smooth])), target)
        loss.backward()
        opt.step()
    with torch.no_grad():
        fresh = smooth + 0.04 * torch.randn_like(smooth)  # new noise: texture learnt, not these pixels
        accuracy = ((branch(torch.cat([fresh, smooth])) > 0).float() == target).float().mean().item()
    assert accuracy > 0.9, accuracy

    x, labels = noisy[:4].repeat(1, 1, 2, 2), torch.arange(4) % NUM_CLASSES
    for conditioning in ("concat", "projection"):
        torch.manual_seed(0)
        d = ConditionalDCGANDiscriminator(NUM_CLASSES, 32, 1, width=4, conditioning=conditioning,
                                          texture_width=4).eval()
        assert d.texture.net[0].in_channels == 1
        with torch.no_grad():
            without = d(x, labels) - d.texture(x)
            d.texture = None
            assert torch.allclose(without, d(x, labels), atol=1e-5)  # the branch's logit is added
    assert DCGANDiscriminator(32, 1, width=4).texture is None
    with pytest.raises(ValueError, match="texture_width=-1"):
        DCGANDiscriminator(32, 1, width=4, texture_width=-1)


# ----------------------------------------------------------------------------- lazy R1
def test_lazy_r1_runs_every_k_d_steps_scaled_by_k(monkeypatch, tmp_path):
    calls = []

    def fake_r1(discriminator, real, labels):
        calls.append(len(calls))
        return torch.ones((), requires_grad=True)

    monkeypatch.setattr(gm, "r1_penalty", fake_r1)
    fit(make_module("dcgan", r1_gamma=1.0, r1_interval=4), tiny_loader(n=64), tmp_path)  # 8 D steps
    assert len(calls) == 2  # at D steps 0 and 4
    calls.clear()
    fit(make_module("dcgan", r1_gamma=1.0, r1_interval=3, n_disc=2), tiny_loader(n=24), tmp_path)  # 6 D steps
    assert len(calls) == 2  # at D steps 0 and 3
    losses = {}
    for gamma in (0.0, 1.0):  # the penalty (patched to 1) enters D's loss as gamma/2 x interval
        torch.manual_seed(0)
        trainer = fit(make_module("dcgan", r1_gamma=gamma, r1_interval=4), tiny_loader(), tmp_path,
                      limit_train_batches=1)
        losses[gamma] = metric(trainer, "train/loss_d")
    assert losses[1.0] - losses[0.0] == pytest.approx(0.5 * 4, rel=1e-5)


# ----------------------------------------------------------------------------- EMA half-life in kimg
def test_ema_kimg_gives_the_same_half_life_in_images_at_any_batch_size():
    for batch in (8, 32, 64 * 2):  # 64 per process x 2 processes
        weight_of_start = ema_beta(10, None, batch, 10**6) ** (10_000 / batch)
        assert weight_of_start == pytest.approx(0.5)
    # ramp-up: early in a run the half-life is rampup x images seen
    assert ema_beta(10, 0.05, 32, 1000) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(10, 0.05, 32, 10**7) == ema_beta(10, None, 32, 0)


def test_ema_kimg_sets_the_decay_from_images_and_processes(tmp_path):
    distances = {}
    for kimg in (1e-3, 1e3):  # half-life 1 image: EMA ~ raw weights; 1M images: EMA stays near the start
        torch.manual_seed(0)
        module = make_module("dcgan", ema_kimg=kimg)
        fit(module, tiny_loader(n=32, batch_size=4), tmp_path)
        raw = dict(module.generator.named_parameters())
        distances[kimg] = sum((p - raw[n]).norm() for n, p in module.generator_ema.module.named_parameters())
    assert distances[1e-3] < 0.05 * distances[1e3]
    g, d = networks("dcgan")
    assert gm.GANModule(g, d, ema_decay=None, ema_kimg=10).generator_ema is not None
    with pytest.raises(ValueError, match="ema_kimg=-1"):
        gm.GANModule(g, d, ema_kimg=-1)


# ----------------------------------------------------------------------------- conditioning transition
@pytest.mark.parametrize("g_cond,d_cond", [("concat", "projection"), ("cbn", "concat")])
def test_cond_weight_goes_0_to_1_and_at_0_the_label_has_no_effect(g_cond, d_cond):
    module = make_module("cdcgan", g_cond=g_cond, d_cond=d_cond, cond_start_kimg=1, cond_end_kimg=2)
    assert [module.cond_weight(n) for n in (0, 1000, 1500, 2000, 5000)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    g, d = module.generator.train(), module.discriminator.train()
    with torch.no_grad():  # nudge CBN's per-class tables apart (they start nearly equal)
        for m in g.modules():
            if isinstance(m, ConditionalBatchNorm2d):
                m.beta.weight.normal_(0, 0.5)
    z, x = torch.randn(6, LATENT), torch.rand(6, 1, 32, 32) * 2 - 1
    a, b = torch.zeros(6, dtype=torch.long), torch.full((6,), 2)
    for weight, label_matters in ((0.0, False), (1.0, True)):
        module.set_cond_weight(weight)
        assert module.generator_ema.module.cond_weight.item() == weight
        with torch.no_grad():
            assert (not torch.allclose(g(z, a), g(z, b))) == label_matters
            assert (not torch.allclose(d(x, a), d(x, b))) == label_matters


def test_cond_transition_is_logged_in_training_and_checked(tmp_path):
    module = make_module("cdcgan", cond_start_kimg=0, cond_end_kimg=0.032)  # 32 images: batches of 8
    trainer = fit(module, tiny_loader(n=32), tmp_path)
    assert metric(trainer, "train/cond_weight") == 0.75  # the 4th batch starts after 24 images
    g, d = networks("dcgan")
    with pytest.raises(ValueError, match="need a conditional model"):
        gm.GANModule(g, d, cond_start_kimg=0, cond_end_kimg=1)
    with pytest.raises(ValueError, match="set both"):
        make_module("cdcgan", cond_start_kimg=1)
    with pytest.raises(ValueError, match="start <= end"):
        make_module("cdcgan", cond_start_kimg=2, cond_end_kimg=1)


# ----------------------------------------------------------------------------- mode seeking
def test_mode_seeking_term_pushes_same_class_samples_apart(tmp_path):
    fake = torch.rand(4, 1, 4, 4, requires_grad=True)
    z = torch.randn(4, LATENT)
    term = gm.mode_seeking_term(fake, z, 2)
    term.backward()
    with torch.no_grad():
        stepped = fake - 0.01 * fake.grad
        assert (stepped[:2] - stepped[2:]).abs().mean() > (fake[:2] - fake[2:]).abs().mean()
    losses, grads = {}, {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        module = make_module("cdcgan", mode_seeking=weight)
        trainer = fit(module, tiny_loader(), tmp_path, limit_train_batches=1)
        losses[weight] = metric(trainer, "train/loss_g")
        grads[weight] = module.generator.to_image[0].weight.detach().clone()
    assert losses[1.0] > losses[0.0] and not torch.equal(grads[0.0], grads[1.0])


# ----------------------------------------------------------------------------- ordinal classes
@pytest.mark.parametrize("which", ["concat", "cbn", "projection"])
def test_ordinal_embedding_lets_a_class_borrow_from_its_lower_neighbour(which):
    def grad_on_class_1_moves(ordinal: bool) -> torch.Tensor:
        """How each class's vector moves after a gradient step on class 1's vector alone."""
        torch.manual_seed(0)
        if which == "projection":
            embed = ConditionalDCGANDiscriminator(4, 32, 1, width=4, ordinal=ordinal).embed
        else:
            g = ConditionalDCGANGenerator(4, LATENT, 32, 1, width=4, embed_dim=4, conditioning=which, ordinal=ordinal)
            embed = g.embed if which == "concat" else g.stem[1].gamma
        before = embed(torch.arange(4)).detach().clone()
        embed(torch.tensor([1])).sum().backward()
        with torch.no_grad():
            embed.weight -= 0.1 * embed.weight.grad
        return embed(torch.arange(4)).detach() - before

    moved = grad_on_class_1_moves(True)  # embed(c) = e_0 + ... + e_c: the step on e_0, e_1 moves 2 and 3 alike
    assert moved[1].abs().max() > 0 and torch.allclose(moved[2], moved[1]) and torch.allclose(moved[3], moved[1])
    moved = grad_on_class_1_moves(False)
    assert moved[1].abs().max() > 0 and not moved[[0, 2, 3]].any()


def test_ordinal_concat_discriminator_gets_thermometer_label_maps():
    for ordinal, expected in ((True, [1.0, 1.0, 0.0, 0.0]), (False, [0.0, 1.0, 0.0, 0.0])):
        d = ConditionalDCGANDiscriminator(4, 32, 1, width=4, conditioning="concat", ordinal=ordinal)
        seen = []
        d.features[0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        d(torch.zeros(1, 1, 32, 32), torch.tensor([1]))
        assert seen[0][0, 1:, 5, 5].tolist() == expected


def test_ordinal_is_one_switch_in_the_cdcgan_config():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=cdcgan", "model.generator.ordinal=true"])
    assert cfg.model.discriminator.ordinal is True


# ----------------------------------------------------------------------------- class-weighted losses
def test_class_weights_from_counts_and_in_the_losses():
    w = gm.weights_from_counts([100, 100, 100, 5], "inverse")
    assert torch.allclose(w, torch.tensor([305 / 400, 305 / 400, 305 / 400, 305 / 20]))
    assert torch.allclose(gm.weights_from_counts([100, 25], "inverse_sqrt"), torch.tensor([125 / 200, 125 / 50]).sqrt())
    real, fake = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])
    for loss in (NonSaturatingLoss(), HingeLoss()):
        unweighted = loss.discriminator(real, fake).item()
        assert loss.discriminator(real, fake, torch.ones(2)).item() == pytest.approx(unweighted)
        only_first = loss.discriminator(real, fake, torch.tensor([1.0, 0.0]))
        assert only_first.item() == pytest.approx(loss.discriminator(real[:1], fake[:1]).item())
        assert loss.generator(real, torch.tensor([0.0, 3.0])).item() == pytest.approx(loss.generator(real[1:]).item())
    with pytest.raises(ValueError, match="class has no training images"):
        gm.weights_from_counts([3, 0], "inverse")


def test_class_weights_weight_the_per_sample_loss_in_training(tmp_path):
    losses = {}
    for weights in (None, [1.0, 1.0, 1.0], [1.0, 1.0, 50.0]):
        torch.manual_seed(0)
        trainer = fit(make_module("cdcgan", class_weights=weights), tiny_loader(), tmp_path, limit_train_batches=1)
        losses[str(weights)] = metric(trainer, "train/loss_d")
    assert losses["None"] == pytest.approx(losses["[1.0, 1.0, 1.0]"], rel=1e-5)
    assert losses["None"] != pytest.approx(losses["[1.0, 1.0, 50.0]"], rel=1e-3)
    with pytest.raises(ValueError, match="needs the data's class counts"):  # a bare DataLoader has no counts
        fit(make_module("cdcgan", class_weights="inverse"), tiny_loader(), tmp_path)
    for bad, match in (("median", "choose one of"), ([1.0, 2.0], "expected 3 positive numbers")):
        with pytest.raises(ValueError, match=match):
            make_module("cdcgan", class_weights=bad)
    with pytest.raises(ValueError, match="class_weights needs a conditional model"):
        make_module("dcgan", class_weights=[1.0])


def test_inverse_class_weights_come_from_the_datamodule(tiny_data, monkeypatch):
    module = make_module("cdcgan", class_weights="inverse")
    module._trainer = SimpleNamespace(datamodule=tiny_data)  # what fit(datamodule=...) gives
    counts = list(tiny_data.class_counts("train").values())
    assert module.training_class_counts() == counts and len(counts) == 4
    monkeypatch.setattr(tiny_data, "balanced_sampling", True, raising=False)
    with pytest.warns(UserWarning, match="count the imbalance twice"):
        module.training_class_counts()


# ----------------------------------------------------------------------------- few-shot classes
def few_shot_module(**kwargs):
    return make_module("cdcgan", **{"few_shot_policy": "brightness", **kwargs})


def test_few_shot_policy_adds_its_ops_only_to_the_small_classes_images():
    """Class 2 has 20 training images, the others 300: only its images (real or generated alike) get the
    extra brightness shift, on top of the translation every image gets, which stays as it was."""
    on, off = few_shot_module(diffaugment="translation"), make_module("cdcgan", diffaugment="translation")
    on.mark_few_shot_classes({"a": 300, "b": 300, "c": 20})
    assert on.few_shot_class.tolist() == [False, False, True]
    x = torch.rand(12, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = torch.arange(12) % NUM_CLASSES
    torch.manual_seed(5)
    base = off.augment(x, y)
    torch.manual_seed(5)
    extra = on.augment(x, y)
    few = y == 2
    assert torch.equal(extra[~few], base[~few])
    shift = (extra[few] - base[few]).flatten(1)  # brightness: one constant per image, in [-0.5, 0.5]
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6) and bool((shift[:, 0].abs() > 0).all())
    torch.manual_seed(5)
    assert torch.equal(on.augment(x), base)  # a call without labels gets no extra ops


def test_few_shot_classes_come_from_the_training_counts_and_the_settings_are_checked(tiny_data, monkeypatch):
    module = few_shot_module(few_shot_images=10)
    module._trainer = SimpleNamespace(datamodule=tiny_data)  # what fit(datamodule=...) gives
    counts = {"a": 40, "b": 9, "c": 10}
    monkeypatch.setattr(tiny_data, "class_counts", lambda split="train": counts)
    module.on_fit_start()
    assert module.few_shot_class.tolist() == [False, True, True]  # at most few_shot_images
    counts.update(b=40, c=40)
    with pytest.warns(UserWarning, match="no class has at most few_shot_images=10"):
        module.on_fit_start()
    assert not module.few_shot_class.any()
    with pytest.raises(ValueError, match="few_shot_policy needs a conditional model"):
        make_module("dcgan", few_shot_policy="brightness")
    with pytest.raises(ValueError, match="few_shot_policy='none'"):
        few_shot_module(few_shot_policy="none")
    for bad in (0, True, 2.5):
        with pytest.raises(ValueError, match=f"few_shot_images={bad!r}"):
            few_shot_module(few_shot_images=bad)


class OverfitsOneClassD(torch.nn.Module):
    """Confident on the real images of class `overfit` only: +10 for them, -10 for every other image."""

    def __init__(self, overfit: int):
        super().__init__()
        self.overfit, self.num_classes, self.w = overfit, NUM_CLASSES, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, labels=None):
        return torch.where(labels == self.overfit, 10.0, -10.0) + self.w * x.flatten(1).mean(1)


def test_per_class_ada_moves_each_class_p_by_that_class_r_t_and_its_own_images():
    ada = AdaptiveAugment(("brightness",), target=0.6, kimg=1.0, classes=3)
    labels = torch.tensor([0, 0, 0, 0, 2, 2])
    ada.accumulate(torch.tensor([-1.0, -1.0, 1.0, -1.0, 5.0, 5.0]), labels)  # class 0: r_t -0.5; class 2: 1
    ada.update(images=6)
    assert ada.rt.tolist() == [-0.5, 0.0, 1.0] and ada.stats.eq(0).all()
    assert ada.p.tolist() == [0.0, 0.0, pytest.approx(0.002)]  # 2 of the 1000 images that take p from 0 to 1
    ada.p.copy_(torch.tensor([0.0, 0.0, 1.0]))
    x, y = torch.zeros(30, 1, 8, 8), torch.arange(30) % 3
    out = ada(x, y)
    assert torch.equal(out[y != 2], x[y != 2]) and (out[y == 2] != 0).flatten(1).all()


def test_few_shot_ada_raises_p_only_for_the_few_shot_class_d_overfits_and_logs_it(tmp_path, monkeypatch):
    """Classes 1 and 2 are few-shot; D is confident on class 2's real images only: its p rises by the class-2
    images shown (8 batches of 8, one in 3 of class 2: 4 updates), class 1's stays 0, class 0 is never
    augmented; each few-shot class's p and r_t are logged by name and saved in the checkpoint."""
    g, _ = networks("cdcgan")
    module = gm.GANModule(g, OverfitsOneClassD(overfit=2), num_classes=NUM_CLASSES, diffaugment="translation",
                          few_shot_policy="brightness", few_shot_images=10, few_shot_ada_target=0.6, ada_kimg=0.2,
                          ada_interval=2, loss=HingeLoss())
    monkeypatch.setattr(module, "training_counts", lambda setting: {"big": 300, "small": 9, "rare": 8})
    trainer = fit(module, tiny_loader(n=64, batch_size=8), tmp_path)
    class_2 = int((torch.arange(64) % NUM_CLASSES == 2).sum())
    assert module.few_shot_ada.p.tolist() == [0.0, 0.0, pytest.approx(class_2 / 200)]
    assert metric(trainer, "train/few_shot_p/rare") == pytest.approx(class_2 / 200)
    assert metric(trainer, "train/few_shot_rt/rare") == 1.0 and metric(trainer, "train/few_shot_p/small") == 0.0
    assert "train/few_shot_p/big" not in trainer.callback_metrics
    assert {"few_shot_ada.p", "few_shot_ada.stats"} <= set(module.state_dict())
    for bad, match in ((dict(few_shot_ada_target=1.5), "few_shot_ada_target=1.5"),
                       (dict(few_shot_policy=None, few_shot_ada_target=0.6), "few_shot_policy is null")):
        with pytest.raises(ValueError, match=match):
            few_shot_module(**bad)


# ----------------------------------------------------------------------------- learning-rate decay
class RecordLearningRates(L.Callback):
    def __init__(self):
        self.rates = []  # (G's, D's) learning rate used by each batch

    def on_train_batch_end(self, trainer, module, *args):
        self.rates.append(tuple(opt.param_groups[0]["lr"] for opt in trainer.optimizers))


@pytest.mark.parametrize("budget", [{"max_steps": 16}, {"max_epochs": 2}])
def test_lr_decay_holds_then_falls_linearly_to_zero_over_the_step_or_epoch_budget(budget, tmp_path):
    module = make_module("dcgan", lr_g=1e-4, lr_d=4e-4, lr_decay_start=0.5)
    record = RecordLearningRates()
    # 8 batches an epoch; max_steps counts a D and a G step per batch: 16 steps are 8 batches, 2 epochs 16
    trainer = fit(module, tiny_loader(n=64), tmp_path, callbacks=[record], **{"max_epochs": -1, **budget})
    batches = 16 if "max_epochs" in budget else 8
    assert len(record.rates) == batches
    expected = [min(1.0, (1 - b / batches) / 0.5) for b in range(batches)]  # progress b / batches
    assert [g for g, _ in record.rates] == pytest.approx([1e-4 * f for f in expected])
    assert [d for _, d in record.rates] == pytest.approx([4e-4 * f for f in expected])
    assert expected[0] == 1.0 and expected[-1] < 0.5 and metric(trainer, "train/lr_factor") == expected[-1]


def test_lr_decay_follows_max_time_when_it_runs_out_first(monkeypatch, tmp_path):
    from lightning.pytorch.callbacks import Timer
    timer = Timer(duration={"seconds": 100})
    timer.load_state_dict({"time_elapsed": {"train": 80}})  # a resumed run: 80 of its 100 s already spent
    assert gm.time_progress(SimpleNamespace(callbacks=[timer])) == pytest.approx(0.8)
    assert gm.time_progress(SimpleNamespace(callbacks=[])) is None
    monkeypatch.setattr(gm, "time_progress", lambda trainer: 0.9)  # the clock is past the one-epoch budget's share
    module = make_module("dcgan", lr_decay_start=0.5)
    record = RecordLearningRates()
    fit(module, tiny_loader(n=16), tmp_path, callbacks=[record])
    assert [g for g, _ in record.rates] == pytest.approx([2e-4 * 0.2] * 2)  # (1 - 0.9) / (1 - 0.5)


def test_lr_decay_is_checked_and_needs_a_budget(tmp_path):
    for bad in (-0.1, 1.0, "half", True):
        with pytest.raises(ValueError, match=f"lr_decay_start={bad!r}: expected the fraction"):
            make_module("dcgan", lr_decay_start=bad)
    with pytest.raises(gm.GanlabError, match="model.lr_decay_start=0.5: .* set trainer.max_steps"):
        fit(make_module("dcgan", lr_decay_start=0.5), tiny_loader(), tmp_path, max_epochs=-1, max_steps=-1)
    module = make_module("dcgan")
    assert module.hparams.lr_decay_start is None
    fit(module, tiny_loader(), tmp_path)
    assert module.optimizers()[0].param_groups[0]["lr"] == 2e-4  # off: the rate as set


# ----------------------------------------------------------------------------- all together
ALL_ON = dict(diffaugment="translation,color,cutout", ada_target=0.6, ada_kimg=0.5, ada_interval=1, lecam_weight=0.3,
              r1_gamma=1.0, r1_interval=2, ema_kimg=0.1, ema_rampup=0.05, cond_start_kimg=0, cond_end_kimg=0.05,
              mode_seeking=1.0, class_weights=[1.0, 1.0, 2.0], adc_weight=1.0, loss=HingeLoss())


def test_all_techniques_together_train_under_bf16(tmp_path):
    g = ConditionalDCGANGenerator(NUM_CLASSES, LATENT, 32, 1, width=4, embed_dim=4, conditioning="cbn", ordinal=True)
    d = ConditionalDCGANDiscriminator(NUM_CLASSES, 32, 1, width=4, mbstd_group=4, ordinal=True)
    module = gm.GANModule(g, d, num_classes=NUM_CLASSES, **ALL_ON, lr_decay_start=0.25)
    module.ada.p.fill_(0.5)  # augment about half of the images from the start
    trainer = fit(module, tiny_loader(n=32), tmp_path, precision="bf16-mixed")
    assert all(math.isfinite(v) for v in trainer.callback_metrics.values())
    assert module.ada.p.item() != 0.5 and 0 < metric(trainer, "train/cond_weight") < 1


def test_techniques_resume_exactly_from_a_checkpoint(tmp_path):
    """ADA's p and partial sums, LeCam's anchors and the step-derived schedules continue exactly."""
    def run(epochs, ckpt_path=None, root="a"):
        L.seed_everything(3)
        g = ConditionalDCGANGenerator(NUM_CLASSES, LATENT, 32, 1, width=4, embed_dim=4, conditioning="cbn")
        d = ConditionalDCGANDiscriminator(NUM_CLASSES, 32, 1, width=4, mbstd_group=4)
        module = gm.GANModule(g, d, num_classes=NUM_CLASSES, **{**ALL_ON, "ada_interval": 3})
        module.ada.p.fill_(0.5)
        ckpt = ResumableCheckpoint(dirpath=tmp_path / root, save_last=True, keep_last=0)
        trainer = L.Trainer(max_epochs=epochs, callbacks=[ckpt, ReseedRNG()], logger=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", deterministic=True,
                            default_root_dir=tmp_path)
        trainer.fit(module, tiny_loader(n=40), ckpt_path=ckpt_path)  # 5 batches an epoch: ADA's interval 3 spans epochs
        return module.state_dict()

    straight = run(2)
    run(1, root="b")
    resumed = run(2, ckpt_path=str(tmp_path / "b" / "last.ckpt"), root="b")
    assert straight.keys() == resumed.keys()
    assert [k for k in straight if not torch.equal(straight[k], resumed[k])] == []
    assert straight["ada.p"] != 0.5 and straight["lecam_updates"] == 10 and straight["ada.stats"][1] > 0
    assert "discriminator.class_head.weight" in straight


def test_every_technique_key_is_in_the_config_off_and_a_bad_value_names_the_key():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=cdcgan", *TINY])
        module = instantiate(cfg.model)
        on = compose("train", overrides=["model=cdcgan", *TINY, "model.ada_target=0.6", "model.ada_kimg=100",
                                          "model.lecam_weight=0.3", "model.r1_gamma=1", "model.r1_interval=16",
                                          "model.ema_kimg=10", "model.ema_rampup=0.05", "model.cond_start_kimg=0",
                                          "model.cond_end_kimg=20", "model.mode_seeking=1",
                                          "model.class_weights=inverse", "model.discriminator.mbstd_group=4",
                                          "model.generator.ordinal=true", "model.discriminator.texture_width=8",
                                          "model.few_shot_policy='brightness,contrast'",
                                          "model.few_shot_ada_target=0.6", "model.standing_stats=8",
                                          "model.adc_weight=1"])
        bad = compose("train", overrides=["model=cdcgan", *TINY, "model.lecam_decay=1.5"])
    assert module.ada is None and not hasattr(module, "lecam_anchors") and module.generator.cond_weight is None
    assert module.discriminator.class_head is None
    assert module.few_shot_ops == () and not hasattr(module, "few_shot_class") and module.few_shot_ada is None
    assert module.hparams.standing_stats == 0 and module.sampling_generator() is module.generator_ema.module
    assert isinstance(module.discriminator.mbstd, torch.nn.Identity) and module.discriminator.texture is None
    embeddings = [m for m in module.modules() if isinstance(m, torch.nn.Embedding)]  # cbn's gamma/beta, D's projection
    assert embeddings and all(type(m) is torch.nn.Embedding for m in embeddings)  # none ordinal by default
    on_module = instantiate(on.model)
    assert on_module.ada is not None and on_module.discriminator.ordinal and on_module.hparams.r1_interval == 16
    assert isinstance(on_module.discriminator.texture, TextureBranch) and on_module.discriminator.class_head is not None
    assert on_module.few_shot_ops == ("brightness", "contrast") and on_module.hparams.few_shot_images == 100
    assert on_module.few_shot_ada.classes == 4 and on_module.few_shot_ada.target == 0.6
    assert on_module.sampling_generator() is not on_module.generator_ema.module  # the standing-statistics copy
    with pytest.raises(Exception, match="lecam_decay=1.5"):
        instantiate(bad.model)
