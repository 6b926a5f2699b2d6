# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Synthetic retinal OCT B-scans in the four Kermany classes (CNV, DME, DRUSEN, NORMAL).

The generator draws each B-scan on the native Spectralis grid (496 rows of about 3.9 um in depth,
512 columns of about 11.7 um across a 6 mm scan), from a layered reflectivity model of the retina, then
forms the image the way an OCT scanner and its viewer do:

1. reflectivity: vitreous, RNFL, GCL, IPL, INL, OPL, ONL, ELM, myoid zone, ellipsoid zone, outer
   segments, interdigitation zone, RPE / Bruch's membrane, choroid (mottled vessels fading with depth)
   and sclera; a foveal pit; retinal vessels; class lesions drawn with a per-image severity, a share
   of them subtle (a B-scan through the edge of the lesions);
2. attenuation along depth (Beer-Lambert on the cumulative reflectivity, plus absorbing vessels and
   hyperreflective foci), which casts shadows;
3. speckle: a depth-dependent noise floor of fully developed speckle (Gamma-distributed over two to
   four looks, correlated as the point-spread function makes it) plus the tissue signal under a
   smoother, frame-averaged multiplicative speckle;
4. the logarithmic display transform ``grey = g0 + ln(I) / dynamic_range``, clipped to [0, 1];
5. optional registration padding (white wedges), 8-bit JPEG compression, and the OCTMNIST-style
   preparation: centre crop to a square and resize.

Speed: about 80 images/s per core at any output size (``benchmarks/synthetic_speed.py``, which
measures it against generator v2 in the same run). The rendering is vectorised: the layers are drawn
on a band that follows the retina (not on the whole frame), the noise fields are blurred by short
separable kernels on slices or drawn on coarse grids, the noise floor's speckle is one correlated
Gaussian field mapped to its Gamma law rather than ``2 * looks`` blurred fields, and only the centre
square that is kept is formed.

Every class shares the nuisance factors (vertical position, tilt, curvature, lateral scale, pit
position, noise level, gain, blur, speckle looks, JPEG quality), so the class is carried by the lesion,
not by brightness. Its parameters were calibrated against 400 real Kermany B-scans; see
``docs/synthetic_oct_validation.md`` and ``benchmarks/synthetic_realism.py``.

Command line::

    python -m monai_adv.data.synthetic --out DIR --n-train 200 --n-unlabeled 200 --n-test 50 --size 128
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import math
import os
import threading
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage as ndi

from monai_adv.data.utils import OCT_CLASSES, center_crop_square, label_to_index

__all__ = [
    "SyntheticOCTGenerator",
    "write_synthetic_oct_dataset",
    "DEFAULT_SPLITS",
    "UNLABELED_PREFIX",
    "MANIFEST_NAME",
    "GENERATOR_VERSION",
    "main",
]

#: Default number of images per class for each split written by :func:`write_synthetic_oct_dataset`.
DEFAULT_SPLITS: dict[str, int] = {"train": 100, "unlabeled": 300, "test": 50}
#: File-name prefix of images in the ``unlabeled`` split (their class is not revealed).
UNLABELED_PREFIX = "SCAN"
#: Name of the manifest file written at the data set root.
MANIFEST_NAME = "synthetic_oct.json"
#: Version of the images a seed gives; raised whenever they change, so that a data set written by an
#: older generator is not taken for a current one. 2: subtle cases (``subtle_prob``). 3: the same
#: model rendered about 5x faster (the noise floor's speckle drawn as one Gaussian field mapped to the
#: Gamma law, other random streams): the same images in distribution, not the same images.
GENERATOR_VERSION = 3

_DZ_UM = 3.9  # axial pixel size of the Spectralis grid
_DX_UM = 11.7  # lateral pixel size of a 6 mm, 512 A-scan B-scan

# Retinal layers from the inner limiting membrane down to Bruch's membrane:
# (name, parafoveal thickness in um, linear reflectivity relative to the noise floor).
_LAYERS: tuple[tuple[str, float, float], ...] = (
    ("RNFL", 20.0, 50.0),
    ("GCL", 50.0, 15.0),
    ("IPL", 40.0, 13.0),
    ("INL", 38.0, 3.5),
    ("OPL", 32.0, 11.0),
    ("ONL", 65.0, 1.8),
    ("ELM", 5.0, 9.0),
    ("MZ", 20.0, 2.5),
    ("EZ", 12.0, 180.0),
    ("OS", 28.0, 22.0),
    ("IZ", 8.0, 50.0),
)
_RPE_UM, _RPE_R = 22.0, 700.0


def _dome(x: np.ndarray, centre: float, half_width: float, power: float) -> np.ndarray:
    """A dome ``(1 - (d / w)^2)^power`` of unit height on ``|d| < w``; larger powers taper more."""
    d = np.clip(1.0 - ((x - centre) / max(float(half_width), 1e-3)) ** 2, 0.0, None)
    return (d**power).astype(np.float32)


def _ss(rng: np.random.Generator) -> np.random.SeedSequence:
    return np.random.SeedSequence(int(rng.integers(0, 2**63 - 1)))


class _Scratch(threading.local):
    """Work arrays reused from one image to the next (one set per thread).

    Full-frame temporaries are about 1 MB each; allocating them afresh for every image costs page
    faults (kernel time) comparable to the arithmetic itself. Only temporaries that die inside the
    function that took them live here.
    """

    def __init__(self) -> None:
        self.bufs: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
        n = math.prod(shape)
        buf = self.bufs.get(name)
        if buf is None or buf.size < n or buf.dtype != dtype:
            buf = self.bufs[name] = np.empty(n, dtype=dtype)
        return buf[:n].reshape(shape)


_SCRATCH = _Scratch()


