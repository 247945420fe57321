"""GANModule: sampling API, per-class fixed grid, generator EMA, settings checks, mixed precision,
latent-noise RNG across checkpoints, the divergence guard (in-process and through the CLI), and a
real `model=cdcgan data=brainsim` run."""
from __future__ import annotations

import math
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision
from PIL import Image

from conftest import CDCGAN_RUN, REPO
from ganlab.checkpoint import file_sha256, load_gan
from ganlab.errors import GanlabError
from ganlab.models.gan_module import DivergenceError, GANModule
from ganlab.models.losses import NonSaturatingLoss, WGANGPLoss
from test_models import NUM_CLASSES, fit, make_module, moved, networks, snapshot, tiny_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- sampling
def test_sample_api_range_labels_and_reproducibility():
    module = make_module("cdcgan")
    images = module.sample(5, labels=torch.tensor([0, 1, 2, 0, 1]))
    assert images.shape == (5, 1, 32, 32) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    a = module.sample(6, generator=torch.Generator().manual_seed(3))
    b = module.sample(6, labels=torch.arange(6) % NUM_CLASSES, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)  # default labels: a uniform spread 0, 1, 2, 0, 1, 2
    for bad in (torch.tensor([0, 1]), torch.tensor([0, 1, 2, 3, 0, 1]), torch.zeros(6)):
        with pytest.raises(ValueError, match="labels must be 6 integer class indices"):
            module.sample(6, labels=bad)
    unconditional = make_module("dcgan")
    assert unconditional.sample(3).shape == (3, 1, 32, 32)
    assert unconditional.sample(0).shape == (0, 1, 32, 32)


def test_fixed_grid_has_one_row_per_class():
    module = make_module("cdcgan")
    rows = module.fixed_labels.view(NUM_CLASSES, -1)
    assert rows.shape == (NUM_CLASSES, 8) and rows.eq(torch.arange(NUM_CLASSES)[:, None]).all()
    assert module.fixed_samples().shape == (NUM_CLASSES * 8, 1, 32, 32)
    assert make_module("dcgan").fixed_labels.numel() == 64  # unconditional: an 8x8 grid


def test_sampling_does_not_consume_the_training_noise():
    module = make_module("dcgan")
    module.noise(2)  # makes the training noise RNG
    state = module.noise_rng.get_state()
    module.sample(4), module.fixed_samples()
    assert torch.equal(module.noise_rng.get_state(), state)


# ----------------------------------------------------------------------------- EMA
def test_ema_differs_from_raw_weights_is_used_for_samples_and_restored_from_checkpoint(tmp_path):
    module = make_module("dcgan", ema_decay=0.9)
    trainer = fit(module, tiny_loader(n=32), tmp_path, max_epochs=2)
    raw, ema = dict(module.generator.named_parameters()), dict(module.generator_ema.module.named_parameters())
    assert any(not torch.equal(raw[n], ema[n]) for n in raw)
    z = torch.randn(4, module.latent_dim)
    assert torch.equal(module.sample(4, z=z), module.generator_ema.module.eval()(z).clamp(-1, 1))
    assert not torch.equal(module.sample(4, z=z), module.sample(4, z=z, ema=False))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    restored = make_module("dcgan", ema_decay=0.9)
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for n, p in restored.generator_ema.module.named_parameters():
        assert torch.equal(p, ema[n]), n
    assert torch.equal(restored.sample(4, z=z), module.sample(4, z=z))
    assert torch.equal(restored.fixed_z, module.fixed_z)


def test_ema_decay_sets_how_far_the_average_lags(tmp_path):
    distances = {}
    for decay in (0.5, 0.99):
        torch.manual_seed(0)
        module = make_module("dcgan", ema_decay=decay)
        fit(module, tiny_loader(n=64, batch_size=4), tmp_path)  # 16 updates: past the warm-up for 0.5
        raw = dict(module.generator.named_parameters())
        distances[decay] = sum((p - raw[n]).norm() for n, p in module.generator_ema.module.named_parameters())
    assert 0 < distances[0.5] < distances[0.99]


