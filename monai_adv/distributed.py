"""Distributed helpers: process rank, barrier, and the DDP network helpers the engines use.

Code here runs the same under ``torchrun`` and in one process (every helper is a no-op there).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn

__all__ = ["rank", "is_main_process", "barrier", "unwrap_network", "sync_buffers"]


def rank() -> int:
    """The process rank under ``torch.distributed`` (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    """Whether this is process 0 (always True when not distributed)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or the network itself).

    Attacks and pseudo-labelling run on the unwrapped module: their forward passes must not register
    DDP gradient-reduction hooks, only the training forward does.
    """
    while isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        network = network.module
    return network


def sync_buffers(network: nn.Module) -> None:
    """Broadcast rank 0's buffers (batch-norm running statistics) to every rank of a DDP network.

    DDP itself does this at the start of each *training* forward; the pseudo-labelling and attack
    forwards of an iteration come before it and run the unwrapped module in eval mode, so without
    this each rank would use its own running statistics there. A no-op outside DDP or when the
    wrapper's ``broadcast_buffers`` is off.
    """
    if not isinstance(network, nn.parallel.DistributedDataParallel) or not getattr(
        network, "broadcast_buffers", False
    ):
        return
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() < 2:
        return
    for buf in network.module.buffers():
        torch.distributed.broadcast(buf.data, src=0)
