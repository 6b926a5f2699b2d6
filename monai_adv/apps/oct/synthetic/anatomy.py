# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Stage 1 of the synthetic OCT B-scan, the retina's reflectivity: scan geometry, layers, choroid, sclera.

A B-scan is drawn on the native Spectralis grid from a layered reflectivity model: the scan geometry
(lateral and axial scale, foveal centre, depth, tilt and curvature of Bruch's membrane), the layer
thickness profiles with the foveal pit, the layer boundaries, the layered band with the sub-retinal
space, the RPE and the sub-RPE space, and below Bruch's membrane the choroid (mottled, with vessel
lumens) and the sclera. The class lesions (:mod:`.lesions`) change the profiles and the spaces.
Every function draws from the random streams in the order the renderer calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from monai_adv.apps.oct.synthetic.fields import noise1d, noise2d, ramp_sums

__all__ = [
    "LAYERS",
    "Geometry",
    "Boundaries",
    "scan_geometry",
    "layer_profiles",
    "apply_pit_and_swelling",
    "layer_boundaries",
    "retina_band",
    "choroid_and_sclera",
]

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

#: the retinal layers, from the inner limiting membrane down: (name, thickness um, reflectivity)
LAYERS = _LAYERS


@dataclass
class Geometry:
    """The scan geometry of one B-scan (nuisances shared by every class); lengths in native pixels."""

    dx: float  #: lateral um per pixel
    dz: float  #: axial um per pixel
    xf: float  #: foveal centre, column
    z_c: float  #: depth of Bruch's membrane at the fovea, row
    bm: np.ndarray  #: depth of Bruch's membrane per column, ``(W,)``

    def px_x(self, um: float | np.ndarray) -> Any:
        """Lateral micrometres in pixels."""
        return np.asarray(um) / self.dx

    def px_z(self, um: float | np.ndarray) -> Any:
        """Axial micrometres in pixels."""
        return np.asarray(um) / self.dz


def scan_geometry(
    ra: np.random.Generator, ri: np.random.Generator, H: int, W: int, x: np.ndarray
) -> Geometry:
    """Draw the scan geometry and Bruch's membrane (``ra``: the eye, ``ri``: this image's small shifts).

    Args:
        ra: the anatomy stream.
        ri: the image stream.
        H: native rows.
        W: native columns.
        x: the column coordinates ``(W,)``.
    """
    dx = _DX_UM * ra.uniform(0.8, 1.25)  # lateral um per pixel (scan width / zoom)
    dz = _DZ_UM * ra.uniform(0.94, 1.06)
    geo = Geometry(dx=float(dx), dz=float(dz), xf=0.0, z_c=0.0, bm=np.zeros(0))
    px_x, px_z = geo.px_x, geo.px_z

    xf = W * (ra.uniform(0.3, 0.7) if ra.random() < 0.85 else ra.uniform(0.05, 0.95))  # foveal centre
    xf += ri.normal(0.0, px_x(60.0))
    z_c = H * ra.uniform(0.34, 0.66) + ri.normal(0.0, 4.0)  # Bruch's membrane depth at the fovea
    tilt = np.clip(ra.normal(0.0, 0.07), -0.2, 0.2) + ri.normal(0.0, 0.008)
    curv = ra.uniform(-0.05, 0.35) * H  # bowl: edges higher than the centre
    u = (x - xf) / W
    bm = z_c + tilt * (x - xf) - curv * u**2 + noise1d(ra, W, 60.0, px_z(ra.uniform(0.0, 12.0)))
    geo.xf, geo.z_c, geo.bm = xf, z_c, bm
    return geo


def layer_profiles(
    ra: np.random.Generator, x: np.ndarray, W: int, geo: Geometry
) -> tuple[float, np.ndarray, float, dict[str, np.ndarray], dict[str, float]]:
    """The layer thickness profiles (um) with the foveal pit, and the layer reflectivities.

    Returns:
        ``(t_scale, f, pit_depth, thick, refl)``: the thickness scale, the pit profile ``(W,)``, its depth,
        ``{layer: thickness (W,)}`` and ``{layer: reflectivity}`` (``"RPE"`` included).
    """
    xf, px_x = geo.xf, geo.px_x
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
    return t_scale, f, pit_depth, thick, refl


