# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""MONAI datalists for real OCT data: the Kermany folder layout, OCTMNIST ``.npz``, DICOM and NIfTI, and
the segmentation layout (``images/`` and ``labels/``).

A datalist is a list of dicts (``{"image": ..., "label": int}``) as MONAI's ``Dataset`` expects; the
``image`` entry is a file path (or, for OCTMNIST, an in-memory array) that :class:`monai_adv.apps.oct.LoadOCTd`
reads. Unlabeled lists carry no ``label`` key. In a segmentation datalist ``label`` is the path of the
label map (MONAI's convention for segmentation).
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai_adv.apps.oct.utils import (
    IMAGE_EXTENSIONS,
    MAX_VOLUME_BSCANS,
    OCT_CLASSES,
    ImageTooLargeError,
    _env_limit,
    check_pixel_limit,
    label_to_index,
)

__all__ = [
    "KERMANY_NAME_PATTERN",
    "parse_kermany_name",
    "kermany_datalist",
    "split_by_patient",
    "load_octmnist",
    "octmnist_datalist",
    "DICOM_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "count_bscans",
    "volume_datalist",
    "LABEL_MAP_EXTENSIONS",
    "segmentation_datalist",
]

#: Kermany file names: ``CLASS-PATIENTID-N.jpeg`` (e.g. ``CNV-1016042-1.jpeg``).
KERMANY_NAME_PATTERN = re.compile(r"^(?P<cls>[A-Za-z]+)-(?P<patient>[A-Za-z0-9_]+)-(?P<num>\d+)$")
DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom")
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii", ".nii.gz")
#: extensions of label maps in the segmentation layout (lossless formats only)
LABEL_MAP_EXTENSIONS: tuple[str, ...] = (".png", ".tif", ".tiff", ".bmp") + NIFTI_EXTENSIONS


def _fraction(label_fraction: float) -> float:
    f = float(label_fraction)
    if not (0.0 < f <= 1.0) or not np.isfinite(f):
        raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}.")
    return f


def parse_kermany_name(path: str | os.PathLike) -> tuple[str, str, int]:
    """Parse ``CLASS-PATIENTID-N.ext`` into ``(class name, patient id, image number)``.

    Raises:
        ValueError: naming the file when its name does not follow the pattern.
    """
    p = Path(path)
    stem = p.name.split(".")[0]
    m = KERMANY_NAME_PATTERN.match(stem)
    if m is None:
        raise ValueError(
            f"file name {p.name!r} ({p}) does not follow the Kermany pattern CLASS-PATIENTID-N.ext; "
            "pass patient_id_fn to kermany_datalist for other naming schemes."
        )
    return m.group("cls").upper(), m.group("patient"), int(m.group("num"))


def _is_image(p: Path, extensions: Sequence[str]) -> bool:
    name = p.name.lower()
    return p.is_file() and not name.startswith(".") and any(name.endswith(e) for e in extensions)


def _check_image(path: Path) -> None:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:  # verify() does not decode the pixels; load() does
            im.load()
    except Exception as e:
        raise OSError(f"unreadable or corrupt image file {str(path)!r}: {e}") from e


