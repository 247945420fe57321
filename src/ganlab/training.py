"""What `python -m ganlab.train` builds and fits: the DataModule, the GAN LightningModule, callbacks, logger
and Trainer from a composed config. Imported by the entry point only once the command line has been
checked, so a mistyped key or value is reported without first loading Lightning."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from ganlab.callbacks.checkpoint import WANDB_ID_KEY, find_last_checkpoint
from ganlab.callbacks.recipe import Recipe, data_facts
from ganlab.callbacks.throughput import Throughput
from ganlab.checkpoint import check_same_data, check_same_model, read_checkpoint
from ganlab.cli import occupied_message
from ganlab.config import to_plain
from ganlab.errors import GanlabError, error_summary
from ganlab.models.lr_decay import no_budget
from ganlab.strategy import is_rank_zero  # also registers the gan_ddp strategy name

log = logging.getLogger("ganlab.train")
# Lightning 2.6 on torch 2.14 warns about its own use of a deprecated torch API on every run.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def route_lightning_logs() -> None:
    """Send Lightning's messages through the handlers Hydra set up (console + train.log), once each.
    `import lightning` gives its loggers their own console handler and stops them propagating when it
    runs before any logging is configured, and the top "lightning" logger a handler either way."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    return [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]


def build_metrics(cfg: DictConfig) -> list[L.Callback]:
    """The metrics callback, checked at start-up (its suite checks the Inception weights when built:
    one line, then stop or train without the families that need them). Placed before the other
    callbacks, whose plots read what it writes."""
    mcfg = cfg.get("metrics")
    # metrics=none under a preset that tunes metrics.every_n_epochs leaves those keys but no _target_
    return [instantiate(mcfg)] if mcfg and mcfg.get("_target_") else []


def build_logger(cfg: DictConfig, resumed: dict | None = None):
    if not cfg.get("logger"):
        return False
    run_id = (resumed or {}).get(WANDB_ID_KEY)
    if run_id and str(cfg.logger.get("_target_", "")).endswith("WandbLogger") and not cfg.logger.get("id"):
        return instantiate(cfg.logger, id=run_id, resume="allow")  # log on into the interrupted run
    return instantiate(cfg.logger)


