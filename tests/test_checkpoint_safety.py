"""Checkpoints are written atomically (a kill mid-save keeps the previous one), disk use is bounded,
and loading refuses crafted files (pickled code, foreign classes in the recipe)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ganlab.config  # noqa: F401  (registers resolvers)
from conftest import REPO, TINY, assert_ok, signal_when
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
def test_kill_during_a_save_keeps_the_previous_checkpoint(run_cli, start_cli, cli_env, tmp_path):
    run_dir, marker = tmp_path / "run", tmp_path / "stalled"
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    overrides = [*TINY, "trainer.max_epochs=2", "logger=none", f"hydra.run.dir={run_dir}"]
    env = {**cli_env, "GANLAB_TEST_CKPT_DIR": str(ckpt_dir), "GANLAB_TEST_MARKER": str(marker)}
    if Path("/dev/shm").is_dir():
        env["TMPDIR"] = "/dev/shm"  # another file system: a save that moves a temp file there is a copy
    proc = start_cli(["-c", STALLED_SAVE, *overrides], env, tmp_path / "killed.log")
    signal_when(proc, marker.exists, "the stalled save", signal.SIGKILL, tmp_path / "killed.log")

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
    # step 16 inside the third epoch; epoch checkpoints every 2nd epoch (step 12), so only the final
    # save of last.ckpt holds step 16 (besides the step checkpoint)
    result = run_cli("ganlab.train", *TINY, "trainer.max_epochs=5", "trainer.max_steps=16", "logger=none",
                     "callbacks.checkpoint.every_n_epochs=2", "callbacks.step_checkpoint.every_n_train_steps=4",
                     f"hydra.run.dir={run_dir}")
    assert_ok(result)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["epoch001-step000012.ckpt", "last.ckpt", "step0000012.ckpt", "step0000016.ckpt"]
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


def craft(path: Path, key: str, node) -> Path:
    """A real checkpoint whose recipe node `key` (dotted) is replaced: plain data, so weights_only=True
    alone would accept it."""
    ckpt = torch.load(path, weights_only=True)
    tree = ckpt["ganlab"]["model"]
    for part in key.split(".")[:-1]:
        tree = tree[part]
    tree[key.split(".")[-1]] = node
    torch.save(ckpt, path)
    return path


def attacks(victim: Path) -> dict[str, tuple[str, object]]:
    """name -> (recipe key, crafted node); each would delete `victim` if it were instantiated."""
    stale = victim.parent / ".victim.ckpt.1.tmp"  # what remove_stale_temporaries deletes
    return {
        "Path.unlink via a ganlab module": (
            "generator", {"_target_": "ganlab.data.brainsim.Path.unlink", "_args_": [str(victim)]}),
        "os.system via ganlab.config": (
            "generator", {"_target_": "ganlab.config.os.system", "_args_": [f"rm -f {victim} {stale}"]}),
        "a target nested in _args_": (
            "discriminator", {"_target_": "ganlab.models.dcgan.DCGANDiscriminator",
                              "_args_": [{"_target_": "ganlab.data.brainsim.Path.unlink", "_args_": [str(victim)]}]}),
        "a plain ganlab function": (
            "loss", {"_target_": "ganlab.callbacks.checkpoint.remove_stale_temporaries", "_args_": [str(victim.parent)]}),
        "a function as a partial": (
            "loss", {"_target_": "ganlab.models.losses.HingeLoss", "_partial_": True}),
        "an interpolation that makes a node": (
            "loss", "${oc.decode:'{_target_: ganlab.config.os.system, _args_: [rm -f " + str(victim) + "]}'}"),
    }


def victims(tmp_path: Path) -> tuple[Path, Path]:
    victim, stale = tmp_path / "victim.txt", tmp_path / ".victim.ckpt.1.tmp"
    victim.write_text("keep me"), stale.write_text("keep me too")
    return victim, stale


@pytest.mark.parametrize("attack", list(attacks(Path("x"))))
def test_a_crafted_recipe_is_refused_and_runs_nothing(attack, tmp_path):
    victim, stale = victims(tmp_path)
    key, node = attacks(victim)[attack]
    path = craft(tiny_checkpoint(tmp_path / "evil.ckpt"), key, node)
    for load in (read_checkpoint, load_gan):
        with pytest.raises(GanlabError, match=rf"refusing to load checkpoint .*evil\.ckpt: its recipe") as info:
            load(path)
        assert "\n" not in str(info.value)
    assert victim.read_text() == "keep me" and stale.read_text() == "keep me too"
    # the same node, instantiated without the check, really does the damage (the test can fail)
    if attack == "Path.unlink via a ganlab module":
        instantiate(node)
        assert not victim.exists()


def test_refusals_name_the_key_and_the_target(tmp_path):
    path = tiny_checkpoint(tmp_path / "evil.ckpt")
    craft(path, "generator", {"_target_": "ganlab.models.dcgan.DCGANGenerator",
                              "_args_": [[1, {"_target_": "ganlab.config.os.system"}]]})
    with pytest.raises(GanlabError, match=r"its recipe names 'ganlab.config.os.system' at generator._args_\[0\]\[1\], "
                                          r"which is not one of the classes it may build"):
        read_checkpoint(path)
    craft(path, "generator", {"_target_": "os.system", "command": "true"})
    with pytest.raises(GanlabError, match="its recipe names 'os.system' at generator"):
        read_checkpoint(path)
    craft(path, "generator", {"_args_": ["x"]})
    with pytest.raises(GanlabError, match="passes _args_ at generator to nothing ganlab builds"):
        read_checkpoint(path)


def test_every_class_conf_can_name_is_in_the_allow_set():
    """A new model/loss/data YAML whose class is not registered in ganlab.checkpoint fails here, not
    when a user loads a checkpoint."""
    from omegaconf import OmegaConf

    from ganlab.checkpoint import DATA_CLASSES, RECIPE_CLASSES, allowed_class

    def targets(node):
        if isinstance(node, dict):
            yield from ([node["_target_"]] if "_target_" in node else [])
            for value in node.values():
                yield from targets(value)
        elif isinstance(node, list):
            for value in node:
                yield from targets(value)

    for group, names in (("model", RECIPE_CLASSES), ("data", DATA_CLASSES)):
        files = sorted((REPO / "conf" / group).rglob("*.yaml"))
        found = {t for f in files for t in targets(OmegaConf.to_container(OmegaConf.load(f)))}
        assert found, group
        missing = sorted(t for t in found if not allowed_class(t, names))
        assert not missing, f"register {missing} in ganlab.checkpoint"
    assert not allowed_class("ganlab.data.brainsim.Path")  # a class, but not one of ganlab's recipe classes


CRAFTED_CLI = {
    "ganlab.generate": ["ckpt={ckpt}", "out={tmp}/out"],
    "ganlab.evaluate": ["ckpt={ckpt}", "metrics=fast", "out={tmp}/eval"],
    "ganlab.audit": ["ckpt={ckpt}", "hydra.run.dir={tmp}/audit"],
    "ganlab.train": [*TINY, "logger=none", "ckpt_path={ckpt}", "hydra.run.dir={tmp}/train"],
}


@pytest.mark.slow
@pytest.mark.parametrize("module", list(CRAFTED_CLI))
def test_every_entry_point_refuses_a_crafted_checkpoint_in_one_line(module, run_cli, tmp_path):
    victim, stale = victims(tmp_path)
    path = craft(tiny_checkpoint(tmp_path / "evil.ckpt"), "generator",
                 {"_target_": "ganlab.data.brainsim.Path.unlink", "_args_": [str(victim)]})
    result = run_cli(module, *[a.format(ckpt=path, tmp=tmp_path) for a in CRAFTED_CLI[module]])
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: refusing to load checkpoint {path}: its recipe names 'ganlab.data.brainsim.Path.unlink' "
        "at generator, which is not one of the classes it may build (ganlab.checkpoint.RECIPE_CLASSES / DATA_CLASSES)")
    assert victim.read_text() == "keep me"


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


def test_a_crafted_run_data_config_is_refused(tmp_path):
    """evaluate, audit and augment build the real data from files next to a checkpoint (the run's
    config_resolved.yaml, a generate output's generate.json): the same allow-set guards them."""
    from ganlab.run_data import generated_data, training_data

    victim, _ = victims(tmp_path)
    evil = {"_target_": "ganlab.data.brainsim.Path.unlink", "_args_": [str(victim)]}
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "generate.json").write_text(json.dumps({"ckpt": "x", "data": evil}))
    with pytest.raises(GanlabError, match=r"refusing to use the data config in .*generate\.json: it names "
                                          r"'ganlab.data.brainsim.Path.unlink' at data"):
        generated_data(tmp_path / "synth")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config_resolved.yaml").write_text(json.dumps({"data": {"_target_": "ganlab.data.folder."
                                                                        "ImageFolderDataModule", "root": [evil]}}))
    with pytest.raises(GanlabError, match=r"config_resolved\.yaml: it names .* at data\.root\[0\]"):
        training_data(tmp_path / "checkpoints" / "last.ckpt")
    assert victim.read_text() == "keep me"


@pytest.mark.slow
def test_augment_refuses_a_crafted_generate_output_in_one_line(run_cli, tmp_path):
    victim, _ = victims(tmp_path)
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "generate.json").write_text(json.dumps(
        {"ckpt": "x", "data": {"_target_": "ganlab.config.os.system", "_args_": [f"rm {victim}"]}}))
    result = run_cli("ganlab.augment", f"synthetic={tmp_path / 'synth'}", "logger=none", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: refusing to use the data config in ")
    assert victim.read_text() == "keep me" and not (tmp_path / "a").exists()
