"""Per-class quality of a classifier: confusion matrix, per-class recall, a guard against degenerate models,
and per-image accuracy as a MONAI metric (softmax or multi-label sigmoid outputs).

A robustness number on a classifier that calls almost everything one class means nothing: its
"robust accuracy" is the share of that class, and a detector's AUROC or a system risk computed on it
measure the detector alone. :func:`classification_summary` says so, so that reports can warn.

:class:`ClassificationAccuracyMetric` is the accuracy that
:class:`~monai_adv.engines.RobustEvaluator` puts in ``engine.state.metrics`` (clean and per attack),
read from the engine's output by :class:`ClassificationOutputTransform`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from monai_adv.utils import first_output, gather_output, plain_tensor

__all__ = [
    "confusion_matrix",
    "per_class_recall",
    "classification_summary",
    "DEGENERATE_FRACTION",
    "ACTIVATIONS",
    "check_activation",
    "classification_correctness",
    "ClassificationAccuracyMetric",
    "ClassificationOutputTransform",
]

#: the output activations the robust evaluators and their metrics know: one class per item
#: (softmax, argmax prediction) or independent labels (sigmoid, prediction ``logits > 0``)
ACTIVATIONS = ("softmax", "sigmoid")


def check_activation(activation: str) -> str:
    """``activation`` if it is one of :data:`ACTIVATIONS`, else a ``ValueError`` naming them."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
    return activation


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


def classification_correctness(logits: Any, label: Any, activation: str = "softmax") -> torch.Tensor:
    """Per-image correctness ``(B,)`` in [0, 1] of class logits against labels.

    - ``"softmax"`` (one class per image): 1 where ``argmax(logits)`` is the label, else 0. Labels are
      class indices ``(B,)`` / ``(B, 1)`` or one-hot ``(B, K)``.
    - ``"sigmoid"`` (multi-label): the share of the ``K`` labels predicted right, with the prediction
      ``logits > 0`` (``sigmoid > 0.5``) and the labels multi-hot ``(B, K)`` (``> 0.5`` is positive);
      a binary classifier with one logit ``(B, 1)`` may take labels ``(B,)``. Averaged over images this
      is the mean per-label accuracy (1 minus the Hamming loss).

    Args:
        logits: class logits ``(B, K)`` (probabilities work for softmax, not for sigmoid).
        label: the labels, as above.
        activation: ``"softmax"`` or ``"sigmoid"``.

    Raises:
        ValueError: for logits that are not ``(B, K)``, labels that do not fit them, or an unknown
            activation.
    """
    check_activation(activation)
    z = plain_tensor(logits).detach()
    y = plain_tensor(label).detach().to(z.device)
    if z.ndim != 2:
        raise ValueError(
            f"predictions of shape {tuple(z.shape)} are not class logits (B, K); a segmentation network "
            "is evaluated by RobustSegmentationEvaluator."
        )
    b, k = z.shape
    if activation == "sigmoid":
        if y.ndim == 1 and k == 1:
            y = y.reshape(b, 1)
        if tuple(y.shape) != (b, k):
            raise ValueError(
                f"multi-label (sigmoid) labels of shape {tuple(y.shape)} do not fit logits {tuple(z.shape)}: "
                f"expected multi-hot ({b}, {k})."
            )
        return ((z > 0) == (y > 0.5)).to(torch.float32).mean(dim=1)
    if y.ndim == 2 and y.shape[1] == k and k > 1:
        y = y.argmax(dim=1)  # one-hot
    y = y.reshape(-1)
    if y.numel() != b:
        raise ValueError(
            f"labels of shape {tuple(plain_tensor(label).shape)} do not fit logits {tuple(z.shape)}: expected "
            f"class indices ({b},) or ({b}, 1), or one-hot ({b}, {k})."
        )
    return (z.argmax(dim=1) == y.to(torch.long)).to(torch.float32)


class ClassificationAccuracyMetric(CumulativeIterationMetric):
    """Accuracy as a MONAI ``CumulativeIterationMetric``: per-image correctness, averaged at the end.

    Each call adds the images' correctness (:func:`classification_correctness`) to the buffer as
    ``(B, 1)``; :meth:`aggregate` returns their mean (MONAI's reduction), and the buffer
    (``get_buffer()``, ``engine.state.metric_details`` under MONAI's ``IgniteMetricHandler``) holds one
    value per image. Across DDP ranks the buffers are gathered, as MONAI's metrics do.

    Args:
        activation: ``"softmax"`` (argmax against class indices) or ``"sigmoid"`` (multi-label:
            the share of labels right per image).
        reduction: MONAI's reduction of :meth:`aggregate`.
        get_not_nans: also return the count of images.

    Example::

        IgniteMetricHandler(ClassificationAccuracyMetric(), output_transform=ClassificationOutputTransform("pred/pgd"))
    """

    def __init__(
        self,
        activation: str = "softmax",
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        self.activation = check_activation(activation)
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if y is None:
            raise ValueError("ClassificationAccuracyMetric needs labels y.")
        return classification_correctness(y_pred, y, self.activation).unsqueeze(1)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> Any:
        """The mean correctness over the images so far (with ``get_not_nans``, also their count).

        Raises:
            ValueError: before any image was added.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("no images yet: the accuracy of an empty set is undefined.")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f


class ClassificationOutputTransform:
    """``(logits, labels)`` from an engine output, for :class:`ClassificationAccuracyMetric` under MONAI's handler.

    Reads ``pred_key`` and ``label_key`` from ``engine.state.output`` (a dict of batches, or MONAI's
    decollated list of items). Returns None where the output has no labels (an unlabeled batch
    without attacks), which :class:`~monai_adv.metrics.OutputMetricHandler` skips.

    Args:
        pred_key: the key of the logits (``"pred"``, ``"pred/<attack>"``).
        label_key: the key of the labels.
    """

    def __init__(self, pred_key: str = "pred", label_key: str = "label") -> None:
        self.pred_key = pred_key
        self.label_key = label_key

    def __call__(self, output: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        first = first_output(output)
        if first is not None and first.get(self.label_key) is None:
            return None
        label = plain_tensor(gather_output(output, self.label_key))
        return plain_tensor(gather_output(output, self.pred_key)).detach(), label
