"""GANStrategy: data-parallel GAN training under manual optimisation, and the GPU fast path.

Lightning's DDPStrategy wraps the whole LightningModule in DistributedDataParallel, whose reducer
expects every parameter to get a gradient in every backward; a GAN's D step leaves G without
gradients (and vice versa), which raises the "unused parameters" error unless
`find_unused_parameters=True` makes DDP traverse the autograd graph after every forward. Like
stylegan2-ada's training loop, this strategy keeps the module unwrapped and averages, right before
each `optimizer.step()`, the gradients of exactly the parameters that optimizer updates: one flat
all-reduce per step, R1/gradient penalties included. Float buffers (BatchNorm running statistics,
spectral-norm vectors, the EMA generator's copies) are averaged once per batch, so every rank holds
identical weights and buffers; `sync_batchnorm=true` (GPUs only) instead normalises with the
statistics of the global batch. Launch, seeding, samplers, barriers and metric reduction stay
Lightning's. With a single process it starts no process group and changes nothing.

Extra ranks are started as `python -m ganlab.train <this job's overrides> hydra.run.dir=<this run
dir> hydra.mode=RUN`: one run directory per job, in multiruns and Optuna sweeps too (Lightning's own
relaunch would repeat the whole sweep in every child). A Trainer with this strategy runs one `fit`
across processes, as ganlab.train does: the process group is destroyed at teardown so that the next
job of a multirun can start its own.

Fast path (trainer=gpu switches it on): `channels_last` memory format, `compile` (true, or a dict of
torch.compile kwargs) of the networks the training step calls, and `data_on_device`: the uint8
training set copied to the device once, batches indexed there (no host-to-device copy per step).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

# Lightning internals this file still relies on (no public API does the job; pinned by the lightning bound
# in pyproject.toml, exercised by tests/test_ddp.py): the script launcher class (its
# `_call_children_scripts`) and DDPStrategy's `_configure_launcher` / `_launcher`, to start extra ranks
# as Hydra jobs; `_layer_sync`, to drop sync_batchnorm on CPU.
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from torch.utils.data import DataLoader, default_collate

NAME = "gan_ddp"
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_RANK_ENV = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def is_rank_zero() -> bool:
    """True in the process that launches training (global rank 0 under torchrun / SLURM too)."""
    return all(os.environ.get(k, "0") in ("0", "") for k in _RANK_ENV)


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


@torch.no_grad()
def unflatten_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    pieces = flat.split([t.numel() for t in tensors])
    torch._foreach_copy_(tensors, [p.view_as(t) for p, t in zip(pieces, tensors)])


@torch.no_grad()
def all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """Average same-dtype tensors over all processes in place, with one all-reduce."""
    flat = flatten(tensors)
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    unflatten_into(flat, tensors)


@torch.no_grad()
def broadcast_from_rank_zero(module: torch.nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers: one broadcast per dtype and device."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in [*module.parameters(), *module.buffers()]:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for tensors in groups.values():
        flat = flatten(tensors)
        dist.broadcast(flat, src=0)
        unflatten_into(flat, tensors)


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average .grad over all processes (parameters without a gradient get zeros, so ranks agree)."""
    if not params or dist.get_world_size() == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    all_reduce_mean([p.grad for p in params])


def config_flags(argv: list[str]) -> list[str]:
    """Hydra's --config-path/--config-name/--config-dir options (with their values) from argv."""
    out, take_next = [], False
    for arg in argv:
        if take_next or arg.split("=", 1)[0] in _CONFIG_FLAGS:
            out.append(arg)
            take_next = not take_next and "=" not in arg
    return out


def script_command() -> list[str]:
    """The command that started this process (`python -m pkg.mod ...` or `python script.py ...`)."""
    import __main__

    if getattr(__main__, "__spec__", None) is None:
        return [sys.executable, os.path.abspath(sys.argv[0]), *sys.argv[1:]]
    return [sys.executable, "-m", __main__.__spec__.name, *sys.argv[1:]]


def hydra_child_command(local_rank: int) -> tuple[list[str], str]:
    """Command and cwd that run rank `local_rank` of the current Hydra job, in the same run dir."""
    import __main__
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    if __main__.__spec__ is None:
        command = [sys.executable, os.path.abspath(sys.argv[0])]
    else:
        command = [sys.executable, "-m", __main__.__spec__.name]
    command += config_flags(sys.argv[1:]) + list(hc.overrides.task)
    command += [f'hydra.run.dir="{hc.runtime.output_dir}"', f"hydra.job.name=train_ddp_process_{local_rank}",
                "hydra.output_subdir=null", "hydra.mode=RUN", f"hydra.job.chdir={hc.job.chdir}"]
    return command, hc.runtime.cwd


