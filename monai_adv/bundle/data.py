"""The bundles' data: one path for every bundle, whatever its layout (:class:`DatasetLayout`).

The data set (synthetic on the first run, or the user's folder: the Kermany class-folder layout of the
classification bundle, or the ``<split>/images`` + ``<split>/labels`` layout of the layer segmentation
bundle), its labeled / unlabeled / validation / test lists, and the image list for inference."""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monai_adv.apps.oct.check import check_dataset, check_segmentation_dataset
from monai_adv.apps.oct.datalists import (
    DICOM_EXTENSIONS,
    NIFTI_EXTENSIONS,
    kermany_datalist,
    segmentation_datalist,
    split_by_patient,
    volume_datalist,
)
from monai_adv.apps.oct.synthetic import (
    GENERATOR_VERSION,
    MANIFEST_NAME,
    SyntheticSetMismatchError,
    write_synthetic_oct_dataset,
)
from monai_adv.apps.oct.utils import IMAGE_EXTENSIONS
from monai_adv.bundle.errors import BundleInputError, input_error
from monai_adv.distributed import barrier, is_main_process
from monai_adv.io import FolderLock

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetLayout",
    "DATASET_LAYOUTS",
    "prepare_dataset",
    "split_datalists",
    "prepare_oct_dataset",
    "oct_split_datalists",
    "image_datalist",
    "stratified_subset",
    "synthetic_set_key",
]


def _same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.abspath(os.path.expanduser(os.fspath(a))) == os.path.abspath(
        os.path.expanduser(os.fspath(b))
    )


@dataclass(frozen=True)
class DatasetLayout:
    """How a bundle's data set lies on disk, and how its synthetic stand-in is written.

    One preparation path (:func:`prepare_dataset`) and one division into labeled, unlabeled,
    validation and test lists (:func:`split_datalists`) serve every layout; a layout says only what
    differs: how a split folder is listed, how a user's folder is checked, and what the generator writes.
    """

    #: the layout's name (a key of :data:`DATASET_LAYOUTS`).
    name: str
    #: ``(root, split, seed) -> (labeled, unlabeled)`` items of one split folder.
    list_split: Callable[[Path, str, int], tuple[list[dict[str, Any]], list[dict[str, Any]]]]
    #: ``(root, split) -> folder`` whose presence means the split exists.
    split_folder: Callable[[Path, str], Path]
    #: the item key the patient divisions keep balanced (``"label"`` for classes), or None (e.g. label maps).
    stratify_key: str | None
    #: ``(path, check, read_files, num_classes)`` raises for a user's folder that cannot be used.
    check_folder: Callable[[str, bool, bool, int | None], None]
    #: what a ``--dataset_dir`` should hold, said when it does not exist.
    missing_hint: str
    #: extra arguments of :func:`~monai_adv.apps.oct.write_synthetic_oct_dataset`.
    synthetic_options: Mapping[str, Any] = field(default_factory=dict)
    #: images per class of the synthetic ``train`` split, and the divisors giving its ``val`` and ``test``
    #: splits.
    default_counts: tuple[int, int, int] = (200, 8, 4)


def _report_problems(path: str, problems: Sequence[Any]) -> None:
    for p in problems:
        (logger.error if p.severity == "error" else logger.warning)(f"{p.path}: {p.message}")
    errors = [str(p) for p in problems if p.severity == "error"]
    if errors:
        shown = "\n".join(errors[:20]) + (f"\n... and {len(errors) - 20} more" if len(errors) > 20 else "")
        raise input_error(
            BundleInputError(
                f"dataset_dir {path!r} failed the data-set check with {len(errors)} error(s) "
                f"(python -m monai_adv.apps.oct check {path}):\n{shown}"
            )
        )


def _check_kermany_folder(path: str, check: bool, read_files: bool, num_classes: int | None = None) -> None:
    if not any(True for _ in os.scandir(path)):
        raise input_error(ValueError(f"dataset_dir {path!r} is an empty folder."))
    if check:
        _report_problems(path, check_dataset(path, read_files=read_files))


def _check_segmentation_folder(
    path: str, check: bool, read_files: bool, num_classes: int | None = None
) -> None:
    if not os.path.isdir(os.path.join(path, "train", "images")):
        raise input_error(
            FileNotFoundError(
                f"dataset_dir {path!r} has no train/images/ folder: a segmentation data set holds "
                "<split>/images/ and <split>/labels/ (label maps of class indices, named as their images)."
            )
        )
    if check:
        from monai_adv.apps.oct.synthetic import OCT_LAYER_CLASSES

        k = len(OCT_LAYER_CLASSES) if num_classes is None else int(num_classes)
        _report_problems(path, check_segmentation_dataset(path, k, read_files=read_files))


