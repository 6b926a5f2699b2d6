"""Where the OCT bundle is: shipped with the package, copied to a working folder, or given explicitly.

A wheel (or a non-editable ``pip install .``) carries the bundle's configs, docs and licence as package
data under ``monai_adv/bundle/resources/oct_robust_classification``. The bundle writes its data set, models
and reports into its own folder, so it is never run in place inside ``site-packages``:
:func:`resolve_bundle_dir` copies it to a working folder first (``./oct_robust_classification`` by
default) and reuses that copy on later runs. In a source checkout the bundle is the repository's
``bundles/oct_robust_classification``; pass it explicitly (``make demo`` does).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["BUNDLE_NAME", "packaged_bundle_dir", "copy_bundle", "resolve_bundle_dir", "is_bundle_dir"]

#: the bundle's folder name
BUNDLE_NAME = "oct_robust_classification"


def is_bundle_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an OCT bundle folder (it has ``configs/train.json`` and ``configs/metadata.json``).

    Args:
        path: the folder to check.
    """
    configs = Path(path) / "configs"
    return (configs / "train.json").is_file() and (configs / "metadata.json").is_file()


def packaged_bundle_dir() -> Path | None:
    """The read-only bundle shipped inside the installed package, or None (e.g. an editable install)."""
    path = Path(__file__).resolve().parent / "resources" / BUNDLE_NAME
    return path if is_bundle_dir(path) else None


def copy_bundle(dst: str | os.PathLike, src: str | os.PathLike | None = None) -> Path:
    """Copy the bundle (its configs, docs and licence; no data, models or reports) to ``dst``.

    Args:
        dst: the new bundle folder; it must not exist yet, or be an empty folder.
        src: the bundle to copy (default: the one shipped with the package).

    Returns:
        ``dst`` as a ``Path``.

    Raises:
        FileNotFoundError: when there is no bundle to copy.
        FileExistsError: when ``dst`` exists and is not empty.
    """
    source = Path(src) if src is not None else packaged_bundle_dir()
    if source is None or not is_bundle_dir(source):
        raise FileNotFoundError(
            f"no OCT bundle to copy{f' at {str(source)!r}' if source is not None else ''}: this installation "
            "of monai-adv ships none (an editable install of a source checkout has it in "
            "bundles/oct_robust_classification)."
        )
    target = Path(dst)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{str(target)!r} exists and is not empty; choose a new folder for the bundle.")
    ignore = shutil.ignore_patterns("data", "runs", "eval", "quick", "__pycache__", "*.pt", "*.ts", "*.pyc")
    shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)
    (target / "models").mkdir(exist_ok=True)
    return target


def resolve_bundle_dir(
    bundle_dir: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None
) -> Path:
    """The bundle folder to run: ``bundle_dir`` when given, else a working copy of the packaged bundle.

    Args:
        bundle_dir: an existing bundle folder (e.g. ``bundles/oct_robust_classification`` in a checkout).
        work_dir: where the packaged bundle is copied to when ``bundle_dir`` is None: the copy is
            ``<work_dir>/oct_robust_classification`` (default: the current folder), reused when it exists.

    Raises:
        FileNotFoundError: when ``bundle_dir`` is not a bundle folder, or none is given and the
            installation ships no bundle.
    """
    if bundle_dir is not None:
        root = Path(bundle_dir)
        if not is_bundle_dir(root):
            raise FileNotFoundError(
                f"{str(root)!r} is not the OCT bundle folder (no configs/train.json and configs/metadata.json)."
            )
        return root
    target = Path(work_dir if work_dir is not None else os.getcwd()) / BUNDLE_NAME
    if is_bundle_dir(target):
        return target
    if packaged_bundle_dir() is None:
        raise FileNotFoundError(
            "no OCT bundle folder given and this installation of monai-adv ships none (an editable install "
            "of a source checkout): pass --bundle-dir bundles/oct_robust_classification (bundle_dir=...)."
        )
    print(f"copying the OCT bundle to {target} (its data, models and reports are written there)", flush=True)
    return copy_bundle(target)
