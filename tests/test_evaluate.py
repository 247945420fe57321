"""`python -m ganlab.evaluate` on the checkpoint of a short cdcgan run: the real data rebuilt from the
run's own config, JSON + markdown next to the checkpoint (or in `out`), and one-line errors."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from conftest import assert_ok

pytestmark = pytest.mark.slow


def copy_run(ckpt, dest, with_config: bool = True):
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, dest / "checkpoints" / ckpt.name)
    if with_config:
        shutil.copy(ckpt.parent.parent / "config_resolved.yaml", dest)
        shutil.copytree(ckpt.parent.parent / ".hydra", dest / ".hydra")
    return dest / "checkpoints" / ckpt.name


def test_evaluate_a_checkpoint_into_its_run_directory(run_cli, cdcgan_ckpt, tmp_path):
    ckpt = copy_run(cdcgan_ckpt, tmp_path / "run")
    # the default metrics group, as in training, so the run's cached domain classifier is found again
    result = run_cli("ganlab.evaluate", f"ckpt={ckpt}", "n_samples=32", "metrics.bootstrap=20")
    assert_ok(result)
    report = json.loads((tmp_path / "run" / "evaluation_last.json").read_text())
    metrics = report["metrics"]
    assert report["model"] == "cdcgan" and report["conditional"] and report["data"].endswith("config_resolved.yaml")
    assert metrics["metrics/n_fake"]["value"] == 32 and metrics["metrics/fd_domain"]["n_fake"] == 32
    for name in ("metrics/fd_domain", "metrics/precision", "metrics/recall", "metrics/density", "metrics/coverage",
                 "ssim/nearest_real", "ssim/diversity", "ssim/diversity_real", "metrics/cond_acc"):
        assert math.isfinite(metrics[name]["value"]), name
    assert metrics["metrics/cond_acc"]["ci"] and len(metrics["metrics/cond_acc"]["ci"]) == 2
    # per-class figures on 100 generated images of every class, beside the judge's held-out accuracy
    assert metrics["metrics/cond_acc/ModerateDemented"]["n_fake"] == 100
    assert metrics["metrics/n_fake/NonDemented"]["value"] == 100
    assert metrics["metrics/cond_acc_real/ModerateDemented"]["n_real"] > 0
    assert report["settings"]["classifier"]["cached"]  # trained during the run, found again by its data
    table = (tmp_path / "run" / "evaluation_last.md").read_text()
    assert "| metric | value | 95% CI | N generated | N real |" in table and "`metrics/cond_acc`" in table
    assert "`metrics/fd_domain`" in result.stdout
    # no Hydra dirs in the cwd ("home" is the run's $HOME, where libraries may keep caches)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["run"]


def test_evaluate_needs_the_data_when_the_run_config_is_gone(run_cli, cdcgan_ckpt, tmp_path):
    ckpt = copy_run(cdcgan_ckpt, tmp_path / "bare", with_config=False)
    result = run_cli("ganlab.evaluate", f"ckpt={ckpt}", "metrics=fast", "n_samples=32")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no ") and "config_resolved.yaml" in last and "data=" in last
    # named on the command line, the data is found again (the same brainsim settings as the run)
    result = run_cli("ganlab.evaluate", f"ckpt={ckpt}", "metrics=fast", "n_samples=16", "data=brainsim",
                     "data.image_size=32", "data.per_class=24", f"out={tmp_path / 'eval'}")
    assert_ok(result)
    report = json.loads((tmp_path / "eval" / "evaluation_last.json").read_text())
    assert report["data"] == "command line" and report["metrics"]["metrics/n_fake"]["value"] == 16
