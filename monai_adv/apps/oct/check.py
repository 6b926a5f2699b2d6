# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Check a data set in the Kermany layout before any work is done on it: one line per problem, with its path.

``python -m monai_adv.apps.oct check DIR`` (and the OCT bundle, at the start of every run on a user's
folder) checks that

- the folder exists and holds the required split folders (``train``; ``val``, ``test`` and
  ``unlabeled`` when present), each with at least one image;
- every folder in a labeled split is one of the classes (matched without regard to case, so ``cnv`` is
  CNV; an unknown folder is an error, never a new class), no class appears twice, and the training
  split holds more than one class;
- every file is an image (JPEG, PNG, BMP, TIFF), a DICOM or a NIfTI file (others are reported and left
  out), is named ``CLASS-PATIENT-N.ext`` in the folder of its class (so patients can be kept apart),
  and reads: decodes at its real bit depth, holds no NaN or infinite value;
- a class with a single training patient and no ``val/`` split is a warning (validation, held out by
  patient, can have no image of it);
- ``label_fraction``, when given, lies in (0, 1].
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from monai_adv.apps.oct.datalists import DICOM_EXTENSIONS, NIFTI_EXTENSIONS, parse_kermany_name
from monai_adv.apps.oct.utils import IMAGE_EXTENSIONS, OCT_CLASSES

__all__ = [
    "DatasetProblem",
    "check_dataset",
    "check_segmentation_dataset",
    "format_problems",
    "main",
    "SPLITS",
]

#: the split folders a Kermany-layout data set may hold
SPLITS: tuple[str, ...] = ("train", "val", "test", "unlabeled")


@dataclass(frozen=True)
class DatasetProblem:
    """One problem found in a data set: ``severity`` ("error" or "warning"), the ``path`` and what is wrong."""

    severity: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.path}: {self.message}"


def _kind(p: Path) -> str | None:
    name = p.name.lower()
    if name.endswith(IMAGE_EXTENSIONS):
        return "image"
    if name.endswith(DICOM_EXTENSIONS + NIFTI_EXTENSIONS):
        return "volume"
    return None


def _visible(p: Path) -> list[Path]:
    return sorted(q for q in p.iterdir() if not q.name.startswith("."))


