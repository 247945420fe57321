"""Training throughput of ganlab's DCGAN against a plain PyTorch loop doing the same work.

    make bench                                  # CPU: DCGAN-64 (ngf=ndf=64), batch 128
    make bench ARGS="--device cuda"             # + ganlab with the GPU fast path (trainer=gpu settings)
    make bench ARGS="--width 32 --batch 64 --steps 10"   # quicker

Both sides get the same networks (ganlab.models.dcgan), batch, optimiser (Adam 2e-4, betas 0.5/0.999),
loss (BCE on logits), EMA of G (decay 0.999 with ganlab's warm-up), D/G alternation (D step on
fakes made under no_grad, then a G step with D's parameters frozen), in-memory uint8 data through a
shuffling DataLoader and conversion to [-1, 1] on the device. ganlab runs through the real GANModule,
GANStrategy and Lightning Trainer with the callbacks `python -m ganlab.train` gives every run, built the
same way (ganlab.training.build_metrics / build_callbacks on the composed train config): the metrics
callback at its normal cadence (its real-data side is prepared at fit start, its evaluation at the end
of the epoch: both outside the timed window), conf/callbacks/default.yaml (checkpoints, sample grid,
plots, RNG reseeding), the recipe and throughput logging, with the progress bar and a CSV logger.
`--no-metrics` leaves the metrics callback out (quicker; it does no per-batch work). Each measurement
runs in a fresh process (so peak memory is its own), variants alternate over `--repeats` rounds, and
the first `--warmup` batches are excluded. Results (median over rounds):
experiments/results/bench_throughput_<device>.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_data(args) -> tuple[torch.Tensor, torch.Tensor]:
    n = (args.warmup + args.steps) * args.batch
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, args.size, args.size), dtype=torch.uint8, generator=g)
    return images, torch.zeros(n, dtype=torch.long)


def networks(args):
    from ganlab.models.dcgan import DCGANDiscriminator, DCGANGenerator

    torch.manual_seed(0)
    return (DCGANGenerator(latent_dim=100, image_size=args.size, channels=1, width=args.width),
            DCGANDiscriminator(image_size=args.size, channels=1, width=args.width))


class Window:
    """Wall time from the end of batch `warmup` to the end of batch `warmup + steps` (device synced)."""

    def __init__(self, args, device: torch.device):
        self.first, self.last, self.device = args.warmup, args.warmup + args.steps, device
        self.t0 = self.t1 = self.c0 = self.c1 = None

    def batch_done(self, n_done: int) -> None:
        if n_done in (self.first, self.last):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            if n_done == self.first:
                self.t0, self.c0 = time.perf_counter(), time.process_time()
            else:
                self.t1, self.c1 = time.perf_counter(), time.process_time()


def run_plain(args) -> dict:
    from torch.utils.data import DataLoader, TensorDataset

    device = torch.device(args.device)
    G, D = (m.to(device) for m in networks(args))
    ema = [p.detach().clone() for p in [*G.parameters(), *G.buffers()]]
    ema_n = torch.zeros((), device=device)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(TensorDataset(*make_data(args)), batch_size=args.batch, shuffle=True, drop_last=True)
    window = Window(args, device)
    reset_peak(device)
    for i, (x, _) in enumerate(loader):
        real = x.to(device).float().div_(127.5).sub_(1.0)
        with torch.no_grad():
            fake = G(torch.randn(args.batch, 100, device=device))
        real_logits, fake_logits = D(real), D(fake)
        loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        fake_logits = D(G(torch.randn(args.batch, 100, device=device)))
        loss_g = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        with torch.no_grad():
            current = [*G.parameters(), *G.buffers()]
            floats = [(e, c) for e, c in zip(ema, current) if e.is_floating_point()]
            decay = torch.clamp((1.0 + ema_n) / (10.0 + ema_n), max=0.999)
            torch._foreach_lerp_([e for e, _ in floats], [c for _, c in floats], 1.0 - decay)
            ema_n += 1
        window.batch_done(i + 1)
    return result(args, window, device)


def normal_run_callbacks(args, out_dir: str) -> list:
    """The callbacks ganlab.train builds for a run (metrics first, then conf/callbacks/default.yaml, the
    recipe and throughput), from the composed train config, writing into `out_dir`."""
    from hydra import compose, initialize_config_dir

    from ganlab.callbacks.recipe import Recipe
    from ganlab.callbacks.throughput import Throughput
    from ganlab.cli import CONFIG_DIR
    from ganlab.config import to_plain
    from ganlab.training import build_callbacks, build_metrics

    overrides = [f"paths.output_dir={out_dir}", f"paths.data_dir={out_dir}/data", f"data.image_size={args.size}",
                 f"model.generator.width={args.width}", f"model.discriminator.width={args.width}"]
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides + (["metrics=none"] if args.no_metrics else []))
    return build_metrics(cfg) + build_callbacks(cfg) + [Recipe(to_plain(cfg.model)), Throughput()]


def run_ganlab(args, fast: bool = False) -> dict:
    import lightning as L

    from ganlab.data.folder import ImageFolderDataModule, UInt8ImageDataset
    from ganlab.models.gan_module import GANModule
    from ganlab.strategy import GANStrategy

    device = torch.device(args.device)
    G, D = networks(args)
    model = GANModule(G, D, lr_g=2e-4, lr_d=2e-4, diffaugment=None, ema_decay=0.999)
    data = ImageFolderDataModule(root="(in memory)", image_size=args.size, batch_size=args.batch)
    data.datasets, data.class_names = {"train": UInt8ImageDataset(*make_data(args))}, ["all"]
    window = Window(args, device)

    class Timer(L.Callback):  # last in the list: a batch's time includes every other callback's hooks
        def on_train_start(self, trainer, pl_module):
            reset_peak(device)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            window.batch_done(batch_idx + 1)

    strategy = GANStrategy(channels_last=fast, data_on_device=fast, compile=args.compile if fast else False)
    with tempfile.TemporaryDirectory() as tmp:
        callbacks = normal_run_callbacks(args, tmp) + [Timer()]
        trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, strategy=strategy,
                            precision="bf16-mixed" if fast else "32-true", max_epochs=1,
                            limit_train_batches=args.warmup + args.steps, log_every_n_steps=10,
                            logger=L.pytorch.loggers.CSVLogger(tmp), callbacks=callbacks,
                            enable_progress_bar=True, enable_model_summary=False, default_root_dir=tmp,
                            num_sanity_val_steps=0)
        trainer.fit(model, datamodule=data)
        assert (Path(tmp) / "checkpoints" / "last.ckpt").is_file()
    out = result(args, window, device)
    out["callbacks"] = ", ".join(type(cb).__name__ for cb in trainer.callbacks)
    return out


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def result(args, window: Window, device: torch.device) -> dict:
    seconds, images = window.t1 - window.t0, args.steps * args.batch
    out = {"images_per_sec": images / seconds, "seconds": seconds,
           "images_per_cpu_sec": images / (window.c1 - window.c0),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _child(variant: str, args, queue) -> None:
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        run = {"plain": run_plain, "ganlab": run_ganlab, "ganlab_fast": lambda a: run_ganlab(a, fast=True)}[variant]
        queue.put(run(args))
    except BaseException as exc:  # report, do not hang the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def measure(variant: str, args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(variant, args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    if "error" in out:
        raise SystemExit(f"{variant}: {out['error']}")
    return out


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def processor() -> str:
    """The CPU's model name and whether it has bf16 units: the machines runs land on differ (the same 10-min
    quality preset trained 346 kimg on one 2-core machine and 153 on another; the demo trains in float32 on a CPU
    without bf16 units, at about half the speed), so records say which."""
    from ganlab.training import cpu_has_bf16  # imported here: it loads Lightning

    return f"{cpu_name()}{', avx512_bf16' if cpu_has_bf16() else ''}"


def summarise(args, rounds: dict[str, list[dict]], load: tuple) -> dict:
    median = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "callbacks"}
              for v, rs in rounds.items()}
    plain = median["plain"]["images_per_sec"]
    return {
        "command": "python " + shlex.join(sys.argv), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "load_average_before_after": load, "settings": vars(args), "median": median, "rounds": rounds,
        "ganlab_callbacks": rounds["ganlab"][0]["callbacks"],
        "ratio_vs_plain": {v: m["images_per_sec"] / plain for v, m in median.items() if v != "plain"},
        "cpu_time_ratio_vs_plain": {v: m["images_per_cpu_sec"] / median["plain"]["images_per_cpu_sec"]
                                    for v, m in median.items() if v != "plain"},
    }


def markdown(summary: dict) -> str:
    s = summary["settings"]
    lines = [f"# Training throughput: ganlab vs plain PyTorch ({s['device'].upper()})", "",
             f"`{summary['command']}` — {summary['date']}, {summary['device']}, {summary['cpu_count']} CPUs, "
             f"torch {summary['torch']}; load average before/after {summary['load_average_before_after']}.", "",
             f"DCGAN {s['size']} px, width {s['width']}, batch {s['batch']}; {s['steps']} timed batches after "
             f"{s['warmup']} warm-up batches; median of {s['repeats']} alternating rounds, each in a fresh process "
             f"with {int(next(iter(summary['median'].values()))['threads'])} torch thread(s).", "",
             f"ganlab's callbacks (Trainer order): {summary['ganlab_callbacks']}.", "",
             "| variant | images/s | sec/kimg | ratio vs plain | images per CPU-second | CPU-time ratio "
             "| peak RSS (MB) | peak CUDA (MB) |", "|---|---|---|---|---|---|---|---|"]
    for v, m in summary["median"].items():
        ratio, cpu_ratio = summary["ratio_vs_plain"].get(v, 1.0), summary["cpu_time_ratio_vs_plain"].get(v, 1.0)
        lines.append(f"| {v} | {m['images_per_sec']:.1f} | {1000 / m['images_per_sec']:.1f} | {ratio:.3f} "
                     f"| {m['images_per_cpu_sec']:.1f} | {cpu_ratio:.3f} | {m['peak_rss_mb']:.0f} "
                     f"| {m.get('peak_cuda_mb', float('nan')):.0f} |")
    if s.get("note"):
        lines += ["", f"Note: {s['note']}"]
    lines += ["", "Wall-clock images/s is the result on a quiet machine. On a shared machine the CPU-time ratio "
              "(images per CPU-second of the process, all its threads) is the steadier comparison; with one "
              "thread it measures the work each loop does, whatever share of the cores it got."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--width", type=int, default=64, help="ngf = ndf")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3, help="batches excluded from the timing (>= 1)")
    p.add_argument("--steps", type=int, default=15, help="timed batches")
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds; the median is reported")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads per process (0: torch's default)")
    p.add_argument("--compile", action="store_true", help="GPU fast path also uses torch.compile")
    p.add_argument("--no-metrics", action="store_true", help="leave the metrics callback out (quicker)")
    p.add_argument("--note", default="", help="a line for the result file, e.g. what else ran on the machine")
    p.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = p.parse_args(argv)
    args.warmup = max(args.warmup, 1)
    variants = ["plain", "ganlab"] + (["ganlab_fast"] if args.device == "cuda" else [])
    load_before = os.getloadavg()
    rounds: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            rounds[v].append(measure(v, args))
            m = rounds[v][-1]
            print(f"round {r + 1}/{args.repeats} {v:12s} {m['images_per_sec']:8.1f} images/s "
                  f"{m['images_per_cpu_sec']:8.1f} images/CPU-s", flush=True)
    load = tuple(tuple(round(x, 2) for x in avg) for avg in (load_before, os.getloadavg()))
    summary = summarise(args, rounds, load)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_throughput_{args.device}"
    summary["settings"]["out"] = str(args.out)
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(summary))
    print(markdown(summary))
    for v, ratio in summary["ratio_vs_plain"].items():
        print(f"ratio {v}/plain: {ratio:.3f} (wall clock), {summary['cpu_time_ratio_vs_plain'][v]:.3f} (CPU time)")
    return summary


if __name__ == "__main__":
    main()