#: the data-set layouts of the bundles: ``"kermany"`` (class folders, the classification bundle) and
#: ``"segmentation"`` (``<split>/images`` with label maps in ``<split>/labels``, the layer bundle)
DATASET_LAYOUTS: dict[str, DatasetLayout] = {
    "kermany": DatasetLayout(
        name="kermany",
        list_split=lambda root, split, seed: kermany_datalist(root, split, label_fraction=1.0, seed=seed),
        split_folder=lambda root, split: root / split,
        stratify_key="label",
        check_folder=_check_kermany_folder,
        missing_hint="a folder in the Kermany layout (<dataset_dir>/train/<CNV|DME|DRUSEN|NORMAL>/*.jpeg, and "
        "test/), or leave it out to use the synthetic OCT set",
        default_counts=(200, 8, 4),
    ),
    "segmentation": DatasetLayout(
        name="segmentation",
        list_split=lambda root, split, seed: segmentation_datalist(root, split, seed=seed),
        split_folder=lambda root, split: root / split / "images",
        stratify_key=None,
        check_folder=_check_segmentation_folder,
        missing_hint="a segmentation data set (<dataset_dir>/train/images/*.png with label maps in "
        "<dataset_dir>/train/labels/, and test/), or leave it out to use the synthetic OCT layer set",
        synthetic_options={"layers": True, "image_format": "png"},
        default_counts=(100, 10, 5),
    ),
}


def synthetic_set_key(
    counts: Mapping[str, int], image_size: int, seed: int, options: Mapping[str, Any] | None = None
) -> str:
    """The name of a synthetic set by everything it depends on: its size, seed, counts per split, the
    generator version and the layout's options, e.g. ``size64-seed0-train200-val25-test50-v3-layers``."""
    parts = [f"size{int(image_size)}", f"seed{int(seed)}"]
    parts += [f"{k}{int(v)}" for k, v in counts.items()]
    parts.append(f"v{GENERATOR_VERSION}")
    for k, v in sorted((options or {}).items()):
        if k == "layers" and v:
            parts.append("layers")
        elif k not in ("image_format", "layers"):
            parts.append(f"{k}{v}")
    if (options or {}).get("image_format") not in (None, "jpeg"):
        parts.append(str(options["image_format"]))
    return "-".join(parts)


def _synthetic_target(path: str, key: str) -> str:
    """Where the synthetic set of ``key`` lives: the set's own folder ``<path>@<key>`` once it exists,
    else ``path`` itself when it is empty or new (its manifest is checked by the writer)."""
    keyed = f"{path}@{key}"
    if os.path.isfile(os.path.join(keyed, MANIFEST_NAME)):
        return keyed
    return path


