"""What an attack accepts, checked and brought to one form before its algorithm runs.

An attack takes one item or a batch, labels as an int, a vector, multi-hot rows or dense label maps
(class indices or one-hot), and an optional region-of-interest mask of several shapes. This mixin of
:class:`~monai_adv.transforms.base.AdversarialAttack` turns them into a batch ``(B, C, *spatial)``,
labels ``(B,)`` (multi-hot ``(B, K)``, dense ``(B, *spatial)``) and a 0/1 mask, and refuses, with a
message that names the problem, whatever it cannot use. Kept apart so that the attack base class reads
as the mechanics of attacking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from monai_adv.utils import check_label_range, class_indices, plain_tensor

__all__ = ["AttackInputs"]


class AttackInputs:
    """Input canonicalisation of the attacks (a mixin: it reads the attack's ``spatial_dims``,
    ``value_range``, ``multilabel``, ``supports_dense`` and ``num_classes``)."""

    def _as_batch(self, img: Any) -> tuple[torch.Tensor, bool]:
        if isinstance(img, np.ndarray):
            x = torch.as_tensor(img)
        elif isinstance(img, torch.Tensor):
            x = plain_tensor(img)
        else:
            raise TypeError(f"img must be a torch tensor or numpy array, got {type(img).__name__}.")
        x = x.detach()
        if not x.is_floating_point():
            raise TypeError(
                f"img must be floating point (got {x.dtype}); scale it to its intensity range first "
                "(e.g. monai.transforms.ScaleIntensity)."
            )
        d = self.spatial_dims
        if x.ndim == d + 1:
            x, batched = x.unsqueeze(0), False
        elif x.ndim == d + 2:
            batched = True
        else:
            raise ValueError(
                f"img has {x.ndim} dimensions {tuple(x.shape)}; with spatial_dims={d} expected {d + 1} "
                f"(C, *spatial) or {d + 2} (B, C, *spatial)."
            )
        if x.numel() == 0:
            raise ValueError(f"img is empty: shape {tuple(x.shape)}.")
        if not torch.isfinite(x).all():
            raise ValueError("img contains NaN or Inf values.")
        if self.value_range is not None:
            low, high = self.value_range
            tol = 1e-5 * (high - low)
            x_min, x_max = float(x.min()), float(x.max())
            if x_min < low - tol or x_max > high + tol:
                raise ValueError(
                    f"img intensities [{x_min:.4g}, {x_max:.4g}] lie outside value_range {self.value_range}; "
                    "scale the image or set value_range (None for unbounded images)."
                )
            x = x.clamp(low, high)
        return x, batched

    def _labels(self, label: Any, batch: int, device: torch.device) -> torch.Tensor:
        """Class indices ``(B,)``, or dense class indices ``(B, *spatial)`` for a label map."""
        if label is None:
            raise ValueError("label is required (the true class, or the target class when targeted=True).")
        self._label_classes = None
        if self.multilabel:
            return self._multihot_labels(label, batch).to(device)
        if not isinstance(label, (bool, np.bool_)):
            t = plain_tensor(label)
            if t.ndim >= self.spatial_dims + 1:
                if not self.supports_dense:
                    raise ValueError(
                        f"{type(self).__name__} does not attack dense (segmentation) outputs; got a label map of "
                        f"shape {tuple(t.shape)}."
                    )
                return self._dense_labels(t.detach(), batch).to(device)
        return class_indices(label, batch, "labels", broadcast=True).to(device)

    def _multihot_labels(self, label: Any, batch: int) -> torch.Tensor:
        """Check multi-hot labels (a multi-label loss) and return them as floats ``(B, K)`` or ``(B, K, *spatial)``.

        One item's labels, ``(K,)`` or ``(K, *spatial)``, are broadcast over the batch.
        """
        if isinstance(label, (bool, np.bool_, int, float)):
            raise ValueError(
                f"a multi-label loss needs multi-hot labels (B, K) or (B, K, *spatial), got {label!r}."
            )
        t = plain_tensor(label).detach()
        d = self.spatial_dims
        if t.ndim in (1, d + 1):
            t = t.unsqueeze(0)
        if t.ndim not in (2, d + 2) or t.shape[0] not in (1, batch) or t.numel() == 0:
            raise ValueError(
                f"multi-hot labels of shape {tuple(t.shape)} do not fit a batch of {batch}: a multi-label loss needs "
                f"(B, K) for a classifier or (B, K, *spatial) with spatial_dims={d} for dense outputs."
            )
        if t.ndim == d + 2 and not self.supports_dense:
            raise ValueError(
                f"{type(self).__name__} does not attack dense (segmentation) outputs; got a label map of "
                f"shape {tuple(t.shape)}."
            )
        if t.is_complex():
            raise ValueError(f"multi-hot labels must be real numbers in [0, 1], got dtype {t.dtype}.")
        t = t.float()
        if not torch.isfinite(t).all() or float(t.min()) < 0 or float(t.max()) > 1:
            raise ValueError(
                "multi-hot labels must lie in [0, 1] (0/1 per label), got values outside it or NaN."
            )
        return t.expand(batch, *t.shape[1:]) if t.shape[0] != batch else t

    def _dense_labels(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """Check a label map and return class indices ``(B, *spatial)``; one-hot maps record their ``K``."""
        d = self.spatial_dims
        if t.ndim == d + 1:
            t = t.unsqueeze(0)
        if t.ndim != d + 2:
            raise ValueError(
                f"dense labels of shape {tuple(t.shape)} have {t.ndim} dimensions; with spatial_dims={d} expected "
                f"{d + 1} (1 or K, *spatial) for one item or {d + 2} (B, 1 or K, *spatial)."
            )
        if t.shape[0] not in (1, batch):
            raise ValueError(
                f"dense labels of shape {tuple(t.shape)} do not fit a batch of {batch}: expected (B={batch} or 1, "
                "1 or K, *spatial)."
            )
        if t.numel() == 0:
            raise ValueError(f"dense labels are empty: shape {tuple(t.shape)}.")
        if t.is_complex():
            raise ValueError(f"dense labels must be class indices or one-hot, got dtype {t.dtype}.")
        if t.is_floating_point() and (not torch.isfinite(t).all() or not torch.equal(t, t.round())):
            raise ValueError(
                "dense labels must be integer class indices or 0/1 one-hot, got non-integer values."
            )
        t = t.long()
        if (t < 0).any():
            raise ValueError(f"dense labels must be non-negative, got {int(t.min())}.")
        if t.shape[1] == 1:
            y = t[:, 0]
        else:
            if t.max() > 1 or not (t.sum(dim=1) == 1).all():
                raise ValueError(
                    f"dense labels with {t.shape[1]} channels must be one-hot (0/1, exactly one 1 per voxel); "
                    "class indices have one channel (B, 1, *spatial)."
                )
            self._label_classes = int(t.shape[1])
            y = t.argmax(dim=1)
        return y.expand(batch, *y.shape[1:]) if y.shape[0] != batch else y

    def _check_dense_output(self, out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        """Check that dense logits ``(B, K, *spatial)`` fit dense labels ``(B, *spatial)``."""
        shape = tuple(out.shape)
        if out.ndim == 2:
            raise ValueError(
                f"the network returns class logits {shape} but the labels are a dense map of spatial shape "
                f"{tuple(y.shape[1:])}: pass class labels (B,) for a classifier."
            )
        if not out.is_floating_point() or out.ndim != y.ndim + 1 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"network output of shape {shape} and dtype {out.dtype} is not dense logits (B={x.shape[0]}, K, "
                f"*spatial) for labels of spatial shape {tuple(y.shape[1:])}; pass output_transform=... to pick them."
            )
        if tuple(out.shape[2:]) != tuple(y.shape[1:]):
            raise ValueError(
                f"dense labels of spatial shape {tuple(y.shape[1:])} do not fit the network output of shape "
                f"{shape} (spatial {tuple(out.shape[2:])})."
            )
        if out.shape[1] < 2:
            raise ValueError(
                f"network output of shape {shape} has one channel; the attacks need K >= 2 class logits. For a "
                "sigmoid (binary) output z, pass output_transform=lambda z: torch.cat([torch.zeros_like(z), z], 1), "
                "whose softmax is (1 - sigmoid(z), sigmoid(z))."
            )
        if self._label_classes is not None and self._label_classes != out.shape[1]:
            raise ValueError(
                f"one-hot labels have K={self._label_classes} channels but the network returns {out.shape[1]} "
                "class logits."
            )

    def _check_label_range(self, y: torch.Tensor, num_classes: int) -> None:
        self.num_classes = num_classes
        check_label_range(y, num_classes, "dense labels" if self.is_dense(y) else "labels")

    def _mask(self, mask: Any, x: torch.Tensor) -> torch.Tensor | None:
        if mask is None:
            return None
        m = plain_tensor(mask).detach()
        d = self.spatial_dims
        if m.ndim == d:
            m = m.reshape(1, 1, *m.shape)
        elif m.ndim == d + 1:
            m = m.unsqueeze(0)
        elif m.ndim != d + 2:
            raise ValueError(
                f"mask has {m.ndim} dimensions {tuple(m.shape)}; expected spatial {d}, (C, *spatial) or "
                "(B, C, *spatial)."
            )
        try:
            torch.broadcast_shapes(m.shape, x.shape)
            m = m.expand_as(x) if m.shape != x.shape else m
        except RuntimeError as e:
            raise ValueError(
                f"mask of shape {tuple(m.shape)} does not fit img of shape {tuple(x.shape)}."
            ) from e
        if m.is_floating_point() and not torch.isfinite(m).all():
            raise ValueError("mask contains NaN or Inf values.")
        return (m != 0).to(device=x.device, dtype=x.dtype)