def apply_pit_and_swelling(
    thick: dict[str, np.ndarray], f: np.ndarray, pit_depth: float, swell: np.ndarray
) -> None:
    """Thin the inner layers in the pit, thicken the outer nuclear layer and the outer segments there,
    and add the swelling (um) to the INL, OPL and ONL; ``thick`` is updated in place."""
    thick["RNFL"] = thick["RNFL"] * (1.0 - 0.95 * f)
    for name in ("GCL", "IPL", "INL"):
        thick[name] = thick[name] * (1.0 - pit_depth * f)
    thick["OPL"] = thick["OPL"] * (1.0 - 0.5 * pit_depth * f)
    thick["ONL"] = thick["ONL"] + 35.0 * pit_depth * f
    thick["OS"] = thick["OS"] + 12.0 * f
    thick["INL"] = thick["INL"] + 0.2 * swell
    thick["OPL"] = thick["OPL"] + 0.25 * swell
    thick["ONL"] = thick["ONL"] + 0.55 * swell


@dataclass
class Boundaries:
    """The layer boundaries of one B-scan (rows, per column)."""

    tops: dict[str, np.ndarray]  #: the top of each layer
    bounds: np.ndarray  #: every boundary, from the ILM down to Bruch's membrane, ``(len(LAYERS) + 4, W)``
    iz_bottom: np.ndarray  #: the bottom of the interdigitation zone (top of the sub-retinal space)
    rpe_top: np.ndarray
    rpe_bottom: np.ndarray
    bm: np.ndarray  #: Bruch's membrane, float32
    names: list[str]  #: the layer names, in order
    nl: int  #: the number of layers


def layer_boundaries(
    ra: np.random.Generator,
    W: int,
    geo: Geometry,
    thick: dict[str, np.ndarray],
    t_scale: float,
    elev: np.ndarray,
    rpe_extra: np.ndarray,
    rpe_rough: np.ndarray,
    gap: np.ndarray,
) -> Boundaries:
    """The boundaries from Bruch's membrane upwards (px); each layer boundary slightly irregular.

    Args:
        ra: the anatomy stream.
        W: native columns.
        geo: the scan geometry.
        thick: the layer thicknesses (um).
        t_scale: the thickness scale.
        elev: sub-RPE elevation (px).
        rpe_extra: thickening of the RPE complex (px).
        rpe_rough: roughness of the RPE (px).
        gap: height of the sub-retinal space (px).
    """
    px_z = geo.px_z
    bm = geo.bm
    bm = bm.astype(np.float32)
    rpe_bottom = (bm - elev).astype(np.float32)
    rpe_top = rpe_bottom - px_z(_RPE_UM * t_scale) - rpe_extra + rpe_rough
    iz_bottom = (rpe_top - gap).astype(np.float32)
    tops: dict[str, np.ndarray] = {}
    cur = iz_bottom
    wigs = noise1d(ra, W, 25.0, 0.4, count=len(_LAYERS))
    for (name, _, _), wig in zip(reversed(_LAYERS), wigs):
        cur = np.minimum(cur, cur - px_z(thick[name]) + wig)
        tops[name] = cur
    names = [n for n, _, _ in _LAYERS]
    bounds = np.stack([tops[n] for n in names] + [iz_bottom, rpe_top, rpe_bottom, bm]).astype(np.float32)
    bounds = np.minimum.accumulate(bounds[::-1], axis=0)[::-1]  # keep every boundary above the next one
    nl = len(names)
    return Boundaries(tops, bounds, iz_bottom, rpe_top, rpe_bottom, bm, names, nl)


