"""Multirun helpers: the W&B group every job of one sweep shares, and the summary table written at
the end of a multirun (mean ± std over seeds of each job's final metrics, per configuration).

Each job writes `<job dir>/metrics.json` (ganlab.train); `SweepSummary` is a Hydra callback
(conf/train.yaml `hydra.callbacks`) that reads them after the last job, groups the jobs by their
overrides without `seed=...`, and writes `summary.md` and `summary.csv` into the sweep directory.
The columns of summary.md are the metrics that call themselves headline numbers in the jobs'
metrics_history.jsonl (see ganlab/metrics/report.py), then a few training numbers.
It works for every launcher that waits for its jobs (basic, submitit/SLURM) and for Optuna.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ganlab.sweep")
METRICS_FILE = "metrics.json"
SEED_KEYS = ("seed", "+seed", "++seed")
HISTORY_FILE = "metrics_history.jsonl"  # the metrics callback's default `history_file`
# columns of summary.md after the metrics' headline numbers, when present (summary.csv holds every key)
TRAINING_COLUMNS = ("train/loss_d", "train/loss_g", "perf/images_per_sec_mean")
ARROWS = {"lower": " ↓", "higher": " ↑"}


def sweep_group() -> str | None:
    """For a job of a multirun: a W&B group name from its sweep dir (e.g. `2026-01-31-12-00-00` for
    the default layout multirun/<date>/<time>); None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweep_dir = Path(HydraConfig.get().runtime.output_dir).parent  # <sweep dir>/<job subdir>
    return "-".join(p for p in sweep_dir.parts[-2:] if p not in ("/", ".", ".."))


def config_label(overrides: list[str], empty: str = "(defaults)") -> str:
    """The overrides that define a configuration: all but the seed, sorted; `empty` if none."""
    kept = sorted(o for o in overrides if o.split("=", 1)[0] not in SEED_KEYS)
    return " ".join(kept) or empty


def headline_of(job_dir: Path) -> dict[str, str | None]:
    """{name: "lower"/"higher"/None} of the metrics that the job's last evaluation marked headline, in
    reported order; {} without a metrics history."""
    history = HISTORY_FILE
    config_file = job_dir / ".hydra" / "config.yaml"
    if config_file.is_file():
        history = OmegaConf.select(OmegaConf.load(config_file), "metrics.history_file", default=None) or history
    path = job_dir / history
    last = None
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run
            if record.get("event") == "evaluation":
                last = record
    return {k: v.get("better") for k, v in (last or {}).get("metrics", {}).items() if v.get("headline")}


def read_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One {"dir", "overrides", "config", "seed", "metrics"} per job directory that finished (has
    metrics.json); "config" names the job by its overrides that not all jobs share, seed excluded."""
    jobs = []
    for overrides_file in sorted(Path(sweep_dir).glob("*/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        metrics_file = job_dir / METRICS_FILE
        if not metrics_file.is_file():
            log.warning("sweep summary: %s has no %s (failed or still running); left out", job_dir, METRICS_FILE)
            continue
        overrides = [str(o) for o in OmegaConf.load(overrides_file)]
        seed = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] in SEED_KEYS), None)
        metrics = {k: float(v) for k, v in json.loads(metrics_file.read_text()).items()
                   if isinstance(v, (int, float))}
        jobs.append({"dir": job_dir.name, "overrides": overrides, "seed": seed, "metrics": metrics,
                     "headline": headline_of(job_dir)})
    common = set(common_overrides(jobs))
    for job in jobs:  # a configuration is named by what the sweep varied
        job["config"] = config_label([o for o in job["overrides"] if o not in common],
                                     empty="(shared overrides only)" if common else "(defaults)")
    return jobs


def common_overrides(jobs: list[dict[str, Any]]) -> list[str]:
    return sorted(set.intersection(*(set(j["overrides"]) for j in jobs))) if jobs else []


def aggregate(jobs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(metric names, one row per configuration in first-seen order with n, seeds, mean and std)."""
    names = sorted({k for job in jobs for k in job["metrics"]}, key=lambda k: (not k.startswith("metrics/"), k))
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs:
        row = rows.setdefault(job["config"], {"config": job["config"], "seeds": [], "values": {}})
        row["seeds"].append(job["seed"])
        for k, v in job["metrics"].items():
            row["values"].setdefault(k, []).append(v)
    for row in rows.values():
        row["n"] = len(row["seeds"])
        row["mean"] = {k: statistics.fmean(v) for k, v in row["values"].items()}
        row["std"] = {k: statistics.stdev(v) if len(v) > 1 else math.nan for k, v in row["values"].items()}
    return names, list(rows.values())


def _fmt(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.4g}"


def write_summary(sweep_dir: Path, metrics: list[str] | None = None) -> Path | None:
    """Write summary.csv (every logged key) and summary.md (`metrics`, default: the jobs' headline
    metrics and TRAINING_COLUMNS present, else all) into `sweep_dir`; returns the markdown path (None: no
    finished jobs)."""
    sweep_dir = Path(sweep_dir)
    jobs = read_jobs(sweep_dir)
    if not jobs:
        log.warning("sweep summary: no finished jobs under %s", sweep_dir)
        return None
    names, rows = aggregate(jobs)
    better = {k: v for job in jobs for k, v in job["headline"].items()}
    wanted = list(metrics) if metrics else [n for n in [*better, *TRAINING_COLUMNS] if n in names] or names
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["config", "n", "seeds", *[f"{n}_{s}" for n in names for s in ("mean", "std")]])
        for row in rows:
            writer.writerow([row["config"], row["n"], " ".join(map(str, row["seeds"])),
                             *[row[s].get(n, math.nan) for n in names for s in ("mean", "std")]])
    lines = [f"# Sweep summary: {sweep_dir}", "",
             f"{len(jobs)} finished job(s); final logged value per job, mean ± std over seeds (sample std).",
             f"Overrides shared by all jobs: `{' '.join(common_overrides(jobs)) or '(none)'}`", "",
             "| config | n | " + " | ".join(n + ARROWS.get(better.get(n), "") for n in wanted) + " |",
             "|---|---|" + "---|" * len(wanted)]
    for row in rows:
        cells = [f"{_fmt(row['mean'][n])} ± {_fmt(row['std'][n])}" if n in row["mean"] else "" for n in wanted]
        lines.append(f"| {row['config']} | {row['n']} | " + " | ".join(cells) + " |")
    md = sweep_dir / "summary.md"
    md.write_text("\n".join(lines) + "\n")
    return md


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write the sweep's summary table (see module docstring)."""

    def __init__(self, metrics: list[str] | None = None):
        self.metrics = list(metrics) if metrics else None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_summary(Path(str(config.hydra.sweep.dir)), self.metrics)
        if path is not None:
            log.info("sweep summary: %s", path)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """With the local launcher (jobs one after another, in this process) also after each job: a failed job
        makes Hydra raise before on_multirun_end, and the jobs that finished keep their summary."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        if launcher.endswith("BasicLauncher") and Path(str(config.hydra.sweep.dir)).is_dir():
            write_summary(Path(str(config.hydra.sweep.dir)), self.metrics)
