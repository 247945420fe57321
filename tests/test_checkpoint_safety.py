"""Checkpoints are written atomically (a kill mid-save keeps the previous one), disk use is bounded,
and loading refuses crafted files (pickled code, foreign classes in the recipe)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ganlab.config  # noqa: F401  (registers resolvers)
from conftest import REPO, TINY, assert_ok, wait_for
from ganlab.atomic import atomic_torch_save
from ganlab.checkpoint import load_gan, read_checkpoint
from ganlab.config import to_plain
from ganlab.errors import GanlabError

# `python -m ganlab.train` whose second write of last.ckpt (or of its temporary) stalls half-written.
# Every file open is watched, so this also catches a copy into place (Lightning's save with $TMPDIR on
# another file system).
STALLED_SAVE = """
import builtins, os, runpy, time
_open, _dir = builtins.open, os.path.realpath(os.environ["GANLAB_TEST_CKPT_DIR"])
_seen = []
def _stalling_open(file, mode="r", *args, **kwargs):
    fh = _open(file, mode, *args, **kwargs)
    if (isinstance(file, (str, os.PathLike)) and set(mode) & set("wxa") and "last.ckpt" in os.path.basename(file)
            and os.path.dirname(os.path.realpath(file)) == _dir):
        _seen.append(file)
        if len(_seen) == 2:
            fh.write(b"PK half a checkpoint"); fh.flush()
            _open(os.environ["GANLAB_TEST_MARKER"], "w").close()
            time.sleep(600)
    return fh
builtins.open = _stalling_open
runpy.run_module("ganlab.train", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_previous_checkpoint(run_cli, cli_env, tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "stalled"
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    overrides = [*TINY, "trainer.max_epochs=2", "logger=none", f"hydra.run.dir={run_dir}"]
    env = {**cli_env, "GANLAB_TEST_CKPT_DIR": str(ckpt_dir), "GANLAB_TEST_MARKER": str(marker)}
    if Path("/dev/shm").is_dir():
        env["TMPDIR"] = "/dev/shm"  # another file system: a save that moves a temp file there is a copy
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", STALLED_SAVE, *overrides], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: marker.exists() or proc.poll() is not None, 300, "the stalled save")
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    # the previous checkpoint (end of epoch 1) is intact and loads; the interrupted write is a temporary
    assert read_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == 6
    assert list(ckpt_dir.glob(".last.ckpt.*.tmp"))

    result = run_cli("ganlab.train", *overrides[:-1], f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert_ok(result)
    assert read_checkpoint(ckpt_dir / "last.ckpt")["global_step"] == 12
    assert not list(ckpt_dir.glob(".*.tmp"))  # the next start cleaned up after the kill


def test_a_failing_save_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"w": torch.ones(2)}, target)
    with pytest.raises(Exception):
        atomic_torch_save({"w": torch.zeros(2), "bad": lambda: None}, target)  # lambdas do not pickle
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_step_checkpoints_keep_last_k_and_the_end_is_saved(run_cli, tmp_path):
    run_dir = tmp_path / "run"
    # 3 batches per epoch, 2 optimiser steps per batch: epochs end at steps 6 and 12, the run stops at
    # step 16 inside the third epoch; epoch checkpoints every 2nd epoch, so only the final save writes 16
    result = run_cli("ganlab.train", *TINY, "trainer.max_epochs=5", "trainer.max_steps=16", "logger=none",
                     "callbacks.checkpoint.every_n_epochs=2", "callbacks.step_checkpoint.every_n_train_steps=4",
                     f"hydra.run.dir={run_dir}")
    assert_ok(result)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    # (Lightning counts the stopped third epoch as done: the final file is named after epoch 3)
    assert names == ["epoch003-step000016.ckpt", "last.ckpt", "step0000012.ckpt", "step0000016.ckpt"]
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 16


# ------------------------------------------------------------------ safe loading
class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_pickle_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "ganlab": {"model": {}, "data": {}}, "x": RunsCode(marker)}, path)
    torch.load(path, weights_only=False)  # the file really runs code when unpickled unsafely
    assert marker.exists()
    marker.unlink()
    for load in (read_checkpoint, load_gan):
        with pytest.raises(GanlabError, match=r"refusing to load checkpoint .*evil\.ckpt") as info:
            load(path)
        assert "\n" not in str(info.value)
    assert not marker.exists()


def tiny_checkpoint(path: Path, model: str = "dcgan") -> Path:
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "data.image_size=32", "model.generator.width=8",
                                          "model.discriminator.width=8"])
    recipe = to_plain(cfg.model)
    module = instantiate(cfg.model)
    facts = {"class_names": ["a", "b", "c", "d"], "image_size": 32, "channels": 1, "class_counts": {}}
    torch.save({"state_dict": module.state_dict(), "ganlab": {"model": recipe, "data": facts}}, path)
    return path


def test_a_recipe_naming_a_foreign_callable_is_refused(tmp_path):
    path = tiny_checkpoint(tmp_path / "dcgan.ckpt")
    ckpt = torch.load(path, weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["ganlab"]["model"]["generator"] = {"_target_": "os.system", "command": f"touch {marker}"}
    torch.save(ckpt, path)  # plain data: weights_only=True alone would accept it
    with pytest.raises(GanlabError, match="recipe names 'os.system', not a ganlab class"):
        load_gan(path)
    assert not marker.exists()


def test_load_gan_checks_the_model_family(tmp_path):
    dcgan, cdcgan = tiny_checkpoint(tmp_path / "d.ckpt"), tiny_checkpoint(tmp_path / "c.ckpt", "cdcgan")
    assert load_gan(dcgan, expect_family="dcgan")[0].conditional is False
    assert load_gan(cdcgan, expect_family="cdcgan")[0].conditional is True
    with pytest.raises(GanlabError, match="holds a cdcgan model, not dcgan"):
        load_gan(cdcgan, expect_family="dcgan")
    with pytest.raises(GanlabError, match="holds a dcgan model, not cdcgan"):
        load_gan(dcgan, expect_family="cdcgan")


def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path):
    path = tiny_checkpoint(tmp_path / "d.ckpt")
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(GanlabError, match="refusing to load checkpoint") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)
