# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""The class lesions of the synthetic OCT B-scan (part of stage 1, the reflectivity).

DRUSEN: dome-shaped RPE elevations; DME: thickening, intraretinal cysts, hyperreflective foci and
sometimes sub-retinal fluid; CNV: an irregular RPE elevation (fibrovascular, serous or type 2) with
sub-retinal material and fluid; NORMAL: none. Each is drawn with a per-image severity, a share of
them subtle (a B-scan through the edge of the lesions). The objects that depend on the layer
positions (cysts, foci, retinal vessels) are painted once the layers are placed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from monai_adv.apps.oct.synthetic.anatomy import Boundaries, Geometry
from monai_adv.apps.oct.synthetic.fields import dome, noise1d, paint_ellipse

__all__ = [
    "draw_severity",
    "Lesions",
    "class_lesions",
    "LesionContext",
    "paint_lesion_objects",
]


def draw_severity(
    ra: np.random.Generator, label: int, severity: tuple[float, float], subtle_prob: float
) -> tuple[float, bool, float]:
    """The lesion severity of one image, whether it is a subtle case, and the lesion size scale.

    Many lesions are mild; CNV and DME keep a small minimum. A subtle case has severity 0 and its
    lesions scaled down to 20-50%.

    Args:
        ra: the anatomy stream.
        label: the class index (3: NORMAL, no lesion).
        severity: ``(a, b)`` of the Beta distribution of the severity.
        subtle_prob: the probability of a subtle case.

    Returns:
        ``(sev, subtle, k)``.
    """
    sev = float(ra.beta(*severity)) if label != 3 else 0.0
    sev = {0: 0.08 + 0.92 * sev, 1: 0.05 + 0.95 * sev}.get(label, sev)
    subtle = label != 3 and ra.random() < subtle_prob
    k = 1.0  # lesion size scale: below 1 only for subtle cases
    if subtle:
        sev, k = 0.0, float(ra.uniform(0.2, 0.5))
    return sev, subtle, k


@dataclass
class Lesions:
    """What a class's lesions change in the retina; the defaults are a NORMAL eye's."""

    W: int
    elev: np.ndarray = None  # type: ignore[assignment]  #: sub-RPE elevation (drusen, PED), px
    gap: np.ndarray = None  # type: ignore[assignment]  #: sub-retinal space (fluid or material), px
    sub_rpe_val: Any = 30.0  #: sub-RPE reflectivity, or ``"fibro"``
    gap_val: Any = 0.15  #: sub-retinal reflectivity, or ``"shrm"`` / ``"shrm_fluid"``
    cysts: list = field(default_factory=list)  #: ``(x, kind, 0, 0)``: -1 large (OPL/ONL), -2 small (INL)
    foci: list = field(default_factory=list)  #: ``(x, -1, r)`` hyperreflective foci
    swell: np.ndarray = None  # type: ignore[assignment]  #: um added to INL/OPL/ONL
    rpe_rough: np.ndarray = None  # type: ignore[assignment]
    rpe_extra: np.ndarray = None  # type: ignore[assignment]  #: thickened, irregular RPE complex, px
    shadow_cols: np.ndarray = None  # type: ignore[assignment]  #: column-wise shadowing / hypertransmission
    ez_gain: np.ndarray = None  # type: ignore[assignment]  #: reflectivity factor of the EZ and IZ

    def __post_init__(self) -> None:
        for name in ("elev", "gap", "swell", "rpe_rough", "rpe_extra", "shadow_cols"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.W, dtype=np.float32))
        if self.ez_gain is None:
            self.ez_gain = np.ones(self.W, dtype=np.float32)


def class_lesions(
    ra: np.random.Generator,
    label: int,
    x: np.ndarray,
    W: int,
    geo: Geometry,
    thick: dict[str, np.ndarray],
    pit_depth: float,
    sev: float,
    subtle: bool,
    k: float,
    info: dict[str, Any],
) -> tuple[Lesions, float]:
    """Draw the lesions of class ``label``; ``thick`` and ``info`` are updated in place.

    Args:
        ra: the anatomy stream.
        label: the class index (0 CNV, 1 DME, 2 DRUSEN, 3 NORMAL: no lesion).
        x: the column coordinates ``(W,)``.
        W: native columns.
        geo: the scan geometry.
        thick: the layer thicknesses (um).
        pit_depth: the foveal pit's depth.
        sev: the severity.
        subtle: whether this is a subtle case.
        k: the lesion size scale.
        info: the image's parameters (lesion counts and kind are added).

    Returns:
        ``(lesions, pit_depth)``, the pit made shallower by swelling.
    """
    les = Lesions(W)
    draw = {0: _cnv_lesions, 1: _dme_lesions, 2: _drusen_lesions}.get(label)
    if draw is not None:
        pit_depth = draw(LesionContext(ra, x, W, geo, thick, sev, subtle, k, info), les, pit_depth)
    return les, pit_depth


