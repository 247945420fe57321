"""ADC-GAN (model.adc_weight): D's classifier over "real class k" / "generated class k", and G's term;
model.adc_few_shot=false leaves the few-shot classes out of both."""
from __future__ import annotations

import math

import lightning as L
import pytest
import torch

import ganlab.models.gan_module as gm
from ganlab.models.cdcgan import ConditionalDCGANDiscriminator
from ganlab.models.losses import adc_discriminator_term, adc_generator_term
from test_models import NUM_CLASSES, fit, make_module, snapshot, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")
K = NUM_CLASSES


def logits_for(labels: torch.Tensor, real: float, generated: float) -> torch.Tensor:
    """(N, 2K) class-head logits: `real` at 2k, `generated` at 2k + 1 for each image's label k, 0 elsewhere."""
    out = torch.zeros(len(labels), 2 * K)
    out[torch.arange(len(labels)), 2 * labels] = real
    out[torch.arange(len(labels)), 2 * labels + 1] = generated
    return out


def test_generator_term_is_zero_when_the_classifier_cannot_tell_generated_k_from_real_k():
    labels = torch.tensor([0, 1, 2, 1])
    # however (un)sure the classifier is of class k itself, G gains nothing once its images pass as real k:
    # AC-GAN's term would still push them towards the easiest-to-classify images
    for level in (-5.0, 0.0, 5.0):
        assert adc_generator_term(logits_for(labels, level, level), labels).item() == pytest.approx(0.0, abs=1e-6)
    assert adc_generator_term(logits_for(labels, 3.0, 0.0), labels) < 0  # taken for real k: G's loss falls
    assert adc_generator_term(logits_for(labels, 0.0, 3.0), labels) > 0  # caught as generated k: it rises
    assert adc_generator_term(logits_for(labels, 0.0, 3.0), labels).item() == pytest.approx(3.0)


def test_discriminator_term_is_the_cross_entropy_of_real_k_and_generated_k():
    labels = torch.tensor([0, 1, 2])
    uniform = torch.zeros(3, 2 * K)
    assert adc_discriminator_term(uniform, uniform, labels).item() == pytest.approx(2 * math.log(2 * K))
    right = adc_discriminator_term(logits_for(labels, 20.0, 0.0), logits_for(labels, 0.0, 20.0), labels)
    swapped = adc_discriminator_term(logits_for(labels, 0.0, 20.0), logits_for(labels, 20.0, 0.0), labels)
    assert right.item() < 1e-6 and swapped.item() > 39


def test_a_mask_leaves_images_out_and_keeps_the_others_weights():
    labels = torch.tensor([0, 1, 2, 1])
    caught = logits_for(labels, 0.0, 0.0)
    caught[2, 5] = 3.0  # the third image (class 2) caught as generated class 2; the others pass
    keep = torch.tensor([True, True, False, True])
    assert adc_generator_term(caught, labels).item() == pytest.approx(3.0 / 4, abs=1e-4)
    assert adc_generator_term(caught, labels, keep).item() == pytest.approx(0.0, abs=1e-6)
    real, fake = torch.randn(4, 2 * K), torch.randn(4, 2 * K)
    every = torch.ones(4, dtype=torch.bool)
    assert torch.equal(adc_discriminator_term(real, fake, labels, every), adc_discriminator_term(real, fake, labels))
    per_image = [adc_discriminator_term(real[i:i + 1], fake[i:i + 1], labels[i:i + 1]) for i in range(4)]
    assert adc_discriminator_term(real, fake, labels, keep).item() == pytest.approx(
        (per_image[0] + per_image[1] + per_image[3]).item() / 4, rel=1e-5)  # still / 4: kept images weigh as before


