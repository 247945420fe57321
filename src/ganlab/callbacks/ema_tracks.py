"""More generator EMAs beside the model's own, so the averaging can be chosen after training instead of guessed
before it (conf/callbacks/default.yaml: `ema_tracks`).

A GAN's EMA generator is what gets sampled, and its averaging matters: the raw generator scores several times
the EMA's FD (experiments/quality, standing statistics). Comparing averagings by one run each would compare
different training trajectories, whose seed-to-seed spread is larger than most effects; the tracks average the
*same* trajectory, so two tracks differ only by their averaging. Two kinds, each starting as a copy of G after
its first step and updated after every batch:
- `half_lives_kimg`: a constant decay 0.5 ** (images per batch, all processes / half-life), as the model's
  `ema_kimg` without ramp-up (a track with the model's half-life reproduces its EMA);
- `sigma_rels`: EDM2's power-function average (Karras et al., CVPR 2024), decay (1 - 1/n) ** (gamma + 1) at
  the n-th update, so step t's weight is proportional to t ** gamma: an averaging window that grows with the
  run, sigma_rel its width relative to the run's length (the model's warm-up decay (1 + n) / (10 + n) is close
  to sigma_rel 0.09).

The tracks are saved in the checkpoint (callbacks/EMATracks: `tracks`, each a generator state_dict) and
restored on resume. experiments/quality/ema_length.py evaluates each as the run's EMA generator.
"""
from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from torch import nn

from ganlab.models.ema import step_average


def gamma_of_sigma_rel(sigma_rel: float) -> float:
    """The power-function exponent whose averaging profile has relative width `sigma_rel` (EDM2, eq. 3:
    sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)), decreasing in gamma > -1)."""
    low, high = -1.0 + 1e-9, 1e6
    for _ in range(200):
        mid = (low + high) / 2
        if (mid + 1) / ((mid + 2) ** 2 * (mid + 3)) > sigma_rel ** 2:
            low = mid
        else:
            high = mid
    return (low + high) / 2


class EMATracks(L.Callback):
    def __init__(self, half_lives_kimg: list[float] | tuple[float, ...] = (),
                 sigma_rels: list[float] | tuple[float, ...] = ()):
        half_lives, sigmas = [float(h) for h in half_lives_kimg or ()], [float(s) for s in sigma_rels or ()]
        if any(not h > 0 for h in half_lives):
            raise ValueError(f"callbacks.ema_tracks.half_lives_kimg={list(half_lives_kimg)}: each must be a "
                             "positive half-life in thousands of images, e.g. [10, 50]")
        if any(not 0 < s < 0.2887 for s in sigmas):  # gamma -> -1 gives the widest profile, sigma_rel 1/sqrt(12)
            raise ValueError(f"callbacks.ema_tracks.sigma_rels={list(sigma_rels)}: each must be in (0, 0.288), "
                             "e.g. [0.05, 0.1]")
        self.half_lives_kimg, self.sigma_rels = half_lives, sigmas
        self.gammas = {f"sigma{s:g}": gamma_of_sigma_rel(s) for s in sigmas}
        self.tracks: dict[str, nn.Module] = {}  # name: a frozen copy of G holding that average
        self.updates = 0  # updates so far (the first is the copy)
        self.batch_images = 0  # images per batch, all processes: fixes the half-life tracks' decays
        self._restored: dict | None = None

    def names(self) -> list[str]:
        return [f"{h:g}kimg" for h in self.half_lives_kimg] + [f"sigma{s:g}" for s in self.sigma_rels]

    def decays(self) -> dict[str, float]:
        """Each track's decay at the next update."""
        n = self.updates + 1
        out = {f"{h:g}kimg": 0.5 ** (self.batch_images / (h * 1000)) for h in self.half_lives_kimg}
        out.update({name: (1 - 1 / n) ** (gamma + 1) for name, gamma in self.gammas.items()})
        return out

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Any,
                           batch_idx: int) -> None:
        if not self.names():
            return
        generator = pl_module.generator
        if not self.tracks:
            self.tracks = {name: copy.deepcopy(generator).requires_grad_(False) for name in self.names()}
            if self._restored is not None:
                for name, track in self.tracks.items():
                    track.load_state_dict(self._restored["tracks"][name])
                self._restored = None
            else:  # a fresh run: each track starts as a copy of G after its first step
                real = batch[0] if isinstance(batch, (list, tuple)) else batch
                self.batch_images = real.shape[0] * trainer.world_size
                self.updates = 1
                return
        for name, decay in self.decays().items():
            track = self.tracks[name]
            step_average(track, generator, None, None, beta=decay)
            if getattr(generator, "cond_weight", None) is not None:  # the conditioning schedule's value itself
                track.cond_weight.copy_(generator.cond_weight)
        self.updates += 1

    def state_dict(self) -> dict:
        if not self.tracks:
            return {}
        return {"batch_images": self.batch_images, "updates": self.updates,
                "tracks": {name: track.state_dict() for name, track in self.tracks.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict or not self.names():
            return
        missing = [name for name in self.names() if name not in state_dict["tracks"]]
        if missing:
            raise ValueError(f"callbacks.ema_tracks: the checkpoint has no track {missing} (it has "
                             f"{sorted(state_dict['tracks'])}); resume with the run's own tracks")
        self.batch_images, self.updates = int(state_dict["batch_images"]), int(state_dict["updates"])
        self._restored = state_dict
