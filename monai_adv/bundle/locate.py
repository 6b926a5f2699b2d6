"""Where the OCT bundles are: shipped with the package, copied to a working folder, or given explicitly.

A wheel (or a non-editable ``pip install .``) carries each bundle's configs, docs and licence as package
data under ``monai_adv/bundle/resources/<bundle name>`` (:data:`BUNDLE_NAMES`: the classification
bundle ``oct_robust_classification`` and the layer segmentation bundle ``oct_layer_segmentation``). A
bundle writes its data set, models and reports into its own folder, so it is never run in place inside
``site-packages``: :func:`resolve_bundle_dir` copies it to a working folder first
(``./<bundle name>`` by default) and reuses that copy on later runs. In a source checkout the bundles
are the repository's ``bundles/<bundle name>``; pass one explicitly (``make demo`` does).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "BUNDLE_NAME",
    "LAYER_BUNDLE_NAME",
    "BUNDLE_NAMES",
    "packaged_bundle_dir",
    "copy_bundle",
    "resolve_bundle_dir",
    "is_bundle_dir",
]

#: the classification bundle's folder name (the default of every function here)
BUNDLE_NAME = "oct_robust_classification"
#: the layer segmentation bundle's folder name
LAYER_BUNDLE_NAME = "oct_layer_segmentation"
#: the bundles the package ships
BUNDLE_NAMES = (BUNDLE_NAME, LAYER_BUNDLE_NAME)


def _check_name(name: str) -> str:
    if name not in BUNDLE_NAMES:
        raise ValueError(f"unknown bundle {name!r}; the package ships {BUNDLE_NAMES}.")
    return name


def is_bundle_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an OCT bundle folder (it has ``configs/train.json`` and ``configs/metadata.json``).

    Args:
        path: the folder to check.
    """
    configs = Path(path) / "configs"
    return (configs / "train.json").is_file() and (configs / "metadata.json").is_file()


def packaged_bundle_dir(name: str = BUNDLE_NAME) -> Path | None:
    """The read-only bundle ``name`` shipped inside the installed package, or None (e.g. an editable install).

    Args:
        name: one of :data:`BUNDLE_NAMES`.

    Raises:
        ValueError: for an unknown bundle name.
    """
    path = Path(__file__).resolve().parent / "resources" / _check_name(name)
    return path if is_bundle_dir(path) else None


def copy_bundle(
    dst: str | os.PathLike, src: str | os.PathLike | None = None, name: str = BUNDLE_NAME
) -> Path:
    """Copy a bundle (its configs, docs and licence; no data, models or reports) to ``dst``.

    Args:
        dst: the new bundle folder; it must not exist yet, or be an empty folder.
        src: the bundle to copy (default: the bundle ``name`` shipped with the package).
        name: which shipped bundle, when ``src`` is None (:data:`BUNDLE_NAMES`).

    Returns:
        ``dst`` as a ``Path``.

    Raises:
        FileNotFoundError: when there is no bundle to copy.
        FileExistsError: when ``dst`` exists and is not empty.
        ValueError: for an unknown bundle name.
    """
    _check_name(name)
    source = Path(src) if src is not None else packaged_bundle_dir(name)
    if source is None or not is_bundle_dir(source):
        raise FileNotFoundError(
            f"no OCT bundle to copy{f' at {str(source)!r}' if source is not None else ''}: this installation "
            "of monai-adv ships none (an editable install of a source checkout has it in "
            f"bundles/{name})."
        )
    target = Path(dst)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{str(target)!r} exists and is not empty; choose a new folder for the bundle.")
    ignore = shutil.ignore_patterns("data", "runs", "eval", "quick", "__pycache__", "*.pt", "*.ts", "*.pyc")
    shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)
    (target / "models").mkdir(exist_ok=True)
    return target


def resolve_bundle_dir(
    bundle_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    name: str = BUNDLE_NAME,
) -> Path:
    """The bundle folder to run: ``bundle_dir`` when given, else a working copy of the packaged bundle.

    Args:
        bundle_dir: an existing bundle folder (e.g. ``bundles/oct_robust_classification`` in a checkout).
        work_dir: where the packaged bundle is copied to when ``bundle_dir`` is None: the copy is
            ``<work_dir>/<name>`` (default: the current folder), reused when it exists.
        name: the bundle (:data:`BUNDLE_NAMES`) when ``bundle_dir`` is None.

    Raises:
        FileNotFoundError: when ``bundle_dir`` is not a bundle folder, or none is given and the
            installation ships no bundle.
        ValueError: for an unknown bundle name.
    """
    _check_name(name)
    if bundle_dir is not None:
        root = Path(bundle_dir)
        if not is_bundle_dir(root):
            raise FileNotFoundError(
                f"{str(root)!r} is not the OCT bundle folder (no configs/train.json and configs/metadata.json)."
            )
        return root
    target = Path(work_dir if work_dir is not None else os.getcwd()) / name
    if is_bundle_dir(target):
        return target
    if packaged_bundle_dir(name) is None:
        raise FileNotFoundError(
            "no OCT bundle folder given and this installation of monai-adv ships none (an editable install "
            f"of a source checkout): pass --bundle-dir bundles/{name} (bundle_dir=...)."
        )
    print(f"copying the OCT bundle to {target} (its data, models and reports are written there)", flush=True)
    return copy_bundle(target, name=name)
