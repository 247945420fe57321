"""The domain feature space: ganlab's SmallCNN trained on the real training split (class labels), so
Fréchet distance, KID, precision/recall and conditional accuracy are measurable on MRI without
ImageNet weights. Trained in seconds at a reduced resolution and cached on disk under a key made of
the training images, labels and settings: the next run on the same data loads it. `DomainSpace` is
the metric suite's handle on it (metrics.spaces.domain), shared by every family that reads it.
"""
from __future__ import annotations

import hashlib
import math
import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganlab.atomic import atomic_torch_save
from ganlab.classifier import ROTATIONS, SmallCNN, fit_classifier, rotation_task
from ganlab.pixels import to_model_range
from ganlab.errors import GanlabError

log = logging.getLogger("ganlab.metrics")
# a class on which the classifier is this weak on held-out reals (or has fewer held-out images) is flagged
WEAK_ACCURACY, WEAK_N = 0.5, 10
VERSION = 2  # bump when training or architecture changes: part of the cache key (2: balance option)
BALANCE = ("sampling", "loss", "none")


def resize(images: Tensor, size: int) -> Tensor:
    """uint8 or [-1, 1] images -> float [-1, 1] at size x size (area averaging when shrinking)."""
    x = to_model_range(images)
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    mode = "area" if size < x.shape[-1] else "bilinear"
    return F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))


class DomainFeatures(nn.Module):
    """Images (any size, [-1, 1] or uint8) -> (features (N, d), class logits (N, K))."""

    def __init__(self, classifier: SmallCNN):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.image_size = classifier.image_size
        self.num_features = classifier.num_features

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.classifier.features(resize(images, self.image_size))
        return features, self.classifier.head(features)


