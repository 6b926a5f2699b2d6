"""Atomic file writes: a reader sees the previous file or the complete new one, never a partial file.

Every file monai-adv writes for a user (checkpoints, detectors, reports, predictions, plots) goes
through :func:`atomic_open`: the data go to a temporary file in the destination folder, which then
replaces the destination with ``os.replace`` (atomic on POSIX and Windows). On any error, including
``KeyboardInterrupt``, the temporary file is removed and the destination is untouched.

The new file gets the permissions a plain ``open`` would give it (``0o666`` less the process umask), or
keeps those of the file it replaces. A process killed during a write (``SIGKILL``, a power cut) leaves
its temporary file ``.<name>.<pid>-<random>.tmp`` behind; the next write of the same destination, or
:func:`remove_stale_temp_files` on the folder, removes it once its writer is no longer running.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

import torch

__all__ = [
    "atomic_open",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_torch_save",
    "json_safe",
    "current_umask",
    "remove_stale_temp_files",
]

#: temporary files of :func:`atomic_open`: ``.<name>.<pid>@<host>-<random>.tmp``; older monai-adv
#: versions wrote ``.<name>.<random>.tmp``
_TMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)@(?P<host>[0-9a-f]{8})-)?[A-Za-z0-9_]+\.tmp$")
#: a temporary file without a (live) writer of this host is stale after this many seconds
_STALE_AFTER_S = 600.0


def _host_tag() -> str:
    import zlib

    return f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFFFF:08x}"


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (owned by someone else) or we cannot tell: keep its file
    return True


def remove_stale_temp_files(
    folder: str | os.PathLike, name: str | None = None, stale_after_s: float = _STALE_AFTER_S
) -> list[str]:
    """Remove temporary files that an interrupted :func:`atomic_open` left in ``folder``.

    A temporary file is stale when the process that wrote it (same host) no longer runs, or, for a file
    whose writer cannot be checked (another host, an older monai-adv), when it has not been modified for
    ``stale_after_s`` seconds. Files of writers still running are left alone.

    Args:
        folder: the folder to clean.
        name: only the temporary files of this destination file name (``None``: all of them).
        stale_after_s: age after which an unattributable temporary file is stale.

    Returns:
        The removed paths.
    """
    folder = os.fspath(folder)
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host, now = _host_tag(), time.time()
    for e in entries:
        m = _TMP.match(e.name)
        if m is None or (name is not None and m.group("name") != name):
            continue
        try:
            if not e.is_file(follow_symlinks=False):
                continue
            if m.group("pid") is not None and m.group("host") == host:
                stale = not _pid_alive(int(m.group("pid")))
            else:
                stale = now - e.stat(follow_symlinks=False).st_mtime > stale_after_s
            if stale:
                os.remove(e.path)
                removed.append(e.path)
        except OSError:
            continue  # removed concurrently, or not ours to remove
    return removed


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

    The file gets mode ``0o666 & ~umask`` (as ``open`` gives), or keeps the mode of the file it
    replaces; stale temporary files of the same destination (see :func:`remove_stale_temp_files`) are
    removed first.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(path)
    remove_stale_temp_files(folder, base)
    try:
        mode_bits = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode_bits = 0o666 & ~current_umask()
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.{os.getpid()}@{_host_tag()}-", suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode_bits)
    except BaseException:
        os.close(fd)
        os.remove(tmp)
        raise
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
