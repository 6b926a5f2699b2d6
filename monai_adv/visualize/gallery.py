"""A gallery of adversarial examples: clean image, amplified perturbation and adversarial image per attack."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# no matplotlib.use() here: a library must not take the backend away from a notebook's inline display;
# matplotlib falls back to Agg by itself where there is no display
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["plot_attack_gallery"]


def _as_2d(img: Any, spatial_dims: int) -> np.ndarray:
    """One channel-first item as a 2D array: the first channel, and the middle slice of a volume."""
    a = (
        img.detach().cpu().float().numpy()
        if isinstance(img, torch.Tensor)
        else np.asarray(img, dtype=np.float32)
    )
    if a.ndim == spatial_dims + 1:
        a = a[0]
    if a.ndim != spatial_dims or spatial_dims not in (2, 3):
        raise ValueError(
            f"expected one channel-first item with {spatial_dims} spatial dims, got shape {a.shape}."
        )
    return a[a.shape[0] // 2] if spatial_dims == 3 else a


def plot_attack_gallery(
    clean: Any,
    adversarial: Mapping[str, Any],
    predictions: Mapping[str, str] | None = None,
    value_range: Sequence[float] = (0.0, 1.0),
    spatial_dims: int = 2,
    title: str = "",
) -> Any:
    """Clean image, perturbation (amplified to the full grey range) and adversarial image, per attack.

    The perturbation of each attack is shown scaled by its own largest absolute value (the factor
    is in the panel title), grey meaning zero: at eps of a few thousandths it is invisible otherwise.

    Args:
        clean: one channel-first item ``(C, *spatial)``.
        adversarial: ``{attack name: adversarial item}`` of the same shape.
        predictions: optional ``{attack name or "clean": predicted class}`` written under each image.
        value_range: display range of the images.
        spatial_dims: 2, or 3 to show the middle slice of a volume.
        title: the figure title.

    Raises:
        ValueError: for no attacks, or images whose shapes differ from the clean one.
    """
    if not adversarial:
        raise ValueError("no adversarial images to show.")
    base = _as_2d(clean, spatial_dims)
    predictions = dict(predictions or {})
    n = len(adversarial)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    lo, hi = value_range
    for row, (name, adv) in enumerate(adversarial.items()):
        a = _as_2d(adv, spatial_dims)
        if a.shape != base.shape:
            raise ValueError(f"adversarial image {name!r} has shape {a.shape}, the clean one {base.shape}.")
        delta = a - base
        scale = float(np.abs(delta).max())
        if scale <= 1e-6 * (hi - lo):  # unchanged (e.g. C&W found no adversarial example): rounding only
            scale, delta = 0.0, np.zeros_like(delta)
        # [-scale, scale] fills the grey range that the image range fills
        amplify = (hi - lo) / (2 * scale) if scale > 0 else 0.0
        panels = (
            (base, f"clean{': ' + predictions['clean'] if 'clean' in predictions else ''}", (lo, hi), "gray"),
            (
                delta / scale if scale > 0 else delta,
                f"{name}: perturbation x{amplify:.0f}" if scale else f"{name}: unchanged",
                (-1, 1),
                "gray",
            ),
            (a, f"{name}{': ' + predictions[name] if name in predictions else ''}", (lo, hi), "gray"),
        )
        for col, (img, label, (vmin, vmax), cmap) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(label, fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
