"""Deprecated: this module's three concerns moved, each to its place.

- verified, atomic checkpoint files (``save_checkpoint``, ``load_checkpoint``, ``verify_checkpoint``,
  ``CheckpointError``): :mod:`monai_adv.io`;
- run ids and the checkpoints of each run (``new_run_id``, ``current_run``, ``list_checkpoints``,
  ``list_runs``, ``latest_checkpoint``): :mod:`monai_adv.engines.runs`;
- ``ResumableCheckpointHandler`` (and ``TorchRNGState``, ``NonFiniteLossError``): :mod:`monai_adv.handlers`,
  as MONAI keeps its ``CheckpointSaver``.

The old names resolve to the same objects for one release.
"""

import warnings

from monai_adv.engines.rng import RandomStates
from monai_adv.engines.runs import current_run, latest_checkpoint, list_checkpoints, list_runs, new_run_id
from monai_adv.handlers.checkpoint import (
    RESUME_KEY,
    NonFiniteLossError,
    ResumableCheckpointHandler,
    TorchRNGState,
)
from monai_adv.io import CHECKSUM_SUFFIX, CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "save_checkpoint",
    "load_checkpoint",
    "verify_checkpoint",
    "list_checkpoints",
    "list_runs",
    "latest_checkpoint",
    "current_run",
    "new_run_id",
    "ResumableCheckpointHandler",
    "TorchRNGState",
    "RandomStates",
    "RESUME_KEY",
    "CHECKSUM_SUFFIX",
]

warnings.warn(
    "monai_adv.engines.checkpoint is split: checkpoint files in monai_adv.io, runs in monai_adv.engines.runs, "
    "ResumableCheckpointHandler in monai_adv.handlers; the old module works for one release.",
    DeprecationWarning,
    stacklevel=2,
)
