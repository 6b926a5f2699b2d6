# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""The layer label map of a synthetic OCT B-scan: which structure each pixel of the image shows.

The renderer records, while it draws, what the label map needs (:class:`LabelScene`): the layer
boundaries it drew the reflectivity from, the intraretinal cysts it painted, and the registration
padding wedges. :func:`layer_label_map` then classifies the centre of every *output* pixel in the
native grid's coordinates, so the map is drawn on the same geometry as the image whatever its size:
output pixel ``(i, j)`` of an ``(h, w)`` image cut from the native centre square of side ``S``
(first row ``top``, first column ``left``) is the native point
``(top + (i + 1/2) S / h - 1/2, left + (j + 1/2) S / w - 1/2)``, the centre of the area the image's
antialiased resize averages into that pixel (native pixel ``k`` is centred on coordinate ``k``, as
the renderer's partial-pixel layer steps have it). At the native size the points are the native
pixels themselves.

A point lies below a boundary when its depth is at least the boundary's depth (the renderer's layer
step is more than half way up there); its class is the region between the boundaries above and below
it, then overridden by a cyst it falls in (the renderer's ellipses, where their blend weight passes
one half) and by registration padding. Hyperreflective foci and retinal vessels are drawn in the image
but belong to the layer around them, as in manual OCT annotations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from monai_adv.apps.oct.synthetic.anatomy import LAYERS

__all__ = ["OCT_LAYER_CLASSES", "OCT_LAYER_DESCRIPTIONS", "LabelScene", "layer_label_map"]

#: The classes of the synthetic OCT layer label map, in index order (a label map holds these indices).
OCT_LAYER_CLASSES: tuple[str, ...] = (
    "vitreous",
    "RNFL",
    "GCL+IPL",
    "INL",
    "OPL",
    "ONL",
    "IS/OS",
    "RPE",
    "choroid",
    "SRF",
    "PED",
    "IRF",
    "padding",
)

#: What each class of :data:`OCT_LAYER_CLASSES` covers.
OCT_LAYER_DESCRIPTIONS: dict[str, str] = {
    "vitreous": "above the inner limiting membrane",
    "RNFL": "retinal nerve fibre layer",
    "GCL+IPL": "ganglion cell layer and inner plexiform layer",
    "INL": "inner nuclear layer",
    "OPL": "outer plexiform layer",
    "ONL": "outer nuclear layer (with Henle fibres)",
    "IS/OS": "photoreceptor segments: external limiting membrane, myoid zone, ellipsoid zone, outer "
    "segments, interdigitation zone",
    "RPE": "retinal pigment epithelium (with Bruch's membrane)",
    "choroid": "below Bruch's membrane: choroid and sclera",
    "SRF": "sub-retinal space: fluid, or hyperreflective material (CNV type 2)",
    "PED": "sub-RPE space: drusen, pigment epithelium detachment, fibrovascular tissue",
    "IRF": "intraretinal fluid (cysts)",
    "padding": "white registration padding (no anatomy shown)",
}

_INDEX = {name: i for i, name in enumerate(OCT_LAYER_CLASSES)}
_LAYER_CLASS = {
    "RNFL": "RNFL",
    "GCL": "GCL+IPL",
    "IPL": "GCL+IPL",
    "INL": "INL",
    "OPL": "OPL",
    "ONL": "ONL",
    "ELM": "IS/OS",
    "MZ": "IS/OS",
    "EZ": "IS/OS",
    "OS": "IS/OS",
    "IZ": "IS/OS",
}
# the region below boundary k of Boundaries.bounds (above the first one: the vitreous): the layers, then
# the sub-retinal space, the RPE, the sub-RPE space and what lies below Bruch's membrane
_REGION_CLASS = np.array(
    [_INDEX["vitreous"]]
    + [_INDEX[_LAYER_CLASS[name]] for name, _, _ in LAYERS]
    + [_INDEX["SRF"], _INDEX["RPE"], _INDEX["PED"], _INDEX["choroid"]],
    dtype=np.uint8,
)


@dataclass
class LabelScene:
    """What the renderer records for the label map of one B-scan (native grid coordinates, px).

    The renderer fills it when one is passed (``SyntheticOCTGenerator._render(..., scene=...)``); it
    draws nothing from the random streams, so the image is the same with or without it.
    """

    H: int  #: native rows
    W: int  #: native columns
    bounds: np.ndarray | None = None  #: the layer boundaries ``(len(LAYERS) + 4, W)``, top to bottom
    cysts: list[tuple[float, float, float, float]] = field(default_factory=list)  #: ``(cx, cz, rx, rz)``
    padding: list[tuple[str, float, float]] = field(default_factory=list)  #: ``(side, a, b)`` wedges


def _native_centres(n_out: int, side: int, first: int) -> np.ndarray:
    """Native coordinates of the centres of ``n_out`` output pixels resized from ``side`` native ones."""
    return first + (np.arange(n_out, dtype=np.float64) + 0.5) * (side / n_out) - 0.5


def layer_label_map(scene: LabelScene, out_shape: tuple[int, int]) -> np.ndarray:
    """The label map of a B-scan on the grid of its output image (the native centre square, resized).

    Args:
        scene: what the renderer recorded.
        out_shape: ``(h, w)`` of the output image.

    Returns:
        an ``(h, w)`` uint8 array of indices into :data:`OCT_LAYER_CLASSES`.

    Raises:
        ValueError: when the scene holds no boundaries (the renderer was not given it).
    """
    if scene.bounds is None:
        raise ValueError("the label scene holds no layer boundaries: pass it to the renderer first.")
    H, W = scene.H, scene.W
    side = min(H, W)
    top, left = (H - side) // 2, (W - side) // 2
    h, w = int(out_shape[0]), int(out_shape[1])
    z = _native_centres(h, side, top)[:, None]  # (h, 1)
    x = _native_centres(w, side, left)  # (w,)
    # the boundaries at the output columns, linear between the native columns they were drawn at
    x0 = np.clip(np.floor(x).astype(np.int64), 0, W - 1)
    x1 = np.minimum(x0 + 1, W - 1)
    t = np.clip(x - x0, 0.0, 1.0)
    bounds = scene.bounds.astype(np.float64)
    b = bounds[:, x0] * (1.0 - t) + bounds[:, x1] * t  # (K, w)
    region = (z[None, :, :] >= b[:, None, :]).sum(axis=0)  # (h, w): boundaries at or above each point
    labels = _REGION_CLASS[region]
    for cx, cz, rx, rz in scene.cysts:
        d2 = ((x[None, :] - cx) / max(rx, 0.3)) ** 2 + ((z - cz) / max(rz, 0.3)) ** 2
        labels[d2 < 1.0] = _INDEX["IRF"]
    for side_name, a, bb in scene.padding:
        edge = a + (bb - a) * x[None, :] / W
        inside = z < edge if side_name == "top" else z > H - 1 - edge
        labels[inside] = _INDEX["padding"]
    return labels
