"""Writes, per process, a digest of every parameter and buffer at the end of fit into
`<run dir>/state_digest/rank<N>.json`: replicas of a data-parallel run must match exactly."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L


def tensor_digest(module) -> dict[str, str]:
    return {name: hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
            for name, t in module.state_dict().items()}


class StateDigest(L.Callback):
    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        out = Path(trainer.default_root_dir) / "state_digest"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(tensor_digest(pl_module), indent=1))