def check_dataset(
    root: str | os.PathLike,
    classes: Sequence[str] = OCT_CLASSES,
    required_splits: Sequence[str] = ("train",),
    label_fraction: float | None = None,
    read_files: bool = True,
    kermany_names: bool = True,
) -> list[DatasetProblem]:
    """Check a data set in the Kermany layout (see the module notes); returns the problems found.

    Args:
        root: the data set folder (holding ``train/``, ...).
        classes: the class folder names (matched without regard to case).
        required_splits: split folders that must exist.
        label_fraction: also check this label fraction.
        read_files: open and decode every file (the slow part: every pixel is read once).
        kermany_names: require ``CLASS-PATIENT-N.ext`` names for 2D images in labeled splits.

    Returns:
        The problems, errors and warnings, in folder order; an empty list means the set is usable.
    """
    from monai_adv.apps.oct.transforms import LoadOCT

    problems: list[DatasetProblem] = []

    def err(p: Path | str, msg: str) -> None:
        problems.append(DatasetProblem("error", str(p), msg))

    def warn(p: Path | str, msg: str) -> None:
        problems.append(DatasetProblem("warning", str(p), msg))

    if label_fraction is not None:
        try:
            f = float(label_fraction)
        except (TypeError, ValueError):
            f = float("nan")
        if not (math.isfinite(f) and 0.0 < f <= 1.0):
            err("label_fraction", f"must lie in (0, 1], got {label_fraction!r}")
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not root.exists():
        err(root, "does not exist")
        return problems
    if not root.is_dir():
        err(root, "is not a folder")
        return problems
    class_index = {c.upper(): c for c in classes}
    entries = _visible(root)
    split_dirs = {p.name.lower(): p for p in entries if p.is_dir() and p.name.lower() in SPLITS}
    if not split_dirs and any(p.is_dir() and p.name.upper() in class_index for p in entries):
        err(root, f"holds class folders, not split folders: point at the folder that holds {list(SPLITS)}")
        return problems
    for p in entries:
        if p.is_dir() and p.name.lower() not in SPLITS:
            warn(p, f"is not a split folder ({', '.join(SPLITS)}): left out")
        elif p.is_file() and _kind(p):
            warn(p, "lies outside the split folders: left out")
    for s in required_splits:
        if s.lower() not in split_dirs:
            err(root / s, f"split folder missing (required: {list(required_splits)})")
    loader = LoadOCT() if read_files else None
    for split, sdir in sorted(split_dirs.items(), key=lambda kv: SPLITS.index(kv[0])):
        labeled = split != "unlabeled"
        files: list[tuple[Path, str | None]] = []  # (file, class)
        seen_class: dict[str, Path] = {}
        for p in _visible(sdir):
            if p.is_dir():
                key = p.name.upper()
                if key not in class_index:
                    if labeled:
                        err(p, f"unknown class folder; expected one of {list(classes)} (any case)")
                        continue
                    key = None
                elif key in seen_class:
                    err(p, f"class {class_index[key]} appears twice (also {seen_class[key].name}/)")
                    continue
                if key is not None:
                    seen_class[key] = p
                for q in _visible(p):
                    files.append((q, key))
            elif labeled and _kind(p):
                err(p, f"lies directly in the {split} split: a labeled split needs one folder per class")
            else:
                files.append((p, None))
        n_read, per_class = 0, dict.fromkeys(class_index, 0)
        patients: dict[str, set[str]] = {k: set() for k in class_index}
        for q, key in files:
            kind = _kind(q) if q.is_file() else None
            if kind is None:
                warn(q, "is not an image, DICOM or NIfTI file: left out")
                continue
            if labeled and key is not None and kind == "image" and kermany_names:
                try:
                    cls_name, _, _ = parse_kermany_name(q)
                except ValueError:
                    err(q, "name does not follow CLASS-PATIENTID-N.ext (needed to keep patients apart)")
                    continue
                if cls_name in class_index and cls_name != key:
                    err(q, f"is named as class {cls_name} but lies in the {class_index[key]} folder")
                    continue
            if loader is not None:
                try:
                    loader(q)
                except Exception as e:  # every reading error becomes one line
                    err(q, f"unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
                    continue
            n_read += 1
            if key is not None:
                per_class[key] += 1
                try:
                    patients[key].add(parse_kermany_name(q)[1])
                except ValueError:
                    patients[key].add(q.name)  # a volume or an unparsed name: its own patient
        if n_read == 0:
            err(sdir, "holds no usable image")
            continue
        if split == "train":
            present = [class_index[k] for k, n in per_class.items() if n]
            if len(present) < 2:
                err(sdir, f"holds images of {len(present)} class(es) {present}: training needs more than one")
            for k, n in per_class.items():
                if n == 0 and len(present) >= 2:
                    warn(sdir, f"holds no {class_index[k]} image: the network never sees this class")
                elif n and len(patients[k]) == 1 and "val" not in split_dirs:
                    warn(
                        seen_class.get(k, sdir),
                        f"class {class_index[k]} has a single patient and there is no val/ split: the patient is "
                        "kept for training, so validation has no image of this class (add a val/ split or "
                        "more patients)",
                    )
    return problems


def check_segmentation_dataset(
    root: str | os.PathLike,
    num_classes: int,
    required_splits: Sequence[str] = ("train",),
    read_files: bool = True,
) -> list[DatasetProblem]:
    """Check a segmentation data set (``<split>/images/`` with label maps in ``<split>/labels/``) before
    any work; returns the problems found, one per line with its path.

    Checked: the required splits exist and each split present lists (see
    :func:`~monai_adv.apps.oct.segmentation_datalist`: no label map without its image, no lossy label map);
    ``train`` has at least one labeled image; with ``read_files`` every image reads
    (:class:`~monai_adv.apps.oct.LoadOCT`), every label map reads as class indices
    (:func:`~monai_adv.apps.oct.read_label_map`: palette PNGs as their indices, colour label maps refused),
    holds only values in ``[0, num_classes)`` and has its image's size; a label map of a single value
    is a warning.

    Args:
        root: the data set folder.
        num_classes: the classes of the network's output.
        required_splits: split folders that must exist.
        read_files: open and decode every image and label map.
    """
    from monai_adv.apps.oct.datalists import segmentation_datalist
    from monai_adv.apps.oct.transforms import LoadOCT, read_label_map

    problems: list[DatasetProblem] = []
    root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
    if not root.is_dir():
        return [DatasetProblem("error", str(root), "does not exist or is not a folder")]
    for s in required_splits:
        if not (root / s / "images").is_dir():
            problems.append(DatasetProblem("error", str(root / s / "images"), "split folder missing"))
    loader = LoadOCT() if read_files else None
    for split in SPLITS:
        if not (root / split / "images").is_dir():
            continue
        try:
            labeled, unlabeled = segmentation_datalist(root, split)
        except (OSError, ValueError) as e:
            problems.append(DatasetProblem("error", str(root / split), str(e).splitlines()[0]))
            continue
        if split == "train" and not labeled:
            problems.append(
                DatasetProblem("error", str(root / split / "labels"), "no label map: nothing to train on")
            )
        for item in labeled + unlabeled:
            if loader is None:
                continue
            try:
                img = loader(item["image"])
            except Exception as e:
                problems.append(
                    DatasetProblem("error", item["image"], f"unreadable: {str(e).splitlines()[0]}")
                )
                continue
            if "label" not in item:
                continue
            try:
                lab = read_label_map(item["label"], num_classes)
            except Exception as e:
                problems.append(DatasetProblem("error", item["label"], str(e).splitlines()[0]))
                continue
            if tuple(lab.shape) != tuple(img.shape[1:3]):
                problems.append(
                    DatasetProblem(
                        "error",
                        item["label"],
                        f"has size {tuple(lab.shape)}, its image {tuple(img.shape[1:3])}",
                    )
                )
            elif lab.size and int(lab.min()) == int(lab.max()):
                problems.append(
                    DatasetProblem(
                        "warning", item["label"], f"holds one value only ({int(lab.min())}) for every pixel"
                    )
                )
    return problems


def format_problems(problems: Sequence[DatasetProblem]) -> str:
    """One line per problem, then a summary line."""
    n_err = sum(p.severity == "error" for p in problems)
    lines = [str(p) for p in problems]
    lines.append(f"{n_err} error(s), {len(problems) - n_err} warning(s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_adv.apps.oct check DIR [...]``: print the problems; exit status 1 when there are errors."""
    parser = argparse.ArgumentParser(prog="python -m monai_adv.apps.oct", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check a data set in the Kermany layout")
    c.add_argument("dataset_dir")
    c.add_argument("--classes", default=",".join(OCT_CLASSES), help="comma-separated class folder names")
    c.add_argument("--require", default="train", help="comma-separated split folders that must exist")
    c.add_argument("--label-fraction", type=float, default=None)
    c.add_argument("--no-read", action="store_true", help="do not open the files (structure and names only)")
    c.add_argument(
        "--segmentation",
        type=int,
        default=None,
        metavar="NUM_CLASSES",
        help="check a segmentation data set (<split>/images, <split>/labels) whose label maps hold NUM_CLASSES classes",
    )
    args = parser.parse_args(argv)
    if args.segmentation is not None:
        problems = check_segmentation_dataset(
            args.dataset_dir,
            args.segmentation,
            required_splits=[s.strip() for s in args.require.split(",") if s.strip()],
            read_files=not args.no_read,
        )
        print(format_problems(problems))
        return 1 if any(p.severity == "error" for p in problems) else 0
    problems = check_dataset(
        args.dataset_dir,
        classes=[s.strip() for s in args.classes.split(",") if s.strip()],
        required_splits=[s.strip() for s in args.require.split(",") if s.strip()],
        label_fraction=args.label_fraction,
        read_files=not args.no_read,
    )
    print(format_problems(problems))
    return 1 if any(p.severity == "error" for p in problems) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
