"""Adding a metric is one file plus one YAML entry: a toy family written into the test's directory,
put on the path and listed under `metrics.families`, is logged, written to metrics_history.jsonl,
plotted and summarised by a multirun, with no other change anywhere."""
from __future__ import annotations

import csv
import json
import os

import pytest

from conftest import TINY, assert_ok
from ganlab.callbacks.plots import metric_panels

TOY_METRIC = '''
from ganlab.metrics.protocol import Family
from ganlab.metrics.report import Result


class Brightness(Family):
    fields = ("mean",)

    def prepare(self, ctx):
        self.real = ctx.ref_images.float().div(127.5).sub(1).mean(dim=(1, 2, 3))

    def update(self, batch):
        return {"mean": batch.images.mean(dim=(1, 2, 3))}

    def results(self, samples):
        m = samples["mean"]
        return [Result("metrics/brightness", float(m.mean()), len(m), panel="brightness", headline=True),
                Result("metrics/brightness_real", float(self.real.mean()), n_real=len(self.real),
                       panel="brightness", reference="metrics/brightness")]
'''

pytestmark = pytest.mark.slow


def test_a_toy_metric_is_logged_plotted_and_summarised(run_cli, cli_env, tmp_path):
    (tmp_path / "toy_metric.py").write_text(TOY_METRIC)
    env = {**cli_env, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), cli_env.get("PYTHONPATH")]))}
    sweep = tmp_path / "sweep"
    only_toy = [f"metrics.families.{name}=null" for name in ("domain", "fd_spaces", "prdc", "ssim", "conditional",
                                                                     "discriminator")]
    result = run_cli("ganlab.train", "-m", *TINY, "seed=1,2", "logger=csv", "metrics=fast", *only_toy,
                     "+metrics.families.brightness={_target_:toy_metric.Brightness}", f"hydra.sweep.dir={sweep}",
                     env=env)
    assert_ok(result)
    for job in ("0", "1"):
        run_dir = sweep / job
        records = [json.loads(line) for line in (run_dir / "metrics_history.jsonl").read_text().splitlines()]
        (prepare,) = [r for r in records if r["event"] == "prepare"]
        evaluations = [r for r in records if r["event"] == "evaluation"]
        assert prepare["settings"]["families"] == ["brightness"] and "classifier" not in prepare["settings"]
        toy = evaluations[-1]["metrics"]["metrics/brightness"]
        assert -1 <= toy["value"] <= 1 and toy["n_fake"] == 64 and toy["headline"]
        panels, references = metric_panels(evaluations)
        assert panels == {"brightness": ["metrics/brightness", "metrics/brightness_real"]}
        assert references == {"metrics/brightness_real": "metrics/brightness"}
        assert (run_dir / "plots" / "metrics.png").stat().st_size > 5_000
        (log,) = run_dir.glob("csv/version_*/metrics.csv")
        assert any(row.get("metrics/brightness") for row in csv.DictReader(log.open()))
    summary = (sweep / "summary.md").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| config"))
    assert "metrics/brightness" in header and "metrics/brightness_real" not in header
    (row,) = csv.DictReader(open(sweep / "summary.csv"))
    assert row["n"] == "2" and float(row["metrics/brightness_std"]) >= 0