def _layout(layout: str | DatasetLayout) -> DatasetLayout:
    if isinstance(layout, DatasetLayout):
        return layout
    if layout not in DATASET_LAYOUTS:
        raise ValueError(f"unknown data-set layout {layout!r}; choose one of {sorted(DATASET_LAYOUTS)}.")
    return DATASET_LAYOUTS[layout]


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike | None = None,
    layout: str | DatasetLayout = "kermany",
    n_per_class: int | Mapping[str, int] | None = None,
    image_size: int = 64,
    seed: int = 0,
    num_workers: int | None = 1,
    progress: bool = True,
    check: bool = True,
    read_files: bool = True,
    num_classes: int | None = None,
) -> str:
    """Make sure ``dataset_dir`` holds a data set in ``layout`` and return its path.

    When ``dataset_dir`` is ``synthetic_dir`` (a bundle's default), the synthetic OCT set in that
    layout is written there on the first call and reused afterwards (the writer is idempotent; under
    ``torch.distributed`` rank 0 writes while the others wait; one writer at a time holds the data
    folder's lock). A set is never replaced, since another run may be reading it: when ``synthetic_dir``
    holds a set of other arguments (another seed, size, counts or generator version), this one goes to
    ``<synthetic_dir>@<key>``, named by everything it depends on (:func:`synthetic_set_key`), and the
    path returned is that folder. A ``synthetic_dir`` that is not empty and holds no synthetic set is
    refused (``FileExistsError``): nothing is written into a real data set. Any other folder
    must exist and is checked before any work (the layout's check; for ``"kermany"`` with ``check``,
    :func:`monai_adv.apps.oct.check_dataset`, which ``python -m monai_adv.apps.oct check DIR`` runs too: every
    problem is logged as one ERROR or WARNING line naming its path, and any error stops the run).

    Args:
        dataset_dir: the data set root (``--dataset_dir``).
        synthetic_dir: the folder of the generated synthetic set.
        layout: ``"kermany"`` or ``"segmentation"`` (:data:`DATASET_LAYOUTS`), or a :class:`DatasetLayout`.
        n_per_class: images per class, one number for every split or ``{split: n}``; default: the
            layout's ``default_counts`` (``{"train": 200, "val": 25, "test": 50}`` for ``"kermany"``).
        image_size: side of the generated images.
        seed: seed of the generated set.
        num_workers: processes used to render the synthetic images.
        progress: show a progress bar while rendering.
        check: check a user's data set first.
        read_files: the check opens and decodes every file (the slow part).
        num_classes: the classes a segmentation label map may hold (default: the 13 OCT layer classes);
            the ``"segmentation"`` check (:func:`~monai_adv.apps.oct.check_segmentation_dataset`) reads every
            label map as class indices and refuses colour maps and values outside the classes.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist or is not a folder (or, for
            ``"segmentation"``, has no ``train/images/``).
        ValueError: for an unknown layout; when the folder is empty, or (``BundleInputError``) when the
            check finds errors.
    """
    from monai_adv.bundle.components import check_config_paths

    check_config_paths(dataset_dir=dataset_dir, synthetic_dir=synthetic_dir)
    lay = _layout(layout)
    path = os.path.abspath(os.path.expanduser(os.fspath(dataset_dir)))
    if synthetic_dir is not None and _same_path(path, synthetic_dir):
        counts = dict(n_per_class) if isinstance(n_per_class, Mapping) else None
        if counts is None:
            n0, val_div, test_div = lay.default_counts
            n = n0 if n_per_class is None else int(n_per_class)
            counts = {"train": n, "val": max(1, n // val_div), "test": max(1, n // test_div)}
        key = synthetic_set_key(counts, int(image_size), int(seed), lay.synthetic_options)
        if is_main_process():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            # one writer at a time in the data folder (two runs of one seed render the same files once)
            with FolderLock(os.path.dirname(path), wait_s=3600.0, what="synthetic data folder"):
                target = _synthetic_target(path, key)
                kwargs = dict(
                    image_size=int(image_size), seed=int(seed), splits=counts, num_workers=num_workers,
                    progress=progress, **dict(lay.synthetic_options),
                )  # fmt: skip
                try:
                    write_synthetic_oct_dataset(target, **kwargs)
                except SyntheticSetMismatchError:
                    # the folder holds a set of other arguments, maybe in use by another run: never
                    # replaced; this set goes to its own folder, named by everything it depends on
                    target = f"{path}@{key}"
                    logger.info(f"{path} holds a synthetic set of other arguments; this one is {target}")
                    write_synthetic_oct_dataset(target, **kwargs)
        barrier()
        return _synthetic_target(path, key)
    if not os.path.exists(path):
        raise input_error(
            FileNotFoundError(
                f"dataset_dir {path!r} does not exist; point --dataset_dir at {lay.missing_hint}."
            )
        )
    if not os.path.isdir(path):
        raise input_error(FileNotFoundError(f"dataset_dir {path!r} is not a folder."))
    lay.check_folder(path, check, read_files, num_classes)
    return path


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
    """:func:`prepare_dataset` in the Kermany layout: the classification bundle's data set.

    Args: as :func:`prepare_dataset`; the synthetic set defaults to ``{"train": 200, "val": 25, "test": 50}``
    images per class.
    """
    return prepare_dataset(
        dataset_dir, synthetic_dir, "kermany", n_per_class=n_per_class, image_size=image_size, seed=seed,
        num_workers=num_workers, progress=progress, check=check, read_files=read_files,
    )  # fmt: skip


def _strip_labels(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in it.items() if k != "label"} for it in items]


def _limit(items: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    return items if n is None or n <= 0 else items[: int(n)]


def stratified_subset(
    items: Sequence[Mapping[str, Any]], per_class: int | None, label_key: str = "label"
) -> list[Mapping[str, Any]]:
    """The first ``per_class`` items of each class, in the list's order: a fixed, class-balanced subset.

    For the attacks too expensive to run on a whole test list (an adaptive worst case): every system
    evaluated with the same list and ``per_class`` sees the same items.

    Args:
        items: a datalist whose items carry a class index under ``label_key``.
        per_class: items kept per class; None or 0 keeps the whole list.
        label_key: the key of the class index.

    Raises:
        ValueError: for an item without ``label_key`` or a negative ``per_class``.
    """
    if not per_class:
        return list(items)
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}.")
    taken: dict[Any, int] = {}
    out = []
    for i, item in enumerate(items):
        if label_key not in item:
            raise ValueError(f"datalist item {i} has no {label_key!r}: a stratified subset needs the class.")
        y = item[label_key]
        y = int(y) if not isinstance(y, str) else y
        if taken.get(y, 0) < per_class:
            taken[y] = taken.get(y, 0) + 1
            out.append(item)
    return out


def split_datalists(
    root: str | os.PathLike,
    layout: str | DatasetLayout = "kermany",
    label_fraction: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_items: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The labeled, unlabeled, validation and test datalists of a data set in ``layout``.

    - ``train`` (minus the validation patients) is divided by patient into ``labeled`` (about
      ``label_fraction`` of it, balanced by class where the layout has classes) and ``unlabeled``
      (labels removed); its images without a label (a segmentation image with no label map) are
      unlabeled too;
    - images of an ``unlabeled/`` split are added to ``unlabeled``;
    - ``val`` comes from a ``val/`` split, or else ``val_fraction`` of the train patients (a class with a
      single training patient keeps it for training, with a warning: validation then lacks that class);
    - ``test`` comes from ``test/``, or else is the validation list.

    When no unlabeled image is left (``label_fraction=1`` and no ``unlabeled/`` split) the labeled
    images, without labels, serve as the unlabeled data too (as SSAT does with full labels), with a
    warning.

    Args:
        root: the data set root.
        layout: ``"kermany"`` or ``"segmentation"`` (:data:`DATASET_LAYOUTS`), or a :class:`DatasetLayout`.
        label_fraction: share of the training images that keep their label, in (0, 1].
        seed: seed of the patient shuffles.
        val_fraction: share of the training patients held out for validation when there is no ``val/``.
        max_items: cap every list at this many items (a smoke-test option; None or 0: no cap).

    Raises:
        BundleInputError: for a label fraction outside (0, 1], or a ``train`` split with no labeled image.
        FileNotFoundError: for a missing root or ``train`` split.
        ValueError: for an unknown layout, an empty split, or a layout that does not parse (from
            :func:`~monai_adv.apps.oct.kermany_datalist` or :func:`~monai_adv.apps.oct.segmentation_datalist`).
    """
    lay = _layout(layout)
    f = float(label_fraction)
    if not (math.isfinite(f) and 0.0 < f <= 1.0):
        raise input_error(BundleInputError(f"label_fraction must lie in (0, 1], got {label_fraction!r}."))
    root = Path(root)
    train, unlabeled = lay.list_split(root, "train", seed)
    unlabeled = _strip_labels(unlabeled)
    if not train:
        raise input_error(BundleInputError(f"{root}/train holds no labeled image (layout {lay.name!r})."))
    if lay.split_folder(root, "val").is_dir():
        val, _ = lay.list_split(root, "val", seed)
        rest = train
    else:
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}.")
        # every class keeps a training patient first: validation gets the others
        val, rest = split_by_patient(
            train, float(val_fraction), seed=seed + 1, label_key=lay.stratify_key, min_second=1
        )
        if not rest:
            raise ValueError(f"{root}/train holds too few patients to hold out a validation set.")
        if not val:
            raise ValueError(
                f"{root}/train holds one patient per class: none is left to hold out for validation; add a "
                "val/ split or more patients."
            )
        if lay.stratify_key is not None:
            missing = sorted({it[lay.stratify_key] for it in rest} - {it[lay.stratify_key] for it in val})
            if missing:
                logger.warning(
                    f"class(es) {missing} have a single patient in {root}/train and no val/ split: the patient "
                    "is kept for training, and validation has no image of these classes."
                )
    if f >= 1.0:
        labeled = rest
    else:
        labeled, unl = split_by_patient(rest, f, seed=seed, label_key=lay.stratify_key)
        unlabeled = unlabeled + _strip_labels(unl)
    if lay.split_folder(root, "unlabeled").is_dir():
        unlabeled = unlabeled + _strip_labels(lay.list_split(root, "unlabeled", seed)[1])
    if not unlabeled:
        warnings.warn(
            "no unlabeled images (label_fraction=1 and no unlabeled/ split): the labeled images, without "
            "their labels, are used as the unlabeled data.",
            stacklevel=2,
        )
        unlabeled = _strip_labels(labeled)
    test = lay.list_split(root, "test", seed)[0] if lay.split_folder(root, "test").is_dir() else val
    out = {"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": test}
    return {k: _limit(v, max_items) for k, v in out.items()}


def oct_split_datalists(
    root: str | os.PathLike,
    label_fraction: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_items: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`split_datalists` of a Kermany-layout data set (the classification bundle's).

    Args: as :func:`split_datalists`.
    """
    return split_datalists(
        root, "kermany", label_fraction, seed=seed, val_fraction=val_fraction, max_items=max_items
    )


def image_datalist(dataset_dir: str | os.PathLike, bscans: bool = True) -> list[dict[str, Any]]:
    """Every OCT image under ``dataset_dir`` (recursively), for inference.

    JPEG/PNG/BMP/TIFF files give one item each; DICOM and NIfTI files give one item per B-scan
    (``{"image": path, "frame": i}``). Hidden files and folders are skipped; files are sorted.

    Raises:
        FileNotFoundError: when ``dataset_dir`` does not exist or is not a folder.
        ValueError: when it holds no image.
    """
    from monai_adv.bundle.components import check_config_paths

    check_config_paths(dataset_dir=dataset_dir)
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
