"""Training curves as PNGs in `<run dir>/plots/`: G/D losses, D accuracy on real and fake and its
outputs D(x), D(G(z)) per step, and the sample-quality metrics per epoch (read from the metrics
callback's `metrics_history.jsonl`, whose records name each metric's panel and the metric it is the
real-data reference of: no list of metrics here). Redrawn after each metric evaluation and at the end
of training; rank 0. Matplotlib's object API with the Agg canvas: no display, no global backend switch."""
from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

STEP_KEYS = ("train/loss_d", "train/loss_g", "train/d_acc_real", "train/d_acc_fake", "train/d_real", "train/d_fake")
MAX_POINTS = 20_000  # per series kept in memory and checkpoints; older points are thinned
MAX_PENDING = 1000  # steps held on the device at most between two reads (with log_every_n_steps=0 or large)


def metric_panels(evaluations: list[dict]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """({panel title: metric names}, {reference name: the metric it belongs to}) from what the metrics
    reported, in first-reported order (a metric without a panel is not drawn)."""
    panels: dict[str, list[str]] = {}
    references: dict[str, str] = {}
    for evaluation in evaluations:
        for name, record in evaluation["metrics"].items():
            panel = record.get("panel")
            if panel and name not in panels.setdefault(panel, []):
                panels[panel].append(name)
            if record.get("reference"):
                references[name] = record["reference"]
    return panels, references


def smooth(values: list[float], alpha: float = 0.9) -> list[float]:
    """Exponential moving average, debiased (no pull towards the first value)."""
    out, avg = [], 0.0
    for t, v in enumerate(values, start=1):
        avg = alpha * avg + (1 - alpha) * v
        out.append(avg / (1 - alpha ** t))
    return out


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


class TrainingPlots(L.Callback):
    def __init__(self, dirname: str = "plots", history_file: str = "metrics_history.jsonl", smoothing: float = 0.9):
        self.dirname, self.history_file, self.smoothing = dirname, history_file, smoothing
        self.series: dict[str, list[tuple[int, float]]] = {k: [] for k in STEP_KEYS}
        self.evaluations_seen = 0
        self._pending: list[tuple[int, tuple[str, ...], torch.Tensor]] = []  # (step, keys, values on the device)

    # ------------------------------------------------------------------ collecting
    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Every step's values stay on the device; they are read back in one copy when Lightning logs
        # (trainer.log_every_n_steps), never once per batch (a host sync stalls a GPU).
        if not trainer.is_global_zero:
            return
        found = {k: v for k, v in trainer.callback_metrics.items() if k in self.series}
        if found:
            values = torch.stack([torch.as_tensor(v).detach().float().reshape(()) for v in found.values()])
            self._pending.append((trainer.global_step, tuple(found), values))
        if trainer._logger_connector.should_update_logs or len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        """Move the values recorded on the device since the last flush into the series (one host copy)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        values = torch.stack([torch.nn.functional.pad(v, (0, len(self.series) - len(v))) for _, _, v in pending])
        for (step, keys, _), row in zip(pending, values.tolist()):
            for key, value in zip(keys, row):
                points = self.series[key]
                points.append((step, value))
                if len(points) > MAX_POINTS:
                    self.series[key] = points[::2]

    def state_dict(self) -> dict:
        self.flush()
        return {"series": {k: [list(p) for p in v] for k, v in self.series.items()}}

    def load_state_dict(self, state_dict: dict) -> None:
        for key, points in state_dict.get("series", {}).items():
            self.series[key] = [tuple(p) for p in points]

    # ------------------------------------------------------------------ drawing
    def evaluations(self, trainer: L.Trainer) -> list[dict]:
        path = Path(trainer.default_root_dir) / self.history_file
        if not path.is_file():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("event") == "evaluation"]

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.is_global_zero:
            evaluations = self.evaluations(trainer)
            if len(evaluations) != self.evaluations_seen:
                self.draw(trainer, evaluations)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.draw(trainer, self.evaluations(trainer))

    def draw(self, trainer: L.Trainer, evaluations: list[dict]) -> None:
        self.flush()
        self.evaluations_seen = len(evaluations)
        out = Path(trainer.default_root_dir) / self.dirname
        out.mkdir(parents=True, exist_ok=True)
        if any(self.series.values()):
            self.draw_steps(out / "losses.png", [("losses", ("train/loss_d", "train/loss_g"))])
            self.draw_steps(out / "discriminator.png", [("D accuracy", ("train/d_acc_real", "train/d_acc_fake")),
                                                         ("D output", ("train/d_real", "train/d_fake"))])
        if evaluations:
            self.draw_metrics(out / "metrics.png", evaluations)

    def draw_steps(self, path: Path, panels: list[tuple[str, tuple[str, ...]]]) -> None:
        fig = Figure(figsize=(6.5 * len(panels), 3.8))
        for i, (title, keys) in enumerate(panels):
            ax = fig.add_subplot(1, len(panels), i + 1)
            for n, key in enumerate(keys):
                if not self.series[key]:
                    continue
                steps, values = zip(*self.series[key])
                color = f"C{n}"
                ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(steps, smooth(list(values), self.smoothing), color=color, label=key.split("/", 1)[1])
            ax.set(title=title, xlabel="step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=8)
        _save(fig, path)

    def draw_metrics(self, path: Path, evaluations: list[dict]) -> None:
        panels, references = metric_panels(evaluations)
        cols = min(3, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig = Figure(figsize=(5.2 * cols, 3.6 * rows))
        for i, (title, keys) in enumerate(panels.items()):
            ax = fig.add_subplot(rows, cols, i + 1)
            bases = [k for k in keys if k not in references]
            for key in keys:
                points = [(e["epoch"] + 1, e["metrics"][key]) for e in evaluations if key in e["metrics"]]
                epochs = [p[0] for p in points]
                values = [math.nan if p[1]["value"] is None else p[1]["value"] for p in points]
                reference = key in references
                base = references.get(key, key)
                color = f"C{bases.index(base) if base in bases else len(bases)}"
                ax.plot(epochs, values, "--" if reference else "-o", markersize=3, color=color,
                        label=key.split("/", 1)[1])
                cis = [p[1].get("ci") for p in points]
                if not reference and cis and all(cis):
                    ax.fill_between(epochs, [c[0] for c in cis], [c[1] for c in cis], color=color, alpha=0.15)
            ax.set(title=title, xlabel="epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=7)
        _save(fig, path)
