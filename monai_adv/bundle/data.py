"""The OCT bundle's data: the data set (synthetic on the first run, or the user's Kermany-layout folder),
its labeled / unlabeled / validation / test lists, and the image list for inference."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_adv.bundle.errors import BundleInputError, input_error
from monai_adv.data.check import check_dataset
from monai_adv.data.datalists import (
    DICOM_EXTENSIONS,
    NIFTI_EXTENSIONS,
    kermany_datalist,
    split_by_patient,
    volume_datalist,
)
from monai_adv.data.synthetic import write_synthetic_oct_dataset
from monai_adv.data.utils import IMAGE_EXTENSIONS
from monai_adv.distributed import barrier, is_main_process

logger = logging.getLogger(__name__)

__all__ = ["prepare_oct_dataset", "oct_split_datalists", "image_datalist"]


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.abspath(os.path.expanduser(os.fspath(a))) == os.path.abspath(
        os.path.expanduser(os.fspath(b))
    )


def prepare_oct_dataset(
    dataset_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike | None = None,
    n_per_class: int | Mapping[str, int] | None = None,
    image_size: int = 64,
    seed: int = 0,
    num_workers: int | None = 1,
    progress: bool = True,
    check: bool = True,
    read_files: bool = True,
) -> str:
    """Make sure ``dataset_dir`` holds a data set in the Kermany layout and return its path.

    When ``dataset_dir`` is ``synthetic_dir`` (the bundle's default), the synthetic OCT set is written
    there on the first call and reused afterwards (the writer is idempotent; under
    ``torch.distributed`` rank 0 writes while the others wait). The folder is the bundle's own cache:
    a set written with other arguments or by an older generator version is replaced. Any other folder
    must exist and hold files, and is checked before any work (``check``: see
    :func:`monai_adv.data.check_dataset`; ``python -m monai_adv.data check DIR`` runs the same check):
    every problem is logged as one ERROR or WARNING line naming its path, and any error stops the run.

    Args:
        dataset_dir: the data set root (``--dataset_dir``).
        synthetic_dir: the folder of the generated synthetic set.
        n_per_class: images per class, one number for every split or ``{split: n}``; default
            ``{"train": 200, "val": 25, "test": 50}``.
        image_size: side of the generated images.
        seed: seed of the generated set.
        num_workers: processes used to render the synthetic images.
        progress: show a progress bar while rendering.
        check: check a user's data set first.
        read_files: the check opens and decodes every file (the slow part).

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist or is not a folder.
        ValueError: when it is empty, or (``BundleInputError``) when the check finds errors.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(dataset_dir)))
    if synthetic_dir is not None and _same_path(path, synthetic_dir):
        counts = dict(n_per_class) if isinstance(n_per_class, Mapping) else None
        if counts is None:
            n = 200 if n_per_class is None else int(n_per_class)
            counts = {"train": n, "val": max(1, n // 8), "test": max(1, n // 4)}
        if is_main_process():
            write_synthetic_oct_dataset(
                path, image_size=int(image_size), seed=int(seed), splits=counts,
                num_workers=num_workers, progress=progress, overwrite=True,
            )  # fmt: skip
        barrier()
        return path
    if not os.path.exists(path):
        raise input_error(
            FileNotFoundError(
                f"dataset_dir {path!r} does not exist; point --dataset_dir at a folder in the Kermany layout "
                "(<dataset_dir>/train/<CNV|DME|DRUSEN|NORMAL>/*.jpeg, and test/), or leave it out to use the "
                "synthetic OCT set."
            )
        )
    if not os.path.isdir(path):
        raise input_error(FileNotFoundError(f"dataset_dir {path!r} is not a folder."))
    if not any(True for _ in os.scandir(path)):
        raise input_error(ValueError(f"dataset_dir {path!r} is an empty folder."))
    if check:
        problems = check_dataset(path, read_files=read_files)
        for p in problems:
            (logger.error if p.severity == "error" else logger.warning)(f"{p.path}: {p.message}")
        errors = [str(p) for p in problems if p.severity == "error"]
        if errors:
            shown = "\n".join(errors[:20]) + (
                f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
            )
            raise input_error(
                BundleInputError(
                    f"dataset_dir {path!r} failed the data-set check with {len(errors)} error(s) "
                    f"(python -m monai_adv.data check {path}):\n{shown}"
                )
            )
    return path


def _strip_labels(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in it.items() if k != "label"} for it in items]


def _limit(items: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    return items if n is None or n <= 0 else items[: int(n)]


def oct_split_datalists(
    root: str | os.PathLike,
    label_fraction: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_items: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The labeled, unlabeled, validation and test datalists of a Kermany-layout data set.

    - ``train`` (minus the validation patients) is divided by patient into ``labeled`` (about
      ``label_fraction`` of each class) and ``unlabeled`` (labels removed);
    - images in an ``unlabeled/`` split folder are added to ``unlabeled``;
    - ``val`` comes from a ``val/`` split folder, or else ``val_fraction`` of the train patients;
    - ``test`` comes from ``test/``, or else is the validation list.

    When no unlabeled image is left (``label_fraction=1`` and no ``unlabeled/`` folder) the labeled
    images, without labels, serve as the unlabeled data too (as SSAT does with full labels), with a
    warning.

    Args:
        root: the data set root.
        label_fraction: share of the training images that keep their label, in (0, 1].
        seed: seed of the patient shuffles.
        val_fraction: share of the training patients held out for validation when there is no ``val/``.
        max_items: cap every list at this many items (a smoke-test option; None or 0: no cap).

    Raises:
        FileNotFoundError: for a missing root or ``train/`` folder.
        ValueError: for an empty split, a bad fraction, or a layout that does not parse (from
            :func:`~monai_adv.data.kermany_datalist`).
    """
    f = float(label_fraction)
    if not (math.isfinite(f) and 0.0 < f <= 1.0):
        raise input_error(BundleInputError(f"label_fraction must lie in (0, 1], got {label_fraction!r}."))
    root = Path(root)
    train, _ = kermany_datalist(root, "train", label_fraction=1.0, seed=seed)
    if (root / "val").is_dir():
        val, _ = kermany_datalist(root, "val", label_fraction=1.0, seed=seed)
        rest = train
    else:
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}.")
        val, rest = split_by_patient(train, float(val_fraction), seed=seed + 1)
        if not rest:
            raise ValueError(f"{root}/train holds too few patients to hold out a validation set.")
    if float(label_fraction) >= 1.0:
        labeled, unlabeled = rest, []
    else:
        labeled, unl = split_by_patient(rest, float(label_fraction), seed=seed)
        unlabeled = _strip_labels(unl)
    if (root / "unlabeled").is_dir():
        unlabeled += kermany_datalist(root, "unlabeled")[1]
    if not unlabeled:
        warnings.warn(
            "no unlabeled images (label_fraction=1 and no unlabeled/ folder): the labeled images, without "
            "their labels, are used as the unlabeled data.",
            stacklevel=2,
        )
        unlabeled = _strip_labels(labeled)
    test = (
        kermany_datalist(root, "test", label_fraction=1.0, seed=seed)[0] if (root / "test").is_dir() else val
    )
    out = {"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": test}
    return {k: _limit(v, max_items) for k, v in out.items()}


def image_datalist(dataset_dir: str | os.PathLike, bscans: bool = True) -> list[dict[str, Any]]:
    """Every OCT image under ``dataset_dir`` (recursively), for inference.

    JPEG/PNG/BMP/TIFF files give one item each; DICOM and NIfTI files give one item per B-scan
    (``{"image": path, "frame": i}``). Hidden files and folders are skipped; files are sorted.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist or is not a folder.
        ValueError: when it holds no image.
    """
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(dataset_dir))))
    if not root.exists():
        raise input_error(FileNotFoundError(f"dataset_dir {str(root)!r} does not exist."))
    if not root.is_dir():
        raise input_error(FileNotFoundError(f"dataset_dir {str(root)!r} is not a folder."))
    images, volumes = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            low = name.lower()
            if low.startswith("."):
                continue
            p = os.path.join(dirpath, name)
            if low.endswith(IMAGE_EXTENSIONS):
                images.append({"image": p})
            elif low.endswith(DICOM_EXTENSIONS + NIFTI_EXTENSIONS):
                volumes.append(p)
    for v in volumes:
        try:
            images.extend(volume_datalist([v], bscans=bscans))
        except OSError:  # unreadable: listed as one item, so that inference reports it (readable_datalist)
            images.append({"image": v})
    items = images
    if not items:
        raise input_error(
            ValueError(
                f"dataset_dir {str(root)!r} holds no OCT image (extensions "
                f"{IMAGE_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS})."
            )
        )
    items.sort(key=lambda it: (it["image"], it.get("frame", 0)))
    return items
