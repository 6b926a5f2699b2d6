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

import hashlib
import io
import json
import math
import os
import re
import socket
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
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
    "check_writable",
    "FolderLock",
    "FolderLockedError",
    "hold_folder_lock",
    "release_folder_lock",
    "lock_folders_while_running",
    "OutputSet",
    "output_set",
    "named_io_error",
    "CheckpointError",
    "CHECKSUM_SUFFIX",
    "checksum_path",
    "save_checkpoint",
    "verify_checkpoint",
    "load_checkpoint",
    "non_finite_entries",
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.errno is not None and not e.filename:
            # a failed write (disk full: [Errno 28]) names no file of its own: name the destination
            raise named_io_error(e, path) from e
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


def named_io_error(error: OSError, path: str | os.PathLike) -> OSError:
    """``error`` itself when it names a file, else an ``OSError`` of the same errno naming ``path``
    (a failed write, e.g. ``[Errno 28] No space left on device``, names none of its own)."""
    if error.filename or error.errno is None:
        return error
    p = os.fspath(path)
    return OSError(error.errno, f"{error.strerror or error} (writing {p})", p)


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> str:
    """Make sure files can be written in ``folder`` (created when missing) before any work; returns it.

    A temporary file is created and removed there, so a read-only folder, a missing permission or a
    full disk is found before the work whose result would go there, not after it.

    Raises:
        PermissionError (or the ``OSError`` met): naming ``what`` and the folder.
    """
    folder = os.path.abspath(os.fspath(folder))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=folder, prefix=f".write-check.{os.getpid()}@{_host_tag()}-", suffix=".tmp"
        )
        os.close(fd)
        os.remove(tmp)
    except OSError as e:
        raise type(e)(
            e.errno, f"the {what} {folder} is not writable ({e.strerror or e}); nothing was done", folder
        ) from e
    return folder


class FolderLockedError(RuntimeError):
    """A folder is held by another running process (named in the message)."""


