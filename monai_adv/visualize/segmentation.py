"""Segmentation under attack: mean Dice against eps, and an overlay gallery of image, label, clean and
attacked predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# no matplotlib.use() here: a library must not take the backend away from a notebook's inline display
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Patch

__all__ = ["label_colors", "plot_dice_vs_eps", "plot_segmentation_gallery"]


def label_colors(num_classes: int) -> np.ndarray:
    """Distinct RGBA colours for ``num_classes`` classes (tab20, then repeated), class 0 transparent.

    Args:
        num_classes: the number of classes.

    Raises:
        ValueError: for fewer than one class.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}.")
    colors = np.array([plt.cm.tab20(i % 20) for i in range(int(num_classes))], dtype=np.float64)
    colors[0, 3] = 0.0
    return colors


def plot_dice_vs_eps(
    curves: Mapping[str, Sequence[tuple[float, float]]], clean_dice: float | None = None, title: str = ""
) -> Any:
    """Mean Dice against eps, one line per attack type, from the clean Dice at eps 0.

    Args:
        curves: ``{attack type: [(eps, mean Dice), ...]}``.
        clean_dice: drawn at eps = 0 on every line when given.
        title: the figure title.

    Raises:
        ValueError: when there is nothing to plot.
    """
    if not curves:
        raise ValueError("no Dice curves to plot.")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (label, pts) in enumerate(curves.items()):
        pts = sorted(pts)
        if clean_dice is not None and (not pts or pts[0][0] > 0):
            pts = [(0.0, clean_dice)] + pts
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker="o",
            label=label,
            color=plt.cm.tab10(i % 10),
            linestyle=("-", "--", ":")[(i // 10) % 3],
        )
    ax.set_xlabel("eps (intensity units)")
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_ylabel("mean Dice")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "Dice under attack")
    return fig


def _as_2d(a: Any, what: str) -> np.ndarray:
    """A 2D array from ``(H, W)``, ``(1, H, W)`` or a 3D ``(1, H, W, D)`` volume (its middle slice)."""
    arr = a.detach().cpu().float().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=np.float64)
    if arr.ndim >= 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3:
        arr = arr[..., arr.shape[-1] // 2]
    if arr.ndim != 2:
        raise ValueError(f"{what} must be (H, W), (1, H, W) or a (1, H, W, D) volume, got shape {arr.shape}.")
    return arr


def plot_segmentation_gallery(
    images: Sequence[Any],
    labels: Sequence[Any],
    predictions: Mapping[str, Sequence[Any]],
    class_names: Sequence[str] | None = None,
    adversarial_images: Mapping[str, Sequence[Any]] | None = None,
    num_classes: int | None = None,
    value_range: Sequence[float] = (0.0, 1.0),
    alpha: float = 0.5,
    title: str = "",
) -> Any:
    """Rows of image, label overlay and prediction overlays (clean and per attack), one row per item.

    Every mask is drawn in the class colours of :func:`label_colors` (class 0 left transparent) over
    the grey image it was predicted from: the clean image for the label and the clean prediction,
    the attacked image (when given) for an attack's prediction. A legend names the classes shown.

    Args:
        images: the clean images, each ``(H, W)`` or ``(1, H, W)`` (a volume: its middle slice).
        labels: the label maps (class indices), one per image.
        predictions: ``{column title: masks}``, e.g. ``{"clean": [...], "pgd_eps0.004": [...]}``, one
            class-index mask per image.
        class_names: the class names in index order, for the legend.
        adversarial_images: ``{column title: attacked images}`` shown under those predictions.
        num_classes: the number of classes (default: ``len(class_names)``, else the largest index + 1).
        value_range: the display range of the images.
        alpha: opacity of the overlays.
        title: the figure title.

    Raises:
        ValueError: for no images, lists of different lengths, or shapes that differ.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images to show.")
    if len(labels) != n or any(len(v) != n for v in predictions.values()):
        raise ValueError(
            f"{n} images need as many labels and predictions per column, got {len(labels)} labels and "
            f"{ {k: len(v) for k, v in predictions.items()} }."
        )
    adversarial_images = dict(adversarial_images or {})
    imgs = [_as_2d(im, "an image") for im in images]
    labs = [_as_2d(lb, "a label map").round().astype(np.int64) for lb in labels]
    preds = {
        k: [_as_2d(p, f"a mask of {k!r}").round().astype(np.int64) for p in v] for k, v in predictions.items()
    }
    for i in range(n):
        shapes = {imgs[i].shape, labs[i].shape, *(v[i].shape for v in preds.values())}
        if len(shapes) != 1:
            raise ValueError(f"item {i}: image, label and masks have different shapes {sorted(shapes)}.")
    k = num_classes or (len(class_names) if class_names else 1 + max(int(m.max()) for m in labs))
    colors = label_colors(
        max(k, 1 + max(int(m.max()) for m in labs + [p for v in preds.values() for p in v]))
    )
    columns = [("image", None, None), ("label", labs, None)] + [
        (name, masks, adversarial_images.get(name)) for name, masks in preds.items()
    ]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.3 * len(columns), 2.3 * n + 0.6), squeeze=False)
    lo, hi = value_range
    for i in range(n):
        for c, (name, masks, adv) in enumerate(columns):
            ax = axes[i, c]
            under = imgs[i] if adv is None else _as_2d(adv[i], f"an attacked image of {name!r}")
            ax.imshow(under, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if masks is not None:
                overlay = colors[masks[i]].copy()
                overlay[..., 3] *= alpha
                ax.imshow(overlay, interpolation="nearest")
            if i == 0:
                ax.set_title(name, fontsize=8)
            ax.axis("off")
    shown = sorted({int(v) for m in labs + [p for v in preds.values() for p in v] for v in np.unique(m)})
    names = list(class_names) if class_names else [str(j) for j in range(len(colors))]
    handles = [
        Patch(facecolor=colors[j][:3], label=names[j] if j < len(names) else str(j)) for j in shown if j > 0
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return fig
