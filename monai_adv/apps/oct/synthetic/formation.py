# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Stages 2 and 3 of the synthetic OCT B-scan, image formation: attenuation, gain, noise floor, speckle.

Attenuation along depth (Beer-Lambert on the cumulative reflectivity, plus absorbing vessels and
hyperreflective foci) casts shadows; a column gain, the lesion's shadows, a depth-dependent noise floor
of fully developed speckle and the tissue signal under a smoother frame-averaged speckle make the
intensity, plus the scanner's haze.
"""

from __future__ import annotations

import numpy as np

from monai_adv.apps.oct.synthetic.fields import gaussian_field, noise1d, speckle_kernel

__all__ = ["speckle", "form_intensity"]


def speckle(
    rng: np.random.Generator, signal: np.ndarray, floor: np.ndarray, start: int, width: int
) -> np.ndarray:
    """Speckled intensity: tissue signal with frame-averaged speckle plus a grainy noise floor.

    The noise floor is fully developed speckle: the squared magnitude of a circular Gaussian field
    blurred by the point-spread function (PSF), averaged over two to four looks. Its intensity is
    Gamma-distributed (shape ``looks``, mean ``floor``) with the correlation ``|rho|^2`` of the
    field (:func:`speckle_kernel`). It is drawn as one Gaussian field with that correlation mapped
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
    g = gaussian_field(rng, (H, width), kernels=(speckle_kernel(psf[0], q), speckle_kernel(psf[1], q)))
    g *= np.float32(np.sqrt(a))
    g += np.float32(1.0 - a)
    np.maximum(g, 0.0, out=g)
    noise = g * g
    noise *= g
    noise *= floor
    sig_looks = rng.uniform(3.0, 10.0)
    sd = float(np.sqrt(np.log1p(1.0 / sig_looks)))
    if start < H:
        t = gaussian_field(rng, (H - start, width), (rng.uniform(0.7, 1.2), 0.8))
        t *= np.float32(sd)
        t -= np.float32(0.5 * sd * sd)
        mult = np.exp(t, out=t)
        mult *= signal  # >= 0
        noise[start:] += mult
    return noise


def form_intensity(
    ra: np.random.Generator,
    ri: np.random.Generator,
    R: np.ndarray,
    absorb: np.ndarray,
    cs: slice,
    first_row: int,
    H: int,
    W: int,
    z: np.ndarray,
    gain: float,
    shadow_cols: np.ndarray,
    rpe_bottom: np.ndarray,
) -> np.ndarray:
    """The speckled intensity of the requested columns ``cs``: attenuation, gain, shadows, noise floor, haze.

    Args:
        ra: the anatomy stream.
        ri: the image stream.
        R: the reflectivity frame ``(H, W)``.
        absorb: the absorption frame ``(H, W)``.
        cs: the columns to form.
        first_row: the first row with signal or absorption.
        H: native rows.
        W: native columns.
        z: the row coordinates ``(H, 1)``.
        gain: the image's gain.
        shadow_cols: the lesion's column-wise shadowing.
        rpe_bottom: the bottom of the RPE per column.
    """
    R, absorb = R[:, cs], absorb[:, cs]
    Wc = R.shape[1]
    # rows above the first reflecting or absorbing one are empty vitreous: no signal, no attenuation
    rs = int(np.clip(first_row, 0, H))
    mu = np.float32(ra.uniform(1.0e-4, 2.0e-4))
    od = R[rs:] * mu
    od += absorb[rs:]
    for i in range(1, od.shape[0]):  # cumulative optical depth; a row loop beats cumsum(axis=0)
        np.add(od[i - 1], od[i], out=od[i])
    col_gain = np.exp(noise1d(ri, W, 30.0, 0.08)[cs]) * np.float32(gain)
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
    intensity = speckle(ri, S, noise_floor, rs, Wc)
    intensity += haze
    return intensity
