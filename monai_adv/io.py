"""Atomic file writes: a reader sees the previous file or the complete new one, never a partial file.

Every file monai-adv writes for a user (checkpoints, detectors, reports, predictions, plots) goes
through :func:`atomic_open`: the data go to a temporary file in the destination folder, which then
replaces the destination with ``os.replace`` (atomic on POSIX and Windows). On any error, including
``KeyboardInterrupt``, the temporary file is removed and the destination is untouched.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

import torch

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "json_safe"]


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", durable: bool = False, **kwargs: Any
) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the ``with`` block ends without error.

    Args:
        path: the destination; missing parent folders are created.
        mode: ``"w"`` or ``"wb"`` (and ``open``'s other write modes).
        durable: flush and fsync the data and the folder entry, so the new file survives a power cut
            (checkpoints); without it the write is atomic but may sit in the OS cache.
        kwargs: passed to ``open`` (e.g. ``newline=""`` for CSV).
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
        _fsync_folder(folder)


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to ``path`` atomically (newlines written as given) and return the path."""
    with atomic_open(path, "w", newline="") as f:
        f.write(text)
    return os.fspath(path)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats replaced by ``None`` (strict JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> str:
    """Write ``obj`` as strict JSON (see :func:`json_safe`; other objects as ``str``) atomically."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=indent, default=str))


def atomic_torch_save(obj: Any, path: str | os.PathLike, durable: bool = True) -> str:
    """``torch.save(obj, path)`` atomically (and, by default, durably); returns the path."""
    with atomic_open(path, "wb", durable=durable) as f:
        torch.save(obj, f)
    return os.fspath(path)