def cache_key(images: Tensor, labels: Tensor, settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({**settings, "version": VERSION}, sort_keys=True).encode())
    for t in (images, labels):
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update(t.contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def train_domain_classifier(images: Tensor, labels: Tensor, num_classes: int, *, image_size: int | None = 32,
                            width: int = 16, epochs: int = 5, min_steps: int = 100, lr: float = 3e-3,
                            batch_size: int = 64, seed: int = 0, cache_dir: str | Path | None = None,
                            balance: str = "sampling", device: str | torch.device = "cpu") -> tuple[SmallCNN, dict]:
    """(classifier in eval mode, info) trained on uint8 `images` for `epochs`, or more on a small set
    (at least `min_steps` optimiser steps), or loaded from `cache_dir`. `balance`: how rare classes count
    in training: "sampling" tops every class up to the largest by repeating its images (each augmented
    differently), "loss" weights the loss by inverse class frequency, "none" leaves the mix as it is."""
    if balance not in BALANCE:
        raise GanlabError(f"metrics.spaces.domain.balance={balance!r}: choose one of {BALANCE}")
    device = torch.device(device)
    n_train = len(balanced_indices(labels, num_classes)) if balance == "sampling" else len(labels)
    epochs = max(epochs, math.ceil(min_steps / max(math.ceil(n_train / batch_size), 1)))
    # model init and fit_classifier use (and seed) the global RNG: keep the caller's stream untouched,
    # so that e.g. the GAN's data order does not depend on whether the classifier came from the cache
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        return _train_or_load(images, labels, num_classes, image_size, width, epochs, lr, batch_size, seed,
                              cache_dir, balance, device)


def balanced_indices(labels: Tensor, num_classes: int) -> Tensor:
    """Every index once, plus repeats of the smaller classes' indices (cyclically) up to the largest class."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    top = int(counts.max())
    parts = []
    for c in range(num_classes):
        idx = (labels.cpu() == c).nonzero().flatten()
        if len(idx):
            parts.append(idx.repeat(-(-top // len(idx)))[:top])
    return torch.cat(parts)


def _train_or_load(images, labels, num_classes, image_size, width, epochs, lr, batch_size, seed, cache_dir,
                   balance, device) -> tuple[SmallCNN, dict]:
    torch.manual_seed(seed)  # the same initial weights whoever calls
    size = min(image_size or images.shape[-1], images.shape[-1])
    rotation = num_classes < 2  # one class: a self-supervised rotation task, or the network would stay as initialised
    settings = dict(image_size=size, width=width, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    num_classes=ROTATIONS if rotation else num_classes, channels=images.shape[1], balance=balance,
                    **({"task": "rotation"} if rotation else {}))
    key = cache_key(images, labels, settings)
    model = SmallCNN(settings["num_classes"], images.shape[1], size, width=width)
    path = Path(cache_dir).expanduser() / f"domain_classifier-{key}.pt" if cache_dir else None
    info = {"key": key, "cache": str(path) if path else None, **settings}
    if path is not None and path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
            return model.eval(), {**info, "cached": True, "seconds": 0.0}
        except Exception as exc:  # a broken cache file is rebuilt, not fatal
            log.warning("ignoring unreadable classifier cache %s (%s)", path, exc.__class__.__name__)
    start = time.perf_counter()
    x, y = resize(images, size), labels
    if balance == "sampling" and not rotation:
        idx = balanced_indices(labels, num_classes)
        x, y = x[idx], y[idx]
    if rotation:
        x, y = rotation_task(x)
    with torch.enable_grad():
        fit_classifier(model, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       class_balanced=balance == "loss", augment=not rotation, device=device)
    model.cpu()
    info.update(cached=False, seconds=round(time.perf_counter() - start, 2))
    log.info("domain classifier: trained on %d images at %d px in %.1f s%s", len(labels), size, info["seconds"],
             " to tell each image's rotation (one class: class labels would teach it nothing)" if rotation else "")
    if path is not None:
        atomic_torch_save({"state_dict": model.state_dict(), "settings": settings}, path)
    return model.eval(), info


class DomainSpace:
    """metrics.spaces.domain: the classifier is trained (or loaded from `cache_dir`) by process 0 and
    sent to the others, so every process measures in the same space. Its held-out accuracy, overall and
    per class, goes into the settings; classes below WEAK_ACCURACY or with fewer than WEAK_N held-out
    images are listed under `weak_classes`."""

    def __init__(self, image_size: int | None = 32, width: int = 16, epochs: int = 5, min_steps: int = 100,
                 balance: str = "sampling", cache_dir: str | None = None):
        if balance not in BALANCE:
            raise GanlabError(f"metrics.spaces.domain.balance={balance!r}: choose one of {BALANCE}")
        self.options = dict(image_size=image_size, width=width, epochs=epochs, min_steps=min_steps, balance=balance,
                            cache_dir=cache_dir)

    def check(self, announce: bool = True) -> bool:
        return True

    def build(self, ctx, seed: int | None = None) -> DomainFeatures:
        """The space of the classifier trained with `seed` (default: metrics.seed); only that default one's
        facts go into the settings."""
        payload = None
        if ctx.rank == 0:
            model, info = train_domain_classifier(ctx.images, ctx.labels, ctx.num_classes,
                                                  seed=ctx.seed if seed is None else seed, device=ctx.device,
                                                  **self.options)
            payload = (model.state_dict(), info)
        if ctx.world > 1 and ctx.broadcast is not None:
            payload = ctx.broadcast(payload)  # every process uses rank 0's classifier
        state, info = payload
        model = SmallCNN(info["num_classes"], ctx.images.shape[1], info["image_size"], width=info["width"])
        model.load_state_dict(state)
        net = DomainFeatures(model).to(ctx.device)
        if seed is not None:
            return net
        if ctx.holdout is not None and info.get("task") == "rotation":
            turned, turns = rotation_task(ctx.holdout[0])
            info["holdout_rotation_accuracy"] = round(float((ctx.embed(net, turned)[1].argmax(1).cpu() == turns)
                                                            .float().mean()), 4)
        elif ctx.holdout is not None:
            info.update(holdout_accuracy(ctx.embed(net, ctx.holdout[0])[1].argmax(1), ctx.holdout[1],
                                         ctx.class_names))
        ctx.settings["classifier"] = info
        return net


def holdout_accuracy(pred: Tensor, target: Tensor, class_names: list[str]) -> dict:
    """{holdout_balanced_accuracy, holdout_per_class: {class: {accuracy, n}}, weak_classes: [class]}."""
    per_class, weak = {}, []
    for c, name in enumerate(class_names):
        mask = target.cpu() == c
        n = int(mask.sum())
        acc = float((pred.cpu()[mask] == c).float().mean()) if n else float("nan")
        per_class[name] = {"accuracy": round(acc, 4) if n else None, "n": n}
        if not n or acc < WEAK_ACCURACY or n < WEAK_N:
            weak.append(name)
    seen = [v["accuracy"] for v in per_class.values() if v["n"]]
    return {"holdout_balanced_accuracy": round(sum(seen) / len(seen), 4) if seen else None,
            "holdout_per_class": per_class, "weak_classes": weak}
