# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Stages 4 and 5 of the synthetic OCT B-scan, display: log transform, registration padding, JPEG.

The logarithmic display transform ``grey = g0 + ln(I) / dynamic_range``, clipped to [0, 1] and
quantised to 8 bits; optional white registration-padding wedges; 8-bit JPEG compression.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

__all__ = ["registration_padding", "to_display"]


def registration_padding(
    rng: np.random.Generator,
    grey: np.ndarray,
    x_first: int = 0,
    width: int | None = None,
    white: float = 1.0,
    record: list | None = None,
) -> np.ndarray:
    """White wedges left where the eye-tracking registration shifted and rotated the frame.

    ``grey`` holds the columns ``x_first ...`` of a frame ``width`` columns wide (all by default);
    ``white`` is the value of white in its units. ``record``, when given, receives each wedge as
    ``(side, a, b)`` (``"top"`` or ``"bottom"``, its depth at the first and the last column), for the
    label map.
    """
    H, Wg = grey.shape
    W = Wg if width is None else int(width)
    x = np.arange(x_first, x_first + Wg, dtype=np.float32)[None, :]
    z = np.arange(H, dtype=np.float32)[:, None]
    where = rng.choice(["top", "bottom", "both"], p=[0.45, 0.4, 0.15])
    if where in ("top", "both"):
        a, b = rng.exponential(0.09) * H, rng.exponential(0.03) * H
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        grey = np.where(z < a + (b - a) * x / W, np.float32(white), grey)
        if record is not None:
            record.append(("top", float(a), float(b)))
    if where in ("bottom", "both"):
        a, b = rng.exponential(0.07) * H, rng.exponential(0.025) * H
        a, b = (a, b) if rng.random() < 0.5 else (b, a)
        grey = np.where(z > H - 1 - (a + (b - a) * x / W), np.float32(white), grey)
        if record is not None:
            record.append(("bottom", float(a), float(b)))
    return grey


def to_display(
    ri: np.random.Generator,
    intensity: np.ndarray,
    padding_prob: float,
    jpeg_quality: Sequence[int] | None,
    x_first: int,
    W: int,
    padding_record: list | None = None,
) -> np.ndarray:
    """The 8-bit image as the scanner's viewer stores it (``intensity`` is overwritten).

    Args:
        ri: the image stream.
        intensity: the speckled intensity ``(H, Wc)``.
        padding_prob: the probability of registration padding.
        jpeg_quality: ``(low, high)`` JPEG quality drawn per image, or None for no compression.
        x_first: the first native column of ``intensity``.
        W: native columns.
        padding_record: receives the registration padding wedges (see :func:`registration_padding`).
    """
    dyn = ri.uniform(7.6, 9.6)
    g0 = ri.uniform(0.095, 0.135)
    # grey = g0 + ln(I) / dyn in [0, 1], computed directly in 8-bit units
    grey = np.log(intensity, out=intensity)
    grey *= np.float32(255.0 / dyn)
    grey += np.float32(255.0 * g0)
    np.clip(grey, 0.0, 255.0, out=grey)
    if ri.random() < padding_prob:
        grey = registration_padding(ri, grey, x_first, W, white=255.0, record=padding_record)
    out = np.rint(grey, out=grey).astype(np.uint8)
    if jpeg_quality is not None:
        q = int(ri.integers(jpeg_quality[0], jpeg_quality[1] + 1))
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        out = np.asarray(Image.open(buf))  # mode L, as written
    return out
