"""Atomic checkpoints and resume for training engines.

A checkpoint is written to a temporary file in the target folder, flushed to disk and moved into
place with ``os.replace``, so a reader (or a resumed run after ``SIGKILL`` or a power cut) sees either
the previous file or the complete new one, never a partial file. Checkpoints load with
``torch.load(..., weights_only=True)``; a corrupt or truncated file raises :class:`CheckpointError`
naming it, and resuming never silently starts from scratch when a checkpoint folder holds files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from monai_adv.distributed import rank
from monai_adv.io import atomic_torch_save

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "ResumableCheckpointHandler",
    "TorchRNGState",
]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, is incomplete, or does not fit the objects to restore."""


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``obj`` (a dict of state dicts and tensors) to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed and fsync'ed, and then replaces
    ``path`` with ``os.replace``; on any error the temporary file is removed and ``path`` is untouched.

    Args:
        obj: what to save; ``torch.save`` must be able to write it and ``weights_only`` loading to
            read it back (tensors, numbers, strings, lists, tuples, dicts).
        path: the destination file.

    Returns:
        The destination path.
    """
    atomic_torch_save(dict(obj), path, durable=True)
    return Path(path)


def _read(path: Path, map_location: Any) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a truncated or interrupted write.")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for bad files
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a weights-only checkpoint "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); delete it to resume from "
            "an earlier one."
        ) from e
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a dict of states.")
    return data


def load_checkpoint(
    path: str | os.PathLike,
    to_load: Mapping[str, Any],
    map_location: Any = "cpu",
    strict: bool = True,
) -> dict:
    """Restore objects (networks, optimizers, schedulers, engines, ...) from a checkpoint.

    Args:
        path: the checkpoint file.
        to_load: ``{name: object with load_state_dict}``; each name must be in the file.
        map_location: passed to ``torch.load``.
        strict: passed to ``nn.Module.load_state_dict``.

    Returns:
        The loaded dict (for entries not in ``to_load``).

    Raises:
        CheckpointError: when the file is missing, empty, corrupt, truncated, not weights-only, lacks
            an entry of ``to_load``, or an entry does not fit its object.
    """
    path = Path(path)
    data = _read(path, map_location)
    missing = [k for k in to_load if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it holds {sorted(data)}.")
    for name, obj in to_load.items():
        try:
            if isinstance(obj, torch.nn.Module):
                obj.load_state_dict(data[name], strict=strict)
            else:
                obj.load_state_dict(data[name])
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {path}: entry {name!r} does not fit {type(obj).__name__}: {e}"
            ) from e
    return data


_NAME = re.compile(r"^(?P<prefix>.+)_(?P<iteration>\d+)\.pt$")


def list_checkpoints(save_dir: str | os.PathLike, prefix: str = "checkpoint") -> list[tuple[int, Path]]:
    """``(iteration, path)`` of the checkpoints ``{prefix}_{iteration}.pt`` in a folder, oldest first."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    found = []
    for p in save_dir.iterdir():
        m = _NAME.match(p.name)
        if m and m.group("prefix") == prefix and p.is_file():
            found.append((int(m.group("iteration")), p))
    return sorted(found)


def latest_checkpoint(save_dir: str | os.PathLike, prefix: str = "checkpoint") -> Path | None:
    """The checkpoint with the highest iteration in a folder, or None when there is none."""
    found = list_checkpoints(save_dir, prefix)
    return found[-1][1] if found else None


class TorchRNGState:
    """Saves and restores torch's global CPU random state (dropout, shuffling) with a checkpoint."""

    def state_dict(self) -> dict:
        return {"torch": torch.get_rng_state()}

    def load_state_dict(self, state: Mapping) -> None:
        torch.set_rng_state(state["torch"])