def kermany_datalist(
    root: str | os.PathLike,
    split: str = "train",
    label_fraction: float = 1.0,
    seed: int = 0,
    classes: Sequence[str] = OCT_CLASSES,
    check_files: bool = False,
    on_error: str = "raise",
    patient_id_fn: Callable[[Path], str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    volumes: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Datalists of a data set in the Kermany layout: ``root/<split>/<CLASS>/<CLASS>-<PATIENT>-<N>.jpeg``.

    The images are divided into a labeled and an unlabeled list **by patient** (the id in the file
    name), so no patient has images in both lists; the division is stratified by each patient's class
    and the labeled list holds about ``label_fraction`` of the images of every class. A patient id that
    appears under two classes (it happens in Kermany) is still one patient.

    The split folder ``unlabeled`` (as written by :func:`monai_adv.apps.oct.write_synthetic_oct_dataset`)
    may be flat, without class folders: all its images go to the unlabeled list.

    Args:
        root: data set root holding the split folders.
        split: split folder name (``"train"``, ``"test"``, ``"val"``, ``"unlabeled"``, ...).
        label_fraction: fraction of the images (chosen by patient) that keep their label, in (0, 1].
        seed: seed of the patient shuffle.
        classes: class folder names in label order (matched case-insensitively).
        check_files: open and decode every image to find corrupt files now rather than in training.
        on_error: ``"raise"`` (default) or ``"skip"`` (warn and leave the file out) for unreadable
            files when ``check_files`` is true.
        patient_id_fn: maps a file path to its patient id, for names that do not follow the Kermany
            pattern; the default parses ``CLASS-PATIENTID-N``.
        extensions: file extensions read as images.
        volumes: also read DICOM (``.dcm``) and NIfTI (``.nii``, ``.nii.gz``) files in the class
            folders, one item per B-scan (``"frame"``), the whole file being one patient (the id
            parsed from a Kermany-style name, else the file name). Other files in a class folder are
            left out with a warning naming them.

    Returns:
        ``(labeled, unlabeled)``: items ``{"image": str, "label": int, "patient": str}`` (plus
        ``"frame"`` for DICOM/NIfTI B-scans) and ``{"image": str, "patient": str}`` (no label key).

    Raises:
        FileNotFoundError: when ``root`` or the split folder does not exist.
        ValueError: for an unknown class folder, a file whose name names another class or does not
            parse, an empty split, a label fraction outside (0, 1] or a bad ``on_error``.
        OSError: naming the file, for a corrupt image when ``check_files`` and ``on_error="raise"``.
    """
    frac = _fraction(label_fraction)
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set root {str(root)!r} is not a folder.")
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise FileNotFoundError(
            f"split folder {str(split_dir)!r} does not exist; splits found in {root}: {found}."
        )
    class_index = {c.upper(): i for i, c in enumerate(classes)}
    exts = tuple(e.lower() for e in extensions)
    skipped: list[Path] = []
    pid_fn = patient_id_fn or (lambda p: parse_kermany_name(p)[1])

    entries: list[tuple[Path, int | None]] = []
    vol_exts = DICOM_EXTENSIONS + NIFTI_EXTENSIONS if volumes else ()
    loose = sorted(p for p in split_dir.iterdir() if _is_image(p, exts) or _is_image(p, vol_exts))
    subdirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unlabeled_split = split.lower() == "unlabeled"
    if loose and not unlabeled_split:
        raise ValueError(
            f"{len(loose)} image(s) lie directly in {str(split_dir)!r} (e.g. {loose[0].name!r}); a labeled split "
            f"needs one sub-folder per class {tuple(classes)}."
        )
    for p in loose:
        entries.append((p, None))
    for d in subdirs:
        key = d.name.upper()
        if key not in class_index:
            raise ValueError(f"unknown class folder {str(d)!r}; expected class folders {tuple(classes)}.")
        lab = class_index[key]
        for p in sorted(d.iterdir()):
            if _is_image(p, vol_exts):
                entries.append((p, None if unlabeled_split else lab))
                continue
            if not _is_image(p, exts):
                if p.is_file() and not p.name.startswith("."):
                    skipped.append(p)
                continue
            if patient_id_fn is None:
                cls_name = parse_kermany_name(p)[0]
                if cls_name in class_index and cls_name != key:
                    raise ValueError(
                        f"file {str(p)!r} is named as class {cls_name} but lies in folder {d.name}."
                    )
            entries.append((p, None if unlabeled_split else lab))
    if not entries:
        raise ValueError(f"split {split!r} in {str(root)!r} holds no images (extensions {exts}).")

    if skipped:
        warnings.warn(
            f"{len(skipped)} file(s) in the class folders of {str(split_dir)!r} are not images and are left out, "
            f"e.g. {str(skipped[0])!r} (read: {exts + vol_exts}).",
            stacklevel=2,
        )
    items: list[dict[str, Any]] = []
    for p, lab in entries:
        if _is_image(p, vol_exts):  # DICOM / NIfTI: one item per B-scan, the file is the patient
            try:
                pid = str(pid_fn(p))
            except ValueError:
                pid = p.name.split(".")[0]
            try:
                bscans = volume_datalist([p], None if lab is None else [lab])
            except OSError as e:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipping {e}", stacklevel=2)
                continue
            for it in bscans:
                it["patient"] = pid
                items.append(it)
            continue
        if check_files:
            try:
                _check_image(p)
            except OSError as e:
                if on_error == "raise":
                    raise
                warnings.warn(f"skipping {e}", stacklevel=2)
                continue
        if lab is None:
            try:
                pid = str(pid_fn(p))
            except ValueError:
                pid = p.name.split(".")[0]  # unlabeled scans need no class; fall back to the file stem
            items.append({"image": str(p), "patient": pid})
        else:
            items.append({"image": str(p), "label": int(lab), "patient": str(pid_fn(p))})
    if not items:
        raise ValueError(f"split {split!r} in {str(root)!r} holds no readable images.")
    if unlabeled_split or all("label" not in it for it in items):
        return [], items
    if frac >= 1.0:
        return items, []
    labeled, rest = split_by_patient(items, frac, seed=seed)
    return labeled, [{k: v for k, v in it.items() if k != "label"} for it in rest]


def split_by_patient(
    datalist: Sequence[dict[str, Any]],
    fraction: float,
    seed: int = 0,
    patient_key: str = "patient",
    label_key: str | None = "label",
    min_second: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Divide a datalist in two by patient, so that no patient is in both parts.

    Patients are grouped by their most frequent label (when ``label_key`` is given) and, within each
    group, shuffled and taken into the first part until it holds ``fraction`` of the group's images
    (at least one patient per group, unless ``min_second`` keeps them all in the second part).

    Args:
        datalist: items with a ``patient_key`` entry.
        fraction: share of the images for the first part, in (0, 1].
        seed: seed of the shuffle; the result does not depend on the order of ``datalist``.
        patient_key: key of the patient id.
        label_key: key of the label for stratification, or ``None``.
        min_second: patients of each group that stay in the second part whatever ``fraction`` asks
            (``1`` when the first part is a validation set held out of training: a class with a single
            patient keeps it for training, rather than training never seeing that class).

    Returns:
        ``(first, second)``, each in the order of ``datalist``.

    Raises:
        ValueError: when ``fraction`` is outside (0, 1] or an item has no patient id.
    """
    frac = _fraction(fraction)
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(datalist):
        if patient_key not in it:
            raise ValueError(f"datalist item {i} ({it.get('image', it)!r}) has no {patient_key!r} entry.")
        by_patient[str(it[patient_key])].append(i)
    groups: dict[Any, list[str]] = defaultdict(list)
    for pid, idx in by_patient.items():
        if label_key is not None and all(label_key in datalist[i] for i in idx):
            g = Counter(int(datalist[i][label_key]) for i in idx).most_common(1)[0][0]
        else:
            g = None
        groups[g].append(pid)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for g in sorted(groups, key=lambda v: (v is None, v)):
        pids = sorted(groups[g])
        order = rng.permutation(len(pids))
        total = sum(len(by_patient[p]) for p in pids)
        target = frac * total
        taken = 0
        for n_taken, j in enumerate(order):
            if (taken >= target - 1e-9 and taken > 0) or n_taken >= len(pids) - int(min_second):
                break
            chosen.add(pids[j])
            taken += len(by_patient[pids[j]])
    first = [dict(it) for it in datalist if str(it[patient_key]) in chosen]
    second = [dict(it) for it in datalist if str(it[patient_key]) not in chosen]
    return first, second


# ------------------------------------------------------------------------------------------- OCTMNIST
def load_octmnist(path: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read one split of an OCTMNIST ``.npz`` file (``octmnist.npz``, ``octmnist_64.npz``, ...).

    Any size variant is accepted and no sample counts are checked (unlike the ``medmnist`` package),
    so subsets and re-packed files load too. Labels follow OCTMNIST: 0 CNV, 1 DME, 2 DRUSEN, 3 NORMAL.

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"`` (reads ``<split>_images`` and ``<split>_labels``).

    Returns:
        ``(images, labels)``: ``(N, H, W)`` as stored (uint8 for OCTMNIST) and ``(N,)`` int64.

    Raises:
        FileNotFoundError: when the file does not exist.
        OSError: naming the file when it is not a readable ``.npz``.
        KeyError: naming the file and the keys it has, when the split's keys are missing.
        ValueError: for inconsistent shapes or labels outside 0..3.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"OCTMNIST file {str(p)!r} does not exist.")
    try:
        npz = np.load(p, allow_pickle=False)
    except Exception as e:
        raise OSError(f"cannot read {str(p)!r} as an .npz file: {e}") from e
    with npz:
        ik, lk = f"{split}_images", f"{split}_labels"
        if ik not in npz.files or lk not in npz.files:
            raise KeyError(f"{str(p)!r} has no {ik!r} / {lk!r} arrays (it has {sorted(npz.files)}).")
        try:
            images, labels = npz[ik], npz[lk]
        except Exception as e:
            raise OSError(f"cannot read the {split} arrays of {str(p)!r}: {e}") from e
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"{ik} in {str(p)!r} must be (N, H, W), got shape {images.shape}.")
    labels = np.asarray(labels)
    labels = labels.reshape(len(labels), -1) if labels.size else labels.reshape(len(labels), 1)
    if labels.shape[1] != 1 or len(labels) != len(images):
        raise ValueError(
            f"{lk} in {str(p)!r} must hold one label per image: {labels.shape} labels for {len(images)} images."
        )
    labels = labels[:, 0].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(OCT_CLASSES)):
        raise ValueError(f"{lk} in {str(p)!r} has labels outside 0..{len(OCT_CLASSES) - 1}.")
    return images, labels


