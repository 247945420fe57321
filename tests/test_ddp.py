"""Real Lightning DDP on CPU (2 processes, gloo): replicas stay identical, only rank 0 writes."""
from __future__ import annotations

import json

import pytest

from conftest import TINY, assert_ok

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model,extra", [("dcgan", []), ("cdcgan", ["model.r1_gamma=1.0"]), ("gan", [])])
def test_two_cpu_processes_keep_identical_weights(run_cli, tmp_path, model, extra):
    run_dir = tmp_path / "run"
    result = run_cli("ganlab.train", *TINY, f"model={model}", *extra, "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.limit_train_batches=4", "logger=csv", "+callbacks.digest._target_=ganlab.callbacks.state_digest.StateDigest",
                     f"hydra.run.dir={run_dir}")
    assert_ok(result)
    digests = [json.loads((run_dir / "state_digest" / f"rank{r}.json").read_text()) for r in (0, 1)]
    weights = [k for k in digests[0] if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert weights and all(digests[0][k] == digests[1][k] for k in weights)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert len(list((run_dir / "samples").glob("epoch_*.png"))) == 1  # rank 0 alone wrote the grid
    assert not list(run_dir.glob("outputs")) and "gan_ddp" in (run_dir / "config_resolved.yaml").read_text()