def _normal(rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
    """Standard normal float32 samples by the Box-Muller transform of uniform ones.

    About three times faster than ``Generator.standard_normal(dtype=np.float32)`` (whose ziggurat
    draws one value at a time); the float32 uniforms bound the tails at about 5.8 standard deviations.
    """
    n = math.prod(shape)
    m = (n + 1) // 2
    # 23 random mantissa bits under the exponent of 1.0 make a float32 f uniform in [1, 2), two per raw
    # 64-bit draw: no integer-to-float conversion (faster than Generator.random)
    bits = rng.bit_generator.random_raw(m).view(np.uint32) >> np.uint32(9)
    bits |= np.uint32(0x3F800000)
    f = bits.view(np.float32).reshape(2, m)
    r = np.subtract(np.float32(2.0), f[0])  # uniform in (0, 1]: the logarithm is finite
    np.log(r, out=r)
    r *= np.float32(-2.0)
    np.sqrt(r, out=r)
    th = f[1]  # cos and sin have period 2 pi: 2 pi f serves as well as 2 pi (f - 1)
    th *= np.float32(2.0 * np.pi)
    res = np.empty(2 * m, dtype=np.float32) if out is None or n % 2 else out.reshape(-1)
    np.cos(th, out=res[:m])
    res[:m] *= r
    np.sin(th, out=res[m:])
    res[m:] *= r
    if out is not None and n % 2:
        out[...] = res[:n].reshape(shape)
        return out
    return res[:n].reshape(shape)


@functools.lru_cache(maxsize=64)
def _gauss_transfer(m: int, sigma: float) -> np.ndarray:
    """Transfer function of a Gaussian blur of ``sigma`` samples on a periodic signal of length ``m``.

    Cached: the 1D noise of the anatomy uses a handful of fixed correlation lengths.
    """
    t = np.exp(-2.0 * (np.pi * sigma * np.fft.rfftfreq(m)) ** 2)
    t.flags.writeable = False
    return t


def _gauss_kernel(sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian kernel truncated at 3 sigma, as ``scipy.ndimage`` with ``truncate=3``."""
    r = int(3.0 * float(sigma) + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float64) / float(sigma)) ** 2)
    return (k / k.sum()).astype(np.float32)


def _correlate_valid(a: np.ndarray, k: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
    """``a`` correlated with the symmetric kernel ``k`` along ``axis`` (0 or 1), 'valid' part only.

    A sum of shifted slices: every term is a contiguous (rows) or row-wise contiguous (columns) block,
    which is faster than ``scipy.ndimage.correlate1d`` for kernels of a few taps.
    """
    r = len(k) // 2
    n = a.shape[axis] - 2 * r

    def sl(i: int) -> np.ndarray:
        return a[i : i + n] if axis == 0 else a[:, i : i + n]

    out = np.multiply(sl(r), k[r], out=out)
    tmp = _SCRATCH.get("correlate", out.shape)
    for i in range(r):  # the kernel is symmetric: one multiply for each pair of taps
        np.add(sl(i), sl(2 * r - i), out=tmp)
        tmp *= k[i]
        out += tmp
    return out


def _gaussian_field(
    rng: np.random.Generator,
    shape: tuple[int, int],
    sigma: Sequence[float] | None = None,
    kernels: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Unit-variance Gaussian random field: white noise blurred by a Gaussian of ``sigma`` (px, per axis).

    ``kernels`` (symmetric ``(kz, kx)``) replaces the Gaussian. The white noise is drawn with a
    margin and only the fully blurred part is kept, so there are no boundary effects; the variance
    is normalised exactly from the kernels' energy.
    """
    if kernels is None:
        assert sigma is not None
        kernels = (_gauss_kernel(sigma[0]), _gauss_kernel(sigma[1]))
    kz, kx = kernels
    # fold the normalisation into the last kernel
    kx = kx * np.float32(1.0 / np.sqrt(float(np.dot(kz, kz)) * float(np.dot(kx, kx))))
    h, w = shape
    shape_w = (h + len(kz) - 1, w + len(kx) - 1)
    white = _normal(rng, shape_w, out=_SCRATCH.get("white", shape_w))
    mid = _correlate_valid(white, kz, 0, out=_SCRATCH.get("blur", (h, shape_w[1])))
    return _correlate_valid(mid, kx, 1)


def _speckle_kernel(sigma: float, q: float = 0.0, n: int = 64, keep: float = 0.01) -> np.ndarray:
    """Kernel that gives white noise the correlation of fully developed speckle's intensity.

    The complex field blurred by the PSF ``k`` (a Gaussian of ``sigma`` px, truncated at 3 sigma)
    has the correlation ``rho = k * k / |k|^2``; its intensity ``|field|^2`` has ``rho^2``. The
    kernel returned is the zero-phase square root of that spectrum (taps below ``keep`` of the
    centre dropped), so blurred white noise has the correlation ``rho^2`` on the pixel grid, where a
    Gaussian of ``sigma / sqrt(2)`` (exact in the continuum) falls short for sub-pixel ``sigma``.

    ``q > 0`` pre-compensates a mapping of the Gaussian field that lowers its correlation ``r`` to
    about ``(r + q r^2) / (1 + q)``, as the Wilson-Hilferty cube does with ``q = 2 a / (1 - a)^2``.
    """
    k = _gauss_kernel(sigma).astype(np.float64)
    r = len(k) // 2
    ac = np.correlate(k, k, "full")
    c = (ac / ac[2 * r]) ** 2  # lags -2r .. 2r
    if q > 0:  # the correlation r with (r + q r^2) / (1 + q) = c
        c = (np.sqrt(1.0 + 4.0 * q * (1.0 + q) * c) - 1.0) / (2.0 * q)
    buf = np.zeros(n)
    buf[: 2 * r + 1] = c[2 * r :]
    buf[n - 2 * r :] = c[: 2 * r]
    h = np.fft.irfft(np.sqrt(np.maximum(np.fft.rfft(buf).real, 0.0)), n=n)
    taps = np.concatenate([h[n - r :], h[: r + 1]])
    while len(taps) > 1 and abs(taps[0]) < keep * taps[len(taps) // 2]:
        taps = taps[1:-1]
    return taps.astype(np.float32)


def _ramp_sums(terms: Sequence[tuple[np.ndarray, np.ndarray]], top: np.ndarray, hb: int) -> list[np.ndarray]:
    """For each ``(bounds, coef)``: ``sum_k coef[k] * clip(z - bounds[k] + 0.5, 0, 1)`` on a band.

    The band is the rows ``z = top + r``, ``r < hb``, of every column. Each term is a step that rises
    from 0 to 1 across one pixel at its boundary; rather than evaluate every step on every band pixel,
    the two increments of each step are scattered into their rows and summed down the columns, which
    costs one pass over the band whatever the number of boundaries (all terms share that pass).

    Args:
        terms: ``(bounds, coef)`` pairs: ``(K, W)`` boundary depths (px) and the ``(K, W)`` (or
            broadcastable) weight of each step.
        top: ``(W,)`` integer first row of the band in each column.
        hb: band height.

    Returns:
        one ``(hb, W)`` float32 array per term.
    """
    W, P = top.size, len(terms)
    cols = np.arange(W)
    idx, wts = [], []
    for p, (bounds, coef) in enumerate(terms):
        c = bounds.astype(np.float64) - top[None, :] - 0.5  # the step is clip(r - c, 0, 1)
        j = np.floor(c).astype(np.int64) + 1  # first row where the step is above 0
        a = j - c  # its value there, in (0, 1]; the next row is at 1
        cw = np.broadcast_to(np.asarray(coef, dtype=np.float64), c.shape)
        base = p * (hb + 1) * W + cols  # plane p holds rows 0 .. hb (row hb: steps below the band)
        idx += [(np.clip(j, 0, hb) * W + base).ravel(), (np.clip(j + 1, 0, hb) * W + base).ravel()]
        wts += [(cw * a).ravel(), (cw * (1.0 - a)).ravel()]
    inc = np.bincount(np.concatenate(idx), weights=np.concatenate(wts), minlength=P * (hb + 1) * W)
    inc = inc.reshape(P, hb + 1, W)[:, :hb]
    for i in range(1, hb):  # the sum down the columns; a row loop beats cumsum(axis=1) here
        np.add(inc[:, i - 1], inc[:, i], out=inc[:, i])
    out = inc.astype(np.float32)
    return [out[p] for p in range(P)]


def _upsample_linear(v: np.ndarray, f: int) -> np.ndarray:
    """Linear interpolation of a coarse grid of spacing ``f`` px: ``(n0, n1)`` -> ``((n0-1) f, (n1-1) f)``."""
    n0, n1 = v.shape
    w = np.arange(f, dtype=np.float32) / np.float32(f)
    # columns first, on the coarse rows (one strided write per phase), then rows on contiguous lines
    c = np.empty((n0, (n1 - 1) * f), dtype=np.float32)
    left, right = v[:, :-1], v[:, 1:]
    for p in range(f):
        np.multiply(left, 1.0 - w[p], out=c[:, p::f])
        c[:, p::f] += right * w[p]
    out = c[:-1, None, :] * (1.0 - w)[:, None]
    out += c[1:, None, :] * w[:, None]
    return out.reshape((n0 - 1) * f, (n1 - 1) * f)


class SyntheticOCTGenerator:
    """Physically motivated synthetic retinal OCT B-scans in the classes CNV, DME, DRUSEN and NORMAL.

    Example::

        gen = SyntheticOCTGenerator(image_size=128, seed=0)
        img = gen("DME")                       # (128, 128) float32 in [0, 1]
        images, labels = gen.generate(10)      # (40, 128, 128), (40,)

    Args:
        image_size: side length of the square output (or ``(h, w)``), after the centre crop of the
            native frame; ``None`` returns the native centre crop (496 x 496).
        seed: seed of the generator's random stream; the same seed gives the same images in the same
            call order. ``None`` draws fresh entropy.
        native_shape: ``(rows, columns)`` of the native grid the B-scan is drawn on.
        severity: ``(a, b)`` of the Beta distribution of per-image lesion severity in (0, 1); the
            default has its mode near 0.2, so many lesions are mild.
        subtle_prob: probability that a CNV, DME or DRUSEN B-scan is a subtle case: it cuts through the
            edge of the lesions (or an early lesion), which are drawn at severity 0 and scaled down to
            20-50% of their smallest size (one or two small drusen, a little thickening with at most one
            small cyst, a thin and narrow RPE elevation), often too small to see at 128 px. Real
            graded data sets hold such scans, and without them a classifier finds the task too easy.
        jpeg_quality: JPEG quality range ``(low, high)`` drawn per image, a fixed quality, or ``None``
            for no compression. The real data set is stored as JPEG.
        padding_prob: probability of white registration-padding wedges, as in many Kermany images.
        output_dtype: dtype of the returned arrays (float32 by default).

    Raises:
        ValueError: for a non-positive size, a bad severity pair, a JPEG quality outside [1, 100] or a
            probability outside [0, 1].
    """

    classes: tuple[str, ...] = OCT_CLASSES

    def __init__(
        self,
        image_size: int | Sequence[int] | None = 224,
        seed: int | None = 0,
        native_shape: Sequence[int] = (496, 512),
        severity: Sequence[float] = (1.4, 2.4),
        jpeg_quality: int | Sequence[int] | None = (75, 95),
        padding_prob: float = 0.75,
        subtle_prob: float = 0.15,
        output_dtype: np.dtype | type = np.float32,
    ) -> None:
        if image_size is not None:
            sizes = [image_size] if isinstance(image_size, (int, np.integer)) else list(image_size)
            if len(sizes) not in (1, 2) or any(int(s) < 1 for s in sizes):
                raise ValueError(
                    f"image_size must be a positive int, a pair of them, or None, got {image_size!r}."
                )
        native = tuple(int(s) for s in native_shape)
        if len(native) != 2 or native[0] < 64 or native[1] < 64:
            raise ValueError(f"native_shape must be (rows, columns), each >= 64, got {native_shape!r}.")
        sev = tuple(float(s) for s in severity)
        if len(sev) != 2 or min(sev) <= 0:
            raise ValueError(f"severity must be a pair of positive Beta parameters, got {severity!r}.")
        if jpeg_quality is not None:
            q = (
                (jpeg_quality, jpeg_quality)
                if isinstance(jpeg_quality, (int, np.integer))
                else tuple(jpeg_quality)
            )
            if len(q) != 2 or not 1 <= int(q[0]) <= int(q[1]) <= 100:
                raise ValueError(
                    f"jpeg_quality must be in [1, 100] (or a low <= high pair), got {jpeg_quality!r}."
                )
            jpeg_quality = (int(q[0]), int(q[1]))
        if not 0.0 <= float(padding_prob) <= 1.0:
            raise ValueError(f"padding_prob must be in [0, 1], got {padding_prob}.")
        if not 0.0 <= float(subtle_prob) <= 1.0:
            raise ValueError(f"subtle_prob must be in [0, 1], got {subtle_prob}.")
        self.image_size = image_size
        self.seed = seed
        self.native_shape = native
        self.severity = sev
        self.jpeg_quality = jpeg_quality
        self.padding_prob = float(padding_prob)
        self.subtle_prob = float(subtle_prob)
        self.output_dtype = np.dtype(output_dtype)
        self.set_random_state(seed)

    # ------------------------------------------------------------------ public API
    def set_random_state(self, seed: int | None = None) -> SyntheticOCTGenerator:
        """Reset the random stream of :meth:`__call__` and :meth:`generate` to ``seed``."""
        self._rng = np.random.default_rng(seed)
        return self

    def __call__(self, label: int | str) -> np.ndarray:
        """Draw one B-scan of class ``label`` (an index or a class name) from the generator's stream.

        Returns:
            an ``(H, W)`` array of ``output_dtype`` in [0, 1].
        """
        return self.sample(label, _ss(self._rng))

    def generate(
        self, n_per_class: int, shuffle: bool = False, num_workers: int = 1, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_per_class`` B-scans of every class.

        Every image has its own seed drawn from the generator's stream, so the result does not depend
        on ``num_workers``.

        Args:
            n_per_class: number of images per class (>= 0).
            shuffle: interleave the classes randomly; otherwise the result is ordered by class.
            num_workers: processes used to render (1 renders in this process).
            progress: show a tqdm progress bar.

        Returns:
            ``(images, labels)``: ``(4 * n_per_class, H, W)`` and ``(4 * n_per_class,)`` int64.

        Raises:
            ValueError: when ``n_per_class`` is negative.
        """
        if int(n_per_class) < 0:
            raise ValueError(f"n_per_class must be >= 0, got {n_per_class}.")
        n = int(n_per_class)
        labels = np.repeat(np.arange(len(self.classes), dtype=np.int64), n)
        seeds = _ss(self._rng).spawn(labels.size)
        if shuffle:
            labels = labels[self._rng.permutation(labels.size)]
        shape = self.output_shape
        images = np.empty((labels.size, *shape), dtype=self.output_dtype)
        jobs = [(int(lab), s) for lab, s in zip(labels, seeds)]
        bar = _progress(len(jobs), progress, "synthetic OCT")
        try:
            workers = max(1, min(int(num_workers), len(jobs)))
            if workers == 1:
                for i, (lab, s) in enumerate(jobs):
                    images[i] = self.sample(lab, s)
                    bar.update(1)
            else:
                chunks = [jobs[i : i + 16] for i in range(0, len(jobs), 16)]
                with ProcessPoolExecutor(max_workers=workers) as ex:
                    i = 0
                    for block in ex.map(self._sample_many, chunks):
                        images[i : i + len(block)] = block
                        i += len(block)
                        bar.update(len(block))
        finally:
            bar.close()
        return images, labels

    def _sample_many(self, jobs: Sequence[tuple[int, np.random.SeedSequence]]) -> np.ndarray:
        return (
            np.stack([self.sample(lab, s) for lab, s in jobs]) if jobs else np.empty((0, *self.output_shape))
        )

    @property
    def output_shape(self) -> tuple[int, int]:
        """Shape ``(H, W)`` of the images this generator returns."""
        if self.image_size is None:
            s = min(self.native_shape)
            return (s, s)
        if isinstance(self.image_size, (int, np.integer)):
            return (int(self.image_size), int(self.image_size))
        sizes = [int(s) for s in self.image_size]
        return (sizes[0], sizes[-1])

    def sample(
        self,
        label: int | str,
        seed: int | np.random.SeedSequence | None,
        patient_seed: int | np.random.SeedSequence | None = None,
        return_info: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
        """Draw one B-scan deterministically from explicit seeds (independent of the generator's stream).

        Args:
            label: class index or name.
            seed: seed of this image (noise, speckle, small shifts, padding, compression).
            patient_seed: seed of the eye (anatomy and lesions); images sharing it are B-scans of the
                same eye with the same lesions, like the several images per patient in Kermany.
                ``None`` uses ``seed``.
            return_info: also return a dict with the drawn severity and a few other parameters.

        Returns:
            the image, or ``(image, info)`` when ``return_info`` is true.
        """
        lab = label_to_index(label)
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        if patient_seed is None:
            ss_anat, ss_img = ss.spawn(2)
        else:
            pss = (
                patient_seed
                if isinstance(patient_seed, np.random.SeedSequence)
                else np.random.SeedSequence(patient_seed)
            )
            ss_anat, ss_img = pss.spawn(1)[0], ss.spawn(2)[1]
        H, W = self.native_shape
        # only the centre square is kept: form the image on its columns alone (the JPEG blocks stay
        # aligned with the full frame's when the offset is a multiple of 8, as for 496 x 512)
        cols = slice((W - H) // 2, (W - H) // 2 + H) if W > H else None
        img8, info = self._render(lab, np.random.default_rng(ss_anat), np.random.default_rng(ss_img), cols)
        sq = np.ascontiguousarray(center_crop_square(img8))
        if self.image_size is None or self.output_shape == sq.shape:
            out = sq.astype(np.float32) / np.float32(255.0)
        else:
            # the same antialiased bilinear resize as center_crop_resize, on 0..255 floats, then scaled
            h, w = self.output_shape
            out = np.asarray(Image.fromarray(sq).convert("F").resize((w, h), Image.BILINEAR))
            out = out / np.float32(255.0)
        out = np.clip(out, 0.0, 1.0).astype(self.output_dtype, copy=False)
        return (out, info) if return_info else out

    # ------------------------------------------------------------------ rendering
    def render_native(
        self,
        label: int,
        rng_anat: np.random.Generator,
        rng_img: np.random.Generator,
        columns: slice | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw one full native-grid B-scan (``native_shape``, float32 in [0, 1]) and its parameters.

        ``columns`` (a ``slice`` of the native columns) forms only those columns of the image: the
        anatomy is the same, and the image formation, the most costly part, is spent on them alone
        (its noise is drawn for those columns, so it is not a crop of the full frame's noise).
        :meth:`sample` uses it for the centre square it keeps.
        """
        img8, info = self._render(label, rng_anat, rng_img, columns)
        return img8.astype(np.float32) / np.float32(255.0), info

    def _render(
        self,
        label: int,
        rng_anat: np.random.Generator,
        rng_img: np.random.Generator,
        columns: slice | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`render_native`, returning the 8-bit image as the scanner's viewer stores it."""
        H, W = self.native_shape
        cs = slice(None) if columns is None else columns
        x_first = int(cs.indices(W)[0])
        ra, ri = rng_anat, rng_img
        z = np.arange(H, dtype=np.float32)[:, None]
        x = np.arange(W, dtype=np.float32)
        # lesion severity, drawn per image: many lesions are mild; CNV and DME keep a small minimum
        sev = float(ra.beta(*self.severity)) if label != 3 else 0.0
        sev = {0: 0.08 + 0.92 * sev, 1: 0.05 + 0.95 * sev}.get(label, sev)
        subtle = label != 3 and ra.random() < self.subtle_prob
        k = 1.0  # lesion size scale: below 1 only for subtle cases
        if subtle:
            sev, k = 0.0, float(ra.uniform(0.2, 0.5))
        info: dict[str, Any] = {
            "label": label,
            "class": OCT_CLASSES[label],
            "severity": sev,
            "subtle": subtle,
            "lesion_scale": k,
        }

        # --- scan geometry (nuisances shared by every class)
        dx = _DX_UM * ra.uniform(0.8, 1.25)  # lateral um per pixel (scan width / zoom)
        dz = _DZ_UM * ra.uniform(0.94, 1.06)

        def px_x(um: float | np.ndarray) -> Any:
            return np.asarray(um) / dx

        def px_z(um: float | np.ndarray) -> Any:
            return np.asarray(um) / dz

        xf = W * (ra.uniform(0.3, 0.7) if ra.random() < 0.85 else ra.uniform(0.05, 0.95))  # foveal centre
        xf += ri.normal(0.0, px_x(60.0))
        z_c = H * ra.uniform(0.34, 0.66) + ri.normal(0.0, 4.0)  # Bruch's membrane depth at the fovea
        tilt = np.clip(ra.normal(0.0, 0.07), -0.2, 0.2) + ri.normal(0.0, 0.008)
        curv = ra.uniform(-0.05, 0.35) * H  # bowl: edges higher than the centre
        u = (x - xf) / W
        bm = z_c + tilt * (x - xf) - curv * u**2 + self._noise1d(ra, W, 60.0, px_z(ra.uniform(0.0, 12.0)))

        # --- retinal thickness profiles (um), foveal pit
        t_scale = ra.uniform(0.92, 1.08)
        sigma_pit = px_x(ra.uniform(300.0, 480.0))
        p_pit = ra.uniform(1.8, 2.6)
        f = np.exp(-0.5 * np.abs((x - xf) / sigma_pit) ** p_pit)
        pit_depth = ra.uniform(0.82, 0.97)
        thick = {name: np.full(W, t * t_scale, dtype=np.float32) for name, t, _ in _LAYERS}
        side = 1.0 if ra.random() < 0.5 else -1.0
        thick["RNFL"] = (12.0 + 40.0 / (1.0 + np.exp(-side * (x - xf) / px_x(900.0)))) * t_scale
        refl = {name: float(r * np.exp(ra.normal(0.0, 0.15))) for name, _, r in _LAYERS}
        refl["RPE"] = float(_RPE_R * np.exp(ra.normal(0.0, 0.15)))
        ez_gain = np.ones(W, dtype=np.float32)

        elev = np.zeros(W, dtype=np.float32)  # sub-RPE elevation (drusen, PED), px
        gap = np.zeros(W, dtype=np.float32)  # sub-retinal space (fluid or material), px
        sub_rpe_val: np.ndarray | float = 30.0
        gap_val: np.ndarray | float = 0.15
        cysts: list[tuple[float, float, float, float]] = []  # (x, z, rx, rz) px
        foci: list[tuple[float, float, float]] = []  # (x, z, r)
        swell = np.zeros(W, dtype=np.float32)  # um added to INL/OPL/ONL
        rpe_rough = np.zeros(W, dtype=np.float32)
        rpe_extra = np.zeros(W, dtype=np.float32)  # thickened, irregular RPE complex (CNV), px
        shadow_cols = np.zeros(W, dtype=np.float32)  # extra column-wise shadowing / hypertransmission

        if label == 2:  # DRUSEN: dome-shaped RPE elevations over a flat Bruch's membrane
            n = 1 + int(ra.binomial(11 if not subtle else 1, 0.15 + 0.6 * sev))
            spread = px_x(ra.uniform(600.0, 2000.0))
            for _ in range(n):
                c = xf + ra.normal(0.0, spread)
                w = k * px_x(ra.uniform(80.0, 250.0 + 350.0 * sev)) / 2.0
                h = k * px_z(ra.uniform(15.0, 35.0 + 85.0 * sev))
                elev = np.maximum(elev, h * _dome(x, c, w, ra.uniform(0.5, 0.9)))
            sub_rpe_val = ra.uniform(15.0, 60.0)
            ez_gain = 1.0 - 0.6 * np.clip(elev / px_z(60.0), 0.0, 1.0)
            for name in ("OS", "IZ"):
                thick[name] = thick[name] * (1.0 - 0.6 * np.clip(elev / px_z(80.0), 0.0, 1.0))
            # the outer nuclear layer absorbs most of the elevation: the inner surface stays nearly flat
            thick["ONL"] = np.maximum(0.35 * thick["ONL"], thick["ONL"] - ra.uniform(0.5, 0.9) * elev * dz)
            info["n_drusen"] = n
        elif label == 1:  # DME: thickening, intraretinal cysts, hyperreflective foci
            xs = xf + ra.normal(0.0, px_x(300.0))
            sw_sigma = px_x(ra.uniform(300.0, 900.0))
            amp = k * (ra.uniform(20.0, 60.0) + 380.0 * sev * ra.uniform(0.6, 1.0))
            swell = amp * np.exp(-0.5 * np.abs((x - xs) / sw_sigma) ** ra.uniform(1.5, 2.5))
            pit_depth *= 1.0 - min(1.0, k * (0.3 + 1.2 * sev))
            if subtle:  # at most one small cyst
                n_cyst = int(ra.random() < 0.4)
            else:
                n_cyst = int(ra.binomial(2 + int(16 * sev), 0.6)) + (1 if ra.random() < 0.85 else 0)
            for _ in range(n_cyst):
                cx = xs + ra.normal(0.0, sw_sigma * 0.5)
                big = not subtle and ra.random() < 0.4 + 0.5 * sev
                cysts.append((cx, -1.0 if big else -2.0, 0.0, 0.0))  # depth resolved after layering
            n_foci = int(ra.poisson(k * (1.0 + 10.0 * sev)))
            for _ in range(n_foci):
                foci.append((xs + ra.normal(0.0, sw_sigma), -1.0, ra.uniform(0.8, 2.2)))
            if ra.random() < 0.25 * k * (0.3 + sev):
                gw = px_x(ra.uniform(300.0, 1200.0))
                gh = px_z(ra.uniform(20.0, 120.0))
                gap = np.maximum(gap, gh * _dome(x, xs, gw, 1.2))
            info["n_cysts"], info["n_foci"] = n_cyst, n_foci
        elif label == 0:  # CNV: irregular RPE elevation, sub-retinal material and fluid
            xl = xf + ra.normal(0.0, px_x(500.0))
            width = k * px_x(ra.uniform(900.0, 1500.0 + 2000.0 * sev))
            kind = ra.choice(["fibrovascular", "serous", "type2"], p=[0.55, 0.15, 0.3])
            h = k * px_z(ra.uniform(30.0, 50.0 + 180.0 * sev))
            prof = np.zeros(W, dtype=np.float32)
            for _ in range(int(ra.integers(2, 6))):
                c = xl + ra.normal(0.0, width / 4.0)
                w = width / 2.0 * ra.uniform(0.5, 1.0)
                prof = np.maximum(prof, ra.uniform(0.3, 1.0) * _dome(x, c, w, ra.uniform(0.9, 1.6)))
            lesion = prof > 0
            if kind == "type2":
                elev = 0.25 * h * prof
                sub_rpe_val = 20.0
                shrm = 0.7 * h * prof * (1.0 + 0.3 * self._noise1d(ra, W, 8.0, 1.0))
                gap = np.maximum(gap, np.clip(shrm, 0.0, None))
                gap_val = "shrm"  # textured bright material, resolved below
            elif kind == "serous":
                elev = h * prof
                sub_rpe_val = 0.2
            else:
                elev = h * prof * (1.0 + 0.25 * self._noise1d(ra, W, 10.0, 1.0)) * lesion
                sub_rpe_val = "fibro"
            elev = np.clip(elev, 0.0, None)
            rpe_rough = lesion * self._noise1d(ra, W, 3.0, ra.uniform(0.5, 2.5))
            ez_loss = k * (0.85 - 0.85 * ra.random(W) ** 0.5)
            ez_gain = np.where(lesion, np.clip(1.0 - ez_loss, 0.0, 1.0), 1.0)
            ez_gain = ndi.gaussian_filter1d(ez_gain.astype(np.float32), 3.0)
            rpe_extra = k * px_z(ra.uniform(10.0, 30.0 + 50.0 * sev)) * np.clip(prof * 2.0, 0.0, 1.0)
            rpe_extra *= np.clip(1.0 + 0.5 * self._noise1d(ra, W, 4.0, 1.0), 0.0, None)
            shadow_cols = lesion * self._noise1d(ra, W, 2.5, k * ra.uniform(0.2, 0.5))
            if ra.random() < k * (0.55 if kind != "serous" else 0.35):
                gw = width * ra.uniform(0.5, 1.3) / 2.0
                gh = px_z(ra.uniform(20.0, 40.0 + 160.0 * sev))
                fluid = gh * _dome(x, xl + ra.normal(0.0, width / 4.0), gw, ra.uniform(1.0, 1.6))
                if gap_val == "shrm":
                    gap = gap + fluid  # fluid and material side by side: treat as material over fluid
                    gap_val = "shrm_fluid"
                else:
                    gap = np.maximum(gap, fluid)
            for _ in range(int(ra.poisson(k * (2.0 + 6.0 * sev)))):  # hyperreflective dots over the lesion
                foci.append((xl + ra.normal(0.0, width / 3.0), -1.0, ra.uniform(0.8, 1.8)))
            if ra.random() < 0.45 * k:
                for _ in range(int(ra.integers(1, 5))):
                    cysts.append(
                        (xl + ra.normal(0.0, width / 3.0), -1.0 if ra.random() < 0.5 else -2.0, 0.0, 0.0)
                    )
            swell = ra.uniform(20.0, 150.0) * sev * np.exp(-0.5 * ((x - xl) / (width / 1.5)) ** 2)
            # the outer nuclear layer takes up part of the elevation
            thick["ONL"] = np.maximum(0.4 * thick["ONL"], thick["ONL"] - ra.uniform(0.2, 0.6) * elev * dz)
            pit_depth *= 1.0 - 0.5 * sev
            info["cnv_kind"] = str(kind)

        # inner layers thin in the pit; the outer nuclear layer and the outer segments thicken there
        thick["RNFL"] = thick["RNFL"] * (1.0 - 0.95 * f)
        for name in ("GCL", "IPL", "INL"):
            thick[name] = thick[name] * (1.0 - pit_depth * f)
        thick["OPL"] = thick["OPL"] * (1.0 - 0.5 * pit_depth * f)
        thick["ONL"] = thick["ONL"] + 35.0 * pit_depth * f
        thick["OS"] = thick["OS"] + 12.0 * f
        thick["INL"] = thick["INL"] + 0.2 * swell
        thick["OPL"] = thick["OPL"] + 0.25 * swell
        thick["ONL"] = thick["ONL"] + 0.55 * swell

        # --- boundaries, from Bruch's membrane upwards (px); each layer boundary slightly irregular
        bm = bm.astype(np.float32)
        rpe_bottom = (bm - elev).astype(np.float32)
        rpe_top = rpe_bottom - px_z(_RPE_UM * t_scale) - rpe_extra + rpe_rough
        iz_bottom = (rpe_top - gap).astype(np.float32)
        tops: dict[str, np.ndarray] = {}
        cur = iz_bottom
        wigs = self._noise1d(ra, W, 25.0, 0.4, count=len(_LAYERS))
        for (name, _, _), wig in zip(reversed(_LAYERS), wigs):
            cur = np.minimum(cur, cur - px_z(thick[name]) + wig)
            tops[name] = cur
        names = [n for n, _, _ in _LAYERS]
        bounds = np.stack([tops[n] for n in names] + [iz_bottom, rpe_top, rpe_bottom, bm]).astype(np.float32)
        bounds = np.minimum.accumulate(bounds[::-1], axis=0)[::-1]  # keep every boundary above the next one
        nl = len(names)

        # The layered part is drawn on a band that follows the retina column by column (rows
        # top[x] .. top[x] + hb), so its height is the retinal thickness, not the thickness plus the
        # tilt and curvature of the scan; above it is vitreous (0), below it the choroid, added later.
        top = np.maximum(np.floor(bounds[0]).astype(np.int64) - 2, 0)
        hb = int(np.clip(np.max(np.ceil(bm).astype(np.int64) + 3 - top), 1, H))
        zb = top[None, :].astype(np.float32) + np.arange(hb, dtype=np.float32)[:, None]  # depth, px

        gain = float(np.exp(ra.normal(-0.25, 0.35) + ri.normal(0.0, 0.1)))
        layer_val = np.stack(
            [refl[n] * (ez_gain if n in ("EZ", "IZ") else np.ones(W, np.float32)) for n in names]
        ).astype(np.float64)
        # the layers: value v_k between boundaries k and k + 1, i.e. steps of v_k - v_(k-1) at each
        dv = np.concatenate([layer_val[:1], np.diff(layer_val, axis=0), -layer_val[-1:]])
        one = np.array([[1.0], [-1.0]])
        # the layers, then the share of each band pixel in the sub-retinal space, the RPE and the sub-RPE
        # space (between boundaries k and k + 1), and the share below Bruch's membrane
        Rb, *regions, below_bm = _ramp_sums(
            [(bounds[: nl + 1], dv)]
            + [(bounds[k : k + 2], one) for k in (nl, nl + 1, nl + 2)]
            + [(bounds[-1:], np.ones((1, 1)))],
            top,
            hb,
        )

        def region(k: int) -> np.ndarray:
            return regions[k - nl]

        # the sub-retinal space, the RPE and the sub-RPE space lie in the lower rows of the band, from
        # row r_lo down: their textures are drawn there only
        r_lo = int(np.clip(np.floor((bounds[nl] - top).min()) - 1, 0, hb - 1))
        low = (hb - r_lo, W)
        Rl = Rb[r_lo:]
        if isinstance(gap_val, str):
            mat = ra.uniform(20.0, 90.0) * np.exp(0.8 * self._noise2d(ri, low, (2.0, 4.0)))
            if gap_val == "shrm_fluid":  # material on the RPE side, fluid above it
                depth_in = np.clip((zb[r_lo:] - iz_bottom[None, :]) / np.maximum(gap[None, :], 1.0), 0.0, 1.0)
                mat = np.where(depth_in > 0.45, mat, np.float32(0.15))
            Rl += region(nl)[r_lo:] * mat
        elif gap.max() > 0:
            Rl += region(nl)[r_lo:] * np.float32(gap_val)
        Rl += region(nl + 1)[r_lo:] * (refl["RPE"] * np.exp(0.3 * self._noise2d(ri, low, (1.0, 3.0))))
        if elev.max() > 0:
            if isinstance(sub_rpe_val, str):
                sub = ra.uniform(30.0, 150.0) * np.exp(0.9 * self._noise2d(ri, low, (2.0, 4.0)))
            else:
                sub = sub_rpe_val * np.exp(0.3 * self._noise2d(ri, low, (2.0, 4.0)))
            Rl += region(nl + 2)[r_lo:] * sub
        Rb *= np.exp(0.25 * self._noise2d(ri, (hb, W), (1.5, 5.0)))  # within-layer heterogeneity
        Rl *= 1.0 - below_bm[r_lo:]  # nothing below Bruch's membrane (which lies below r_lo)
        np.maximum(Rb, 0.0, out=Rb)  # rounding in the column sums may leave -1e-5 where 0 is meant
        # a padded frame, so that band rows running past the bottom need no special case
        pad = H + 2
        R = np.zeros((H + pad, W), dtype=np.float32)
        flat = R.reshape(-1)
        cols = np.arange(W)
        flat[(np.arange(0, hb * W, W)[:, None] + (top * W + cols)[None, :]).ravel()] = Rb.ravel()

        # choroid and sclera below Bruch's membrane, on a band that follows Bruch's membrane
        lam = float(px_z(ra.uniform(70.0, 150.0)))
        ch_top = ra.uniform(15.0, 40.0)
        lumen_depth = float(px_z(ra.uniform(200.0, 320.0)))
        lumen_thr, lumen_val = ra.uniform(-0.5, 0.2), ra.uniform(0.25, 0.5)
        sclera = 0.15 * ra.uniform(0.5, 1.5)
        # the choroid's texture is drawn only down to where it has faded far below the noise floor
        # (ch_top * exp(-depth / lam) < 0.02); deeper, the faint sclera alone remains
        hc = int(np.clip(np.ceil(lam * np.log(max(ch_top / 0.02, 1.0))) + 2, 2, H))
        bt = np.maximum(np.floor(bm).astype(np.int64), 0)  # Bruch's membrane may leave the frame
        # depth below Bruch's membrane of band row d is max(d - (bm - bt), 0): exp(-depth / lam) is
        # separable into a row and a column factor (clipped at 1 above the membrane)
        ch = (
            np.exp(-np.arange(hc, dtype=np.float32) / np.float32(lam))[:, None]
            * (ch_top * np.exp((bm - bt) / lam))[None, :]
        )
        np.minimum(ch, np.float32(ch_top), out=ch)
        ch *= np.exp(0.2 * self._noise2d(ri, (hc, W), (1.5, 3.0)))  # mottle
        # vessel lumens, darker, between 15 um and lumen_depth below the membrane
        hl = int(min(hc, np.ceil(lumen_depth) + 3))
        depth = np.maximum(np.arange(hl, dtype=np.float32)[:, None] - (bm - bt)[None, :], 0.0)
        vessels = self._noise2d(ra, (hl, W), (px_z(35.0), px_x(80.0)))
        lumen = (vessels < lumen_thr) & (depth > px_z(15.0)) & (depth < lumen_depth)
        ch[:hl] *= np.where(lumen, np.float32(lumen_val), np.float32(1.0))
        # partial cover of the first two rows (the membrane lies inside the first one)
        ch[:2] *= np.clip(np.arange(2, dtype=np.float32)[:, None] - (bm - bt)[None, :] + 0.5, 0.0, 1.0)
        # the band's rows bt and bt + 1 may hold the foot of the RPE complex (deeper band rows are 0)
        ch[:2] += np.take_along_axis(
            Rb, np.minimum((bt - top)[None, :] + np.arange(2)[:, None], hb - 1), axis=0
        )
        flat[(np.arange(0, hc * W, W)[:, None] + (bt * W + cols)[None, :]).ravel()] = ch.ravel()
        R = R[:H]
        # the faint sclera, exp(-depth / 900 um), is separable in depth and column
        c0 = int(np.clip(np.floor(bm.min()), 0, H - 1))
        k_s = float(px_z(900.0))
        fall = np.exp(-(z[c0:] / k_s)) * np.exp(bm / k_s)[None, :]
        R[c0:] += np.clip(z[c0:] - bm[None, :] + 0.5, 0.0, 1.0) * (sclera * np.minimum(fall, 1.0))
        R[:2] = 0.0

        # --- lesion objects that depend on the layer positions
        first_row = [int(top.min())]  # the first row with signal or absorption: nothing lies above it

        def paint(
            arr: np.ndarray, cx: float, cz: float, rx: float, rz: float, value: float, **kw: Any
        ) -> np.ndarray:
            first_row[0] = min(first_row[0], int(np.floor(cz - rz - 2)))
            return self._paint_ellipse(arr, cx, cz, rx, rz, value, **kw)

        for cx, kind_c, _, _ in cysts:
            c = int(np.clip(round(cx), 0, W - 1))
            if kind_c == -2.0:  # small cyst in the INL
                z0, z1 = tops["INL"][c], tops["OPL"][c]
                rz = max(1.0, 0.45 * (z1 - z0)) * ra.uniform(0.5, 1.0)
                rx = rz * dz / dx * ra.uniform(1.0, 2.5)
            else:  # larger cyst in the OPL / ONL
                z0, z1 = tops["OPL"][c], tops["ELM"][c]
                rz = max(1.5, 0.45 * (z1 - z0)) * ra.uniform(0.35, 1.0)
                rx = max(1.5, rz * dz / dx * ra.uniform(0.8, 2.5))
            zc = 0.5 * (z0 + z1) + ra.normal(0.0, 0.1 * max(1.0, z1 - z0))
            R = paint(R, cx, zc, rx, rz, 0.15)
        absorb = np.zeros((H, W), dtype=np.float32)
        for fx, _, r in foci:
            c = int(np.clip(round(fx), 0, W - 1))
            zc = ra.uniform(tops["IPL"][c], tops["ELM"][c])
            val = ra.uniform(150.0, 500.0)
            R = paint(R, fx, zc, r, r, val, soft=0.8)
            absorb = paint(absorb, fx, zc + r, r, 0.5, 0.4, soft=0.5)
        # retinal vessels: bright cross-sections in the inner retina that absorb and shadow
        for _ in range(int(ra.poisson(3.0))):
            vx = ra.uniform(0, W)
            c = int(np.clip(vx, 0, W - 1))
            diam = ra.uniform(25.0, 100.0)
            rv, rz = max(1.0, px_x(diam) / 2.0), max(1.0, 0.3 * px_z(diam))
            zc = tops["GCL"][c] + ra.uniform(0.0, 4.0)
            R = paint(R, vx, zc, rv, rz, ra.uniform(25.0, 80.0), soft=1.5)
            absorb = paint(absorb, vx, zc + rz, rv * 1.3, 1.0, ra.uniform(0.05, 0.3), soft=2.0)

        # --- attenuation along depth (shadows), gain, noise floor, on the requested columns only
        R, absorb = R[:, cs], absorb[:, cs]
        Wc = R.shape[1]
        # rows above the first reflecting or absorbing one are empty vitreous: no signal, no attenuation
        rs = int(np.clip(first_row[0], 0, H))
        mu = np.float32(ra.uniform(1.0e-4, 2.0e-4))
        od = R[rs:] * mu
        od += absorb[rs:]
        for i in range(1, od.shape[0]):  # cumulative optical depth; a row loop beats cumsum(axis=0)
            np.add(od[i - 1], od[i], out=od[i])
        col_gain = np.exp(self._noise1d(ri, W, 30.0, 0.08)[cs]) * np.float32(gain)
        S = R[rs:] * np.exp(-od)
        S *= col_gain[None, :]
        if np.any(shadow_cols):  # shadows and hypertransmission under the lesion
            below = np.clip(z[rs:] - rpe_bottom[None, cs], 0.0, 1.0)
            S *= np.exp(below * shadow_cols.astype(np.float32)[None, cs])
        # the noise floor falls with depth; deep rows keep a smooth haze (the scanner's depth compensation)
        floor_fall = ri.uniform(1.6, 2.6)
        noise_floor = np.exp(-floor_fall * (z / H) ** 2).astype(np.float32)
        # (1e-6 keeps the logarithm finite where the first row's speckle is 0)
        haze = (ri.uniform(0.25, 0.6) * (z / H) ** 2 + 1e-6).astype(np.float32)
        intensity = self._speckle(ri, S, noise_floor, rs, Wc)
        intensity += haze

        # --- display: log transform, clip, quantise
        dyn = ri.uniform(7.6, 9.6)
        g0 = ri.uniform(0.095, 0.135)
        # grey = g0 + ln(I) / dyn in [0, 1], computed directly in 8-bit units
        grey = np.log(intensity, out=intensity)
        grey *= np.float32(255.0 / dyn)
        grey += np.float32(255.0 * g0)
        np.clip(grey, 0.0, 255.0, out=grey)
        if ri.random() < self.padding_prob:
            grey = self._registration_padding(ri, grey, x_first, W, white=255.0)
        out = np.rint(grey, out=grey).astype(np.uint8)
        if self.jpeg_quality is not None:
            q = int(ri.integers(self.jpeg_quality[0], self.jpeg_quality[1] + 1))
            buf = io.BytesIO()
            Image.fromarray(out).save(buf, format="JPEG", quality=q)
            buf.seek(0)
            out = np.asarray(Image.open(buf))  # mode L, as written
        info.update({"fovea_x": float(xf), "bruch_depth": float(z_c), "gain": gain})
        return out, info

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _noise1d(
        rng: np.random.Generator, n: int, sigma: float, amp: float, count: int | None = None
    ) -> np.ndarray:
        """Smooth 1D noise with standard deviation ``amp`` and correlation length ``sigma`` (px).

        White noise blurred by a Gaussian of ``sigma`` in the Fourier domain (periodic, with a margin
        of 3 sigma so that the ends do not correlate), then scaled to ``amp``. ``count`` draws that many
        independent rows at once, ``(count, n)``; ``None`` returns one ``(n,)``.
        """
        s = max(float(sigma), 0.5)
        m = sfft.next_fast_len(n + 2 * int(np.ceil(3.0 * s)), real=True)
        v = rng.standard_normal((1 if count is None else count, m))
        v = sfft.irfft(sfft.rfft(v, axis=-1) * _gauss_transfer(m, s), n=m, axis=-1)[:, :n]
        sd = v.std(axis=-1, keepdims=True)
        v = (v * (float(amp) / np.where(sd > 0, sd, 1.0))).astype(np.float32)
        return v[0] if count is None else v

    @staticmethod
    def _noise2d(rng: np.random.Generator, shape: tuple[int, int], sigma: Sequence[float]) -> np.ndarray:
        """Smooth 2D unit-variance noise, drawn on a coarser grid for large correlation lengths.

        The coarse grid has a spacing of ``factor`` pixels and is interpolated linearly, which is
        what ``scipy.ndimage.zoom(order=1)`` did before at four times the cost.
        """
        s = [max(float(v), 0.3) for v in sigma]
        factor = max(2, int(min(s) // 2)) if min(s) >= 1.0 else 1
        small = (int(np.ceil(shape[0] / factor)) + 1, int(np.ceil(shape[1] / factor)) + 1)
        v = _gaussian_field(rng, small, [t / factor for t in s])
        if factor > 1:
            v = _upsample_linear(v, factor)
        v = v[: shape[0], : shape[1]]
        sd = float(v[::2, ::2].std())  # a quarter of the pixels estimate it as well as all of them
        return v * np.float32(1.0 / sd) if sd > 0 else v

    @staticmethod
    def _paint_ellipse(
        arr: np.ndarray, cx: float, cz: float, rx: float, rz: float, value: float, soft: float = 1.0
    ) -> np.ndarray:
        """Blend ``value`` into ``arr`` inside an ellipse with a soft edge (in place, returns ``arr``)."""
        H, W = arr.shape
        z0, z1 = int(max(0, np.floor(cz - rz - 2))), int(min(H, np.ceil(cz + rz + 3)))
        x0, x1 = int(max(0, np.floor(cx - rx - 2))), int(min(W, np.ceil(cx + rx + 3)))
        if z0 >= z1 or x0 >= x1:
            return arr
        zz = np.arange(z0, z1, dtype=np.float32)[:, None]
        xx = np.arange(x0, x1, dtype=np.float32)[None, :]
        d = np.sqrt(((xx - cx) / max(rx, 0.3)) ** 2 + ((zz - cz) / max(rz, 0.3)) ** 2)
        m = np.clip((1.0 - d) * max(rx, rz) / max(soft, 1e-3) + 0.5, 0.0, 1.0)
        arr[z0:z1, x0:x1] = arr[z0:z1, x0:x1] * (1.0 - m) + value * m
        return arr

    @staticmethod
    def _speckle(
        rng: np.random.Generator, signal: np.ndarray, floor: np.ndarray, start: int, width: int
    ) -> np.ndarray:
        """Speckled intensity: tissue signal with frame-averaged speckle plus a grainy noise floor.

        The noise floor is fully developed speckle: the squared magnitude of a circular Gaussian field
        blurred by the point-spread function (PSF), averaged over two to four looks. Its intensity is
        Gamma-distributed (shape ``looks``, mean ``floor``) with the correlation ``|rho|^2`` of the
        field (:func:`_speckle_kernel`). It is drawn as one Gaussian field with that correlation mapped
        to the Gamma law (Wilson-Hilferty), not as ``2 * looks`` blurred fields.

        The tissue signal (rows ``start`` and below; the rows above are empty vitreous) is averaged
        over many partly decorrelated frames (as the scanner's eye-tracked averaging does), so its
        speckle is a smoother log-normal multiplicative field of variance about ``1 / looks``.

        Returns:
            the ``(H, width)`` intensity, float32.
        """
        H = floor.shape[0]
        looks = int(rng.choice([2, 2, 3, 4]))
        psf = (rng.uniform(0.9, 1.3), rng.uniform(0.6, 0.9))
        # Wilson-Hilferty: a Gamma(looks) / looks variable from a standard normal one
        a = 1.0 / (9.0 * looks)
        q = 2.0 * a / (1.0 - a) ** 2
        g = _gaussian_field(rng, (H, width), kernels=(_speckle_kernel(psf[0], q), _speckle_kernel(psf[1], q)))
        g *= np.float32(np.sqrt(a))
        g += np.float32(1.0 - a)
        np.maximum(g, 0.0, out=g)
        noise = g * g
        noise *= g
        noise *= floor
        sig_looks = rng.uniform(3.0, 10.0)
        sd = float(np.sqrt(np.log1p(1.0 / sig_looks)))
        if start < H:
            t = _gaussian_field(rng, (H - start, width), (rng.uniform(0.7, 1.2), 0.8))
            t *= np.float32(sd)
            t -= np.float32(0.5 * sd * sd)
            mult = np.exp(t, out=t)
            mult *= signal  # >= 0
            noise[start:] += mult
        return noise

    @staticmethod
    def _registration_padding(
        rng: np.random.Generator,
        grey: np.ndarray,
        x_first: int = 0,
        width: int | None = None,
        white: float = 1.0,
    ) -> np.ndarray:
        """White wedges left where the eye-tracking registration shifted and rotated the frame.

        ``grey`` holds the columns ``x_first ...`` of a frame ``width`` columns wide (all by default);
        ``white`` is the value of white in its units.
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
        if where in ("bottom", "both"):
            a, b = rng.exponential(0.07) * H, rng.exponential(0.025) * H
            a, b = (a, b) if rng.random() < 0.5 else (b, a)
            grey = np.where(z > H - 1 - (a + (b - a) * x / W), np.float32(white), grey)
        return grey


# ---------------------------------------------------------------------------------------------- writer
def _split_counts(
    n_per_class: int | Mapping[str, int], splits: Sequence[str] | Mapping[str, int] | None
) -> dict[str, int]:
    if isinstance(splits, Mapping):
        counts = {str(k): int(v) for k, v in splits.items()}
    else:
        names = list(DEFAULT_SPLITS) if splits is None else [str(s) for s in splits]
        if isinstance(n_per_class, Mapping):
            counts = {s: int(n_per_class[s]) for s in names if s in n_per_class}
            missing = [s for s in names if s not in n_per_class]
            if missing:
                raise ValueError(f"n_per_class has no count for split(s) {missing}.")
        else:
            counts = {s: int(n_per_class) for s in names}
    if not counts:
        raise ValueError("no splits to write.")
    for s, n in counts.items():
        if n < 0:
            raise ValueError(f"the number of images per class must be >= 0, got {n} for split {s!r}.")
        if not s or "/" in s or "\\" in s or s.startswith("."):
            raise ValueError(f"invalid split name {s!r}.")
    return counts


def _plan(counts: dict[str, int], images_per_patient: int) -> list[tuple[str, int, int, int, str]]:
    """(split, class index, image index, patient id, relative path) for every image, in a fixed order."""
    plan = []
    for si, (split, n) in enumerate(counts.items()):
        for ci, cname in enumerate(OCT_CLASSES):
            for i in range(n):
                pid = 100000 * (si + 1) + 10000 * ci + i // images_per_patient
                num = i % images_per_patient + 1
                if split == "unlabeled":
                    rel = f"{split}/{UNLABELED_PREFIX}-{pid}-{num}"
                else:
                    rel = f"{split}/{cname}/{cname}-{pid}-{num}"
                plan.append((split, ci, i, pid, rel))
    return plan


def _render_job(args: tuple) -> tuple[str, str]:
    (gen_kwargs, seed, si, ci, i, pid, images_per_patient, path, fmt, quality) = args
    gen = SyntheticOCTGenerator(seed=None, **gen_kwargs)
    img_seed = np.random.SeedSequence(seed, spawn_key=(si, ci, i))
    pat_seed = np.random.SeedSequence(seed, spawn_key=(si, ci, 10_000_000 + i // images_per_patient))
    img = gen.sample(ci, img_seed, patient_seed=pat_seed)
    arr = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    tmp = path + ".tmp"
    if fmt == "jpeg":
        Image.fromarray(arr).save(tmp, format="JPEG", quality=quality)
    else:
        Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path, _sha1(path)


def _sha1(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read()).hexdigest()


def write_synthetic_oct_dataset(
    root: str | os.PathLike,
    n_per_class: int | Mapping[str, int] = 100,
    image_size: int = 224,
    seed: int = 0,
    splits: Sequence[str] | Mapping[str, int] | None = None,
    image_format: str = "jpeg",
    jpeg_quality: int = 95,
    images_per_patient: int = 1,
    num_workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    verify: bool = True,
    **generator_kwargs: Any,
) -> dict[str, Any]:
    """Write a synthetic OCT data set in the Kermany folder layout.

    Layout: ``root/<split>/<CLASS>/<CLASS>-<PATIENT>-<N>.<ext>`` for labeled splits, and
    ``root/unlabeled/SCAN-<PATIENT>-<N>.<ext>`` (no class folders, no class in the name) for the split
    called ``unlabeled``; ``root/synthetic_oct.json`` records the arguments (and
    :data:`GENERATOR_VERSION`: a set written by an older generator counts as different arguments), the
    files, their labels
    (also the hidden labels of the unlabeled split, for analysis) and their SHA-1.

    Idempotent: a second call with the same arguments finds the manifest, checks that every file is
    there with the recorded checksum (``verify``) and returns without rendering; missing or damaged
    files are rendered again. Images depend only on ``seed`` and their position, not on
    ``num_workers``.

    Args:
        root: output folder.
        n_per_class: images per class, for every split, or a mapping ``{split: n}``.
        image_size: side length of the written square images.
        seed: seed of the whole data set.
        splits: split names (default ``("train", "unlabeled", "test")``), or a mapping ``{split: n}``
            that overrides ``n_per_class``.
        image_format: ``"jpeg"`` (as Kermany) or ``"png"`` (lossless).
        jpeg_quality: quality of the written JPEG files.
        images_per_patient: consecutive images of a class share one synthetic eye (patient id).
        num_workers: processes used to render; ``None`` uses all available cores (at most 8).
        progress: show a tqdm progress bar.
        overwrite: replace an existing data set written with different arguments.
        verify: check the SHA-1 of existing files when reusing a data set.
        generator_kwargs: passed to :class:`SyntheticOCTGenerator` (e.g. ``severity``, ``padding_prob``).

    Returns:
        the manifest (a dict, also written to ``root/synthetic_oct.json``).

    Raises:
        ValueError: for bad counts, split names, format or patient grouping.
        FileExistsError: when ``root`` holds a data set written with different arguments and
            ``overwrite`` is false.
    """
    fmt = str(image_format).lower().lstrip(".")
    fmt = {"jpg": "jpeg"}.get(fmt, fmt)
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}.")
    if int(image_size) < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}.")
    if int(images_per_patient) < 1:
        raise ValueError(f"images_per_patient must be >= 1, got {images_per_patient}.")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}.")
    counts = _split_counts(n_per_class, splits)
    root = Path(root)
    ext = ".jpeg" if fmt == "jpeg" else ".png"
    gen_kwargs = {"image_size": int(image_size), **generator_kwargs}
    SyntheticOCTGenerator(seed=None, **gen_kwargs)  # validate the generator arguments early
    args = {
        "n_per_class": counts,
        "image_size": int(image_size),
        "seed": int(seed),
        "image_format": fmt,
        "jpeg_quality": int(jpeg_quality),
        "images_per_patient": int(images_per_patient),
        "generator": {k: (list(v) if isinstance(v, tuple) else v) for k, v in generator_kwargs.items()},
        "generator_version": GENERATOR_VERSION,
    }
    args = json.loads(json.dumps(args))
    manifest_path = root / MANIFEST_NAME
    old: dict[str, Any] | None = None
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise FileExistsError(
                f"unreadable manifest {manifest_path}: {e}; remove it or pass overwrite=True."
            ) from e
        if old.get("arguments") != args:
            if not overwrite:
                raise FileExistsError(
                    f"{root} holds a synthetic OCT data set written with different arguments "
                    f"({old.get('arguments')}; generator version "
                    f"{(old.get('arguments') or {}).get('generator_version', 1)}, this is "
                    f"{GENERATOR_VERSION}); pass overwrite=True or choose another folder."
                )
            for f in old.get("files", []):
                p = root / f["path"]
                if p.is_file():
                    p.unlink()
            old = None

    plan = _plan(counts, int(images_per_patient))
    known = {f["path"]: f.get("sha1") for f in (old or {}).get("files", [])}
    todo = []
    records: dict[str, dict[str, Any]] = {}
    split_idx = {s: i for i, s in enumerate(counts)}
    for split, ci, i, pid, rel in plan:
        relp = rel + ext
        rec = {"path": relp, "split": split, "label": ci, "class": OCT_CLASSES[ci], "patient": pid}
        if split == "unlabeled":
            rec = {"path": relp, "split": split, "hidden_label": ci, "class": OCT_CLASSES[ci], "patient": pid}
        records[relp] = rec
        p = root / relp
        ok = p.is_file() and relp in known
        if ok and verify:
            ok = _sha1(p) == known[relp]
        if ok:
            rec["sha1"] = known[relp]
        else:
            p.parent.mkdir(parents=True, exist_ok=True)
            todo.append(
                (
                    gen_kwargs,
                    int(seed),
                    split_idx[split],
                    ci,
                    i,
                    pid,
                    int(images_per_patient),
                    str(p),
                    fmt,
                    int(jpeg_quality),
                )
            )

    if todo:
        workers = min(8, os.cpu_count() or 1) if num_workers is None else max(1, int(num_workers))
        workers = min(workers, len(todo))
        bar = _progress(len(todo), progress, f"synthetic OCT -> {root}")
        try:
            if workers == 1:
                results = []
                for job in todo:
                    results.append(_render_job(job))
                    bar.update(1)
            else:
                results = []
                with ProcessPoolExecutor(max_workers=workers) as ex:
                    for r in ex.map(_render_job, todo, chunksize=max(1, len(todo) // (workers * 8))):
                        results.append(r)
                        bar.update(1)
        finally:
            bar.close()
        for path, digest in results:
            records[Path(path).relative_to(root).as_posix()]["sha1"] = digest

    manifest = {
        "format": "monai-adv synthetic OCT",
        "version": 1,
        "classes": list(OCT_CLASSES),
        "arguments": args,
        "counts": {s: n * len(OCT_CLASSES) for s, n in counts.items()},
        "files": [records[rel + ext] for *_, rel in plan],
    }
    if todo or old is None:
        tmp = manifest_path.with_suffix(".json.tmp")
        root.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, manifest_path)
    return manifest


def _progress(total: int, enabled: bool, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=not enabled, desc=desc, unit="img")
    except ImportError:  # pragma: no cover - tqdm is a dependency
        warnings.warn("tqdm is not installed: no progress bar.", stacklevel=2)

        class _Null:
            def update(self, n: int) -> None: ...

            def close(self) -> None: ...

        return _Null()


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m monai_adv.data.synthetic --out DIR ...``."""
    p = argparse.ArgumentParser(
        prog="python -m monai_adv.data.synthetic",
        description="Write a synthetic retinal OCT data set (CNV/DME/DRUSEN/NORMAL) in the Kermany folder layout.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-train", type=int, default=DEFAULT_SPLITS["train"], help="train images per class")
    p.add_argument(
        "--n-unlabeled", type=int, default=DEFAULT_SPLITS["unlabeled"], help="unlabeled images per class"
    )
    p.add_argument("--n-test", type=int, default=DEFAULT_SPLITS["test"], help="test images per class")
    p.add_argument("--size", type=int, default=224, help="side length of the square images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="jpeg", choices=["jpeg", "png"])
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--images-per-patient", type=int, default=1)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="replace a data set written with other arguments")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    splits = {"train": a.n_train, "unlabeled": a.n_unlabeled, "test": a.n_test}
    splits = {k: v for k, v in splits.items() if v > 0}
    if not splits:
        p.error("all split sizes are zero: nothing to write.")
    try:
        m = write_synthetic_oct_dataset(
            a.out,
            image_size=a.size,
            seed=a.seed,
            splits=splits,
            image_format=a.format,
            jpeg_quality=a.jpeg_quality,
            images_per_patient=a.images_per_patient,
            num_workers=a.workers,
            progress=not a.no_progress,
            overwrite=a.overwrite,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}")
        return 2
    print(f"wrote {sum(m['counts'].values())} images to {a.out}: {m['counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
