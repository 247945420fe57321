"""Test-only Lightning callback (imported by the DDP processes through PYTHONPATH): each rank writes
what must differ between ranks (noise seed, first batch) into <run dir>/probe/rank<N>.json."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


class RankProbe(L.Callback):
    def __init__(self):
        self.first_batch = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.first_batch is None:
            self.first_batch = hashlib.sha256(batch[0].detach().cpu().numpy().tobytes()).hexdigest()[:16]

    def on_fit_end(self, trainer, pl_module) -> None:
        out = Path(trainer.default_root_dir) / "probe"
        out.mkdir(parents=True, exist_ok=True)
        info = {"rank": trainer.global_rank, "world_size": trainer.world_size,
                "noise_seed": pl_module.noise_rng.initial_seed(), "first_batch": self.first_batch,
                "strategy": type(trainer.strategy).__name__}
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(info))
