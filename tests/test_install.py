"""A real install: the wheel carries conf/ as ganlab/conf and the console scripts, and an installed
ganlab trains from any directory; a checkout keeps reading its top-level conf/."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from setuptools import find_packages

from conftest import REPO, TINY, assert_ok
from ganlab.cli import CONFIG_DIR

SCRIPTS = {"ganlab-train", "ganlab-generate", "ganlab-evaluate", "ganlab-augment", "ganlab-audit"}


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_a_checkout_reads_its_own_conf_and_every_package_is_listed():
    assert Path(CONFIG_DIR) == REPO / "conf"
    tool = pyproject()["tool"]["setuptools"]
    assert sorted(tool["packages"]) == sorted([*find_packages(REPO / "src"), "ganlab.conf"])
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) == SCRIPTS and all(v.startswith("ganlab.") and v.endswith(":main") for v in scripts.values())


@pytest.mark.slow
def test_the_wheel_installed_elsewhere_trains_from_an_unrelated_directory(tmp_path, data_dir):
    source = tmp_path / "source"  # a clean copy: the build writes build/ and *.egg-info next to the sources
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("conf", "src"):
        shutil.copytree(REPO / name, source / name, ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run = dict(capture_output=True, text=True, timeout=600)
    assert_ok(subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                              str(source)], **run))
    wheel = next((tmp_path / "dist").glob("ganlab-*.whl"))
    target = tmp_path / "target"
    assert_ok(subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], **run))
    shipped = {p.relative_to(target / "ganlab" / "conf") for p in (target / "ganlab" / "conf").rglob("*.yaml")}
    assert shipped == {p.relative_to(REPO / "conf") for p in (REPO / "conf").rglob("*.yaml")}
    assert {p.name for p in (target / "bin").iterdir()} >= SCRIPTS

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PYTHON"))}
    env.update(PYTHONPATH=str(target), GANLAB_DATA_DIR=str(data_dir), HOME=str(tmp_path / "home"),
               OMP_NUM_THREADS="1")
    where = subprocess.run([sys.executable, "-c", "import ganlab.cli as c; print(c.__file__); print(c.CONFIG_DIR)"],
                           cwd=elsewhere, env=env, **run)
    assert_ok(where)
    assert where.stdout.split() == [str(target / "ganlab" / "cli.py"), str(target / "ganlab" / "conf")]
    result = subprocess.run([str(target / "bin" / "ganlab-train"), *TINY, "logger=none", "metrics=none",
                             "hydra.run.dir=run"], cwd=elsewhere, env=env, **run)
    assert_ok(result)
    assert (elsewhere / "run" / "checkpoints" / "last.ckpt").is_file()
    assert "ganlab.data.brainsim.BrainSimDataModule" in (elsewhere / "run" / "config_resolved.yaml").read_text()