class ResumableCheckpointHandler:
    """Checkpoint a training engine atomically every N iterations and at each epoch end; resume on start.

    Files are ``{save_dir}/{prefix}_{iteration:09d}.pt``, each holding the state dict of every object in
    ``save_dict`` (network, optimizer, lr scheduler, the engine itself for epoch/iteration, ...); the
    newest ``n_saved`` are kept. Only rank 0 writes (under ``torch.distributed``); every rank resumes
    from the same file. With ``resume=True`` the handler loads the newest checkpoint when the engine
    starts: ignite then carries on from that iteration (mid-epoch included) to the same ``max_epochs``.
    A newest checkpoint that cannot be read raises :class:`CheckpointError` rather than restarting.

    Args:
        save_dir: the checkpoint folder (created if missing).
        save_dict: ``{name: object with state_dict/load_state_dict}``; include the engine to resume.
        save_every_iters: also save every this many iterations (None or 0: only at epoch ends).
        n_saved: how many checkpoints to keep (>= 1; None keeps all).
        prefix: file name prefix.
        resume: load the newest checkpoint at ``Events.STARTED``.
        map_location: passed to ``torch.load``.

    Raises:
        ValueError: for a bad ``save_every_iters`` or ``n_saved``, or an empty ``save_dict``.

    Example::

        ckpt = ResumableCheckpointHandler("runs/ckpt", {"trainer": trainer, "network": net, "optimizer": opt},
                                          save_every_iters=50)
        ckpt.attach(trainer)
        trainer.run()   # resumes if runs/ckpt holds checkpoints
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        save_every_iters: int | None = None,
        n_saved: int | None = 2,
        prefix: str = "checkpoint",
        resume: bool = True,
        map_location: Any = "cpu",
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to checkpoint.")
        if save_every_iters is not None and (
            int(save_every_iters) != save_every_iters or save_every_iters < 0
        ):
            raise ValueError(f"save_every_iters must be an integer >= 0 or None, got {save_every_iters!r}.")
        if n_saved is not None and (int(n_saved) != n_saved or n_saved < 1):
            raise ValueError(f"n_saved must be an integer >= 1 or None, got {n_saved!r}.")
        if not _NAME.match(f"{prefix}_0.pt"):
            raise ValueError(f"prefix {prefix!r} is not usable in a file name.")
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.save_every_iters = int(save_every_iters or 0)
        self.n_saved = n_saved
        self.prefix = prefix
        self.resume = resume
        self.map_location = map_location
        self.resumed_from: Path | None = None
        self.last_saved: Path | None = None

    def attach(self, engine: Engine) -> None:
        """Register saving (and resuming) on ``engine``."""
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load_latest)
        if self.save_every_iters:
            engine.add_event_handler(
                Events.ITERATION_COMPLETED(every=self.save_every_iters), self._save_mid_epoch
            )
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def load_latest(self, engine: Engine | None = None) -> Path | None:
        """Restore the newest checkpoint, if any; returns its path.

        Raises:
            CheckpointError: when the newest checkpoint is unreadable or does not fit.
        """
        path = latest_checkpoint(self.save_dir, self.prefix)
        if path is None:
            return None
        max_epochs = engine.state.max_epochs if engine is not None else None
        load_checkpoint(path, self.save_dict, map_location=self.map_location)
        if engine is not None and max_epochs is not None:
            if engine.state.epoch > max_epochs:
                raise CheckpointError(
                    f"checkpoint {path} is at epoch {engine.state.epoch}, past max_epochs={max_epochs}."
                )
            engine.state.max_epochs = max_epochs
        self.resumed_from = path
        if engine is not None:
            engine.logger.info(
                f"resumed from {path} (iteration {engine.state.iteration}, epoch {engine.state.epoch})"
            )
        return path

    def _save_mid_epoch(self, engine: Engine) -> None:
        # the last iteration of an epoch is saved at EPOCH_COMPLETED, after the epoch-end handlers
        # (lr schedulers, ...) have run, so that a resumed run does not skip them
        epoch_length = engine.state.epoch_length
        if not epoch_length or engine.state.iteration % epoch_length:
            self.save(engine)

    def save(self, engine: Engine) -> Path | None:
        """Write a checkpoint for the engine's current iteration (rank 0 only) and prune old ones."""
        if rank() != 0:
            return None
        path = self.save_dir / f"{self.prefix}_{engine.state.iteration:09d}.pt"
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        save_checkpoint(state, path)
        self.last_saved = path
        if self.n_saved is not None:
            for _, old in list_checkpoints(self.save_dir, self.prefix)[: -self.n_saved]:
                old.unlink(missing_ok=True)
        return path
