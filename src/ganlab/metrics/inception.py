"""Inception-V3 features for FID / KID / IS, from a local weights file only (never the network).

torch-fidelity downloads its weights (`weights-inception-2015-12-05-6726825d.pth`, a plain state_dict)
into `$TORCH_HOME/hub/checkpoints/` when constructed without a path; offline that raises URLError
mid-run. Here the file must be the configured `metrics.spaces.inception.weights` or already sit at that
standard cache path; `resolve_weights` is called at start-up (`InceptionSpace.check`, from the
metric suite's constructor) and either stops or switches the Inception metrics off, in one line. One
network computes both the 2048-d pool features (FID, KID) and the logits (IS) per image.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from ganlab.errors import GanlabError, first_line
from ganlab.pixels import to_uint8

log = logging.getLogger("ganlab.metrics")

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
ON_MISSING = ("skip", "error")


def standard_weights_path() -> Path:
    """`$TORCH_HOME/hub/checkpoints/<file>` (TORCH_HOME defaults to ~/.cache/torch), where torch-fidelity caches it."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def resolve_weights(configured: str | None, on_missing: str = "skip", announce: bool = True) -> Path | None:
    """The weights file to use, or None (Inception metrics off) after one line; GanlabError if on_missing=error."""
    if on_missing not in ON_MISSING:
        raise GanlabError(f"metrics.spaces.inception.on_missing={on_missing!r}: choose one of {ON_MISSING}")
    path = Path(configured).expanduser() if configured else standard_weights_path()
    if path.is_file():
        return path
    where = (f"metrics.spaces.inception.weights={path}" if configured
             else f"{path} (metrics.spaces.inception.weights is unset)")
    message = (f"Inception weights not found at {where}; no download is attempted — place {WEIGHTS_FILE} "
               f"({WEIGHTS_URL}) there, or go on without FID/IS/KID: metrics.spaces.inception.on_missing=skip")
    if on_missing == "error":
        raise GanlabError(message)
    if announce:
        log.warning("%s: FID/KID/IS are skipped (metrics.spaces.inception.on_missing=skip)", message)
    return None


class InceptionSpace:
    """metrics.spaces.inception: InceptionV3 pool features (and logits) from a local weights file.
    `check()` runs when the metric suite is built, before anything slow."""

    def __init__(self, weights: str | None = None, on_missing: str = "skip", antialias: bool = False):
        if on_missing not in ON_MISSING:
            raise GanlabError(f"metrics.spaces.inception.on_missing={on_missing!r}: choose one of {ON_MISSING}")
        self.weights, self.on_missing, self.antialias = weights, on_missing, antialias
        self.path: Path | None = None

    def check(self, announce: bool = True) -> bool:
        self.path = resolve_weights(self.weights, self.on_missing, announce=announce)
        return self.path is not None

    def build(self, ctx) -> InceptionFeatures:
        if self.path is None and not self.check(ctx.announce):
            raise GanlabError("metrics.spaces.inception: no weights file")
        ctx.settings["inception"] = {"weights": str(self.path), "antialias": self.antialias}
        return InceptionFeatures(self.path, antialias=self.antialias)


class InceptionFeatures(nn.Module):
    """[-1, 1] (or uint8) images, 1 or 3 channels -> (pool features (N, 2048), logits (N, 1008))."""

    num_features = 2048

    def __init__(self, weights_path: str | Path, antialias: bool = False):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        path = Path(weights_path).expanduser()
        if not path.is_file():  # a missing path would make torch-fidelity download
            raise GanlabError(f"metrics.spaces.inception.weights={path} does not exist")
        self.antialias = antialias
        try:
            # refuse pickled code before torch-fidelity's own torch.load(weights_only=False) reads the file
            torch.load(path, map_location="cpu", weights_only=True)
            self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                          feature_extractor_weights_path=str(path), antialias=antialias)
        except Exception as exc:  # UnpicklingError, RuntimeError (wrong keys/shapes), OSError
            raise GanlabError(f"metrics.spaces.inception.weights={path} is not an InceptionV3 state_dict from "
                              f"torch-fidelity: {first_line(exc)}") from exc

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        images = to_uint8(images)
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        pool, logits = self.net._torch_fidelity_forward(images)  # both feature sets in one pass
        return pool.reshape(len(images), -1), logits.reshape(len(images), -1)


def inception_score(logits: Tensor, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """torchmetrics' InceptionScore on precomputed logits: (mean, std) of exp(KL(p(y|x) || p(y))) over splits."""
    logits = logits.double().cpu()
    splits = max(1, min(splits, len(logits)))
    logits = logits[torch.randperm(len(logits), generator=torch.Generator().manual_seed(seed))]
    scores = []
    for chunk in logits.chunk(splits):
        prob, log_prob = chunk.softmax(1), chunk.log_softmax(1)
        kl = (prob * (log_prob - prob.mean(0, keepdim=True).log())).sum(1).mean()
        scores.append(kl.exp())
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std()) if len(scores) > 1 else 0.0
