# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Image statistics used to compare synthetic OCT B-scans with real ones.

All statistics take images prepared as OCTMNIST prepares Kermany B-scans: centre-cropped to a square,
resized (128 px by default) and scaled to [0, 1] (see :func:`load_octmnist_style`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance

from monai_adv.apps.oct.utils import center_crop_resize

__all__ = [
    "load_octmnist_style",
    "padding_mask",
    "wasserstein_1d",
    "intensity_histograms",
    "retina_fraction",
    "speckle_contrast",
    "image_statistics",
]


def load_octmnist_style(path: str | os.PathLike, size: int = 128) -> np.ndarray:
    """Read an 8-bit B-scan, centre-crop it to a square, resize it to ``size`` and scale to [0, 1].

    Raises:
        OSError: naming the file when it cannot be read as an image.
    """
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.float32)
    except Exception as e:  # PIL raises several exception types for corrupt files
        raise OSError(f"cannot read image file {os.fspath(path)!r}: {e}") from e
    return np.clip(center_crop_resize(arr, size) / 255.0, 0.0, 1.0)


def padding_mask(img: np.ndarray, level: float = 0.98) -> np.ndarray:
    """Registration padding: saturated regions connected to the top or bottom edge of the frame."""
    m = img >= level
    lab, n = ndi.label(m)
    if n == 0:
        return m
    border = np.setdiff1d(np.union1d(lab[0], lab[-1]), [0])
    return np.isin(lab, border)


def wasserstein_1d(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance between the empirical distributions of two samples of scalars (exact, scipy's
    :func:`scipy.stats.wasserstein_distance`: the area between the two empirical CDFs)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("wasserstein_1d needs two non-empty samples.")
    return float(wasserstein_distance(a, b))


def intensity_histograms(images: np.ndarray, bins: int = 64) -> np.ndarray:
    """Per-image normalised intensity histograms on [0, 1]: ``(N, bins)``."""
    x = np.clip(np.asarray(images, dtype=np.float32).reshape(len(images), -1), 0.0, 1.0)
    idx = np.minimum((x * bins).astype(np.int64), bins - 1)
    out = np.zeros((x.shape[0], bins), dtype=np.float64)
    for i in range(x.shape[0]):
        out[i] = np.bincount(idx[i], minlength=bins)
    return out / x.shape[1]


def retina_fraction(img: np.ndarray, threshold: float = 0.3, sigma: float = 2.0) -> float:
    """Fraction of the frame (registration padding excluded) whose smoothed intensity exceeds ``threshold``.

    A proxy for the share of the frame taken by the bright retinal band (and the bright top of the
    choroid), measured the same way on synthetic and real images.
    """
    pad = padding_mask(img)
    sm = ndi.gaussian_filter(np.where(pad, 0.0, img).astype(np.float32), sigma)
    keep = ~pad
    return float(((sm > threshold) & keep).sum() / max(1, keep.sum()))


def speckle_contrast(img: np.ndarray, block: int = 8) -> float:
    """Median speckle contrast (standard deviation over mean) of the ``block`` x ``block`` tiles of a frame.

    Tiles touching registration padding, and black tiles, are skipped. On OCT the tiles are dominated by
    speckle (the layers are nearly flat within a tile), so this measures how grainy the image is.
    """
    pad = padding_mask(img)
    h, w = img.shape
    vals = []
    for i in range(0, h - block + 1, block):
        for j in range(0, w - block + 1, block):
            t = img[i : i + block, j : j + block]
            if pad[i : i + block, j : j + block].any():
                continue
            m = float(t.mean())
            if m > 1e-3:
                vals.append(float(t.std()) / m)
    return float(np.median(vals)) if vals else float("nan")


def _background(img: np.ndarray, rows: float) -> tuple[float, float]:
    """Mean and standard deviation of the top ``rows`` fraction of the frame, padding excluded."""
    pad = padding_mask(img)
    r = max(1, int(round(rows * img.shape[0])))
    v = img[:r][~pad[:r]]
    if v.size < 16:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def image_statistics(
    images: np.ndarray | Iterable[np.ndarray], labels: Sequence[int] | None = None, n_classes: int = 4
) -> dict[str, object]:
    """Summary statistics of a set of prepared images (``(N, H, W)`` in [0, 1]).

    Returns:
        a dict with the pooled ``mean`` and ``std``, per-class ``class_mean`` / ``class_std`` (when
        ``labels`` are given), the mean ``retina_fraction``, the median ``speckle_contrast``, the
        vitreous ``background_mean`` / ``background_std`` (top 15% of rows), the ``padding_fraction``
        and the pooled intensity ``quantiles`` (1, 5, 25, 50, 75, 95, 99%).
    """
    x = np.asarray(list(images) if not isinstance(images, np.ndarray) else images, dtype=np.float32)
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"expected a non-empty stack of 2D images (N, H, W), got shape {x.shape}.")
    bg = np.array([_background(im, 0.15) for im in x])
    out: dict[str, object] = {
        "n": len(x),
        "mean": float(x.mean()),
        "std": float(x.std()),
        "retina_fraction": float(np.mean([retina_fraction(im) for im in x])),
        "speckle_contrast": float(np.nanmedian([speckle_contrast(im) for im in x])),
        "background_mean": float(np.nanmean(bg[:, 0])),
        "background_std": float(np.nanmean(bg[:, 1])),
        "padding_fraction": float(np.mean([padding_mask(im).mean() for im in x])),
        "quantiles": [float(v) for v in np.quantile(x, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])],
    }
    if labels is not None:
        lab = np.asarray(labels)
        out["class_mean"] = [
            float(x[lab == c].mean()) if np.any(lab == c) else float("nan") for c in range(n_classes)
        ]
        out["class_std"] = [
            float(x[lab == c].std()) if np.any(lab == c) else float("nan") for c in range(n_classes)
        ]
    return out
