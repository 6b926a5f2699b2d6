"""Segmentation quality per class: MONAI's Dice and Hausdorff distance with stated rules for empty classes.

MONAI's ``DiceMetric`` and ``HausdorffDistanceMetric`` leave a class out (``nan``) when its label is
empty, even when the prediction paints it: on attacked inputs, where spurious classes are what an
attack makes, that hides the damage. The two metrics here keep MONAI's computation and state the
empty cases instead:

- the class is in neither the label nor the prediction: ``nan`` (left out of every mean);
- it is in exactly one of them: Dice 0, and the Hausdorff distance is the image diagonal (the largest
  distance there is; in physical units with ``spacing``), as segmentation challenges score a missed or
  invented structure.

:class:`SegmentationOutputTransform` turns an engine's output (logits and label maps) into the one-hot
pair the metrics read, for MONAI's metric handlers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from monai_adv.utils import gather_output, plain_tensor

__all__ = [
    "SegmentationDiceMetric",
    "SegmentationHausdorffMetric",
    "SegmentationOutputTransform",
    "dense_indices",
    "one_hot_masks",
]


def dense_indices(label: Any, num_classes: int | None = None, what: str = "label map") -> torch.Tensor:
    """Class-index maps ``(B, *spatial)`` (long) from index maps ``(B, 1, *spatial)`` or one-hot ``(B, K, *spatial)``.

    Args:
        label: the label maps, with a batch and a channel axis and at least one spatial axis.
        num_classes: the number of classes ``K`` they must fit (one-hot channels, index range).
        what: how the maps are named in error messages.

    Raises:
        ValueError: for a map without spatial axes, a channel count that is neither 1 nor ``K``,
            non-integer or negative indices, or indices ``>= K``.
    """
    y = plain_tensor(label).detach()
    if y.ndim < 3:
        raise ValueError(
            f"{what} of shape {tuple(y.shape)} is not a dense label map: expected class indices "
            "(B, 1, *spatial) or one-hot (B, K, *spatial)."
        )
    if y.shape[1] == 1:
        idx = y[:, 0]
        if idx.is_floating_point() and (not torch.isfinite(idx).all() or not torch.equal(idx, idx.round())):
            raise ValueError(f"{what} holds non-integer class indices.")
        idx = idx.long()
    elif num_classes is None or y.shape[1] == num_classes:
        idx = y.argmax(dim=1)
    else:
        raise ValueError(
            f"{what} of shape {tuple(y.shape)} has {y.shape[1]} channels: expected 1 (class indices) or "
            f"{num_classes} (one-hot, one per class of the network's output)."
        )
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError(f"{what} holds negative class indices.")
    if num_classes is not None and idx.numel() and int(idx.max()) >= num_classes:
        raise ValueError(
            f"{what} holds class {int(idx.max())}, out of range for {num_classes} classes (0..{num_classes - 1})."
        )
    return idx


def one_hot_masks(indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot float masks ``(B, K, *spatial)`` of class-index maps ``(B, *spatial)``."""
    return F.one_hot(indices.long(), num_classes).movedim(-1, 1).float()