def test_adc_few_shot_false_leaves_the_few_shot_classes_to_the_projection(tmp_path, monkeypatch):
    def run(weight: float, counts: dict[str, int], **kwargs):
        L.seed_everything(0)
        module = make_module("cdcgan", adc_weight=weight, few_shot_images=10, **kwargs)
        monkeypatch.setattr(module, "training_counts", lambda setting: counts)  # what a ganlab datamodule gives
        L.seed_everything(1)
        fit(module, tiny_loader(), tmp_path)
        return module, snapshot(module)

    _, off = run(0.0, {"a": 40, "b": 5, "c": 40})
    # every class few-shot: the head takes part but its terms are 0, so training is the same as without ADC
    all_few, kept_out = run(1.0, {"a": 5, "b": 5, "c": 5}, adc_few_shot=False)
    assert all_few.few_shot_class.tolist() == [True, True, True]
    assert [n for n in off if not torch.equal(off[n], kept_out[n])] == []
    assert torch.equal(kept_out["discriminator.class_head.weight"], all_few.discriminator.class_head.weight)
    one_few, partly = run(1.0, {"a": 40, "b": 5, "c": 40}, adc_few_shot=False)
    assert one_few.adc_mask(torch.tensor([0, 1, 2, 1])).tolist() == [True, False, True, False]
    assert not torch.equal(off["generator.to_image.0.weight"], partly["generator.to_image.0.weight"])
    default, _ = run(1.0, {"a": 40, "b": 5, "c": 40})
    assert default.adc_mask(torch.tensor([0, 1])) is None and not hasattr(default, "few_shot_class")


@pytest.mark.parametrize("conditioning", ["projection", "concat"])
def test_class_head_adds_logits_and_leaves_d_as_it_was(conditioning):
    x, labels = torch.randn(5, 1, 32, 32), torch.tensor([0, 1, 2, 0, 1])

    def build() -> ConditionalDCGANDiscriminator:
        torch.manual_seed(0)
        return ConditionalDCGANDiscriminator(K, 32, 1, width=4, conditioning=conditioning).eval()

    plain, headed = build(), build()
    headed.enable_class_head()
    with pytest.raises(ValueError, match="needs the class head"):
        plain(x, labels, classes=True)
    logit, classes = headed(x, labels, classes=True)
    assert torch.equal(logit, plain(x, labels)) and torch.equal(headed(x, labels), logit)
    assert classes.shape == (5, 2 * K) and classes.abs().sum() > 0


def test_training_with_adc_teaches_d_real_k_from_generated_k_and_moves_g(tmp_path):
    def run(weight: float):
        L.seed_everything(0)
        module = make_module("cdcgan", adc_weight=weight, lr_d=2e-3)
        L.seed_everything(1)  # the same noise with and without the head (its initialisation draws numbers)
        before = snapshot(module)
        trainer = fit(module, tiny_loader(n=48), tmp_path, max_epochs=8)  # 6 batches an epoch
        return module, before, trainer

    module, before, trainer = run(1.0)
    head = module.discriminator.class_head
    assert not torch.equal(before["discriminator.class_head.weight"], head.weight)
    assert float(trainer.callback_metrics["train/adc_d"]) < 0.5 * 2 * math.log(2 * K)  # from chance, 3.58
    assert "train/adc_g" in trainer.callback_metrics
    off, _, off_trainer = run(0.0)
    assert off.discriminator.class_head is None and "train/adc_d" not in off_trainer.callback_metrics
    assert not torch.equal(off.generator.to_image[0].weight, module.generator.to_image[0].weight)


def test_adc_follows_the_conditioning_weight(tmp_path):
    """At conditioning weight 0 (before cond_start_kimg) ADC adds nothing: training is the same as without it."""
    def run(weight: float) -> dict:
        L.seed_everything(0)
        module = make_module("cdcgan", adc_weight=weight, cond_start_kimg=10, cond_end_kimg=20)
        L.seed_everything(1)
        fit(module, tiny_loader(), tmp_path)
        return snapshot(module)

    off, on = run(0.0), run(1.0)
    assert [n for n in off if not torch.equal(off[n], on[n])] == []