def octmnist_datalist(
    path: str | os.PathLike, split: str = "train", label_fraction: float = 1.0, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Datalists of one OCTMNIST split, images held in memory as ``(H, W)`` arrays.

    OCTMNIST has no patient ids, so ``label_fraction`` keeps the labels of a class-stratified random
    share of the images.

    Returns:
        ``(labeled, unlabeled)``: ``{"image": ndarray, "label": int, "index": int}`` and
        ``{"image": ndarray, "index": int}``.

    Raises:
        ValueError: for a label fraction outside (0, 1] or an empty split; see :func:`load_octmnist`.
    """
    frac = _fraction(label_fraction)
    images, labels = load_octmnist(path, split)
    if len(images) == 0:
        raise ValueError(f"split {split!r} of {str(path)!r} is empty.")
    keep = np.ones(len(labels), dtype=bool)
    if frac < 1.0:
        rng = np.random.default_rng(seed)
        keep[:] = False
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            n = max(1, int(round(frac * idx.size)))
            keep[rng.permutation(idx)[:n]] = True
    labeled = [{"image": images[i], "label": int(labels[i]), "index": int(i)} for i in np.flatnonzero(keep)]
    unlabeled = [{"image": images[i], "index": int(i)} for i in np.flatnonzero(~keep)]
    return labeled, unlabeled


# -------------------------------------------------------------------------------------- DICOM / NIfTI
def _suffix(p: Path) -> str:
    name = p.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else p.suffix.lower()


#: the most a deflate stream (gzip) can expand: about 1032 to 1
_GZIP_MAX_RATIO = 1100


def _bscan_limit(n: int, p: Path) -> int:
    limit = _env_limit("MONAI_ADV_MAX_VOLUME_BSCANS", MAX_VOLUME_BSCANS)
    if n > limit:
        raise ImageTooLargeError(
            f"{str(p)!r} claims {n} B-scans, over the limit of {limit} per file (MONAI_ADV_MAX_VOLUME_BSCANS)."
        )
    return n


def count_bscans(path: str | os.PathLike, slice_axis: int = -1) -> int:
    """Number of B-scans in a DICOM (frames) or NIfTI (slices along ``slice_axis``) file, from its header.

    A single-frame DICOM or a 2D NIfTI holds one B-scan. The header's claim is checked before anything
    is built on it: the pixel data it claims must fit in the file (uncompressed: the file holds every
    byte; compressed DICOM: at least 8 bytes per frame; gzip NIfTI: at most 1100 times the file's
    size), a B-scan must be under :data:`~monai_adv.apps.oct.utils.MAX_IMAGE_PIXELS` and the file under
    :data:`~monai_adv.apps.oct.utils.MAX_VOLUME_BSCANS` B-scans. So a tiny file claiming 2*10^9 frames is an
    error at once, not a hang.

    Raises:
        FileNotFoundError: when the file does not exist.
        OSError: naming the file when its header cannot be read, or claims more data than the file holds.
        ImageTooLargeError: (a ``ValueError``) naming the file, over a limit.
        ValueError: for an unsupported extension.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"file {str(p)!r} does not exist.")
    size = p.stat().st_size
    suf = _suffix(p)
    if suf in DICOM_EXTENSIONS:
        import pydicom

        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            n = int(getattr(ds, "NumberOfFrames", 1) or 1)
            rows, cols = int(getattr(ds, "Rows", 0) or 0), int(getattr(ds, "Columns", 0) or 0)
            spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
            bits = int(getattr(ds, "BitsAllocated", 8) or 8)
            syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
            compressed = bool(getattr(syntax, "is_compressed", False))
        except Exception as e:
            raise OSError(f"cannot read DICOM file {str(p)!r}: {e}") from e
        if n < 1:
            raise OSError(f"DICOM file {str(p)!r} claims {n} frames.")
        check_pixel_limit((cols, rows), spp, str(p))
        claimed = 8 * n if compressed else n * rows * cols * spp * max(1, bits // 8)
        if claimed > size:
            raise OSError(
                f"DICOM file {str(p)!r} of {size} bytes claims {n} frame(s) of {rows} x {cols} "
                f"({claimed} bytes of pixel data): a damaged or forged header."
            )
        return _bscan_limit(n, p)
    if suf in NIFTI_EXTENSIONS:
        import nibabel as nib

        try:
            img = nib.load(str(p))
            shape = tuple(int(s) for s in img.shape)
            itemsize = int(np.dtype(img.get_data_dtype()).itemsize)
            offset = int(img.header.get("vox_offset", 0)) if hasattr(img.header, "get") else 0
        except Exception as e:
            raise OSError(f"cannot read NIfTI file {str(p)!r}: {e}") from e
        claimed = int(np.prod(shape, dtype=np.float64)) * itemsize
        room = size * _GZIP_MAX_RATIO if suf.endswith(".gz") else size - offset
        if claimed > room:
            raise OSError(
                f"NIfTI file {str(p)!r} of {size} bytes claims a volume of shape {shape} ({claimed} bytes): "
                "a damaged or forged header."
            )
        shape = tuple(s for s in shape if s != 1) if len(shape) > 3 else shape
        if len(shape) == 2:
            check_pixel_limit(shape, 1, str(p))
            return 1
        if len(shape) != 3:
            raise OSError(f"NIfTI file {str(p)!r} must be 2D or 3D, its header says {shape}.")
        axis = slice_axis % 3
        check_pixel_limit([s for i, s in enumerate(shape) if i != axis], 1, str(p))
        return _bscan_limit(int(shape[axis]), p)
    raise ValueError(f"unsupported volume file {str(p)!r}: expected {DICOM_EXTENSIONS + NIFTI_EXTENSIONS}.")


def volume_datalist(
    files: Sequence[str | os.PathLike],
    labels: Sequence[int | str] | None = None,
    bscans: bool = True,
    slice_axis: int = -1,
) -> list[dict[str, Any]]:
    """Datalist of DICOM (single- or multi-frame ophthalmic tomography) and NIfTI OCT files.

    Args:
        files: DICOM (``.dcm``) or NIfTI (``.nii``, ``.nii.gz``) paths.
        labels: one label (index or class name) per file, or ``None`` for an unlabeled list.
        bscans: one item per B-scan (``{"image": path, "frame": i}``), or one item per file for 3D
            classification (``{"image": path}``).
        slice_axis: NIfTI axis that indexes the B-scans (each slice is ``(depth rows, lateral columns)``).

    Raises:
        ValueError: for a length mismatch, an empty list or an unknown label.
    """
    files = [Path(f) for f in files]
    if not files:
        raise ValueError("volume_datalist needs at least one file.")
    if labels is not None and len(labels) != len(files):
        raise ValueError(f"{len(labels)} labels for {len(files)} files.")
    out: list[dict[str, Any]] = []
    for i, f in enumerate(files):
        lab = None if labels is None else label_to_index(labels[i])
        n = count_bscans(f, slice_axis=slice_axis) if bscans else 1
        for k in range(n):
            it: dict[str, Any] = {"image": str(f)}
            if bscans:
                it["frame"] = k
            if lab is not None:
                it["label"] = lab
            out.append(it)
    return out


# --------------------------------------------------------------------------------- segmentation layout
def _stem(p: Path) -> str:
    name = p.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else p.stem


def segmentation_datalist(
    root: str | os.PathLike,
    split: str = "train",
    label_fraction: float = 1.0,
    seed: int = 0,
    check_files: bool = False,
    extensions: Sequence[str] = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Datalists of a segmentation data set: ``root/<split>/images/<NAME>.<ext>`` with label maps
    ``root/<split>/labels/<NAME>.png`` (or ``.nii``, ``.nii.gz``, ``.tif``, ``.bmp``).

    This is the layout :func:`~monai_adv.apps.oct.write_synthetic_oct_dataset` writes with ``layers=True``
    (names ``CLASS-PATIENT-N``, label maps of :data:`~monai_adv.apps.oct.OCT_LAYER_CLASSES` indices), and
    the usual one of annotated OCT sets. An image whose label map is missing is unlabeled data (a split
    with no ``labels/`` folder, like the synthetic ``unlabeled`` split, is all unlabeled). The labeled
    images are divided **by patient** (the id in a Kermany-style name ``CLASS-PATIENT-N``, else the
    file name) into a labeled list holding about ``label_fraction`` of them and an unlabeled rest.

    Args:
        root: data set root holding the split folders.
        split: split folder name.
        label_fraction: fraction of the labeled images (chosen by patient) that keep their label map.
        seed: seed of the patient shuffle.
        check_files: open and decode every image and label map now (corrupt files raise ``OSError``).
        extensions: file extensions read as images.

    Returns:
        ``(labeled, unlabeled)``: items ``{"image": str, "label": str, "patient": str}`` (``label`` the
        label map's path) and ``{"image": str, "patient": str}``.

    Raises:
        FileNotFoundError: when ``root``, the split or its ``images/`` folder does not exist.
        ValueError: for an empty split, a label map with no image of its name, two label maps for one
            image, a label map in a lossy format (JPEG), or a label fraction outside (0, 1].
        OSError: naming the file, for a corrupt image or label map when ``check_files``.
    """
    frac = _fraction(label_fraction)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set root {str(root)!r} is not a folder.")
    images_dir, labels_dir = root / split / "images", root / split / "labels"
    if not images_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise FileNotFoundError(
            f"{str(images_dir)!r} does not exist: a segmentation data set has <split>/images/ and "
            f"<split>/labels/ folders (splits found in {root}: {found})."
        )
    exts = tuple(e.lower() for e in extensions)
    images = sorted(p for p in images_dir.iterdir() if _is_image(p, exts))
    if not images:
        raise ValueError(f"{str(images_dir)!r} holds no images (extensions {exts}).")
    by_stem = {_stem(p): p for p in images}
    label_of: dict[str, Path] = {}
    if labels_dir.is_dir():
        for p in sorted(labels_dir.iterdir()):
            if not _is_image(p, LABEL_MAP_EXTENSIONS):
                if _is_image(p, IMAGE_EXTENSIONS):  # JPEG: its compression changes class indices
                    raise ValueError(
                        f"label map {str(p)!r} is in a lossy format; save label maps as "
                        f"{LABEL_MAP_EXTENSIONS} (class indices must survive the file)."
                    )
                continue
            stem = _stem(p)
            if stem not in by_stem:
                raise ValueError(f"label map {str(p)!r} has no image of its name in {str(images_dir)!r}.")
            if stem in label_of:
                raise ValueError(
                    f"two label maps for image {stem!r}: {str(label_of[stem])!r} and {str(p)!r}."
                )
            label_of[stem] = p
    items: list[dict[str, Any]] = []
    for stem, p in by_stem.items():
        try:
            pid = parse_kermany_name(p)[1]
        except ValueError:
            pid = stem
        if check_files:
            for f in (p, label_of.get(stem)):
                if f is not None and not f.name.lower().endswith(NIFTI_EXTENSIONS):
                    _check_image(f)
        item: dict[str, Any] = {"image": str(p), "patient": pid}
        if stem in label_of:
            item["label"] = str(label_of[stem])
        items.append(item)
    labeled = [it for it in items if "label" in it]
    unlabeled = [it for it in items if "label" not in it]
    if labeled and frac < 1.0:
        labeled, rest = split_by_patient(labeled, frac, seed=seed, label_key=None)
        unlabeled += [{k: v for k, v in it.items() if k != "label"} for it in rest]
    return labeled, unlabeled
