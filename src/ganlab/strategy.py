"""DDP for GANs under manual optimisation, without `find_unused_parameters`.

Lightning's DDPStrategy wraps the whole LightningModule in DistributedDataParallel, whose reducer
expects every parameter to receive a gradient in every backward; a GAN's D step leaves G without
gradients (and vice versa), which raises the "unused parameters" error unless the graph is traversed
each step. Like stylegan2-ada's training loop, this strategy keeps the module unwrapped and instead
averages across processes, right before each `optimizer.step()`, the gradients of exactly the
parameters that optimizer updates: one flat all-reduce per step, R1/gradient penalties included.
Process launch, seeding, samplers, barriers and metric reduction stay Lightning's.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import _sync_module_states
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

NAME = "gan_ddp"


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average .grad over all processes (parameters without a gradient get zeros, so ranks agree)."""
    world = dist.get_world_size()
    if world == 1 or not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat.div_(world)
    for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


class GANDDPStrategy(DDPStrategy):
    strategy_name = NAME

    def configure_ddp(self) -> None:
        # No DistributedDataParallel wrapper: start every replica from rank 0's weights and buffers.
        _sync_module_states(self.model)

    def optimizer_step(self, optimizer, closure, model=None, **kwargs: Any):
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
        if dist.is_available() and dist.is_initialized():
            all_reduce_gradients(params)
        return super().optimizer_step(optimizer, closure, model, **kwargs)


def choose_strategy(devices: Any = 1, num_nodes: int = 1) -> str:
    """The Trainer's strategy for a device count: Lightning's single-device default or gan_ddp."""
    single = str(devices) in ("1", "[0]") or devices == [0]
    return "auto" if single and int(num_nodes) == 1 else NAME


if NAME not in StrategyRegistry:
    StrategyRegistry.register(NAME, GANDDPStrategy, description="DDP for manual-optimisation GANs")
