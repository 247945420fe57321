"""Networks of every family x size x channels (shapes, one optimisation step), conditioning variants,
and DiffAugment. Helpers here are shared by test_losses.py and test_gan_module.py."""
from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from ganlab.models import diffaugment as da
from ganlab.models.cdcgan import ConditionalBatchNorm2d, ConditionalDCGANDiscriminator, ConditionalDCGANGenerator
from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator, NoiseInput, channel_plan
from ganlab.models.gan import MLPDiscriminator, MLPGenerator
from ganlab.models.gan_module import GANModule
from ganlab.models.losses import NonSaturatingLoss

NUM_CLASSES = 3
LATENT = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def networks(family: str, size: int = 32, channels: int = 1, g_cond: str = "concat", d_cond: str = "projection",
             spectral_norm: bool = False):
    if family == "gan":
        return (MLPGenerator(LATENT, size, channels, width=16, depth=2),
                MLPDiscriminator(size, channels, width=16, depth=2, spectral_norm=spectral_norm))
    if family == "dcgan":
        return (DCGANGenerator(LATENT, size, channels, width=4),
                DCGANDiscriminator(size, channels, width=4, spectral_norm=spectral_norm))
    return (ConditionalDCGANGenerator(NUM_CLASSES, LATENT, size, channels, width=4, embed_dim=4, conditioning=g_cond),
            ConditionalDCGANDiscriminator(NUM_CLASSES, size, channels, width=4, conditioning=d_cond,
                                          spectral_norm=spectral_norm))


def make_module(family="dcgan", size=32, channels=1, g_cond="concat", d_cond="projection", **kwargs) -> GANModule:
    g, d = networks(family, size, channels, g_cond, d_cond)
    kwargs.setdefault("num_classes", NUM_CLASSES if family == "cdcgan" else 0)
    return GANModule(g, d, **kwargs)


def tiny_loader(size=32, channels=1, n=16, batch_size=8):
    images = torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.arange(n) % NUM_CLASSES
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, drop_last=True)


def fit(module, loader, tmp_path, **trainer_kwargs) -> L.Trainer:
    trainer_kwargs = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                      "enable_model_summary": False, "accelerator": "cpu", "default_root_dir": tmp_path,
                      "log_every_n_steps": 1, **trainer_kwargs}
    trainer = L.Trainer(**trainer_kwargs)
    trainer.fit(module, loader)
    return trainer


def snapshot(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if not n.startswith("generator_ema")}


def moved(before: dict, after: dict, prefix: str) -> bool:
    return any(not torch.equal(before[n], after[n]) for n in before if n.startswith(prefix))


def one_step(g, d, size, channels) -> tuple[bool, bool]:
    """One D step then one G step with Adam; whether each network's parameters changed."""
    loss, labels = NonSaturatingLoss(), torch.tensor([0, 2])
    opt_g, opt_d = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    before_g, before_d = [p.clone() for p in g.parameters()], [p.clone() for p in d.parameters()]
    real = torch.rand(2, channels, size, size) * 2 - 1
    loss.discriminator(d(real, labels), d(g(torch.randn(2, LATENT), labels).detach(), labels)).backward()
    opt_d.step()
    opt_g.zero_grad()
    loss.generator(d(g(torch.randn(2, LATENT), labels), labels)).backward()
    opt_g.step()
    return (any(not torch.equal(a, b) for a, b in zip(before_g, g.parameters())),
            any(not torch.equal(a, b) for a, b in zip(before_d, d.parameters())))


FAMILY_SIZE_CHANNELS = list(itertools.product(["gan", "dcgan", "cdcgan"], [32, 64, 128], [1, 3]))


@pytest.mark.parametrize("family,size,channels", FAMILY_SIZE_CHANNELS)
def test_shapes_and_one_optimisation_step(family, size, channels):
    torch.manual_seed(0)
    g, d = networks(family, size, channels, d_cond="projection" if channels == 1 else "concat")
    labels = torch.tensor([0, 2])
    fake = g(torch.randn(2, LATENT), labels)
    assert fake.shape == (2, channels, size, size)
    assert fake.min() >= -1 and fake.max() <= 1
    assert d(fake, labels).shape == (2,)
    assert one_step(g, d, size, channels) == (True, True)


@pytest.mark.parametrize("family", ["dcgan", "cdcgan"])
def test_256_px_and_width_sets_the_channel_plan(family):
    g, d = networks(family, 256, 3)
    assert g(torch.randn(1, LATENT), torch.tensor([1])).shape == (1, 3, 256, 256)
    assert channel_plan(64, 64) == [512, 256, 128, 64] and channel_plan(256, 8) == [64, 64, 64, 32, 16, 8]
    wide = DCGANGenerator(LATENT, 64, 1, width=8)
    assert wide.to_image[0].in_channels == 8 and wide.stem[0].out_channels == 64


