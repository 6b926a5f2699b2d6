"""Per-class quality of a classifier: confusion matrix, per-class recall, and a guard against degenerate models.

A robustness number on a classifier that calls almost everything one class means nothing: its
"robust accuracy" is the share of that class, and a detector's AUROC or a system risk computed on it
measure the detector alone. :func:`classification_summary` says so, so that reports can warn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["confusion_matrix", "per_class_recall", "classification_summary", "DEGENERATE_FRACTION"]

#: a classifier that predicts one class for more than this share of an evaluation set is degenerate
DEGENERATE_FRACTION = 0.9


def _indices(t: torch.Tensor | Sequence[int], name: str) -> torch.Tensor:
    t = torch.as_tensor(t).detach().cpu().reshape(-1)
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name} must be class indices, got non-integer values.")
        t = t.long()
    if (t < 0).any():
        raise ValueError(f"{name} must be non-negative class indices.")
    return t.long()


def confusion_matrix(
    labels: torch.Tensor | Sequence[int], preds: torch.Tensor | Sequence[int], num_classes: int | None = None
) -> torch.Tensor:
    """The ``(K, K)`` confusion matrix of counts: rows are the true classes, columns the predicted ones.

    Args:
        labels: true class indices ``(N,)``.
        preds: predicted class indices ``(N,)``.
        num_classes: ``K``; default one more than the largest index seen.

    Raises:
        ValueError: for different lengths, an empty set, or indices that are negative, non-integer or
            ``>= num_classes``.
    """
    y, p = _indices(labels, "labels"), _indices(preds, "predictions")
    if y.numel() != p.numel():
        raise ValueError(f"{y.numel()} labels but {p.numel()} predictions.")
    if y.numel() == 0:
        raise ValueError("no items: the confusion matrix of an empty set is undefined.")
    k = int(max(int(y.max()), int(p.max())) + 1) if num_classes is None else int(num_classes)
    if int(y.max()) >= k or int(p.max()) >= k:
        raise ValueError(f"class indices up to {max(int(y.max()), int(p.max()))} do not fit num_classes={k}.")
    return torch.bincount(y * k + p, minlength=k * k).reshape(k, k)


def per_class_recall(cm: torch.Tensor) -> list[float | None]:
    """Recall of each class from a confusion matrix (rows true): ``cm[k, k] / cm[k].sum()``; None for an absent class."""
    support = cm.sum(dim=1)
    return [None if int(support[k]) == 0 else float(cm[k, k]) / float(support[k]) for k in range(cm.shape[0])]


def classification_summary(
    labels: torch.Tensor | Sequence[int],
    preds: torch.Tensor | Sequence[int],
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    degenerate_fraction: float = DEGENERATE_FRACTION,
) -> dict[str, Any]:
    """Accuracy, per-class recall, confusion matrix and the degenerate-classifier flag, JSON-ready.

    Args:
        labels: true class indices.
        preds: predicted class indices.
        class_names: names of the classes in index order (default ``"0"``, ``"1"``, ...).
        num_classes: number of classes (default ``len(class_names)``, else inferred).
        degenerate_fraction: the classifier is ``degenerate`` when one class takes more than this
            share of the predictions.

    Returns:
        ``{"accuracy", "per_class_recall": {name: recall}, "confusion_matrix": [[...]] (rows true,
        columns predicted), "class_names", "prediction_share": {name: share}, "majority_class",
        "majority_share", "degenerate"}``.
    """
    if num_classes is None and class_names is not None:
        num_classes = len(class_names)
    cm = confusion_matrix(labels, preds, num_classes)
    k = cm.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} classes.")
    n = int(cm.sum())
    predicted = cm.sum(dim=0)
    majority = int(predicted.argmax())
    share = float(predicted[majority]) / n
    return {
        "accuracy": float(cm.diagonal().sum()) / n,
        "per_class_recall": dict(zip(names, per_class_recall(cm))),
        "confusion_matrix": cm.tolist(),
        "class_names": names,
        "prediction_share": {name: float(predicted[i]) / n for i, name in enumerate(names)},
        "majority_class": names[majority],
        "majority_share": share,
        "degenerate": share > float(degenerate_fraction),
    }
