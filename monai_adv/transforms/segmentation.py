"""Attacks made for dense outputs (segmentation): SegPGD and CosPGD.

Both are PGD with a voxel-weighted cross-entropy that moves the gradient towards the voxels that are
not yet fooled; every other attack in :mod:`monai_adv.transforms` also takes dense outputs (see
:class:`~monai_adv.transforms.AdversarialAttack`), with the mean voxel cross-entropy by default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai_adv.transforms.base import EpsType
from monai_adv.transforms.gradient import PGD
from monai_adv.transforms.losses import cospgd_loss, segpgd_loss

__all__ = ["SegPGD", "CosPGD"]


def _no_custom_loss(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs.get("loss") is not None:
        raise ValueError(
            f"{name} has its own loss (a weighted voxel cross-entropy); use PGD(..., loss=...) for another loss."
        )
    kwargs.pop("loss", None)


class SegPGD(PGD):
    """SegPGD (Gu et al., "SegPGD: An Effective and Efficient Adversarial Attack for Evaluating and
    Boosting Segmentation Robustness", ECCV 2022).

    PGD on ``L_t = ((1 - lambda_t) * sum_{correct} CE + lambda_t * sum_{wrong} CE) / N`` over the
    ``N`` voxels of each sample, with ``lambda_t = (t - 1) / (2T)`` at iteration ``t = 1 .. T``: the
    first steps push only the voxels the network still gets right (plain PGD wastes them on voxels
    already fooled, whose cross-entropy keeps growing), later ones weigh the fooled voxels in too, so
    that they stay fooled. Targeted (the label a target mask), the weight ``1 - lambda_t`` goes to
    the voxels not yet at the target. With class labels it reduces to PGD (each sample has one
    "voxel", whose weight a sign step ignores).

    Args:
        network: the segmentation network, returning ``(B, K, *spatial)`` logits.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn per call.
        alpha: step size; default ``2.5 * eps / steps``.
        steps: number of iterations ``T`` (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform random point of the ball (as in the paper).
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack` (``loss`` is SegPGD's own).

    Raises:
        ValueError: for steps < 1, alpha <= 0, or a custom ``loss``.

    Example::

        atk = SegPGD(seg_net, eps=4 / 255, steps=10)
        x_adv = atk(images, label_maps)   # label_maps: (B, 1, H, W) class indices
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        **kwargs: Any,
    ) -> None:
        _no_custom_loss("SegPGD", kwargs)
        super().__init__(
            network, eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start, **kwargs
        )

    def lam(self, t: int) -> float:
        """``lambda`` at iteration ``t`` (0-based): ``t / (2T)``, the paper's ``(t - 1) / (2T)`` for ``t = 1 .. T``."""
        return t / (2 * self.steps)

    def step_loss(self, t: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """SegPGD's weighted cross-entropy with ``lambda_t``."""
        return functools.partial(segpgd_loss, lam=self.lam(t), targeted=self.targeted)


class CosPGD(PGD):
    """CosPGD (Agnihotri et al., "CosPGD: an efficient white-box adversarial attack for pixel-wise
    prediction tasks", ICML 2024).

    PGD on ``L = mean_v cos(sigmoid(z_v), onehot(y_v)) * CE_v``: each voxel's cross-entropy is
    weighted by the cosine similarity between its prediction and its one-hot label, so voxels the
    network still predicts confidently right pull hardest and fooled ones fade out, smoothly (SegPGD
    splits the voxels in two instead). Targeted, the weight is ``1 - cos`` to the target. The
    weights are constants for the gradient, as in the authors' implementation; ``activation``
    chooses the sigmoid of the paper or the softmax of their code.

    Args:
        network: the segmentation network, returning ``(B, K, *spatial)`` logits.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn per call.
        alpha: step size; default ``2.5 * eps / steps``.
        steps: number of iterations (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform random point of the ball (as in the paper).
        activation: ``"sigmoid"`` (the paper) or ``"softmax"`` applied to the logits before the cosine.
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack` (``loss`` is CosPGD's own).

    Raises:
        ValueError: for steps < 1, alpha <= 0, an unknown activation, or a custom ``loss``.

    Example::

        atk = CosPGD(seg_net, eps=4 / 255, steps=10)
        x_adv = atk(images, label_maps)
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        activation: str = "sigmoid",
        **kwargs: Any,
    ) -> None:
        _no_custom_loss("CosPGD", kwargs)
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}.")
        super().__init__(
            network, eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start, **kwargs
        )
        self.activation = activation

    def step_loss(self, t: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """CosPGD's cosine-weighted cross-entropy (the same at every step)."""
        return functools.partial(cospgd_loss, targeted=self.targeted, activation=self.activation)
