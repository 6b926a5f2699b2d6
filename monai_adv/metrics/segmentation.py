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
pair the metrics read, for MONAI's metric handlers: argmax masks of softmax logits, or one binary mask per
channel of sigmoid logits (multi-label, overlapping regions such as BraTS' TC/WT/ET).

Distances are in physical units when the voxel spacing is known: given explicitly, or read per image
from a MONAI ``MetaTensor``'s affine (:func:`image_spacing`), as MONAI's ``HausdorffDistanceMetric``
takes it through its ``spacing`` argument.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn.functional as F
from monai.data.utils import affine_to_spacing
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from monai_adv.metrics.classification import check_activation
from monai_adv.utils import first_output, gather_output, plain_tensor

__all__ = [
    "SegmentationDiceMetric",
    "SegmentationHausdorffMetric",
    "SegmentationOutputTransform",
    "dense_indices",
    "one_hot_masks",
    "multilabel_masks",
    "image_spacing",
    "SpacingType",
]

#: a voxel spacing: one number, one per spatial axis, ``"auto"`` (from the image metadata) or None (voxels)
SpacingType = Union[float, Sequence[float], str, None]


def image_spacing(img: Any, spatial_dims: int) -> torch.Tensor | None:
    """The voxel spacing of each image of a batch ``(B, C, *spatial)``, from its MONAI metadata, ``(B, D)``.

    Read from the ``MetaTensor``'s affine, as MONAI's ``MetaTensor.pixdim`` and
    ``monai.data.utils.affine_to_spacing`` do (the column norms of its linear part; in mm for images
    loaded by MONAI's readers), else from a ``"pixdim"`` entry of its metadata (a NIfTI header's
    ``pixdim``, whose entries 1..D are the spacing, or the spacing itself). An identity affine without
    ``"pixdim"`` is MONAI's default for images that carry no geometry (a PNG, a tensor made in
    memory): no spacing. A row of ``nan`` marks an image without spacing.

    Args:
        img: the batch; a plain tensor has no metadata.
        spatial_dims: ``D``, the number of spatial axes.

    Returns:
        ``(B, D)`` float64 spacings (``nan`` rows for images without), or None when no image has one.
    """
    meta = getattr(img, "meta", None)
    if not isinstance(meta, dict) or not isinstance(img, torch.Tensor) or img.ndim < spatial_dims + 2:
        return None
    b, d = int(img.shape[0]), int(spatial_dims)
    out = torch.full((b, d), float("nan"), dtype=torch.float64)
    affine = meta.get("affine")
    if affine is not None:
        a = torch.as_tensor(affine, dtype=torch.float64).cpu()
        a = a.unsqueeze(0).expand(b, *a.shape) if a.ndim == 2 else a
        if a.ndim == 3 and a.shape[0] == b and a.shape[-1] > d:
            for i in range(b):
                linear = a[i, :d, :d]
                if not torch.equal(linear, torch.eye(d, dtype=torch.float64)):
                    out[i] = affine_to_spacing(a[i], r=d, dtype=torch.float64)
    pixdim = meta.get("pixdim")
    if pixdim is not None:
        p = torch.as_tensor(pixdim, dtype=torch.float64).cpu()
        p = p.unsqueeze(0).expand(b, *p.shape) if p.ndim == 1 else p
        if p.ndim == 2 and p.shape[0] == b:
            # a NIfTI header's pixdim holds qfac first, then the spacing of each axis
            start = 1 if p.shape[1] == 8 else 0
            if p.shape[1] >= start + d:
                values = p[:, start : start + d].abs()
                values = torch.where(values > 0, values, torch.ones_like(values))
                missing = torch.isnan(out).any(dim=1)
                out[missing] = values[missing]
    return None if torch.isnan(out).all() else out


def _per_item_spacing(spacing: Any, batch: int, dims: int) -> list[list[float]]:
    """One ``[s_1, ..., s_D]`` per image from a number, one per axis, one per image, or ``(B, D)`` (nan: 1)."""
    if spacing is None:
        return [[1.0] * dims for _ in range(batch)]
    if isinstance(spacing, (int, float)):
        return [[float(spacing)] * dims for _ in range(batch)]
    t = torch.as_tensor(spacing, dtype=torch.float64).cpu()
    if t.ndim == 1:
        t = t.reshape(1, -1).expand(batch, -1) if t.numel() == dims else t.reshape(-1, 1).expand(-1, dims)
    if t.ndim != 2 or t.shape[0] != batch or t.shape[1] not in (1, dims):
        raise ValueError(
            f"spacing of shape {tuple(torch.as_tensor(spacing).shape)} fits neither {dims} axes nor a batch of {batch}."
        )
    t = t.expand(batch, dims)
    return torch.where(torch.isnan(t), torch.ones_like(t), t).tolist()


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


def multilabel_masks(label: Any, num_channels: int | None = None, what: str = "label map") -> torch.Tensor:
    """Binary float masks ``(B, K, *spatial)`` of multi-label maps (one mask per channel, ``> 0.5`` is in).

    Args:
        label: the maps ``(B, K, *spatial)``, values in [0, 1] (0/1 masks, or probabilities).
        num_channels: the ``K`` they must have.
        what: how the maps are named in error messages.

    Raises:
        ValueError: for maps without spatial axes, another channel count, or values outside [0, 1].
    """
    y = plain_tensor(label).detach()
    if y.ndim < 3 or (num_channels is not None and y.shape[1] != num_channels):
        raise ValueError(
            f"{what} of shape {tuple(y.shape)} is not a multi-label map (B, K={num_channels}, *spatial): sigmoid "
            "outputs take one binary mask per channel."
        )
    y = y.float()
    if y.numel() and (not torch.isfinite(y).all() or float(y.min()) < 0 or float(y.max()) > 1):
        raise ValueError(f"{what} holds values outside [0, 1]: expected one 0/1 mask per channel.")
    return (y > 0.5).float()


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
    image diagonal (in the image's spacing): the attack removed or invented the structure. MONAI's
    warnings about empty classes are silenced, since these cases are now defined.

    The spacing of a call is, in order: the ``spacing`` given here (a number or one per axis); else
    the call's own ``spacing`` keyword (MONAI's: a number, one per axis, or one per image; ``(B, D)``
    with ``nan`` rows for images without); else unit voxels.

    Args:
        include_background: keep channel 0.
        percentile: the percentile of the surface distances (95: HD95); None the maximum.
        spacing: voxel spacing (a number, or one per spatial axis); None or ``"auto"``: the call's
            ``spacing`` keyword, else voxels.
        reduction: MONAI's reduction of :meth:`aggregate` (over the non-nan values).
        get_not_nans: also return the counts of non-nan values.

    Raises:
        ValueError: for a percentile outside [0, 100].
    """

    def __init__(
        self,
        include_background: bool = True,
        percentile: float | None = 95.0,
        spacing: SpacingType = None,
        reduction: str = "mean",
        get_not_nans: bool = False,
    ) -> None:
        if isinstance(spacing, str) and spacing != "auto":
            raise ValueError(f"spacing must be a number, one per axis, 'auto' or None, got {spacing!r}.")
        if percentile is not None and not 0.0 <= float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in [0, 100] (or None), got {percentile!r}.")
        super().__init__(
            include_background=include_background,
            percentile=None if percentile is None else float(percentile),
            reduction=reduction,
            get_not_nans=get_not_nans,
        )
        self.spacing = spacing

    @property
    def fixed_spacing(self) -> bool:
        """Whether the spacing was given here (a number or one per axis), so that it wins over the call's."""
        return self.spacing is not None and not isinstance(self.spacing, str)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        batch, spatial = int(y.shape[0]), tuple(y.shape[2:])
        given = self.spacing if self.fixed_spacing else kwargs.get("spacing")
        spacing = _per_item_spacing(given, batch, len(spatial))
        kwargs["spacing"] = spacing
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is all 0, this may result in nan/inf distance.*")
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            hd = super()._compute_tensor(y_pred, y, **kwargs).float()
        in_pred, in_label = _presence(y_pred, y)
        if not self.include_background:
            in_pred, in_label = in_pred[:, 1:], in_label[:, 1:]
        one_sided = (in_pred ^ in_label).to(hd.device)
        diagonal = torch.tensor(
            [math.sqrt(sum((n * s) ** 2 for n, s in zip(spatial, steps))) for steps in spacing],
            dtype=hd.dtype,
            device=hd.device,
        ).reshape(-1, 1)
        hd = torch.where(one_sided, diagonal.expand_as(hd), hd)
        return torch.where((in_pred | in_label).to(hd.device), hd, torch.full_like(hd, float("nan")))


class SegmentationOutputTransform:
    """``(binary prediction masks, binary label masks)`` from an engine output, for MONAI's metric handlers.

    Reads ``pred_key`` (logits ``(B, K, *spatial)``) and ``label_key`` from ``engine.state.output``, a
    dict of batches or MONAI's decollated list of items, and returns both as binary float masks
    ``(B, K, *spatial)``, which ``DiceMetric`` and ``HausdorffDistanceMetric`` (and the two above) read::

        IgniteMetricHandler(SegmentationDiceMetric(), output_transform=SegmentationOutputTransform(13, "pred/pgd"))

    - ``activation="softmax"``: one class per voxel; the prediction is the one-hot argmax, the labels
      are class indices ``(B, 1, *spatial)`` or one-hot ``(B, K, *spatial)``.
    - ``activation="sigmoid"``: one binary mask per channel (overlapping regions); the prediction is
      ``logits > 0`` (``sigmoid > 0.5``) per channel, the labels are 0/1 masks ``(B, K, *spatial)``.

    With ``spacing_key`` set and present in the output (per-image voxel spacings ``(B, D)``, as
    :class:`~monai_adv.engines.RobustSegmentationEvaluator` writes them), it returns
    ``(pred, label, {"spacing": [...]})`` for :class:`~monai_adv.metrics.OutputMetricHandler`, which
    passes the spacing on to the metric.

    Args:
        num_classes: the number of channels ``K`` of the network's output (>= 2 for softmax).
        pred_key: the key of the logits (e.g. ``"pred/pgd_eps0.004"`` for an attack's).
        label_key: the key of the label maps.
        activation: ``"softmax"`` or ``"sigmoid"``.
        spacing_key: the key of the per-image spacings, or None.

    Raises:
        ValueError: for fewer than 2 classes with softmax (1 with sigmoid) or an unknown activation;
            (when called) for logits without ``K`` channels or labels that do not fit them.
    """

    def __init__(
        self,
        num_classes: int,
        pred_key: str = "pred",
        label_key: str = "label",
        activation: str = "softmax",
        spacing_key: str | None = None,
    ) -> None:
        self.activation = check_activation(activation)
        least = 2 if activation == "softmax" else 1
        if int(num_classes) < least:
            raise ValueError(f"num_classes must be >= {least} for {activation} outputs, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.pred_key = pred_key
        self.label_key = label_key
        self.spacing_key = spacing_key

    def __call__(self, output: Any) -> tuple[Any, ...]:
        pred = plain_tensor(gather_output(output, self.pred_key)).detach()
        label = gather_output(output, self.label_key)
        if pred.ndim < 3 or pred.shape[1] != self.num_classes:
            raise ValueError(
                f"{self.pred_key!r} of shape {tuple(pred.shape)} is not dense logits with {self.num_classes} "
                "channels (B, K, *spatial)."
            )
        masks = self._masks(pred, label)
        if self.spacing_key is not None and (first_output(output) or {}).get(self.spacing_key) is not None:
            spacing = plain_tensor(gather_output(output, self.spacing_key)).detach().double().cpu()
            return (*masks, {"spacing": spacing})
        return masks

    def _masks(self, pred: torch.Tensor, label: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.activation == "sigmoid":
            y = multilabel_masks(label, self.num_classes, f"{self.label_key!r}").to(pred.device)
            if tuple(y.shape) != tuple(pred.shape):
                raise ValueError(
                    f"{self.label_key!r} of shape {tuple(y.shape)} does not fit {self.pred_key!r} of shape "
                    f"{tuple(pred.shape)} (one mask per channel, same batch and spatial shape needed)."
                )
            return (pred > 0).float(), y
        idx = dense_indices(label, self.num_classes, f"{self.label_key!r}").to(pred.device)
        if tuple(idx.shape[1:]) != tuple(pred.shape[2:]) or idx.shape[0] != pred.shape[0]:
            raise ValueError(
                f"{self.label_key!r} of shape {tuple(plain_tensor(label).shape)} does not fit {self.pred_key!r} "
                f"of shape {tuple(pred.shape)} (same batch and spatial shape needed)."
            )
        return one_hot_masks(pred.argmax(dim=1), self.num_classes), one_hot_masks(idx, self.num_classes)