@pytest.mark.parametrize("bad", [16, 48, 512])
def test_unsupported_size_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=f"image_size={bad}"):
        DCGANGenerator(LATENT, bad, 1)
    with pytest.raises(ValueError, match=f"image_size={bad}"):
        DCGANDiscriminator(bad, 1)


@pytest.mark.parametrize("g_cond,d_cond", list(itertools.product(["concat", "cbn"], ["projection", "concat"])))
def test_conditioning_variants_depend_on_the_label(g_cond, d_cond):
    torch.manual_seed(0)
    g, d = networks("cdcgan", 32, 1, g_cond, d_cond)
    g.eval(), d.eval()
    # conditioning must reach the output; perturb the per-class parameters so the test does not depend on init
    with torch.no_grad():
        for m in (*g.modules(), *d.modules()):
            if isinstance(m, torch.nn.Embedding):
                m.weight.normal_()
    z = torch.randn(1, LATENT).expand(NUM_CLASSES, -1)
    images = g(z, torch.arange(NUM_CLASSES))
    assert not torch.allclose(images[0], images[1])
    x = images[:1].expand(NUM_CLASSES, -1, -1, -1)
    logits = d(x, torch.arange(NUM_CLASSES))
    assert logits.unique().numel() == NUM_CLASSES
    assert one_step(g.train(), d.train(), 32, 1) == (True, True)


def test_cbn_generator_has_per_class_batchnorm_and_no_label_input():
    g = ConditionalDCGANGenerator(4, LATENT, 32, 1, width=4, conditioning="cbn")
    cbns = [m for m in g.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(cbns) == 3 and cbns[0].gamma.num_embeddings == 4  # stem + 2 blocks at 32 px
    assert g.stem[0].in_channels == LATENT  # z alone enters the stem
    assert not any(type(m) is torch.nn.BatchNorm2d and m.affine for m in g.modules())


def test_resize_upsampling_makes_no_checkerboard_from_a_flat_input():
    """A transposed 4x4 stride-2 conv gives each output pixel parity its own kernel taps: a flat input comes
    out as a period-2 pattern. Nearest 2x + 3x3 conv keeps a flat input flat (away from the border)."""
    torch.manual_seed(0)
    flat = torch.ones(1, 8, 8, 8)
    for upsample, checkerboard in (("transpose", True), ("resize", False)):
        g = ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, conditioning="cbn", upsample=upsample)
        layer = g.to_image[0]
        inner = layer(flat)[0, 0, 2:-2, 2:-2]
        assert inner.shape == (12, 12)
        assert (inner.std() > 1e-3) == checkerboard, upsample
        assert g(torch.randn(2, LATENT), torch.tensor([0, 3])).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="upsample='bilinear'"):
        DCGANGenerator(LATENT, 32, 1, width=8, upsample="bilinear")


def test_noise_inputs_add_per_pixel_noise_and_sampling_stays_a_function_of_the_latents():
    """StyleGAN's noise inputs: scales start at 0 (no effect); once learned, the output's noise input makes
    per-pixel variation with uncorrelated neighbours, which a conv stack fed one latent vector cannot; the
    scales learn; GANModule.sample gives the same images for the same z and leaves the caller's RNG alone."""
    torch.manual_seed(0)
    g = ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, conditioning="cbn", noise_inputs=True).eval()
    noises = [m for m in g.modules() if isinstance(m, NoiseInput)]
    assert len(noises) == 3 and all(not m.weight.any() for m in noises)  # 2 upsampling blocks + the output
    z, y = torch.randn(16, LATENT), torch.arange(16) % 4
    assert torch.equal(g(z, y), g(z, y))
    with torch.no_grad():
        noises[-1].weight.fill_(0.3)
        diff = (g(z, y) - g(z, y))[:, 0]
    assert diff.abs().mean() > 0.02
    neighbours = torch.corrcoef(torch.stack([diff[:, :, :-1].flatten(), diff[:, :, 1:].flatten()]))[0, 1]
    assert abs(float(neighbours)) < 0.05
    g.train()
    g(z, y).square().mean().backward()
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in noises)

    module = GANModule(g, ConditionalDCGANDiscriminator(4, 32, 1, width=8), num_classes=4)
    with torch.no_grad():
        module.sampling_generator().to_image[1].weight.fill_(0.3)
    state = torch.get_rng_state()
    a, b = module.sample(16, y, z=z), module.sample(16, y, z=z)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(module.sample(16, y, z=z + 1e-3)[:, :, 8:-8, 8:-8], a[:, :, 8:-8, 8:-8])
    with pytest.raises(ValueError, match="noise_inputs=1"):
        DCGANGenerator(LATENT, 32, 1, width=8, noise_inputs=1)
    with pytest.raises(ValueError, match="ordinal='yes': expected true or false"):
        ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, ordinal="yes")