class JobLauncher(_SubprocessScriptLauncher):
    """Lightning's script launcher whose children re-run this one Hydra job (module docstring);
    it remembers the environment it set so that the next job of a multirun starts clean."""

    def _call_children_scripts(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        self._check_can_spawn_children()
        self.procs, self.saved_env = [], {k: os.environ.get(k) for k in _DDP_ENV}
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        for local_rank in range(1, self.num_processes):
            command, cwd = hydra_child_command(local_rank) if HydraConfig.initialized() \
                else (script_command(), None)
            self.procs.append(subprocess.Popen(command, env={**os.environ, "LOCAL_RANK": str(local_rank)}, cwd=cwd))

    def restore_environment(self) -> None:
        for key, value in getattr(self, "saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.saved_env = {}


class DeviceBatches:
    """A DataLoader's batches cut from a device-resident copy of its uint8 dataset; the loader's batch
    sampler (random, weighted or distributed) still chooses the indices."""

    def __init__(self, loader: DataLoader, images: torch.Tensor, labels: torch.Tensor):
        self.loader, self.images, self.labels = loader, images, labels

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for idx in self.loader.batch_sampler:
            i = torch.as_tensor(idx, dtype=torch.long).to(self.images.device, non_blocking=True)
            yield self.images[i], self.labels[i]

    def __getattr__(self, name: str) -> Any:  # sampler, batch_sampler, dataset: Lightning's bookkeeping
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


class GANStrategy(DDPStrategy):
    strategy_name = NAME

    def __init__(self, *args, channels_last: bool = False, compile: bool | dict = False,
                 data_on_device: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.channels_last, self.compile_options, self.data_on_device = channels_last, compile, data_on_device
        self._buffer_groups: list[list[torch.Tensor]] = []
        self._owns_group = False
        self._device_data: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def multi_process(self) -> bool:
        return self.num_nodes * self.num_processes > 1

    # ------------------------------------------------------------------ processes
    def _configure_launcher(self) -> None:
        if not self.multi_process:
            self._launcher = None
            return
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def setup_distributed(self) -> None:
        if not self.multi_process:
            self.set_world_ranks()
            return
        self._owns_group = not dist.is_initialized()
        super().setup_distributed()

    def setup(self, trainer) -> None:
        if self._layer_sync is not None and (not self.multi_process or self.root_device.type == "cpu"):
            if self.multi_process:
                rank_zero_warn("sync_batchnorm needs GPUs (torch's SyncBatchNorm has no CPU kernel); "
                               "BatchNorm statistics are averaged over the processes after each batch instead.")
            self._layer_sync = None
        if not self.multi_process and trainer.state.fn != TrainerFn.FITTING:
            # DDPStrategy.setup would broadcast the weights over a process group that does not exist
            self.accelerator.setup(trainer)
            self.precision_plugin.convert_module(self.model)
            self.model_to_device()
            self.setup_precision_plugin()
            return
        super().setup(trainer)

    # ------------------------------------------------------------------ model
    def configure_ddp(self) -> None:
        """No DistributedDataParallel wrapper: replicas start from rank 0's state and stay in step
        through `optimizer_step` (gradients) and `training_step` (buffers)."""
        lm = self.lightning_module
        if self.channels_last:
            lm.to(memory_format=torch.channels_last)
        if self.compile_options:
            self._compile(lm)
        if self.multi_process:
            broadcast_from_rank_zero(lm)
            if self._layer_sync is None:
                groups: dict[tuple, list[torch.Tensor]] = {}
                for name, buf in lm.named_buffers():
                    if buf.is_floating_point() and name.startswith(("generator", "discriminator")):
                        groups.setdefault((buf.dtype, buf.device), []).append(buf)
                self._buffer_groups = list(groups.values())

    def _compile(self, lm) -> None:
        kwargs = {} if self.compile_options is True else dict(self.compile_options)
        if hasattr(lm, "set_training_networks"):
            lm.set_training_networks(torch.compile(lm.generator, **kwargs), torch.compile(lm.discriminator, **kwargs))
        else:
            rank_zero_warn(f"compile: {type(lm).__name__} has no set_training_networks(); not compiled")

    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any):
        if self.multi_process:
            all_reduce_gradients([p for group in optimizer.param_groups for p in group["params"] if p.requires_grad])
        return super().optimizer_step(optimizer, closure, model, **kwargs)

    def training_step(self, *args, **kwargs):
        out = super().training_step(*args, **kwargs)
        for group in self._buffer_groups:
            all_reduce_mean(group)
        return out

    # ------------------------------------------------------------------ data
    def process_dataloader(self, dataloader):
        dataloader = super().process_dataloader(dataloader)
        if not self.data_on_device or not isinstance(dataloader, DataLoader):
            return dataloader
        dataset = dataloader.dataset
        images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
        if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)) \
                or dataloader.batch_sampler is None or dataloader.collate_fn is not default_collate:
            return dataloader
        if id(dataset) not in self._device_data:
            device = self.root_device
            if device.type == "cuda" and images.nbytes > torch.cuda.mem_get_info(device)[0] // 4:
                rank_zero_warn(f"data_on_device: {images.nbytes / 2**30:.1f} GiB of images would take over a "
                               "quarter of the free GPU memory; batches are copied per step instead.")
                return dataloader
            self._device_data[id(dataset)] = (images.to(device), labels.to(device))
        return DeviceBatches(dataloader, *self._device_data[id(dataset)])

    # ------------------------------------------------------------------ end
    def teardown(self) -> None:
        lm = self.lightning_module
        if lm is not None and hasattr(lm, "set_training_networks"):
            lm.set_training_networks()
        self._buffer_groups, self._device_data = [], {}
        super().teardown()
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False
        if isinstance(self._launcher, JobLauncher):
            self._launcher.restore_environment()


if NAME not in StrategyRegistry:
    StrategyRegistry.register(NAME, GANStrategy, description="DDP for manual-optimisation GANs")
