# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""The random fields and small numeric helpers the synthetic OCT stages draw with.

Smooth 1D and 2D noise, correlated Gaussian fields by short separable kernels, the speckle kernel,
column sums of ramps (the layered band), linear upsampling, soft ellipses, and reused work arrays.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft

__all__ = [
    "dome",
    "spawn_seed",
    "normal",
    "gauss_transfer",
    "gauss_kernel",
    "correlate_valid",
    "gaussian_field",
    "speckle_kernel",
    "ramp_sums",
    "upsample_linear",
    "noise1d",
    "noise2d",
    "paint_ellipse",
]


def dome(x: np.ndarray, centre: float, half_width: float, power: float) -> np.ndarray:
    """A dome ``(1 - (d / w)^2)^power`` of unit height on ``|d| < w``; larger powers taper more."""
    d = np.clip(1.0 - ((x - centre) / max(float(half_width), 1e-3)) ** 2, 0.0, None)
    return (d**power).astype(np.float32)


def spawn_seed(rng: np.random.Generator) -> np.random.SeedSequence:
    """A fresh seed sequence drawn from ``rng``."""
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


def normal(rng: np.random.Generator, shape: tuple[int, ...], out: np.ndarray | None = None) -> np.ndarray:
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
def gauss_transfer(m: int, sigma: float) -> np.ndarray:
    """Transfer function of a Gaussian blur of ``sigma`` samples on a periodic signal of length ``m``.

    Cached: the 1D noise of the anatomy uses a handful of fixed correlation lengths.
    """
    t = np.exp(-2.0 * (np.pi * sigma * np.fft.rfftfreq(m)) ** 2)
    t.flags.writeable = False
    return t


def gauss_kernel(sigma: float) -> np.ndarray:
    """Normalised 1D Gaussian kernel truncated at 3 sigma, as ``scipy.ndimage`` with ``truncate=3``."""
    r = int(3.0 * float(sigma) + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1, dtype=np.float64) / float(sigma)) ** 2)
    return (k / k.sum()).astype(np.float32)


def correlate_valid(a: np.ndarray, k: np.ndarray, axis: int, out: np.ndarray | None = None) -> np.ndarray:
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


def gaussian_field(
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
        kernels = (gauss_kernel(sigma[0]), gauss_kernel(sigma[1]))
    kz, kx = kernels
    # fold the normalisation into the last kernel
    kx = kx * np.float32(1.0 / np.sqrt(float(np.dot(kz, kz)) * float(np.dot(kx, kx))))
    h, w = shape
    shape_w = (h + len(kz) - 1, w + len(kx) - 1)
    white = normal(rng, shape_w, out=_SCRATCH.get("white", shape_w))
    mid = correlate_valid(white, kz, 0, out=_SCRATCH.get("blur", (h, shape_w[1])))
    return correlate_valid(mid, kx, 1)


def speckle_kernel(sigma: float, q: float = 0.0, n: int = 64, keep: float = 0.01) -> np.ndarray:
    """Kernel that gives white noise the correlation of fully developed speckle's intensity.

    The complex field blurred by the PSF ``k`` (a Gaussian of ``sigma`` px, truncated at 3 sigma)
    has the correlation ``rho = k * k / |k|^2``; its intensity ``|field|^2`` has ``rho^2``. The
    kernel returned is the zero-phase square root of that spectrum (taps below ``keep`` of the
    centre dropped), so blurred white noise has the correlation ``rho^2`` on the pixel grid, where a
    Gaussian of ``sigma / sqrt(2)`` (exact in the continuum) falls short for sub-pixel ``sigma``.

    ``q > 0`` pre-compensates a mapping of the Gaussian field that lowers its correlation ``r`` to
    about ``(r + q r^2) / (1 + q)``, as the Wilson-Hilferty cube does with ``q = 2 a / (1 - a)^2``.
    """
    k = gauss_kernel(sigma).astype(np.float64)
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


def ramp_sums(terms: Sequence[tuple[np.ndarray, np.ndarray]], top: np.ndarray, hb: int) -> list[np.ndarray]:
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


def upsample_linear(v: np.ndarray, f: int) -> np.ndarray:
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


def noise1d(
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
    v = sfft.irfft(sfft.rfft(v, axis=-1) * gauss_transfer(m, s), n=m, axis=-1)[:, :n]
    sd = v.std(axis=-1, keepdims=True)
    v = (v * (float(amp) / np.where(sd > 0, sd, 1.0))).astype(np.float32)
    return v[0] if count is None else v


def noise2d(rng: np.random.Generator, shape: tuple[int, int], sigma: Sequence[float]) -> np.ndarray:
    """Smooth 2D unit-variance noise, drawn on a coarser grid for large correlation lengths.

    The coarse grid has a spacing of ``factor`` pixels and is interpolated linearly, which is
    what ``scipy.ndimage.zoom(order=1)`` did before at four times the cost.
    """
    s = [max(float(v), 0.3) for v in sigma]
    factor = max(2, int(min(s) // 2)) if min(s) >= 1.0 else 1
    small = (int(np.ceil(shape[0] / factor)) + 1, int(np.ceil(shape[1] / factor)) + 1)
    v = gaussian_field(rng, small, [t / factor for t in s])
    if factor > 1:
        v = upsample_linear(v, factor)
    v = v[: shape[0], : shape[1]]
    sd = float(v[::2, ::2].std())  # a quarter of the pixels estimate it as well as all of them
    return v * np.float32(1.0 / sd) if sd > 0 else v


def paint_ellipse(
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