def test_noise_init_starts_the_scales_where_asked_so_their_gradient_is_not_zero_on_average():
    """At scale 0 a noise map does not reach the output, so its scale's gradient averages to 0 over noise
    draws (it only random-walks); started at noise_init it reaches the output and the mean gradient of a
    loss that prefers grain pushes the scale one way."""
    torch.manual_seed(0)
    z, y = torch.randn(16, LATENT), torch.arange(16) % 4

    def output_scale_grads(init: float) -> torch.Tensor:
        g = ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, conditioning="cbn", noise_inputs=True,
                                      noise_init=init)
        out_noise = g.to_image[1]
        assert isinstance(out_noise, NoiseInput) and torch.all(out_noise.weight == init)
        grads = []
        for _ in range(20):
            g.zero_grad()
            x = g(z, y)
            grain = (x[:, :, :, 1:] - x[:, :, :, :-1]).square().mean()  # a "D" that wants pixel-scale grain
            (-grain).backward()
            grads.append(float(out_noise.weight.grad))
        return torch.tensor(grads)

    def t_statistic(grads: torch.Tensor) -> float:
        return float(grads.mean() / (grads.std() / len(grads) ** 0.5))

    assert abs(t_statistic(output_scale_grads(0.0))) < 3  # mean 0: each draw's sign is the noise's
    at_init = output_scale_grads(0.1)
    assert t_statistic(at_init) < -10 and bool((at_init < 0).all())  # descending it raises the scale: more grain
    with pytest.raises(ValueError, match="noise_init=-0.1"):
        DCGANGenerator(LATENT, 32, 1, width=8, noise_inputs=True, noise_init=-0.1)
    with pytest.raises(ValueError, match="noise_init=0.1 needs noise_inputs=true"):
        DCGANGenerator(LATENT, 32, 1, width=8, noise_init=0.1)


def test_full_res_width_adds_a_nonlinear_layer_at_the_image_size_that_cbn_conditions():
    """Without it the image (before Tanh) is a linear function of the half-resolution features; with it a
    ReLU sits at the image's size, so the map from those features to the pixels is not linear."""
    torch.manual_seed(0)
    h = torch.randn(2, 8, 16, 16)  # the half-resolution features of a 32 px G of width 8

    half_res_blocks = len(ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, conditioning="cbn").blocks)

    def to_pixels(g: DCGANGenerator):
        g.eval()  # BatchNorm with running statistics: an affine map
        extra = list(g.blocks)[half_res_blocks:]  # the full-resolution block, if any
        def f(x):
            for m in extra:
                x = m(x, torch.zeros(x.shape[0], dtype=torch.long), None) if isinstance(m, ConditionalBatchNorm2d) \
                    else m(x)
            return g.to_image[0](x)
        return f

    plain = to_pixels(ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, conditioning="cbn"))
    full = to_pixels(ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, conditioning="cbn", full_res_width=6))
    for f in (plain, full):
        assert f(h).shape == (2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(h) + plain(-h), plain(torch.zeros_like(h)) * 2, atol=1e-6)
        assert not torch.allclose(full(h) + full(-h), full(torch.zeros_like(h)) * 2, atol=1e-3)

    g = ConditionalDCGANGenerator(4, LATENT, 32, 1, width=8, conditioning="cbn", full_res_width=6)
    image_sized = [m for m in g.blocks if isinstance(m, ConditionalBatchNorm2d) and m.bn.num_features == 6]
    assert len(image_sized) == 1  # the label reaches the new layer too
    assert g.to_image[0].kernel_size == (3, 3) and g.to_image[0].stride == (1, 1)
    assert g(torch.randn(3, LATENT), torch.tensor([0, 1, 3])).shape == (3, 1, 32, 32)
    torch.manual_seed(1)
    default = DCGANGenerator(LATENT, 32, 1, width=8).state_dict()
    torch.manual_seed(1)
    off = DCGANGenerator(LATENT, 32, 1, width=8, full_res_width=0).state_dict()
    assert default.keys() == off.keys() and all(torch.equal(default[k], off[k]) for k in default)
    for bad in (-1, True, 2.5):
        with pytest.raises(ValueError, match=f"generator full_res_width={bad!r}"):
            DCGANGenerator(LATENT, 32, 1, width=8, full_res_width=bad)