def test_recompute_batchnorm_estimates_the_statistics_of_the_networks_own_activations():
    from ganlab.models.standing_stats import recompute_batchnorm

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear, self.bn = torch.nn.Linear(3, 5), torch.nn.BatchNorm1d(5, momentum=0.3)
            self.seen = []

        def forward(self, z, labels=None):
            h = self.linear(z)
            self.seen.append(h.detach())
            return self.bn(h)

    net = Net().eval()
    net.bn.running_mean.fill_(7.0)  # statistics that belong to some other weights
    state = torch.get_rng_state()
    assert recompute_batchnorm(net, latent_dim=3, num_classes=0, batches=4, batch_size=16) == 1
    seen = torch.stack(net.seen)  # (4 batches, 16, 5)
    assert torch.allclose(net.bn.running_mean, seen.mean(dim=(0, 1)), atol=1e-5)
    assert torch.allclose(net.bn.running_var, seen.var(dim=1).mean(0), atol=1e-5)  # unbiased, per batch
    assert net.bn.momentum == 0.3 and not net.training and torch.equal(torch.get_rng_state(), state)
    assert recompute_batchnorm(torch.nn.Linear(3, 3), 3, 0) == 0  # nothing to do without BatchNorm


def test_standing_stats_sample_from_a_copy_with_recomputed_statistics_and_leave_the_ema_alone(tmp_path):
    """The EMA's averaged running statistics are not what standing_stats samples with: corrupting them
    changes plain EMA samples but not standing ones; the EMA, its checkpoint keys and training are untouched,
    and the copy is rebuilt after the EMA moves."""
    torch.manual_seed(0)
    module = make_module("cdcgan", standing_stats=4)
    z = torch.randn(6, module.latent_dim, generator=torch.Generator().manual_seed(1))
    fit(module, tiny_loader(n=32), tmp_path)
    bn = next(m for m in module.generator_ema.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    standing = module.sample(6, z=z)
    assert torch.equal(bn.running_mean, before)  # sampling left the EMA's statistics alone
    assert torch.equal(module.sample(6, z=z), standing)  # the copy is kept between calls
    assert not any("standing" in k for k in module.state_dict())
    bn.running_mean.add_(3.0)
    assert torch.equal(module.sample(6, z=z), standing)  # the corrupted statistics are not used
    plain = make_module("cdcgan", standing_stats=0)
    plain.load_state_dict(module.state_dict())
    assert not torch.allclose(plain.sample(6, z=z), standing)  # ... while plain EMA sampling reads them
    module.update_ema()
    assert module._standing is None  # the EMA moved: statistics to recompute at the next sample
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=f"standing_stats={bad!r}: expected an integer >= 0"):
            make_module("dcgan", standing_stats=bad)


# ----------------------------------------------------------------------------- settings
def test_settings_that_would_train_silently_wrong_are_refused():
    g, d = networks("dcgan")
    with pytest.raises(ValueError, match="num_classes=4 but the generator"):
        GANModule(g, d, num_classes=4)
    g, d = networks("cdcgan")
    with pytest.raises(ValueError, match="num_classes=0 but the generator"):
        GANModule(g, d, num_classes=0)
    g, d = networks("dcgan")
    with pytest.raises(ValueError, match="n_disc=0"):
        GANModule(g, d, n_disc=0)
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        GANModule(g, d, ema_decay=1.0)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        GANModule(g, d, diffaugment="rotate")
    with pytest.warns(UserWarning, match="WGAN-GP with BatchNorm"):
        GANModule(g, d, loss=WGANGPLoss())
    assert GANModule(g, d, ema_decay=None).sampling_generator() is g


# ----------------------------------------------------------------------------- mixed precision
def test_bf16_mixed_trains_a_few_steps_on_cpu(tmp_path):
    module = make_module("cdcgan", loss=WGANGPLoss(), r1_gamma=1.0, diffaugment="translation")
    before = snapshot(module)
    trainer = fit(module, tiny_loader(), tmp_path, precision="bf16-mixed")
    assert moved(before, snapshot(module), "generator.") and moved(before, snapshot(module), "discriminator.")
    assert all(math.isfinite(trainer.callback_metrics[k]) for k in ("train/loss_d", "train/loss_g"))


@pytest.mark.parametrize("loss,r1", [(NonSaturatingLoss(), 1.0), (WGANGPLoss(), 0.0)], ids=["r1", "wgan_gp"])
def test_fp16_grad_scaler_path_keeps_stepping_with_penalties(loss, r1, tmp_path):
    """16-mixed is GPU-only in Lightning; its GradScaler + manual_backward path runs here on CPU float16.
    Penalties computed in float16 overflowed and the scale collapsed to ~4 (almost every step skipped)."""
    torch.manual_seed(0)
    module = make_module("cdcgan", loss=loss, r1_gamma=r1, diffaugment="translation")
    plugin = MixedPrecision("16-mixed", "cpu")
    before = snapshot(module)
    trainer = fit(module, tiny_loader(n=64), tmp_path, plugins=[plugin])
    assert plugin.scaler.get_scale() >= 256  # 2**16 halved a few times while calibrating, then steady
    assert moved(before, snapshot(module), "discriminator.") and moved(before, snapshot(module), "generator.")
    assert math.isfinite(trainer.callback_metrics["train/loss_d"])


