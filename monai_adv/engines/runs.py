"""Checkpoint runs: file names with a run id, the folder's current run, and the checkpoints of each run.

Each run of :class:`~monai_adv.handlers.ResumableCheckpointHandler` has a run id; its checkpoints are
``{prefix}_{run_id}_{iteration:09d}.pt`` and ``{prefix}_run.json`` names the folder's current run, so a
fresh run never prunes, overwrites or resumes another run's files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import Any

from monai_adv.io import CheckpointError

__all__ = [
    "new_run_id",
    "current_run",
    "list_checkpoints",
    "list_runs",
    "latest_checkpoint",
    "parse_checkpoint_name",
    "run_file",
    "RUN_ID_PATTERN",
]

#: a run id: letters, digits and dashes, 1-64 characters, not starting with a dash
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_RUN_ID = RUN_ID_PATTERN


_NAME = re.compile(r"^(?P<stem>.+)_(?P<iteration>\d+)\.pt$")


def parse_checkpoint_name(name: str, prefix: str | None = None) -> tuple[str, str | None, int] | None:
    """``(prefix, run_id or None, iteration)`` of a checkpoint file name, or None."""
    m = _NAME.match(name)
    if m is None:
        return None
    stem, it = m.group("stem"), int(m.group("iteration"))
    if prefix is not None:
        if stem == prefix:
            return prefix, None, it
        if stem.startswith(prefix + "_") and _RUN_ID.match(stem[len(prefix) + 1 :]):
            return prefix, stem[len(prefix) + 1 :], it
        return None
    head, _, tail = stem.rpartition("_")
    if head and _RUN_ID.match(tail) and not tail.isdigit():
        return head, tail, it
    return stem, None, it


def new_run_id() -> str:
    """A new run id: UTC date and time and 6 random hex digits, e.g. ``20261125-101112-3fa9c2``."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def run_file(save_dir: Path, prefix: str) -> Path:
    """The file that names a checkpoint folder's current run."""
    return save_dir / f"{prefix}_run.json"


def current_run(save_dir: str | os.PathLike, prefix: str = "checkpoint") -> dict[str, Any] | None:
    """The folder's current run, ``{"run_id", "run_info", "started"}`` from ``{prefix}_run.json``, or None.

    Raises:
        CheckpointError: when the file exists but cannot be read.
    """
    path = run_file(Path(save_dir), prefix)
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
        if not isinstance(run, dict) or not _RUN_ID.match(str(run.get("run_id", ""))):
            raise ValueError("no valid run_id")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"run file {path} is unreadable ({e}); delete it to start a new run.") from e
    return run


def list_checkpoints(
    save_dir: str | os.PathLike, prefix: str = "checkpoint", run_id: str | None = None
) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of one run's checkpoints in a folder, oldest first.

    Args:
        save_dir: the folder.
        prefix: file name prefix.
        run_id: the run; ``None``: the folder's current run (see :func:`current_run`), or the
            checkpoints named without a run id (``{prefix}_{iteration}.pt``, older monai-adv) when
            the folder has no run file; ``""``: the checkpoints named without a run id.
    """
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    if run_id is None:
        run = current_run(save_dir, prefix)
        run_id = run["run_id"] if run else ""
    found = []
    for p in save_dir.iterdir():
        parsed = parse_checkpoint_name(p.name, prefix)
        if parsed and (parsed[1] or "") == run_id and p.is_file():
            found.append((parsed[2], p))
    return sorted(found)


def list_runs(save_dir: str | os.PathLike, prefix: str = "checkpoint") -> dict[str, list[tuple[int, Path]]]:
    """Every run's checkpoints in a folder: ``{run_id: [(iteration, path), ...]}`` (``""``: unnamed)."""
    save_dir = Path(save_dir)
    runs: dict[str, list[tuple[int, Path]]] = {}
    if save_dir.is_dir():
        for p in save_dir.iterdir():
            parsed = parse_checkpoint_name(p.name, prefix)
            if parsed and p.is_file():
                runs.setdefault(parsed[1] or "", []).append((parsed[2], p))
    return {k: sorted(v) for k, v in sorted(runs.items())}


def latest_checkpoint(
    save_dir: str | os.PathLike, prefix: str = "checkpoint", run_id: str | None = None
) -> Path | None:
    """The newest checkpoint of a run (default: the folder's current run), or None when there is none."""
    found = list_checkpoints(save_dir, prefix, run_id)
    return found[-1][1] if found else None
