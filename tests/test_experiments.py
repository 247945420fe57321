"""The experiments' --smoke runs: each script still drives the current CLIs and configs end to end,
writes its results outside the checkout and leaves its README alone."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, assert_ok


@pytest.mark.slow
@pytest.mark.parametrize("name,script", [("cdcgan_brainsim", "run.py"), ("synthetic_utility", "run.py"),
                                         ("synthetic_utility", "filtered.py")])
def test_experiment_smoke_run(name, script, cli_env, tmp_path):
    readme = REPO / "experiments" / name / "README.md"
    before = readme.read_bytes()
    result = subprocess.run([sys.executable, str(REPO / "experiments" / name / script), "--smoke"],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=900)
    assert_ok(result)
    results_dir = Path(result.stdout.strip().splitlines()[-1].split("results: ", 1)[1])
    assert REPO not in results_dir.parents
    results = json.loads((results_dir / "results.json").read_text())
    assert results["wall_minutes"] > 0
    assert readme.read_bytes() == before