# ----------------------------------------------------------------------------- latent noise RNG
def test_noise_stream_continues_from_a_checkpoint_and_survives_a_foreign_state(tmp_path):
    module = make_module("dcgan")
    trainer = fit(module, tiny_loader(), tmp_path)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    expected = module.noise(4)
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    resumed = make_module("dcgan")
    resumed.on_load_checkpoint(ckpt)
    assert torch.equal(resumed.noise(4), expected)
    foreign = make_module("dcgan")  # e.g. a CUDA generator's state read on a CPU machine
    foreign.on_load_checkpoint({"noise_rng_state": torch.zeros(16, dtype=torch.uint8)})
    assert foreign.noise(4).isfinite().all()


# ----------------------------------------------------------------------------- divergence guard
class NaNAfter(NonSaturatingLoss):
    def __init__(self, calls: int):
        super().__init__()
        self.calls = calls

    def discriminator(self, real_logits, fake_logits):
        self.calls -= 1
        loss = super().discriminator(real_logits, fake_logits)
        return loss * float("nan") if self.calls < 0 else loss


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    module = make_module("dcgan", loss=NaNAfter(calls=3))  # D steps at 0, 2, 4 finite; 6 is NaN
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=2)
    with pytest.raises(DivergenceError, match=r"discriminator loss became NaN/inf at step 6 \(epoch 0\)") as info:
        fit(module, tiny_loader(n=64), tmp_path, callbacks=[ckpt], enable_checkpointing=True, log_every_n_steps=50)
    assert isinstance(info.value, GanlabError)  # the CLI prints it as one line
    good = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert good["global_step"] == 6  # written after batch 3, before the NaN batch
    assert all(torch.isfinite(t).all() for t in good["state_dict"].values() if t.is_floating_point())
    with pytest.raises(DivergenceError):  # no later save either
        module.trainer.save_checkpoint(tmp_path / "after.ckpt")
    assert not (tmp_path / "after.ckpt").exists()


class PoisonWeights(L.Callback):
    """Used by the CLI test below (PYTHONPATH=tests): D's weights turn NaN at the first batch, as after a blow-up."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with torch.no_grad():
            for p in pl_module.discriminator.parameters():
                p.fill_(float("nan"))


@pytest.mark.slow
def test_cli_divergence_is_one_line_with_nonzero_exit_and_leaves_last_ckpt_untouched(run_cli, cli_env, cdcgan_ckpt,
                                                                                    tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(cdcgan_ckpt.parents[1], run_dir)  # the session's finished one-epoch run, resumed below
    env = {**cli_env, "PYTHONPATH": str(REPO / "tests")}
    last = run_dir / "checkpoints" / "last.ckpt"
    digest, files = file_sha256(last, length=64), sorted(p.name for p in last.parent.iterdir())
    # resume for a second epoch, in which the weights blow up
    result = run_cli("ganlab.train", *CDCGAN_RUN, "ckpt_path=last", "trainer.max_epochs=2",
                     "+callbacks.poison._target_=test_gan_module.PoisonWeights", f"hydra.run.dir={run_dir}", env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training diverged: the discriminator loss became NaN/inf at step 6 (epoch 1)" \
        in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert file_sha256(last, length=64) == digest
    assert sorted(p.name for p in last.parent.iterdir()) == files


# ----------------------------------------------------------------------------- real conditional run
@pytest.mark.slow
def test_cdcgan_brainsim_cli_run_writes_a_labelled_per_class_grid(cdcgan_ckpt):
    """The session's cdcgan run (CDCGAN_RUN: brainsim and conditional BatchNorm are cdcgan's defaults)."""
    run_dir = cdcgan_ckpt.parents[1]
    grid = np.asarray(Image.open(run_dir / "samples" / "final.png").convert("L"))
    assert grid.shape[0] == 4 * (32 + 2) + 2  # 4 classes: one row each, 2 px padding
    margin = grid.shape[1] - (8 * (32 + 2) + 2)
    assert margin > 0
    for row in range(4):  # each row carries its class name in the left margin
        assert (grid[row * 34 + 2:(row + 1) * 34, :margin] < 128).any(), row
    module, facts = load_gan(run_dir / "checkpoints" / "last.ckpt")
    assert module.num_classes == 4 and len(facts["class_names"]) == 4
    assert module.generator.conditioning == "cbn" and module.generator_ema is not None
    images = module.sample(8, labels=torch.tensor([3] * 8))
    assert images.shape == (8, 1, 32, 32) and images.min() >= -1 and images.max() <= 1