def test_conditional_networks_refuse_bad_settings():
    with pytest.raises(ValueError, match="num_classes=None"):
        ConditionalDCGANGenerator(None, LATENT, 32, 1)
    with pytest.raises(ValueError, match="conditioning='film'"):
        ConditionalDCGANGenerator(3, LATENT, 32, 1, conditioning="film")
    with pytest.raises(ValueError, match="conditioning='cbn'"):
        ConditionalDCGANDiscriminator(3, 32, 1, conditioning="cbn")
    g, d = networks("cdcgan")
    with pytest.raises(ValueError, match="needs class labels"):
        g(torch.randn(2, LATENT))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        d(torch.zeros(2, 1, 32, 32), torch.tensor([0]))


@pytest.mark.parametrize("family", ["gan", "dcgan", "cdcgan"])
def test_spectral_norm_discriminator_has_no_batchnorm_and_normalised_weights(family):
    _, d = networks(family, spectral_norm=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    sn_layers = [m for m in d.modules() if hasattr(m, "weight_orig")]
    assert sn_layers
    d.train()
    for _ in range(20):  # power iterations converge
        d(torch.randn(2, 1, 32, 32), torch.tensor([0, 1]))
    layer = sn_layers[-1]
    sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


# ----------------------------------------------------------------------------- DiffAugment
def test_policy_parsing_aliases_and_errors():
    assert da.parse_policy("mri") == ("translation", "brightness", "contrast")
    assert da.parse_policy(None) == da.parse_policy("none") == da.parse_policy("") == ()
    assert da.parse_policy(" translation, cutout ") == ("translation", "cutout")
    assert da.parse_policy("flip,rotation") == ("flip", "rotation")
    with pytest.raises(ValueError, match="rotate"):
        da.parse_policy("translation,rotate")


def test_translation_shifts_and_fills_with_black_background():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 32, 32)
    out = da.translation(x)
    assert out.shape == x.shape and set(out.unique().tolist()) <= {-1.0, 1.0}
    blank_rows = (out == -1).all(dim=3).sum(dim=(1, 2))  # rows that were shifted in from outside
    assert blank_rows.max() == 4 and (blank_rows > 0).any()  # up to 1/8 of 32 px


def test_saturation_is_skipped_on_one_channel_and_ops_are_differentiable():
    x = torch.rand(4, 1, 32, 32)
    assert torch.equal(da.saturation(x), x)
    rgb = torch.rand(4, 3, 32, 32)
    saturated = da.saturation(rgb)
    assert saturated.shape == rgb.shape and not torch.allclose(saturated, rgb)  # colour images do change
    assert torch.allclose(saturated.mean(1), rgb.mean(1), atol=1e-6)  # around each pixel's grey level
    x = (torch.rand(4, 1, 32, 32) * 2 - 1).requires_grad_(True)
    da.diff_augment(x, "translation,cutout,brightness,contrast,color").sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_flip_mirrors_about_half_the_images_and_rotation_tilts_them_about_the_centre():
    torch.manual_seed(0)
    x = -torch.ones(200, 1, 32, 32)
    x[:, :, 8:24, 4:10] = 1.0  # a bar left of centre
    flipped = da.flip(x)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert torch.equal(flipped[~mirrored], x[~mirrored]) and 70 < int(mirrored.sum()) < 130

    disc = (torch.arange(32) - 15.5).square()
    disc = torch.where((disc[:, None] + disc[None, :]) < 100, 1.0, -1.0).expand(8, 1, 32, 32)
    assert (da.rotation(disc) - disc).abs().mean() < 0.05  # a centred disc stays where it is (edges blur)
    assert (da.rotation(disc)[:, :, :3, :3] == -1).all()  # uncovered corners are background, not grey
    rotated = da.rotation(x[:64], max_degrees=10)
    moved = (rotated - x[:64]).abs().flatten(1).amax(1)
    assert (moved > 0.05).float().mean() > 0.8  # most draws tilt the bar visibly
    assert float(rotated.mean()) == pytest.approx(float(x[:64].mean()), abs=0.01)  # ... without adding or removing it
    y = x[:4].clone().requires_grad_(True)
    da.diff_augment(y, "flip,rotation").sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_cutout_blacks_out_one_square():
    out = da.cutout(torch.ones(8, 1, 32, 32))
    assert ((out == -1).sum(dim=(1, 2, 3)) == 16 * 16).all()