def test_ramp_is_linear_between_its_ends_and_a_step_when_they_meet():
    assert [gm.ramp(n, 10, 20) for n in (0, 10_000, 15_000, 20_000, 90_000)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert [gm.ramp(n, 5, 5) for n in (4_999, 5_000)] == [0.0, 1.0]


def trained_weights(tmp_path, **kwargs) -> tuple[dict, dict]:
    """A tiny cdcgan's weights after training, less ADC's head, and its logged metrics."""
    L.seed_everything(0)
    module = make_module("cdcgan", **kwargs)
    L.seed_everything(1)  # the same noise with and without the head (its initialisation draws numbers)
    trainer = fit(module, tiny_loader(), tmp_path)
    weights = {n: t for n, t in snapshot(module).items() if "class_head" not in n}
    return weights, trainer.callback_metrics


@pytest.mark.parametrize("zero, full", [
    ({"adc_fade_start_kimg": 0, "adc_fade_end_kimg": 0}, {"adc_fade_start_kimg": 1000, "adc_fade_end_kimg": 2000}),
    ({"adc_rise_start_kimg": 1000, "adc_rise_end_kimg": 2000}, {"adc_rise_start_kimg": 0, "adc_rise_end_kimg": 0})],
    ids=["faded-out / not yet fading", "not yet risen / risen at 0 kimg"])
def test_adc_at_schedule_factor_0_adds_nothing_and_at_1_is_plain_adc(tmp_path, zero, full):
    """Where the schedule (adc_fade_* / adc_rise_*) puts ADC's weight at 0, training is the same as without ADC (the
    head unused); where at full weight, the same as ADC without a schedule."""
    off, _ = trained_weights(tmp_path)
    silenced, silenced_logs = trained_weights(tmp_path, adc_weight=1.0, **zero)
    assert float(silenced_logs["train/adc_scale"]) == 0.0
    assert [n for n in off if not torch.equal(off[n], silenced[n])] == []
    plain, _ = trained_weights(tmp_path, adc_weight=1.0)
    scheduled, scheduled_logs = trained_weights(tmp_path, adc_weight=1.0, **full)
    assert float(scheduled_logs["train/adc_scale"]) == 1.0
    assert [n for n in plain if not torch.equal(plain[n], scheduled[n])] == []
    assert [n for n in plain if not torch.equal(plain[n], off[n])] != []  # ADC itself does change training


def test_adc_schedule_rises_then_fades():
    module = make_module("cdcgan", adc_weight=0.5, adc_rise_start_kimg=10, adc_rise_end_kimg=20,
                         adc_fade_start_kimg=30, adc_fade_end_kimg=40)
    seen = (0, 10_000, 15_000, 20_000, 30_000, 35_000, 40_000, 90_000)
    assert [module.adc_schedule(n) for n in seen] == [0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0]
    rise_only = make_module("cdcgan", adc_weight=0.5, adc_rise_start_kimg=10, adc_rise_end_kimg=20)
    assert [rise_only.adc_schedule(n) for n in (0, 15_000, 90_000)] == [0.0, 0.5, 1.0]


def test_bad_adc_settings_name_the_key():
    with pytest.raises(ValueError, match="adc_weight=-1"):
        make_module("cdcgan", adc_weight=-1)
    with pytest.raises(ValueError, match="adc_weight needs a conditional model"):
        make_module("dcgan", adc_weight=1.0)
    with pytest.raises(ValueError, match="adc_few_shot=false but adc_weight is 0"):
        make_module("cdcgan", adc_few_shot=False)
    with pytest.raises(ValueError, match="adc_few_shot='no'"):
        make_module("cdcgan", adc_weight=1.0, adc_few_shot="no")
    with pytest.raises(ValueError, match="set both"):
        make_module("cdcgan", adc_weight=1.0, adc_fade_start_kimg=10)
    with pytest.raises(ValueError, match="adc_fade_start_kimg=20 adc_fade_end_kimg=10"):
        make_module("cdcgan", adc_weight=1.0, adc_fade_start_kimg=20, adc_fade_end_kimg=10)
    with pytest.raises(ValueError, match="but adc_weight is 0"):
        make_module("cdcgan", adc_fade_start_kimg=10, adc_fade_end_kimg=20)
    with pytest.raises(ValueError, match="adc_rise_start_kimg/adc_rise_end_kimg bring ADC in, but adc_weight is 0"):
        make_module("cdcgan", adc_rise_start_kimg=10, adc_rise_end_kimg=20)
    with pytest.raises(ValueError, match="adc_rise_start_kimg=None adc_rise_end_kimg=20"):
        make_module("cdcgan", adc_weight=1.0, adc_rise_end_kimg=20)
    with pytest.raises(ValueError, match="adc_rise_end_kimg=20 adc_fade_start_kimg=10"):
        make_module("cdcgan", adc_weight=1.0, adc_rise_start_kimg=10, adc_rise_end_kimg=20, adc_fade_start_kimg=10,
                    adc_fade_end_kimg=30)