@dataclass
class LesionContext:
    """What every class's lesion drawing reads: the anatomy stream, coordinates, geometry, severity."""

    ra: np.random.Generator  #: the anatomy stream
    x: np.ndarray  #: the column coordinates ``(W,)``
    W: int  #: native columns
    geo: Geometry  #: the scan geometry
    thick: dict[str, np.ndarray]  #: the layer thicknesses (um), updated in place
    sev: float  #: the severity
    subtle: bool  #: whether this is a subtle case
    k: float  #: the lesion size scale
    info: dict[str, Any]  #: the image's parameters (lesion counts and kind are added)


def _drusen_lesions(c: LesionContext, les: Lesions, pit_depth: float) -> float:
    """DRUSEN: dome-shaped RPE elevations over a flat Bruch's membrane.

    Fills ``les`` from the context ``c``; returns the pit depth.
    """
    ra, x, thick, sev, subtle, k, info = c.ra, c.x, c.thick, c.sev, c.subtle, c.k, c.info
    xf, dz, px_x, px_z = c.geo.xf, c.geo.dz, c.geo.px_x, c.geo.px_z
    elev = les.elev
    n = 1 + int(ra.binomial(11 if not subtle else 1, 0.15 + 0.6 * sev))
    spread = px_x(ra.uniform(600.0, 2000.0))
    for _ in range(n):
        c = xf + ra.normal(0.0, spread)
        w = k * px_x(ra.uniform(80.0, 250.0 + 350.0 * sev)) / 2.0
        h = k * px_z(ra.uniform(15.0, 35.0 + 85.0 * sev))
        elev = np.maximum(elev, h * dome(x, c, w, ra.uniform(0.5, 0.9)))
    sub_rpe_val = ra.uniform(15.0, 60.0)
    ez_gain = 1.0 - 0.6 * np.clip(elev / px_z(60.0), 0.0, 1.0)
    for name in ("OS", "IZ"):
        thick[name] = thick[name] * (1.0 - 0.6 * np.clip(elev / px_z(80.0), 0.0, 1.0))
    # the outer nuclear layer absorbs most of the elevation: the inner surface stays nearly flat
    thick["ONL"] = np.maximum(0.35 * thick["ONL"], thick["ONL"] - ra.uniform(0.5, 0.9) * elev * dz)
    info["n_drusen"] = n
    les.elev, les.sub_rpe_val, les.ez_gain = elev, sub_rpe_val, ez_gain
    return pit_depth


def _dme_lesions(c: LesionContext, les: Lesions, pit_depth: float) -> float:
    """DME: thickening, intraretinal cysts, hyperreflective foci, sometimes sub-retinal fluid.

    Fills ``les`` from the context ``c``; returns the pit depth.
    """
    ra, x, sev, subtle, k, info = c.ra, c.x, c.sev, c.subtle, c.k, c.info
    xf, px_x, px_z = c.geo.xf, c.geo.px_x, c.geo.px_z
    gap, cysts, foci = les.gap, les.cysts, les.foci
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
        gap = np.maximum(gap, gh * dome(x, xs, gw, 1.2))
    info["n_cysts"], info["n_foci"] = n_cyst, n_foci
    les.gap, les.swell = gap, swell
    return pit_depth


