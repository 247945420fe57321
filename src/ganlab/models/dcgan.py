"""DCGAN (Radford et al. 2016): transposed-conv generator, strided-conv discriminator.

Both networks work for any power-of-two image size from 32 to 256 and 1 or 3 channels.
`width` is the channel count of the layer nearest the image (ngf / ndf in the paper's code);
deeper layers double it, capped at 8x.

`upsample` chooses how the generator doubles its resolution: "transpose" (the paper's 4x4 stride-2
transposed convolutions) or "resize" (nearest-neighbour 2x, then a 3x3 convolution; Odena et al. 2016,
"Deconvolution and checkerboard artifacts"). Transposed convolutions with a kernel the stride does not
divide evenly overlap unevenly, which leaves a checkerboard at the image's highest frequencies.

`noise_inputs=true` adds StyleGAN's noise inputs (Karras et al. 2019): after every upsampling
convolution, and before the output's Tanh, one map of per-pixel Gaussian noise per image, added to each
channel with a learned scale that starts at 0. A deterministic conv stack driven by one latent vector
has no source of per-pixel randomness; scanner noise (brainsim's Rician noise, real MRI's) is exactly
that, and without a source G can only imitate it with fixed patterns. `noise_init` > 0 starts every
scale there instead of at 0: at 0 the output does not depend on the noise, so the expected gradient of
each scale is 0 and the scales only random-walk (experiments/quality, bf16_tr16_noise: 0.0001-0.015).

`full_res_width` > 0 gives the generator one more layer at the image's size: the last upsampling
produces that many channels (then noise, BatchNorm — conditional under cbn — and ReLU, like every other
block), and a 3x3 convolution draws the image from them. Without it the last upsampling draws the image
directly, so each pixel is a linear function of the 2x2 half-resolution features under it, and there is
no nonlinearity at the pixel scale: sharp single dark pixels (thin CSF, the residual's negative skew that
tells the samples from real slices; experiments/synthetic_utility, texture_stats) are hard to draw.

`texture_width` > 0 gives the discriminator a texture branch (TextureBranch): a small full-resolution
conv stack that sees only each image's pixel-scale residual (image minus a 3x3 binomial blur) and whose
mean patch logit is added to D's logit (one loss, as SSD-GAN adds its spectral logit; Chen et al. 2021).
A classifier trained on that residual alone tells this project's samples from real images at 0.99
(experiments/synthetic_utility, diagnose --views texture), while D's strided first layer mostly judges
shapes.
"""
from __future__ import annotations

import contextlib
import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm as _sn

SUPPORTED_SIZES = (32, 64, 128, 256)


def check_image_size(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(
            f"image_size={image_size} is not supported by DCGAN networks; use one of {SUPPORTED_SIZES}"
        )
    return int(math.log2(image_size)) - 2  # number of 2x up/down-sampling stages from/to 4x4


def channel_plan(image_size: int, width: int) -> list[int]:
    """Channels from the 4x4 layer to the image-sized layer, e.g. 64 px/width 64 -> [512,256,128,64]."""
    stages = check_image_size(image_size)
    if width < 1:
        raise ValueError(f"width={width}: the channel count of the image-sized layer must be at least 1")
    return [width * min(2 ** (stages - 1 - i), 8) for i in range(stages)]


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) for conv weights, N(1, 0.02) for BatchNorm scales (DCGAN paper)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


UPSAMPLES = ("transpose", "resize")


class NoiseInput(nn.Module):
    """x + scale[c] * n, n ~ N(0, 1) one (H, W) map per image shared by the channels; scale starts at `init`."""

    def __init__(self, channels: int, init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight.to(x.dtype) * noise


def has_noise_inputs(net: nn.Module) -> bool:
    return any(isinstance(m, NoiseInput) for m in net.modules())


@contextlib.contextmanager
def noise_seeded_by(z: torch.Tensor):
    """Within the block the global RNG (which NoiseInput draws from) is seeded from z's bytes and restored
    afterwards: sampling stays a function of (z, labels) — the same latents give the same images, and a
    fixed-noise grid does not flicker — without touching the caller's RNG."""
    devices = [z.device.index or 0] if z.device.type == "cuda" else []
    digest = hashlib.blake2b(z.detach().float().cpu().numpy().tobytes(), digest_size=8).digest()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int.from_bytes(digest, "little") >> 1)
        yield


