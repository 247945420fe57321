"""The metrics callback and the plots in real training runs (CLI): cadence, logged names, history,
plots, checkpoints without metric networks, Inception skipped in one line, and 2-process DDP."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY, assert_ok
from ganlab.callbacks.plots import metric_panels

pytestmark = pytest.mark.slow
FAST = [*TINY, "metrics=fast", "logger=csv"]


def history(run_dir: Path) -> tuple[list[dict], list[dict]]:
    records = [json.loads(line) for line in (run_dir / "metrics_history.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "prepare"], [r for r in records if r["event"] == "evaluation"]


def csv_rows(run_dir: Path, key: str) -> list[dict]:
    (path,) = run_dir.glob("csv/version_*/metrics.csv")
    with path.open() as fh:
        return [row for row in csv.DictReader(fh) if row.get(key)]


def test_cdcgan_run_logs_metrics_each_epoch_and_skips_missing_inception(run_cli, cli_env, tmp_path):
    run_dir = tmp_path / "run"
    env = {**cli_env, "TORCH_HOME": str(tmp_path / "empty_torch_home")}
    result = run_cli("ganlab.train", *FAST, "model=cdcgan", "trainer.max_epochs=3", "metrics.best_checkpoint=best.ckpt",
                     "metrics.families.inception={_target_:ganlab.metrics.families.inception.InceptionMetrics}",
                     f"hydra.run.dir={run_dir}", env=env)
    assert_ok(result)
    output = result.stdout + result.stderr
    assert sum("Inception weights not found" in line for line in output.splitlines()) == 1
    assert "FID/KID/IS are skipped" in output

    prepares, evaluations = history(run_dir)
    assert len(prepares) == 1 and [e["epoch"] for e in evaluations] == [0, 1, 2]
    for record in evaluations:
        m = record["metrics"]
        assert m["metrics/n_fake"]["value"] == 64 and m["metrics/fd_domain"]["n_fake"] == 64
        for name in ("metrics/fd_domain", "metrics/kid_domain", "metrics/precision", "metrics/coverage",
                     "ssim/nearest_real", "ssim/diversity", "ssim/diversity_real", "metrics/cond_acc",
                     "metrics/cond_acc_real"):
            assert math.isfinite(m[name]["value"]), name
        assert m["metrics/fd_domain"]["ci"] is not None and "metrics/fid" not in m
        # per-class figures on a set of their own: metrics.families.conditional.per_class=16 of every class
        assert [v["value"] for k, v in m.items() if k.startswith("metrics/n_fake/")] == [16] * 4
        assert m["metrics/cond_acc_real/ModerateDemented"]["n_real"] > 0
    settings = prepares[0]["settings"]
    assert 0.0 <= settings["classifier"]["holdout_balanced_accuracy"] <= 1.0 and "inception" not in settings["families"]
    # the run's own D against the held-out split, per class on 16 generated images of each (metrics=fast)
    assert settings["discriminator"] == {"per_class": 16, "train_per_class": 64}
    overfit = [v for e in evaluations for k, v in e["metrics"].items() if k.startswith("metrics/d_overfit/")]
    assert overfit and all(v["n_fake"] == 16 and math.isfinite(v["value"]) for v in overfit)
    assert set(settings["classifier"]["holdout_per_class"]) == {"NonDemented", "VeryMildDemented", "MildDemented",
                                                                "ModerateDemented"}
    weak = settings["classifier"]["weak_classes"]  # 24 images per class: < 10 held-out each, all flagged
    assert len(weak) == 4 and sum("per-class figures for class" in line for line in output.splitlines()) == 4

    rows = csv_rows(run_dir, "metrics/fd_domain")
    assert len(rows) == 3 and all(float(r["metrics/n_fake"]) == 64 for r in rows)
    assert {"ssim/nearest_real", "metrics/cond_acc", "metrics/precision", "metrics/eval_seconds"} <= set(rows[0])

    for name in ("losses.png", "discriminator.png", "metrics.png"):
        assert (run_dir / "plots" / name).stat().st_size > 10_000, name
    panels, references = metric_panels(evaluations)
    assert {"conditional accuracy per class", "SSIM", "KID per class (domain)"} <= set(panels)
    assert references["metrics/cond_acc_real/NonDemented"] == "metrics/cond_acc/NonDemented"

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = list(ckpt["state_dict"])
    assert keys and not any(k.startswith(("classifier", "domain", "inception", "suite")) for k in keys)
    # the metrics callback stores only which evaluation was best so far (three numbers), and nothing outside
    # the weights and optimisers may hold a network (RNG states and counters only)
    (state,) = [v for k, v in ckpt.get("callbacks", {}).items() if "MetricsCallback" in k]
    fds = [e["metrics"]["metrics/fd_domain"]["value"] for e in evaluations]
    assert state == {"best": {"value": pytest.approx(min(fds)), "step": evaluations[fds.index(min(fds))]["step"],
                              "epoch": fds.index(min(fds))}}
    # best.ckpt beside last.ckpt: the state of the evaluation with the lowest domain FD, not the last one
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["global_step"] == state["best"]["step"]
    assert "saved" in output and "best.ckpt" in output
    extra = sum(t.numel() for k, v in ckpt.items() if k not in ("state_dict", "optimizer_states")
                for t in tensors(v))
    assert extra < 10_000, extra


def test_two_processes_gather_their_samples_and_agree(run_cli, tmp_path):
    run_dir = tmp_path / "ddp"
    result = run_cli("ganlab.train", *FAST, "model=cdcgan", "trainer.accelerator=cpu", "trainer.devices=2",
                     "metrics.best_checkpoint=best.ckpt", f"hydra.run.dir={run_dir}")
    assert_ok(result)
    prepares, evaluations = history(run_dir)
    assert len(prepares) == 1 and len(evaluations) == 1  # rank 0 alone writes
    metrics = evaluations[0]["metrics"]
    # each process generated 32 images; the numbers come from all 64
    assert metrics["metrics/n_fake"]["value"] == 64 and metrics["ssim/nearest_real"]["n_fake"] == 16
    # the per-class set (16 of every class) is split over the processes too, and gathered
    assert [v["value"] for k, v in metrics.items() if k.startswith("metrics/n_fake/")] == [16] * 4
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()  # both processes took part in its save
    (row,) = csv_rows(run_dir, "metrics/fd_domain")
    # the logged value is the mean over both processes: equal to rank 0's only if both computed the same
    for name in ("metrics/fd_domain", "metrics/precision", "ssim/nearest_real", "ssim/diversity", "metrics/cond_acc"):
        assert float(row[name]) == pytest.approx(metrics[name]["value"], rel=1e-5, abs=1e-9), name


def tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from tensors(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from tensors(value)


class SavingTrainer:
    """What MetricsCallback.keep_best reads of a Trainer, recording the saves."""

    def __init__(self, root: Path):
        self.default_root_dir, self.checkpoint_callbacks, self.is_global_zero = str(root), [], True
        self.global_step, self.current_epoch, self.saved = 0, 0, []

    def save_checkpoint(self, path, weights_only=None):
        self.saved.append((Path(path), self.global_step))


def test_best_checkpoint_is_saved_only_when_the_monitored_metric_improves(tmp_path, caplog):
    from ganlab.callbacks.metrics import MetricsCallback
    from ganlab.errors import GanlabError
    from ganlab.metrics.families.domain import DomainDistance

    cb = MetricsCallback(families={"domain": DomainDistance()}, best_checkpoint="best.ckpt")
    trainer = SavingTrainer(tmp_path)
    for step, fd in zip((10, 20, 30, 40), (3.0, 1.0, 2.0, 1.0)):  # a tie is not an improvement
        trainer.global_step, trainer.current_epoch = step, step // 10
        cb.keep_best(trainer, {"metrics/fd_domain": fd, "metrics/recall": 0.5})
    assert trainer.saved == [(tmp_path / "checkpoints" / "best.ckpt", 10), (tmp_path / "checkpoints" / "best.ckpt", 20)]
    resumed = MetricsCallback(families={"domain": DomainDistance()}, best_checkpoint="best.ckpt")
    resumed.load_state_dict(cb.state_dict())
    trainer.saved, trainer.global_step = [], 50
    resumed.keep_best(trainer, {"metrics/fd_domain": 1.5})  # worse than the best before the resume
    assert trainer.saved == [] and resumed.best == {"value": 1.0, "step": 20, "epoch": 2}
    off = MetricsCallback(families={"domain": DomainDistance()})  # the default: none kept, no state stored
    off.keep_best(trainer, {"metrics/fd_domain": 0.1})
    assert off.state_dict() == {}
    other = MetricsCallback(families={"domain": DomainDistance()}, best_checkpoint="best.ckpt",
                            best_monitor="metrics/fid")
    with caplog.at_level("WARNING", logger="ganlab.metrics"):
        for _ in range(3):
            other.keep_best(trainer, {"metrics/fd_domain": 0.1})
    assert trainer.saved == []
    assert sum("metrics.best_monitor=metrics/fid is not among" in r.getMessage() for r in caplog.records) == 1
    for bad in ("last.ckpt", "sub/best.ckpt", "best.pt"):
        with pytest.raises(GanlabError, match="metrics.best_checkpoint"):
            MetricsCallback(families={"domain": DomainDistance()}, best_checkpoint=bad)
