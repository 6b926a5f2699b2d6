"""Process rank helpers for code that runs the same under ``torchrun`` and in one process."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["rank", "is_main_process", "barrier"]


def rank() -> int:
    """The process rank under ``torch.distributed`` (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    """Wait for every process (a no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