def resolve_resume(cfg: DictConfig, callbacks: list[L.Callback]) -> tuple[str | None, dict | None]:
    """(path, contents) of the checkpoint to resume, checked against this run's model config;
    (None, None) for a fresh run. `ckpt_path=last` with no last.ckpt yet starts fresh, so a job
    script can always pass it (pre-emption requeue)."""
    requested = cfg.get("ckpt_path")
    dirs = [Path(cb.dirpath) for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    dirs = list(dict.fromkeys(dirs))  # the epoch and step checkpoints share one directory
    if requested == "last":
        path = find_last_checkpoint(dirs)
        if path is None:
            log.warning("ckpt_path=last: no last.ckpt in %s yet; starting from scratch (to resume a run, give "
                        "its hydra.run.dir too)", [str(d) for d in dirs])
            return None, None
    elif requested:
        path = Path(str(requested)).expanduser()
    else:
        existing = sorted(p.name for d in dirs if d.is_dir() for p in d.glob("*.ckpt"))
        if existing:
            raise GanlabError(occupied_message(dirs[0], existing))
        return None, None
    ckpt = read_checkpoint(path)
    check_same_model(ckpt, to_plain(cfg.model), path)
    log.info("resuming from %s (epoch %s, step %s)", path, ckpt.get("epoch"), ckpt.get("global_step"))
    return str(path), ckpt


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN: AVX512-BF16 or AMX); without it bf16 autocast
    is emulated and slower than float32."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(cfg: DictConfig) -> None:
    """bf16 autocast on a CPU without bf16 units: one warning line, then float32 (the same run, slower)."""
    precision, accelerator = str(cfg.trainer.get("precision")), str(cfg.trainer.get("accelerator"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision.startswith("bf16") and on_cpu and not cpu_has_bf16():
        log.warning("trainer.precision=%s: this CPU has no bf16 units (AVX512-BF16/AMX), where bf16 is "
                    "slower than float32; training in 32-true instead", precision)
        cfg.trainer.precision = "32-true"


def check_budget(cfg: DictConfig) -> None:
    """A schedule over the training budget needs one: refused before any data or file is made."""
    start, t = cfg.model.get("lr_decay_start"), cfg.trainer
    budgets = ((t.get("max_steps") or -1) > 0, (t.get("max_epochs") or -1) > 0, t.get("max_time") is not None)
    if start is not None and not any(budgets):
        raise GanlabError(no_budget(start))


def build_trainer(cfg: DictConfig, callbacks, logger) -> L.Trainer:
    strategy = cfg.trainer.get("strategy")
    if isinstance(strategy, str) and strategy.startswith("ddp") and "find_unused_parameters_true" not in strategy:
        raise GanlabError(f"trainer.strategy={strategy}: Lightning's DDP without find_unused_parameters fails at a "
                          "GAN's first step (G's step leaves D's parameters unused); leave trainer.strategy as it is "
                          "(ganlab's strategy trains data-parallel with trainer.devices=N, see conf/trainer/ddp.yaml)")
    try:
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    except InstantiationException as exc:
        if not isinstance(exc.__cause__, (MisconfigurationException, TypeError, ValueError, ImportError)):
            raise
        message = " ".join(str(exc.__cause__).split())
        # the key the message is about, where it names one (Lightning says "Precision", "Timer(duration=...)")
        named = {"precision": "precision", "timer(duration": "max_time", "strategy": "strategy"}
        key = next((k for word, k in named.items() if word in message.lower() and k in cfg.trainer), None)
        if key is not None:
            raise GanlabError(f"trainer.{key}={cfg.trainer.get(key)}: {message}") from exc
        raise GanlabError(f"trainer.accelerator={cfg.trainer.get('accelerator')} "
                          f"trainer.devices={cfg.trainer.get('devices')}: {message} "
                          f"(this machine: {torch.cuda.device_count()} CUDA GPU(s), {os.cpu_count()} CPU cores; "
                          "trainer.accelerator=auto uses what is there)") from exc
    if isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > (os.cpu_count() or 1):
        raise GanlabError(f"trainer.devices={cfg.trainer.get('devices')} CPU processes but this machine has "
                          f"{os.cpu_count()} CPU cores; use at most that many (or trainer.accelerator=gpu)")
    return trainer


def train(cfg: DictConfig) -> dict:
    """Fit the run that cfg describes (its types already checked); the final logged values."""
    route_lightning_logs()
    check_precision(cfg)
    check_budget(cfg)
    L.seed_everything(cfg.seed, workers=True)
    metric_callbacks = build_metrics(cfg)
    model = instantiate(cfg.model)  # cheap: a bad model setting fails before the data is rendered
    datamodule = instantiate(cfg.data)
    if is_rank_zero():
        # The launching process reads the data before anything is written, so bad input fails fast;
        # processes that DDP starts later find it prepared and only load it.
        datamodule.prepare_data()
        datamodule.setup("fit")
        log.info("data: %s", data_facts(datamodule))
        check_class_count(cfg, datamodule)
    callbacks = metric_callbacks + build_callbacks(cfg) + [Recipe(to_plain(cfg.model)), Throughput()]
    ckpt_path, resumed = resolve_resume(cfg, callbacks)
    if resumed is not None and is_rank_zero():
        check_same_data(resumed, data_facts(datamodule), ckpt_path)
    if is_rank_zero():  # extra DDP processes share this run dir; a refused start leaves an earlier run's record
        OmegaConf.save(cfg, f"{cfg.paths.output_dir}/config_resolved.yaml", resolve=True)
    logger = build_logger(cfg, resumed)
    trainer = build_trainer(cfg, callbacks, logger)
    if is_rank_zero():
        check_batches_per_process(datamodule, trainer.world_size)
    if logger:
        start_logging(logger, to_plain(cfg))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.global_step == 0:
        raise GanlabError("training ran no step (no training batches reached the model); nothing was trained")
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def start_logging(logger, hyperparams: dict) -> None:
    """The logger's first write, which starts a W&B run: an online run that cannot reach W&B (no network, a bad
    key) becomes one line naming the way to log offline, not a traceback."""
    try:
        logger.log_hyperparams(hyperparams)
    except Exception as exc:
        if not type(exc).__module__.startswith("wandb"):
            raise
        import wandb

        wandb.teardown()  # its closing lines now, so that the error line is the last
        raise GanlabError(f"W&B could not start an online run ({error_summary(exc)}); WANDB_MODE=offline logs to "
                          "files (upload them later with `wandb sync`), or choose logger=csv") from exc


def count_classes(data_cfg: DictConfig) -> int:
    """The class count of data whose config leaves it to the data (data.num_classes null, e.g. data=folder)."""
    datamodule = instantiate(data_cfg)
    if is_rank_zero():
        datamodule.prepare_data()
    datamodule.setup("fit")  # DDP's later processes: the data is prepared by then
    return datamodule.num_classes


def check_class_count(cfg: DictConfig, datamodule) -> None:
    """A conditional model's class count set apart from the data's (model.num_classes=...) must match it."""
    built = cfg.model.get("num_classes") or 0
    if built and built != datamodule.num_classes:
        raise GanlabError(f"model.num_classes={built} but the data has {datamodule.num_classes} classes "
                          f"{list(datamodule.class_names)}; "
                          "leave model.num_classes to the data (${data.num_classes})")


def check_batches_per_process(datamodule, world_size: int) -> None:
    """Each DDP process draws len(epoch) / world_size images and drops its last incomplete batch, so it needs
    at least one batch of its own (the datamodule's own check counts the whole training set)."""
    batch_size = getattr(datamodule, "batch_size", None)
    if world_size <= 1 or not batch_size:
        return
    epoch = len(datamodule.train_dataloader().dataset)  # with balanced sampling's repeats
    if epoch // world_size < batch_size:
        raise GanlabError(f"{epoch} training images per epoch split over trainer.devices={world_size} processes "
                          f"give each {epoch // world_size}, fewer than one batch (data.batch_size={batch_size}); "
                          "lower data.batch_size or trainer.devices")
