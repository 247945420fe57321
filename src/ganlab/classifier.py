"""The project's small CNN classifier on real images: the domain feature space for FD/KID/PRDC and
the memorisation audit, the judge for conditional accuracy, and the model of the downstream-utility
benchmark. Plain PyTorch (no Lightning) so metrics can train one in seconds inside a callback.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganlab.pixels import to_model_range


def gaussian_blur(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """float (N, C, H, W) -> the same blurred with a separable Gaussian (radius 2 sigma, edges replicated)."""
    radius = max(1, round(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    k = torch.exp(-x ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    out = F.pad(images, (radius,) * 4, mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class SmallCNN(nn.Module):
    """conv blocks (conv-BN-ReLU, 2x down) until 4x4, global average pool, linear head.

    `input_blur` = sigma > 0 blurs every input with a fixed Gaussian of that many pixels first, in training and
    in prediction alike: a classifier that cannot see the pixel-scale texture by which this project's samples
    are told from real images (a texture-only detector: 0.99-1.00; on 1-px-blurred images 0.68-0.76,
    experiments/synthetic_utility diagnose), so a class that synthetic images fill cannot be learnt by that look."""

    def __init__(self, num_classes: int, channels: int = 1, image_size: int = 64, width: int = 32,
                 max_width: int = 256, input_blur: float = 0.0):
        super().__init__()
        if not (isinstance(input_blur, (int, float)) and not isinstance(input_blur, bool) and input_blur >= 0):
            raise ValueError(f"input_blur: {input_blur!r} must be a number >= 0 (a Gaussian's sigma in pixels; 0 = off)")
        self.num_classes, self.channels, self.image_size = num_classes, channels, image_size
        self.input_blur = float(input_blur)
        blocks, c_in = [], channels
        for i in range(max(int(math.log2(image_size)) - 2, 1)):
            c_out = min(width * 2 ** i, max_width)
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True),
                       nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*blocks)
        self.num_features = c_in
        self.head = nn.Linear(c_in, max(num_classes, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, num_features) pooled features of [-1, 1] images."""
        if self.input_blur:
            x = gaussian_blur(x, self.input_blur)
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ReverseGradient(torch.autograd.Function):
    """Identity forward; the gradient times -scale backward (Ganin & Lempitsky, ICML 2015)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def fit_classifier(model: SmallCNN, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 10,
                   batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 5e-4,
                   class_balanced: bool = True, augment: bool = True, seed: int = 0,
                   device: str | torch.device = "cpu", sample_weight: torch.Tensor | None = None,
                   domain: torch.Tensor | None = None, domain_adversarial: float = 0.0) -> SmallCNN:
    """Train with AdamW + cosine LR; class-balanced loss weights (minority classes count as much).

    `sample_weight` (N,) scales each image's loss (e.g. w < 1 for synthetic images); class counts for the
    balanced weights are then the weighted counts, and the loss is the weighted mean.

    `domain` (N,) marks each image real (0) or synthetic (1). With `domain_adversarial` = lambda > 0 and both
    kinds present, a critic learns to tell them apart *within each class* (one real/synthetic output pair per
    class, read at the image's label) from the features, through a gradient reversal whose scale ramps from 0
    to lambda (DANN's 2/(1+exp(-10p))-1 schedule): the features lose what separates synthetic from real images
    of the same class, so a class that synthetic images fill cannot be learnt as "looks synthetic". Without
    both kinds the training is exactly the plain one."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    weight = None
    if class_balanced:
        counts = torch.bincount(labels, weights=sample_weight, minlength=model.num_classes).float().clamp(min=1)
        weight = (counts.sum() / (len(counts) * counts)).to(device)
    critic = None
    if domain_adversarial > 0 and domain is not None and len(domain.unique()) == 2:
        critic = nn.Linear(model.num_features, 2 * max(model.num_classes, 1)).to(device)
    params = list(model.parameters()) + (list(critic.parameters()) if critic is not None else [])
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(math.ceil(len(labels) / batch_size), 1)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(labels), generator=g)
        for i in range(0, len(labels), batch_size):
            idx = perm[i:i + batch_size]
            x, y = to_model_range(images[idx]).to(device), labels[idx].to(device)
            if augment:
                x = random_shift_flip(x, g)
            features = model.features(x)
            logits = model.head(features)
            if sample_weight is None:
                loss = F.cross_entropy(logits, y, weight=weight)
            else:
                w = sample_weight[idx].to(device) * (weight[y] if weight is not None else 1.0)
                loss = (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum().clamp(min=1e-12)
            if critic is not None:
                scale = domain_adversarial * (2 / (1 + math.exp(-10 * step / total)) - 1)
                pairs = critic(ReverseGradient.apply(features, scale)).view(len(y), -1, 2)
                loss = loss + F.cross_entropy(pairs[torch.arange(len(y), device=device), y], domain[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    return model.eval()


def train_classifier(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, width: int = 16,
                     seed: int = 0, **fit_options) -> SmallCNN:
    """A SmallCNN for these images, trained by `fit_classifier`: the same network for the same seed, and the
    caller's RNG left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SmallCNN(num_classes, images.shape[1], images.shape[-1], width=width)
        return fit_classifier(model, images, labels, seed=seed, **fit_options)


ROTATIONS = 4  # the rotation pretext's classes: 0, 90, 180, 270 degrees


def rotation_task(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A self-supervised task for one-class data (Gidaris et al. 2018), where class labels teach a network
    nothing: every image and its mirror image, each turned by 0/90/180/270 degrees, labelled by the turn. Scans
    have one upright orientation, so telling the turn needs the anatomy. The mirror images stand in for
    fit_classifier's flip augmentation (train with augment=False): flipping a turned image would turn
    90 degrees into 270 for a near-symmetric brain."""
    both = torch.cat([images, images.flip(3)])
    turned = torch.cat([torch.rot90(both, k, dims=(2, 3)) for k in range(ROTATIONS)])
    return turned, torch.arange(ROTATIONS).repeat_interleave(len(both))


def random_shift_flip(x: torch.Tensor, g: torch.Generator, max_shift: int = 4) -> torch.Tensor:
    """Small translations and left-right flips (brains are near-symmetric), deterministic for g."""
    if torch.rand(1, generator=g).item() < 0.5:
        x = x.flip(3)
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=g).tolist()
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@torch.no_grad()
def predict(model: SmallCNN, images: torch.Tensor, batch_size: int = 256, device="cpu") -> torch.Tensor:
    """Class logits for uint8 or [-1, 1] images."""
    model.eval()
    return torch.cat([model(to_model_range(images[i:i + batch_size]).to(device)).cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def extract_features(model: SmallCNN, images: torch.Tensor, batch_size: int = 256, device="cpu") -> torch.Tensor:
    model.eval()
    return torch.cat([model.features(to_model_range(images[i:i + batch_size]).to(device)).cpu()
                      for i in range(0, len(images), batch_size)])
