"""Robustness plots: a headline metric (accuracy, Dice) against eps per attack, detection ROC curves, risk with
and without a detector, and the clean confusion matrix."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

# no matplotlib.use() here: a library must not take the backend away from a notebook's inline display;
# matplotlib falls back to Agg by itself where there is no display
import matplotlib.pyplot as plt
import numpy as np

from monai_adv.io import atomic_open
from monai_adv.metrics.detection import detection_auroc, detection_roc_curve

__all__ = [
    "plot_metric_vs_eps",
    "plot_accuracy_vs_eps",
    "plot_roc_curves",
    "plot_risk",
    "plot_referral_curve",
    "plot_confusion_matrix",
    "save_figure",
]


def _style(i: int) -> dict:
    """Distinct colour and line style for the i-th curve (tab10 colours, then dashed, then dotted)."""
    return {"color": plt.cm.tab10(i % 10), "linestyle": ("-", "--", ":")[(i // 10) % 3]}


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> str:
    """Save a figure as PNG atomically and return the path."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight")
    return os.fspath(path)


def plot_metric_vs_eps(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    clean: float | None = None,
    title: str = "",
    metric: str = "accuracy",
    eps_units: str = "intensity units",
) -> Any:
    """A headline metric (accuracy, mean Dice, ...) against eps, one line per attack type.

    Args:
        curves: ``{attack type: [(eps, value), ...]}``.
        clean: the clean value, drawn at eps = 0 on every line when given.
        title: the figure title (default ``"<metric> under attack"``).
        metric: the metric's name, on the y axis.
        eps_units: the units of eps, on the x axis.

    Raises:
        ValueError: when there is nothing to plot.
    """
    if not curves:
        raise ValueError(f"no {metric} curves to plot.")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, (label, pts) in enumerate(curves.items()):
        pts = sorted(pts)
        if clean is not None and (not pts or pts[0][0] > 0):
            pts = [(0.0, clean)] + pts
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, **_style(i))
    ax.set_xlabel(f"eps ({eps_units})")
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or f"{metric} under attack")
    return fig


def plot_accuracy_vs_eps(
    curves: Mapping[str, Sequence[tuple[float, float]]], clean_accuracy: float | None = None, title: str = ""
) -> Any:
    """Accuracy against eps, one line per attack type (:func:`plot_metric_vs_eps` for accuracy).

    Args:
        curves: ``{attack type: [(eps, accuracy), ...]}``.
        clean_accuracy: drawn at eps = 0 on every line when given.
        title: the figure title.

    Raises:
        ValueError: when there is nothing to plot.
    """
    return plot_metric_vs_eps(curves, clean_accuracy, title, metric="accuracy")


def plot_roc_curves(
    scores: Mapping[str, tuple[Any, Any]], title: str = "", fpr_mark: float | None = None
) -> Any:
    """Detection ROC curves, one per attack: ``{attack: (clean scores, attacked scores)}``.

    Raises:
        ValueError: when there is nothing to plot.
    """
    if not scores:
        raise ValueError("no detector scores to plot.")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for i, (label, (clean, adv)) in enumerate(scores.items()):
        fpr, tpr, _ = detection_roc_curve(clean, adv)
        ax.plot(fpr, tpr, label=f"{label} (AUROC {detection_auroc(clean, adv):.3f})", **_style(i))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    if fpr_mark is not None:
        ax.axvline(fpr_mark, color="grey", ls="--", lw=1)
    ax.set_xlabel("false-positive rate (clean flagged)")
    ax.set_ylabel("true-positive rate (attacked flagged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "detection ROC")
    return fig


def plot_referral_curve(curves: Any, title: str = "", fpr_mark: float | None = None) -> Any:
    """Accuracy on the accepted inputs against the share referred (rejection), one line per system.

    Args:
        curves: one curve ``{"referral_rate": [...], "accepted_accuracy": [...]}``
            (:func:`~monai_adv.metrics.referral_curve`) or ``{label: curve}``.
        title: the figure title.
        fpr_mark: a referral rate to mark (the detector's calibrated false-positive rate).

    Raises:
        ValueError: when there is nothing to plot.
    """
    if not curves:
        raise ValueError("no referral curve to plot.")
    if "referral_rate" in curves:
        curves = {"": curves}
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(
            np.asarray(c["referral_rate"]),
            np.asarray(c["accepted_accuracy"]),
            label=label or None,
            **_style(i),
        )
    if fpr_mark is not None:
        ax.axvline(fpr_mark, color="grey", ls="--", lw=1, label=f"calibrated FPR {fpr_mark:g}")
    ax.set_xlabel("referral rate (clean inputs flagged)")
    ax.set_ylabel("accuracy on accepted inputs")
    ax.grid(alpha=0.3)
    if len(curves) > 1 or fpr_mark is not None:
        ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "accuracy against referral")
    return fig


def plot_risk(risks: Mapping[str, Mapping[str, float]], title: str = "") -> Any:
    """Grouped bars of ``risk_classifier``, ``risk_detector`` and ``risk_system`` per attack.

    Raises:
        ValueError: when there is nothing to plot.
    """
    if not risks:
        raise ValueError("no risks to plot.")
    names = list(risks)
    kinds = [
        ("risk_classifier", "classifier alone"),
        ("risk_detector", "detector alone"),
        ("risk_system", "system"),
    ]
    x = np.arange(len(names))
    w = 0.27
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2), 4))
    for i, (key, label) in enumerate(kinds):
        ax.bar(x + (i - 1) * w, [risks[n].get(key, np.nan) for n in names], w, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("expected cost per input")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    ax.set_title(title or "adversarial risk")
    return fig


def plot_confusion_matrix(
    matrix: Sequence[Sequence[float]], class_names: Sequence[str] | None = None, title: str = ""
) -> Any:
    """The confusion matrix as a heat map: rows true classes, columns predicted; counts and row shares.

    Each cell shows its count and, in brackets, its share of the row (the diagonal: the class's
    recall), so a classifier that calls everything one class shows as one bright column.

    Args:
        matrix: ``(K, K)`` counts, rows true, columns predicted.
        class_names: the ``K`` class names (default ``0 .. K-1``).
        title: the figure title.

    Raises:
        ValueError: for a matrix that is not square or class names of the wrong length.
    """
    cm = np.asarray(matrix, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"a confusion matrix must be square (K, K), got shape {cm.shape}.")
    k = cm.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for a {k} x {k} confusion matrix.")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.1 * k + 1.5))
    im = ax.imshow(share, vmin=0.0, vmax=1.0, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(
                j, i, f"{int(cm[i, j])}\n({share[i, j]:.2f})", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black",
            )  # fmt: skip
    ax.set_xticks(range(k), names, rotation=30)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_title(title or "clean confusion matrix")
    return fig