def upsample_layer(c_in: int, c_out: int, mode: str, bias: bool) -> nn.Module:
    """A 2x upsampling convolution from c_in to c_out channels."""
    if mode == "transpose":
        return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias))


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim: int = 100, image_size: int = 64, channels: int = 1, width: int = 64,
                 upsample: str = "transpose", noise_inputs: bool = False, noise_init: float = 0.0,
                 full_res_width: int = 0):
        super().__init__()
        check_count("generator full_res_width", full_res_width, "0: off; 16 is this project's setting")
        if upsample not in UPSAMPLES:
            raise ValueError(f"generator upsample={upsample!r}; choose one of {UPSAMPLES}")
        check_flag("generator noise_inputs", noise_inputs)
        if isinstance(noise_init, bool) or not isinstance(noise_init, (int, float)) or not 0 <= noise_init < 10:
            raise ValueError(f"generator noise_init={noise_init!r}: expected a number in [0, 10); 0 is StyleGAN's")
        if noise_init and not noise_inputs:
            raise ValueError(f"generator noise_init={noise_init} needs noise_inputs=true")
        noise = (lambda c: [NoiseInput(c, noise_init)]) if noise_inputs else (lambda c: [])
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        plan = channel_plan(image_size, width)
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(self.stem_in_features(), plan[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(plan[0]),
            nn.ReLU(True),
        )
        blocks = []
        for c_in, c_out in zip(plan[:-1], plan[1:]):
            blocks += [upsample_layer(c_in, c_out, upsample, bias=False), *noise(c_out), nn.BatchNorm2d(c_out),
                       nn.ReLU(True)]
        if full_res_width:
            blocks += [upsample_layer(plan[-1], full_res_width, upsample, bias=False), *noise(full_res_width),
                       nn.BatchNorm2d(full_res_width), nn.ReLU(True)]
            draw = nn.Conv2d(full_res_width, channels, 3, 1, 1, bias=False)
        else:
            draw = upsample_layer(plan[-1], channels, upsample, bias=False)
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.Sequential(draw, *noise(channels), nn.Tanh())
        dcgan_init(self)

    def stem_in_features(self) -> int:
        return self.latent_dim

    def stem_input(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return z

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.stem(self.stem_input(z, labels)[:, :, None, None])
        return self.to_image(self.blocks(h))


class MinibatchStd(nn.Module):
    """Minibatch standard deviation (Karras et al. 2018, ProGAN/StyleGAN2): one extra feature map holding
    the std over a group of `group` images, averaged over channels and pixels. D then sees batch
    statistics and can tell a batch of look-alike fakes from varied reals. Groups are strided (image i
    is in group i mod N/G); a batch not divisible by `group` uses gcd(N, group)."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = math.gcd(n, self.group) if n else 1
        y = x.float().reshape(g, -1, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (N/G,)
        y = y.reshape(1, -1, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y.to(x.dtype)], dim=1)


def check_count(name: str, value, hint: str, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name}={value!r}: expected an integer >= {least} ({hint})")
    return value


def check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected true or false")
    return value


class TextureBranch(nn.Module):
    """A patch discriminator for pixel-scale texture. Its input is the residual r = x - blur(x) (3x3
    binomial, replicate padding), times GAIN so that residuals of real scans are of order 1; then two
    3x3 convs at full resolution (receptive field 5x5 of r, 7x7 of x) and a 1x1 conv give one logit per
    position, averaged per image. Seeing only r, it cannot judge anatomy, only the fine grain."""

    GAIN = 8.0  # brainsim's residual SD in [-1, 1] units: 0.04 in the background, 0.12 inside the brain

    def __init__(self, channels: int, width: int, spectral_norm: bool = False):
        super().__init__()
        sn = _sn if spectral_norm else (lambda m: m)
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("blur", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).clone(), persistent=False)
        self.net = nn.Sequential(
            sn(nn.Conv2d(channels, width, 3, 1, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(width, width, 3, 1, 1)), nn.LeakyReLU(0.2, True),
            sn(nn.Conv2d(width, 1, 1)),
        )

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.blur.to(x.dtype), groups=x.shape[1])
        return x - blurred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.GAIN * self.residual(x)).mean(dim=(1, 2, 3))


class DCGANDiscriminator(nn.Module):
    """Returns one logit per image (no Sigmoid: losses work on logits, which is AMP-safe).
    `mbstd_group` > 0 adds a minibatch-stddev feature map before the last layer (0: off).
    `texture_width` > 0 adds a TextureBranch of that width, whose logit is added (0: off).
    `label_channels`: extra input maps after the image channels (the conditional concat D's one-hot maps);
    the texture branch sees the image channels only. `batch_norm` False: no normalisation between the layers
    (spectral norm always replaces BatchNorm)."""

    def __init__(self, image_size: int = 64, channels: int = 1, width: int = 64, spectral_norm: bool = False,
                 mbstd_group: int = 0, texture_width: int = 0, label_channels: int = 0, batch_norm: bool = True):
        super().__init__()
        check_count("mbstd_group", mbstd_group, "0: off; 4 is usual")
        check_count("texture_width", texture_width, "0: off; 16 is this project's setting")
        check_flag("batch_norm", batch_norm)
        self.image_size, self.channels = image_size, channels
        plan = channel_plan(image_size, width)[::-1]  # image-sized layer first
        sn = _sn if spectral_norm else (lambda m: m)
        # BatchNorm and spectral norm are alternatives; mixing them hurts stability.
        norm = nn.BatchNorm2d if batch_norm and not spectral_norm else (lambda c: nn.Identity())
        layers = [sn(nn.Conv2d(channels + label_channels, plan[0], 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for c_in, c_out in zip(plan[:-1], plan[1:]):
            layers += [sn(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)), norm(c_out), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.feature_dim = plan[-1]
        self.mbstd = MinibatchStd(mbstd_group) if mbstd_group else nn.Identity()
        self.head = sn(nn.Conv2d(plan[-1] + (1 if mbstd_group else 0), 1, 4, 1, 0))
        self.texture = None
        dcgan_init(self)
        if texture_width:  # built after the rest is initialised, so the rest's initial weights do not depend on it
            self.texture = TextureBranch(channels, texture_width, spectral_norm)
            dcgan_init(self.texture)

    def texture_logit(self, x: torch.Tensor) -> torch.Tensor | float:
        """The texture branch's logit for the image channels of x (0 without a branch)."""
        return self.texture(x[:, :self.channels]) if self.texture is not None else 0.0

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.mbstd(self.features(x))).flatten() + self.texture_logit(x)
