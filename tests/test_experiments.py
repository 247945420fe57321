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
@pytest.mark.parametrize("name,script,extra", [
    ("cdcgan_brainsim", "run.py", []), ("synthetic_utility", "run.py", []),
    # the filtered set alone, one augment process: the plain set's stages are run.py's (above); merging
    # the two sets' rows is test_filtered_merges_two_sets_rows below
    ("synthetic_utility", "filtered.py", ["--no-plain", "--jobs", "1"])],
    ids=["cdcgan_brainsim-run.py", "synthetic_utility-run.py", "synthetic_utility-filtered.py"])
def test_experiment_smoke_run(name, script, extra, cli_env, tmp_path):
    readme = REPO / "experiments" / name / "README.md"
    before = readme.read_bytes()
    result = subprocess.run([sys.executable, str(REPO / "experiments" / name / script), "--smoke", *extra],
                            cwd=tmp_path, env=cli_env, capture_output=True, text=True, timeout=900)
    assert_ok(result)
    results_dir = Path(result.stdout.strip().splitlines()[-1].split("results: ", 1)[1])
    assert REPO not in results_dir.parents
    results = json.loads((results_dir / "results.json").read_text())
    assert results["wall_minutes"] > 0
    assert readme.read_bytes() == before


def utility_scripts(monkeypatch) -> None:
    """Make experiments/synthetic_utility's run.py and filtered.py importable as `run` and `filtered` for one
    test (experiments/quality has a run.py too: whichever a worker imported first is in sys.modules)."""
    for name in ("run", "filtered"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))  # undone after the test: restored or removed
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(REPO / "experiments" / "synthetic_utility"))


def test_filtered_merges_two_sets_rows(tmp_path, monkeypatch):
    """filtered.py's merge: the filtered set's regimes are renamed, the real-only rows that both augment runs
    wrote are kept once per seed, and the largest gap between them is reported."""
    utility_scripts(monkeypatch)
    from filtered import merged

    def job(name, rows):
        d = tmp_path / name
        d.mkdir()
        (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "augment.json").write_text(json.dumps({"class_names": ["a", "b"]}))
        return d

    def row(regime, seed, acc):
        return {"regime": regime, "seed": seed, "balanced_accuracy": acc}

    plain = job("plain", [row("real only", 0, 0.70), row("fill", 0, 0.60), row("real only", 1, 0.72),
                          row("fill", 1, 0.62)])
    filtered = job("filtered", [row("real only", 0, 0.70), row("fill", 0, 0.65), row("real only", 1, 0.74),
                                row("fill", 1, 0.66)])
    facts, rows, gap = merged({"plain": [plain], "filtered": [filtered]})
    assert facts == {"class_names": ["a", "b"]}
    assert [(r["regime"], r["seed"]) for r in rows] == [
        ("real only", 0), ("fill", 0), ("fill (filtered)", 0), ("real only", 1), ("fill", 1), ("fill (filtered)", 1)]
    assert [r["balanced_accuracy"] for r in rows if r["regime"] == "real only"] == [0.70, 0.72]
    assert gap == pytest.approx(0.02)


def test_utility_core_runs_only_the_deciding_regimes(monkeypatch):
    """run.py --core: the full preset's augment settings, then CORE, compose to real only, rare x0.5 and x1,
    fill and fill w=0.25 (CORE's pretrain_epochs=0 wins over the preset's 3)."""
    from hydra import compose, initialize_config_dir

    from ganlab.utility.regimes import build_regimes

    utility_scripts(monkeypatch)
    from run import CORE, PRESETS

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("augment", overrides=["synthetic=x", *PRESETS["full"]["augment"], *CORE])
    regimes = build_regimes(ratios=list(cfg.ratios), rare_ratios=list(cfg.rare_ratios), real_only=cfg.real_only,
                            oversampled=cfg.oversampled, weighted=dict(cfg.weighted), tstr=cfg.tstr,
                            pretrain_epochs=cfg.pretrain_epochs)
    assert [r.name for r in regimes] == ["real only", "real + synthetic rare x0.5", "real + synthetic rare x1",
                                         "real + synthetic fill", "real + synthetic fill (w=0.25)"]