def _cnv_lesions(c: LesionContext, les: Lesions, pit_depth: float) -> float:
    """CNV: an irregular RPE elevation (fibrovascular, serous or type 2), sub-retinal material and fluid.

    Fills ``les`` from the context ``c``; returns the pit depth.
    """
    ra, x, W, thick, sev, k, info = c.ra, c.x, c.W, c.thick, c.sev, c.k, c.info
    xf, dz, px_x, px_z = c.geo.xf, c.geo.dz, c.geo.px_x, c.geo.px_z
    elev, gap, sub_rpe_val, gap_val = les.elev, les.gap, les.sub_rpe_val, les.gap_val
    cysts, foci, swell, rpe_rough = les.cysts, les.foci, les.swell, les.rpe_rough
    rpe_extra, shadow_cols, ez_gain = les.rpe_extra, les.shadow_cols, les.ez_gain
    xl = xf + ra.normal(0.0, px_x(500.0))
    width = k * px_x(ra.uniform(900.0, 1500.0 + 2000.0 * sev))
    kind = ra.choice(["fibrovascular", "serous", "type2"], p=[0.55, 0.15, 0.3])
    h = k * px_z(ra.uniform(30.0, 50.0 + 180.0 * sev))
    prof = np.zeros(W, dtype=np.float32)
    for _ in range(int(ra.integers(2, 6))):
        c = xl + ra.normal(0.0, width / 4.0)
        w = width / 2.0 * ra.uniform(0.5, 1.0)
        prof = np.maximum(prof, ra.uniform(0.3, 1.0) * dome(x, c, w, ra.uniform(0.9, 1.6)))
    lesion = prof > 0
    if kind == "type2":
        elev = 0.25 * h * prof
        sub_rpe_val = 20.0
        shrm = 0.7 * h * prof * (1.0 + 0.3 * noise1d(ra, W, 8.0, 1.0))
        gap = np.maximum(gap, np.clip(shrm, 0.0, None))
        gap_val = "shrm"  # textured bright material, resolved below
    elif kind == "serous":
        elev = h * prof
        sub_rpe_val = 0.2
    else:
        elev = h * prof * (1.0 + 0.25 * noise1d(ra, W, 10.0, 1.0)) * lesion
        sub_rpe_val = "fibro"
    elev = np.clip(elev, 0.0, None)
    rpe_rough = lesion * noise1d(ra, W, 3.0, ra.uniform(0.5, 2.5))
    ez_loss = k * (0.85 - 0.85 * ra.random(W) ** 0.5)
    ez_gain = np.where(lesion, np.clip(1.0 - ez_loss, 0.0, 1.0), 1.0)
    ez_gain = ndi.gaussian_filter1d(ez_gain.astype(np.float32), 3.0)
    rpe_extra = k * px_z(ra.uniform(10.0, 30.0 + 50.0 * sev)) * np.clip(prof * 2.0, 0.0, 1.0)
    rpe_extra *= np.clip(1.0 + 0.5 * noise1d(ra, W, 4.0, 1.0), 0.0, None)
    shadow_cols = lesion * noise1d(ra, W, 2.5, k * ra.uniform(0.2, 0.5))
    if ra.random() < k * (0.55 if kind != "serous" else 0.35):
        gw = width * ra.uniform(0.5, 1.3) / 2.0
        gh = px_z(ra.uniform(20.0, 40.0 + 160.0 * sev))
        fluid = gh * dome(x, xl + ra.normal(0.0, width / 4.0), gw, ra.uniform(1.0, 1.6))
        if gap_val == "shrm":
            gap = gap + fluid  # fluid and material side by side: treat as material over fluid
            gap_val = "shrm_fluid"
        else:
            gap = np.maximum(gap, fluid)
    for _ in range(int(ra.poisson(k * (2.0 + 6.0 * sev)))):  # hyperreflective dots over the lesion
        foci.append((xl + ra.normal(0.0, width / 3.0), -1.0, ra.uniform(0.8, 1.8)))
    if ra.random() < 0.45 * k:
        for _ in range(int(ra.integers(1, 5))):
            cysts.append((xl + ra.normal(0.0, width / 3.0), -1.0 if ra.random() < 0.5 else -2.0, 0.0, 0.0))
    swell = ra.uniform(20.0, 150.0) * sev * np.exp(-0.5 * ((x - xl) / (width / 1.5)) ** 2)
    # the outer nuclear layer takes up part of the elevation
    thick["ONL"] = np.maximum(0.4 * thick["ONL"], thick["ONL"] - ra.uniform(0.2, 0.6) * elev * dz)
    pit_depth *= 1.0 - 0.5 * sev
    info["cnv_kind"] = str(kind)
    les.elev, les.gap, les.sub_rpe_val, les.gap_val = elev, gap, sub_rpe_val, gap_val
    les.swell, les.rpe_rough, les.rpe_extra, les.shadow_cols, les.ez_gain = (
        swell,
        rpe_rough,
        rpe_extra,
        shadow_cols,
        ez_gain,
    )
    return pit_depth


def paint_lesion_objects(
    ra: np.random.Generator,
    R: np.ndarray,
    H: int,
    W: int,
    geo: Geometry,
    b: Boundaries,
    les: Lesions,
    first_row: int,
    cyst_record: list | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Paint the objects that depend on the layer positions: cysts, hyperreflective foci, retinal vessels.

    Args:
        ra: the anatomy stream.
        R: the reflectivity frame ``(H, W)``.
        H: native rows.
        W: native columns.
        geo: the scan geometry.
        b: the layer boundaries.
        les: the lesions (their cysts and foci).
        first_row: the first row with signal so far.
        cyst_record: receives each painted cyst as ``(cx, cz, rx, rz)`` (native px), for the label map.

    Returns:
        ``(R, absorb, first_row)``: the frame, the absorption frame, and the first row with signal or
        absorption (nothing lies above it).
    """
    dx, dz, px_x, px_z = geo.dx, geo.dz, geo.px_x, geo.px_z
    tops, cysts, foci = b.tops, les.cysts, les.foci
    first = [first_row]

    def paint(
        arr: np.ndarray, cx: float, cz: float, rx: float, rz: float, value: float, **kw: Any
    ) -> np.ndarray:
        first[0] = min(first[0], int(np.floor(cz - rz - 2)))
        return paint_ellipse(arr, cx, cz, rx, rz, value, **kw)

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
        if cyst_record is not None:
            cyst_record.append((float(cx), float(zc), float(rx), float(rz)))
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
    return R, absorb, first[0]
