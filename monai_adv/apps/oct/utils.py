# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Shared constants and small helpers for the OCT data layer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = [
    "OCT_CLASSES",
    "CLASS_TO_INDEX",
    "IMAGE_EXTENSIONS",
    "label_to_index",
    "center_crop_square",
    "center_crop_resize",
    "MAX_IMAGE_PIXELS",
    "MAX_VOLUME_BSCANS",
    "ImageTooLargeError",
    "check_pixel_limit",
]

#: The four Kermany / OCTMNIST classes, in label order (OCTMNIST uses the same order).
OCT_CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
#: Class name to integer label.
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(OCT_CLASSES)}
#: File extensions read as 2D B-scan images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff")

#: The most pixels one 2D image (B-scan or label map) may have, over all its channels: 2**26 (about 67
#: million: 8192 x 8192 gray, or 4729 x 4729 RGB). Reading one costs at most about 12 bytes per pixel
#: and channel (the decoded image and its float32 gray copy), so about 800 MB at this limit. Set the
#: environment variable ``MONAI_ADV_MAX_IMAGE_PIXELS`` to change it.
MAX_IMAGE_PIXELS: int = 2**26
#: The most B-scans one DICOM or NIfTI file may claim in its header (``MONAI_ADV_MAX_VOLUME_BSCANS``
#: changes it); the claim is also checked against the file's size before anything is listed.
MAX_VOLUME_BSCANS: int = 65536


class ImageTooLargeError(ValueError):
    """An image or volume larger than the documented limit (:data:`MAX_IMAGE_PIXELS`, :data:`MAX_VOLUME_BSCANS`)."""


def _env_limit(name: str, default: int) -> int:
    import os

    v = os.environ.get(name)
    try:
        return int(v) if v else int(default)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={v!r} must be a whole number.") from e


def check_pixel_limit(size: Sequence[int], channels: int = 1, source: str = "<image>") -> None:
    """Refuse an image of ``size`` (its sides) and ``channels`` with more pixel values than
    :data:`MAX_IMAGE_PIXELS` (or ``MONAI_ADV_MAX_IMAGE_PIXELS``), before it is decoded.

    Raises:
        ImageTooLargeError: naming the file, its size and the limit.
    """
    limit = _env_limit("MONAI_ADV_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS)
    n = int(np.prod([int(s) for s in size], dtype=np.int64)) * max(1, int(channels))
    if n > limit:
        dims = " x ".join(str(int(s)) for s in size)
        raise ImageTooLargeError(
            f"image {source!r} of {dims} pixels x {channels} channel(s) ({n} values) is over the limit of "
            f"{limit} values per image (about {12 * limit / 1e9:.1f} GB to read); set "
            "MONAI_ADV_MAX_IMAGE_PIXELS to read it anyway."
        )


def label_to_index(label: int | str | np.integer) -> int:
    """Convert a class label given as an index or a class name to its integer index.

    Args:
        label: an integer in ``[0, 4)`` or one of :data:`OCT_CLASSES` (case-insensitive).

    Raises:
        ValueError: when the label is not a known class.
        TypeError: when the label is neither an integer nor a string.
    """
    if isinstance(label, str):
        key = label.strip().upper()
        if key not in CLASS_TO_INDEX:
            raise ValueError(f"unknown OCT class {label!r}, expected one of {OCT_CLASSES}.")
        return CLASS_TO_INDEX[key]
    if isinstance(label, (bool, np.bool_)):
        raise TypeError(f"label must be an int or a class name, got {type(label).__name__}.")
    if isinstance(label, (int, np.integer)):
        if not 0 <= int(label) < len(OCT_CLASSES):
            raise ValueError(f"label {int(label)} out of range, expected 0..{len(OCT_CLASSES) - 1}.")
        return int(label)
    raise TypeError(f"label must be an int or a class name, got {type(label).__name__}.")


def center_crop_square(img: np.ndarray) -> np.ndarray:
    """Crop the largest centred square from the last two axes of ``img``.

    Args:
        img: array of shape ``(..., H, W)``.
    """
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return img[..., top : top + s, left : left + s]


def center_crop_resize(img: np.ndarray, size: int | Sequence[int] | None) -> np.ndarray:
    """Centre-crop a 2D image to a square and resize it, as OCTMNIST prepares Kermany B-scans.

    The resize is Pillow's antialiased bilinear filter on float data, so no precision is lost to
    8-bit quantisation. Integer inputs are returned as float32 in their original units.

    Args:
        img: a 2D array ``(H, W)``.
        size: output side length, or ``(h, w)``; ``None`` keeps the cropped square as it is.

    Raises:
        ValueError: when ``img`` is not 2D or ``size`` is not positive.
    """
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise ValueError(f"expected a 2D image (H, W), got shape {arr.shape}.")
    sq = center_crop_square(arr).astype(np.float32, copy=False)
    if size is None:
        return np.ascontiguousarray(sq)
    hw = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}.")
    if sq.shape == hw:
        return np.ascontiguousarray(sq)
    out = Image.fromarray(np.ascontiguousarray(sq)).resize((hw[1], hw[0]), Image.BILINEAR)
    return np.asarray(out, dtype=np.float32)