def _presence(y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dims = tuple(range(2, y.ndim))
    return y_pred.bool().any(dim=dims), y.bool().any(dim=dims)


class SegmentationDiceMetric(DiceMetric):
    """MONAI's ``DiceMetric`` per sample and class, with the empty cases stated (see the module).

    Takes binarised one-hot ``y_pred`` and ``y`` ``(B, K, *spatial)`` as ``DiceMetric`` does. A class
    absent from both gives ``nan``; absent from one of them, 0.

    Args:
        include_background: keep channel 0.
        reduction: MONAI's reduction of :meth:`aggregate` (over the non-nan values).
        get_not_nans: also return the counts of non-nan values.
    """

    def __init__(self, include_background: bool = True, reduction: str = "mean", get_not_nans: bool = False):
        super().__init__(
            include_background=include_background,
            reduction=reduction,
            get_not_nans=get_not_nans,
            ignore_empty=False,
        )

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        dice = super()._compute_tensor(y_pred, y)
        in_pred, in_label = _presence(y_pred, y)
        if not self.include_background:
            in_pred, in_label = in_pred[:, 1:], in_label[:, 1:]
        return torch.where(in_pred | in_label, dice, torch.full_like(dice, float("nan")))


class SegmentationHausdorffMetric(HausdorffDistanceMetric):
    """MONAI's ``HausdorffDistanceMetric`` (95th percentile by default) per sample and class, empty cases stated.

    A class absent from both the label and the prediction gives ``nan``; absent from exactly one, the
    image diagonal (times ``spacing``): the attack removed or invented the structure. MONAI's warnings
    about empty classes are silenced, since these cases are now defined.

    Args:
        include_background: keep channel 0.
        percentile: the percentile of the surface distances (95: HD95); None the maximum.
        spacing: pixel spacing (a number, or one per spatial axis); None: pixels.
        reduction: MONAI's reduction of :meth:`aggregate` (over the non-nan values).
        get_not_nans: also return the counts of non-nan values.

    Raises:
        ValueError: for a percentile outside [0, 100].
    """

    def __init__(
        self,
        include_background: bool = True,
        percentile: float | None = 95.0,
        spacing: float | Sequence[float] | None = None,
        reduction: str = "mean",
        get_not_nans: bool = False,
    ) -> None:
        if percentile is not None and not 0.0 <= float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in [0, 100] (or None), got {percentile!r}.")
        super().__init__(
            include_background=include_background,
            percentile=None if percentile is None else float(percentile),
            reduction=reduction,
            get_not_nans=get_not_nans,
        )
        self.spacing = spacing

    def _diagonal(self, spatial: Sequence[int]) -> float:
        sp = self.spacing
        steps = [1.0] * len(spatial) if sp is None else (
            [float(sp)] * len(spatial) if isinstance(sp, (int, float)) else [float(s) for s in sp]
        )  # fmt: skip
        return math.sqrt(sum((n * s) ** 2 for n, s in zip(spatial, steps)))

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        kwargs.setdefault("spacing", self.spacing)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is all 0, this may result in nan/inf distance.*")
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            hd = super()._compute_tensor(y_pred, y, **kwargs).float()
        in_pred, in_label = _presence(y_pred, y)
        if not self.include_background:
            in_pred, in_label = in_pred[:, 1:], in_label[:, 1:]
        one_sided = (in_pred ^ in_label).to(hd.device)
        diagonal = self._diagonal(tuple(y.shape[2:]))
        hd = torch.where(one_sided, torch.full_like(hd, diagonal), hd)
        return torch.where((in_pred | in_label).to(hd.device), hd, torch.full_like(hd, float("nan")))


class SegmentationOutputTransform:
    """``(one-hot argmax prediction, one-hot label)`` from an engine output, for MONAI's metric handlers.

    Reads ``pred_key`` (logits or probabilities ``(B, K, *spatial)``) and ``label_key`` (class indices
    ``(B, 1, *spatial)`` or one-hot ``(B, K, *spatial)``) from ``engine.state.output``, a dict of
    batches or MONAI's decollated list of items, and returns both as binarised one-hot float tensors
    ``(B, K, *spatial)``, which ``DiceMetric`` and ``HausdorffDistanceMetric`` (and the two above) read::

        IgniteMetricHandler(SegmentationDiceMetric(), output_transform=SegmentationOutputTransform(13, "pred/pgd"))

    Args:
        num_classes: the number of classes ``K`` of the network's output.
        pred_key: the key of the logits (e.g. ``"pred/pgd_eps0.004"`` for an attack's).
        label_key: the key of the label maps.

    Raises:
        ValueError: (when called) for logits without ``K`` channels or labels that do not fit them.
    """

    def __init__(self, num_classes: int, pred_key: str = "pred", label_key: str = "label") -> None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.pred_key = pred_key
        self.label_key = label_key

    def __call__(self, output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        pred = plain_tensor(gather_output(output, self.pred_key)).detach()
        label = gather_output(output, self.label_key)
        if pred.ndim < 3 or pred.shape[1] != self.num_classes:
            raise ValueError(
                f"{self.pred_key!r} of shape {tuple(pred.shape)} is not dense logits with {self.num_classes} "
                "channels (B, K, *spatial)."
            )
        idx = dense_indices(label, self.num_classes, f"{self.label_key!r}").to(pred.device)
        if tuple(idx.shape[1:]) != tuple(pred.shape[2:]) or idx.shape[0] != pred.shape[0]:
            raise ValueError(
                f"{self.label_key!r} of shape {tuple(plain_tensor(label).shape)} does not fit {self.pred_key!r} "
                f"of shape {tuple(pred.shape)} (same batch and spatial shape needed)."
            )
        return one_hot_masks(pred.argmax(dim=1), self.num_classes), one_hot_masks(idx, self.num_classes)