class FolderLock:
    """An exclusive lock on a folder (a run folder, a derived data set), held by one process at a time.

    The lock is the file ``<folder>/.lock`` created with ``O_EXCL``, holding its holder's pid, host,
    start time and command line. A lock whose holder no longer runs on this host (a killed run) is
    stale and taken over; a live holder makes :meth:`acquire` wait up to ``wait_s`` seconds, then
    refuse with :class:`FolderLockedError` naming it. The lock is released by :meth:`release`, at the end
    of a ``with`` block, or when the process exits.

    Args:
        folder: the folder to lock (created when missing).
        wait_s: how long to wait for a live holder (0: refuse at once).
        what: what the folder is, for the messages.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike, wait_s: float = 0.0, what: str = "folder") -> None:
        self.folder = os.path.abspath(os.fspath(folder))
        self.path = os.path.join(self.folder, self.NAME)
        self.wait_s = float(wait_s)
        self.what = what
        self.held = False

    def _holder(self) -> dict[str, Any] | None:
        try:
            with open(self.path) as f:
                info = json.load(f)
            return info if isinstance(info, dict) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged

    def _stale(self, info: Mapping[str, Any]) -> bool:
        if info.get("folder") not in (None, self.folder):
            return True  # a lock copied with its folder (copytree, rsync): not a holder of this one
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            return not _pid_alive(int(info["pid"]))
        try:  # no (readable) holder, or another host: stale only when long untouched
            return time.time() - os.stat(self.path).st_mtime > _STALE_AFTER_S and not info
        except OSError:
            return False

    def acquire(self) -> FolderLock:
        """Take the lock (waiting for a live holder up to ``wait_s``), or raise :class:`FolderLockedError`."""
        import atexit
        import sys

        os.makedirs(self.folder, exist_ok=True)
        me = {
            "folder": self.folder,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv)[:500],
        }
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self._holder()
                if info is None:
                    continue  # released meanwhile: try again
                if self._stale(info):
                    # move the stale lock aside under a unique name: of two processes taking it over,
                    # only one succeeds in the rename, and both then race fairly for O_EXCL
                    aside = f"{self.path}.stale-{os.getpid()}-{time.monotonic_ns()}"
                    try:
                        os.rename(self.path, aside)
                        os.remove(aside)
                    except OSError:
                        pass
                    continue
                if time.monotonic() < deadline:
                    time.sleep(min(0.5, max(0.01, deadline - time.monotonic())))
                    continue
                holder = (
                    f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
                    + (f": {info.get('command')}" if info.get("command") else "")
                    if info
                    else "a process being started"
                )
                raise FolderLockedError(
                    f"the {self.what} {self.folder} is in use by another run ({holder}); wait for it to end, "
                    f"or choose another folder. If that process no longer runs, remove {self.path}."
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            atexit.register(self.release)
            return self

    def release(self) -> None:
        """Give the lock back (only if this process holds it)."""
        if not self.held:
            return
        self.held = False
        info = self._holder()
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            try:
                os.remove(self.path)
            except OSError:
                pass

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


_HELD_LOCKS: dict[str, FolderLock] = {}


def hold_folder_lock(folder: str | os.PathLike, wait_s: float = 0.0, what: str = "run folder") -> str:
    """Hold :class:`FolderLock` on ``folder`` until the process ends (once per process and folder); returns
    the folder, so that a bundle config can write ``"$monai_adv.io.hold_folder_lock(@run_dir)"``.

    Only the main process of a distributed run takes it.
    """
    folder = os.path.abspath(os.fspath(folder))
    from monai_adv.distributed import is_main_process

    if folder not in _HELD_LOCKS and is_main_process():
        _HELD_LOCKS[folder] = FolderLock(folder, wait_s=wait_s, what=what).acquire()
    return folder


def lock_folders_while_running(runner: Any, *folders: str | os.PathLike, wait_s: float = 0.0) -> Any:
    """Take :class:`FolderLock` on each of ``folders`` now, and give them back when ``runner.run()`` ends,
    however it ends (an error included); returns ``runner``.

    A bundle's training config lists ``"$monai_adv.io.lock_folders_while_running(@train#trainer, @run_dir,
    @ckpt_dir)"`` first in ``run``: the trainer (and its data check) is built first, so a run refused by
    its data holds nothing, and a second run in the same run or model folder is refused, naming the
    holder, before it writes anything. Only the main process of a distributed run takes the locks.

    Raises:
        FolderLockedError: naming the holder of a folder in use (locks taken so far are given back).
    """
    from monai_adv.distributed import is_main_process

    if not is_main_process():
        return runner
    locks: list[FolderLock] = []
    seen: set[str] = set()
    try:
        for f in folders:
            key = os.path.abspath(os.fspath(f))
            if key in seen:
                continue
            seen.add(key)
            locks.append(FolderLock(key, wait_s=wait_s, what="run folder").acquire())
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    run = runner.run

    def run_holding_the_locks(*args: Any, **kwargs: Any) -> Any:
        try:
            return run(*args, **kwargs)
        finally:
            for lock in locks:
                lock.release()
            runner.__dict__.pop("run", None)  # the plain method again

    runner.run = run_holding_the_locks
    return runner


def release_folder_lock(folder: str | os.PathLike) -> None:
    """Give back the lock :func:`hold_folder_lock` took on ``folder`` (a bundle's ``finalize`` step)."""
    lock = _HELD_LOCKS.pop(os.path.abspath(os.fspath(folder)), None)
    if lock is not None:
        lock.release()


class OutputSet:
    """A set of output files (e.g. ``predictions.csv`` and ``failures.csv``, or ``masks/`` and ``masks.csv``)
    built in a fresh folder and moved into place when complete.

    While a run works, its files go to ``<output_dir>/.partial-<pid>@<host>/`` (:meth:`path`), where a
    writer may stream them as they are made (so a killed run keeps its work there). :meth:`commit`
    moves every entry into ``output_dir``, replacing the previous run's entries of the same names
    (a folder such as ``masks/`` is replaced whole, never merged). The commit is journaled: it first
    writes ``COMMITTING`` into the staging folder; a commit interrupted by a kill is finished by the next
    :func:`output_set` of the same folder, so a reader finds the complete old set or the complete new one.

    Args:
        output_dir: the folder the set goes to.
    """

    _JOURNAL = "COMMITTING"

    def __init__(self, output_dir: str | os.PathLike) -> None:
        self.output_dir = os.path.abspath(os.fspath(output_dir))
        self.staging = os.path.join(self.output_dir, f".partial-{os.getpid()}@{_host_tag()}")
        self.committed = False
        os.makedirs(self.output_dir, exist_ok=True)
        self._recover()
        os.makedirs(self.staging, exist_ok=True)

    def path(self, name: str) -> str:
        """Where the entry ``name`` (a file or folder of the set) is written while the set is built."""
        if self.committed:
            raise RuntimeError(f"the output set of {self.output_dir} was committed already.")
        return os.path.join(self.staging, name)

    def _recover(self) -> None:
        """Finish the commits that a kill interrupted; name the partial work of killed runs."""
        for e in os.scandir(self.output_dir):
            if not e.name.startswith(".partial-") or e.path == self.staging or not e.is_dir():
                continue
            m = re.match(r"\.partial-(\d+)@([0-9a-f]{8})$", e.name)
            alive = m is not None and m.group(2) == _host_tag() and _pid_alive(int(m.group(1)))
            if alive:
                continue
            if os.path.exists(os.path.join(e.path, self._JOURNAL)):
                _finish_commit(e.path, self.output_dir)
            else:
                import logging

                logging.getLogger(__name__).warning(
                    f"{e.path} holds the partial outputs of a run that was stopped before it finished; "
                    "they are kept there (remove the folder when not needed)."
                )

    def commit(self) -> None:
        """Move the set into place (see the class notes)."""
        if self.committed:
            return
        with open(os.path.join(self.staging, self._JOURNAL), "w") as f:
            f.write(str(os.getpid()))
        _finish_commit(self.staging, self.output_dir)
        self.committed = True
        _OUTPUT_SETS.pop(self.output_dir, None)


def _finish_commit(staging: str, output_dir: str) -> None:
    import shutil

    for name in sorted(os.listdir(staging)):
        if name == OutputSet._JOURNAL or name.startswith(".old-"):
            continue
        src, dst = os.path.join(staging, name), os.path.join(output_dir, name)
        if os.path.isdir(src):
            old = os.path.join(staging, f".old-{name}")
            if os.path.lexists(dst) and not os.path.lexists(old):
                os.rename(dst, old)
            os.rename(src, dst)
        else:
            os.replace(src, dst)
    os.remove(os.path.join(staging, OutputSet._JOURNAL))
    shutil.rmtree(staging, ignore_errors=True)


_OUTPUT_SETS: dict[str, OutputSet] = {}


def output_set(output_dir: str | os.PathLike) -> OutputSet:
    """The :class:`OutputSet` this process builds in ``output_dir`` (one per folder until committed), so
    that the writers of one run (the failures list, the predictions, the masks) share it."""
    key = os.path.abspath(os.fspath(output_dir))
    if key not in _OUTPUT_SETS:
        _OUTPUT_SETS[key] = OutputSet(key)
    return _OUTPUT_SETS[key]


# ------------------------------------------------------------------------------------------------------
# verified checkpoint files: atomic writes with a SHA-256 beside them, weights-only reads that name the problem
# ------------------------------------------------------------------------------------------------------
#: the suffix of the checksum file written beside every checkpoint
CHECKSUM_SUFFIX = ".sha256"


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, is incomplete, or does not fit the objects to restore."""


def checksum_path(path: Path) -> Path:
    """The ``.sha256`` file beside a checkpoint."""
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def non_finite_entries(obj: Any, where: str = "") -> Iterator[str]:
    """Paths of floating tensors with NaN/Inf values inside nested dicts and lists."""
    if isinstance(obj, torch.Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and not torch.isfinite(obj).all():
            yield where or "<tensor>"
    elif isinstance(obj, float):
        if not math.isfinite(obj) and where.rsplit(".", 1)[-1] not in ("best_metric", "gauss"):
            yield where
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from non_finite_entries(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from non_finite_entries(v, f"{where}[{i}]")


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike, checksum: bool = True) -> Path:
    """Write ``obj`` (a dict of state dicts and tensors) to ``path`` atomically, with its checksum.

    The data are serialised in memory, their SHA-256 is written (atomically) to ``<path>.sha256``, and
    then the data go to a temporary file in the same folder, are flushed and fsync'ed, and replace
    ``path`` with ``os.replace``; on any error the temporary file is removed and ``path`` is untouched.

    Args:
        obj: what to save; ``torch.save`` must be able to write it and ``weights_only`` loading to
            read it back (tensors, numbers, strings, lists, tuples, dicts).
        path: the destination file.
        checksum: also write ``<path>.sha256``.

    Returns:
        The destination path.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    data = buf.getvalue()
    sidecar = checksum_path(path)
    previous = sidecar.read_text() if checksum and sidecar.is_file() else None
    if checksum:
        atomic_write_text(sidecar, f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")
    try:
        with atomic_open(path, "wb", durable=True) as f:
            f.write(data)
    except BaseException:
        if checksum:  # the old file stays: so does its checksum
            if previous is None:
                sidecar.unlink(missing_ok=True)
            else:
                atomic_write_text(sidecar, previous)
        raise
    return path


def verify_checkpoint(path: str | os.PathLike) -> bool | None:
    """Check a checkpoint against the SHA-256 written beside it.

    Returns:
        ``True`` when it matches, ``None`` when there is no checksum file (nothing to verify).

    Raises:
        CheckpointError: naming the file and both digests when it does not match.
    """
    path = Path(path)
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        return None
    try:
        expected = sidecar.read_text().split()[0].lower()
    except (OSError, IndexError) as e:
        raise CheckpointError(f"checksum file {sidecar} is unreadable or empty: {e}") from e
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected:
        raise CheckpointError(
            f"checkpoint {path} does not match its checksum in {sidecar.name} (expected {expected[:16]}..., "
            f"the file gives {h.hexdigest()[:16]}...): it was changed or damaged after it was written; delete "
            "it (and its .sha256) to resume from an earlier one."
        )
    return True


def _read(path: Path, map_location: Any, verify: bool = True, warn_unverified: bool = False) -> dict:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a truncated or interrupted write.")
    if verify and verify_checkpoint(path) is None and warn_unverified:
        warnings.warn(
            f"checkpoint {path} has no {CHECKSUM_SUFFIX} file beside it: not verified.", stacklevel=3
        )
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
    verify: bool = True,
    check_finite: bool = True,
    warn_unverified: bool = False,
) -> dict:
    """Restore objects (networks, optimizers, schedulers, engines, ...) from a checkpoint.

    Args:
        path: the checkpoint file.
        to_load: ``{name: object with load_state_dict}``; each name must be in the file.
        map_location: passed to ``torch.load``.
        strict: passed to ``nn.Module.load_state_dict``.
        verify: check the file against its ``.sha256`` when there is one.
        check_finite: refuse entries of ``to_load`` that hold NaN or infinite values.
        warn_unverified: warn when ``verify`` finds no checksum file (for files whose writer always writes one).

    Returns:
        The loaded dict (for entries not in ``to_load``).

    Raises:
        CheckpointError: when the file is missing, empty, corrupt, truncated, altered (checksum), not
            weights-only, lacks an entry of ``to_load``, holds NaN/Inf values, or an entry does not fit
            its object.
    """
    path = Path(path)
    data = _read(path, map_location, verify, warn_unverified)
    missing = [k for k in to_load if k not in data]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it holds {sorted(data)}.")
    if check_finite:
        bad = [p for name in to_load for p in non_finite_entries(data[name], name)]
        if bad:
            raise CheckpointError(
                f"checkpoint {path} holds NaN or infinite values in {bad[:5]}{' ...' if len(bad) > 5 else ''} "
                f"({len(bad)} entries): it cannot be trained on; delete it to resume from an earlier one."
            )
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