def retina_band(
    ra: np.random.Generator,
    ri: np.random.Generator,
    H: int,
    W: int,
    b: Boundaries,
    refl: dict[str, float],
    ez_gain: np.ndarray,
    gap: np.ndarray,
    gap_val: Any,
    elev: np.ndarray,
    sub_rpe_val: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """The layered retina on a band that follows it, placed into a padded frame.

    Returns:
        ``(R, Rb, top, hb, gain)``: the padded reflectivity frame ``(2 H + 2, W)``, the band
        ``(hb, W)``, the band's first row per column, its height, and the image's gain (drawn here, in
        the order of the random streams).
    """
    bounds, bm, nl, names, iz_bottom = b.bounds, b.bm, b.nl, b.names, b.iz_bottom
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
    Rb, *regions, below_bm = ramp_sums(
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
        mat = ra.uniform(20.0, 90.0) * np.exp(0.8 * noise2d(ri, low, (2.0, 4.0)))
        if gap_val == "shrm_fluid":  # material on the RPE side, fluid above it
            depth_in = np.clip((zb[r_lo:] - iz_bottom[None, :]) / np.maximum(gap[None, :], 1.0), 0.0, 1.0)
            mat = np.where(depth_in > 0.45, mat, np.float32(0.15))
        Rl += region(nl)[r_lo:] * mat
    elif gap.max() > 0:
        Rl += region(nl)[r_lo:] * np.float32(gap_val)
    Rl += region(nl + 1)[r_lo:] * (refl["RPE"] * np.exp(0.3 * noise2d(ri, low, (1.0, 3.0))))
    if elev.max() > 0:
        if isinstance(sub_rpe_val, str):
            sub = ra.uniform(30.0, 150.0) * np.exp(0.9 * noise2d(ri, low, (2.0, 4.0)))
        else:
            sub = sub_rpe_val * np.exp(0.3 * noise2d(ri, low, (2.0, 4.0)))
        Rl += region(nl + 2)[r_lo:] * sub
    Rb *= np.exp(0.25 * noise2d(ri, (hb, W), (1.5, 5.0)))  # within-layer heterogeneity
    Rl *= 1.0 - below_bm[r_lo:]  # nothing below Bruch's membrane (which lies below r_lo)
    np.maximum(Rb, 0.0, out=Rb)  # rounding in the column sums may leave -1e-5 where 0 is meant
    # a padded frame, so that band rows running past the bottom need no special case
    pad = H + 2
    R = np.zeros((H + pad, W), dtype=np.float32)
    flat = R.reshape(-1)
    cols = np.arange(W)
    flat[(np.arange(0, hb * W, W)[:, None] + (top * W + cols)[None, :]).ravel()] = Rb.ravel()
    return R, Rb, top, hb, gain


def choroid_and_sclera(
    ra: np.random.Generator,
    ri: np.random.Generator,
    H: int,
    W: int,
    geo: Geometry,
    bm: np.ndarray,
    R: np.ndarray,
    Rb: np.ndarray,
    top: np.ndarray,
    hb: int,
    z: np.ndarray,
) -> np.ndarray:
    """Add the choroid (on a band that follows Bruch's membrane) and the sclera; returns the ``(H, W)`` frame.

    Args:
        ra: the anatomy stream.
        ri: the image stream.
        H: native rows.
        W: native columns.
        geo: the scan geometry.
        bm: Bruch's membrane (float32).
        R: the padded frame of :func:`retina_band` (written in place).
        Rb: the layered band.
        top: the band's first row per column.
        hb: the band's height.
        z: the row coordinates ``(H, 1)``.
    """
    px_x, px_z = geo.px_x, geo.px_z
    flat = R.reshape(-1)
    cols = np.arange(W)
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
    ch *= np.exp(0.2 * noise2d(ri, (hc, W), (1.5, 3.0)))  # mottle
    # vessel lumens, darker, between 15 um and lumen_depth below the membrane
    hl = int(min(hc, np.ceil(lumen_depth) + 3))
    depth = np.maximum(np.arange(hl, dtype=np.float32)[:, None] - (bm - bt)[None, :], 0.0)
    vessels = noise2d(ra, (hl, W), (px_z(35.0), px_x(80.0)))
    lumen = (vessels < lumen_thr) & (depth > px_z(15.0)) & (depth < lumen_depth)
    ch[:hl] *= np.where(lumen, np.float32(lumen_val), np.float32(1.0))
    # partial cover of the first two rows (the membrane lies inside the first one)
    ch[:2] *= np.clip(np.arange(2, dtype=np.float32)[:, None] - (bm - bt)[None, :] + 0.5, 0.0, 1.0)
    # the band's rows bt and bt + 1 may hold the foot of the RPE complex (deeper band rows are 0)
    ch[:2] += np.take_along_axis(Rb, np.minimum((bt - top)[None, :] + np.arange(2)[:, None], hb - 1), axis=0)
    flat[(np.arange(0, hc * W, W)[:, None] + (bt * W + cols)[None, :]).ravel()] = ch.ravel()
    R = R[:H]
    # the faint sclera, exp(-depth / 900 um), is separable in depth and column
    c0 = int(np.clip(np.floor(bm.min()), 0, H - 1))
    k_s = float(px_z(900.0))
    fall = np.exp(-(z[c0:] / k_s)) * np.exp(bm / k_s)[None, :]
    R[c0:] += np.clip(z[c0:] - bm[None, :] + 0.5, 0.0, 1.0) * (sclera * np.minimum(fall, 1.0))
    R[:2] = 0.0
    return R
