"""SEA, the Segmentation Ensemble Attack (Croce, Singh & Hein, ECCV 2024), and its APGD member.

F. Croce, N. D. Singh, M. Hein, "Towards Reliable Evaluation and Fast Training of Robust Semantic
Segmentation Models", ECCV 2024 (arXiv 2306.12941). A segmentation network has to be fooled on
thousands of voxels at once, and the plain mean cross-entropy spends the gradient on voxels that
are already wrong (their loss keeps growing without bound). SEA runs APGD once per loss, each loss
built to move the voxels still right, and keeps per image the attacked image with the lowest pixel
accuracy. The authors show that SegPGD/CosPGD-style evaluation overstates robustness next to it.

- :class:`SegmentationAPGD`: APGD (Croce & Hein, ICML 2020) on one of SEA's losses, with the
  progressive radius reduction and the lowest-pixel-accuracy iterate as its result.
- :class:`SEA`: the per-image worst case of :class:`SegmentationAPGD` over the losses.
- The losses, per sample ``(B,)``: :func:`masked_cross_entropy_loss`,
  :func:`balanced_masked_cross_entropy_loss`, :func:`jensen_shannon_loss`,
  :func:`masked_spherical_loss`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_adv.transforms.apgd import APGD
from monai_adv.transforms.base import EpsType, NormBoundedAttack
from monai_adv.transforms.composite import WorstCaseEnsemble
from monai_adv.transforms.losses import (
    is_multilabel_loss,
    mean_over_voxels,
    multilabel_loss,
    per_sample_bce,
    per_sample_cross_entropy,
)

__all__ = [
    "SEA",
    "SegmentationAPGD",
    "SEA_LOSSES",
    "SEA_MULTILABEL_LOSSES",
    "SEA_DEFAULT_LOSSES",
    "SEA_RADIUS_SCHEDULE",
    "pixel_accuracy",
    "balanced_class_weights",
    "masked_cross_entropy_loss",
    "balanced_masked_cross_entropy_loss",
    "jensen_shannon_loss",
    "masked_spherical_loss",
    "balanced_binary_weights",
    "masked_bce_loss",
    "balanced_masked_bce_loss",
    "binary_jensen_shannon_loss",
]

#: the losses of SEA's ensemble, in the order the authors' evaluation runs them (ties go to the earlier)
SEA_DEFAULT_LOSSES: tuple[str, ...] = ("mask-ce-bal", "mask-ce", "js")
#: SEA's progressive radius reduction: (fraction of the iterations, radius as a multiple of eps)
SEA_RADIUS_SCHEDULE: tuple[tuple[float, float], ...] = ((0.3, 2.0), (0.3, 1.5), (0.4, 1.0))


# ------------------------------------------------------------------------------------------------
# the losses
# ------------------------------------------------------------------------------------------------
def _one_hot_like(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.one_hot(y, logits.shape[1]).movedim(-1, 1).to(logits.dtype)


def _still_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 where the voxel is still predicted as its label, else 0; a constant for the gradient."""
    return (logits.detach().argmax(dim=1) == y).to(logits.dtype)


def pixel_accuracy(logits: torch.Tensor, y: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """The fraction of voxels predicted as their label, per sample ``(B,)`` (class labels: 0 or 1).

    SEA's criterion: each member keeps its iterate with the lowest pixel accuracy, the ensemble its
    member with the lowest. ``multilabel``: sigmoid logits with multi-hot labels of their shape; the
    fraction of (channel, voxel) decisions ``logits > 0`` that match ``y > 0.5``.
    """
    correct = (logits > 0) == (y > 0.5) if multilabel else logits.argmax(dim=1) == y
    return correct.reshape(correct.shape[0], -1).float().mean(dim=1)


def masked_cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_Mask-CE``: the cross-entropy of the voxels still predicted right, averaged over all voxels.

    ``mean_v 1[argmax z_v = y_v] * CE(z_v, y_v)``. A voxel leaves the loss as soon as it is fooled,
    so the gradient is never spent on pushing wrong voxels further (the mask is a constant for the
    gradient).

    Args:
        logits: dense logits ``(B, K, *spatial)`` (class logits ``(B, K)`` work too: one voxel each).
        y: class indices ``(B, *spatial)``.
    """
    ce = F.cross_entropy(logits, y, reduction="none")
    return mean_over_voxels(_still_correct(logits, y) * ce)


def balanced_class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-voxel weights ``(B, *spatial)`` that make every class of a label map count equally.

    ``w_v = N / (C * n_{y_v})`` for the ``N`` voxels of an image, its ``C`` classes present and the
    ``n_c`` voxels of class ``c``: the inverse class frequency, scaled so that the weights average
    to 1 over the image's voxels.
    """
    flat = y.reshape(y.shape[0], -1)
    counts = F.one_hot(flat, num_classes).sum(dim=1).to(torch.float64)  # (B, K)
    present = (counts > 0).sum(dim=1, keepdim=True)
    per_class = flat.shape[1] / (present * counts.clamp_min(1))
    return per_class.gather(1, flat).reshape(y.shape)


def balanced_masked_cross_entropy_loss(
    logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """``L_Mask-CE-Bal``: :func:`masked_cross_entropy_loss` with each voxel weighted by its class.

    ``mean_v w_{y_v} * 1[argmax z_v = y_v] * CE(z_v, y_v)``. Without balancing, a class covering
    most of the image (background) dominates the loss, and small structures are the last to be
    attacked although each is worth as much to mIoU (or mean Dice). ``class_weights=None`` takes
    the weights from each image's own label map, ``w_c = N / (C * n_c)`` (inverse class frequency,
    mean weight 1; :func:`balanced_class_weights`); the authors pass fixed weights ``(K,)``
    precomputed as the inverse class frequencies of the data set, which ``class_weights`` takes.

    Args:
        logits: dense logits ``(B, K, *spatial)`` (class logits ``(B, K)`` work too).
        y: class indices ``(B, *spatial)``.
        class_weights: a weight per class ``(K,)``, or None for each image's inverse class frequency.

    Raises:
        ValueError: for class weights that are not ``K`` finite non-negative numbers.
    """
    k = logits.shape[1]
    if class_weights is None:
        weights = balanced_class_weights(y, k).to(logits.dtype)
    else:
        w = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device).flatten()
        if w.numel() != k or not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(
                f"class_weights must be {k} finite non-negative numbers (one per class), got shape "
                f"{tuple(w.shape)}."
            )
        weights = w[y]
    ce = F.cross_entropy(logits, y, reduction="none")
    return mean_over_voxels(weights * _still_correct(logits, y) * ce)


def jensen_shannon_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_JS``: the Jensen-Shannon divergence of the prediction from the one-hot label, per voxel, averaged.

    ``mean_v JS(softmax(z_v) || e_{y_v})`` with ``JS(p || q) = (KL(p || m) + KL(q || m)) / 2``,
    ``m = (p + q) / 2``, in nats. It depends on the label's probability ``p`` alone,
    ``(p log(2p / (1 + p)) + (1 - p) log 2 + log(2 / (1 + p))) / 2``: 0 for a confident right voxel,
    at most ``log 2`` for a confident wrong one. Being bounded, it stops rewarding voxels already
    far wrong (unlike the cross-entropy) without a hard mask.

    Args:
        logits: dense logits ``(B, K, *spatial)`` (class logits ``(B, K)`` work too).
        y: class indices ``(B, *spatial)``.
    """
    log_p_y = F.log_softmax(logits, dim=1).gather(1, y.unsqueeze(1)).squeeze(1)
    return mean_over_voxels(_js_from_label_log_probability(log_p_y))


def _js_from_label_log_probability(log_p: torch.Tensor) -> torch.Tensor:
    """``JS(prediction || one-hot label)`` from the log-probability ``log p`` of the label, elementwise.

    JS depends on the label's probability alone; written with ``log p`` (and log1p/expm1) so that it
    stays finite where the other classes' probabilities underflow to 0.
    """
    p = log_p.exp()
    log2 = math.log(2.0)
    kl_pm = p * (log2 + log_p - torch.log1p(p)) - torch.expm1(log_p) * log2
    kl_qm = log2 - torch.log1p(p)
    return (kl_pm + kl_qm) / 2


def masked_spherical_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_Mask-Sph``: minus the label's logit on the unit sphere, over the voxels still right, averaged.

    ``mean_v -1[argmax z_v = y_v] * z_{v, y_v} / ||z_v||_2``: scale-free in the logits (it cannot be
    masked by large logits) and, like :func:`masked_cross_entropy_loss`, blind to fooled voxels.
    The fourth loss of SEA in the paper's first version (arXiv 2306.12941v1).

    Args:
        logits: dense logits ``(B, K, *spatial)`` (class logits ``(B, K)`` work too).
        y: class indices ``(B, *spatial)``.
    """
    z_y = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    norm = logits.norm(p=2, dim=1).clamp_min(torch.finfo(logits.dtype).tiny)
    return mean_over_voxels(-_still_correct(logits, y) * z_y / norm)


#: SEA's losses by name (``SegmentationAPGD(loss=...)``, ``SEA(losses=...)``)
SEA_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "mask-ce-bal": balanced_masked_cross_entropy_loss,
    "mask-ce": masked_cross_entropy_loss,
    "js": jensen_shannon_loss,
    "mask-sph": masked_spherical_loss,
}


# ------------------------------------------------------------------------------------------------
# the losses for multi-label (sigmoid) outputs: each (channel, voxel) is a binary decision
# ------------------------------------------------------------------------------------------------
def _right_decisions(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1 where the decision ``logits > 0`` still matches ``y > 0.5``, else 0; a constant for the gradient."""
    return ((logits.detach() > 0) == (y > 0.5)).to(logits.dtype)


def _per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).mean(dim=1)


def balanced_binary_weights(y: torch.Tensor) -> torch.Tensor:
    """Weights of the shape of multi-hot labels that make, per image and channel, the inside and the outside count equally.

    ``w = N / (C * n)`` for the ``N`` voxels of a channel, its ``C`` values present (1 or 2) and the
    ``n`` voxels sharing the voxel's value: :func:`balanced_class_weights` per channel.
    """
    t = (y > 0.5).reshape(y.shape[0], y.shape[1], -1)
    n = t.shape[2]
    pos = t.sum(dim=2, keepdim=True).to(torch.float64)
    neg = n - pos
    present = (pos > 0).to(torch.float64) + (neg > 0).to(torch.float64)
    return torch.where(t, n / (present * pos.clamp_min(1)), n / (present * neg.clamp_min(1))).reshape(y.shape)


@multilabel_loss
def masked_bce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_Mask-CE`` for sigmoid outputs: the binary cross-entropy of the decisions still right, averaged.

    ``mean_{k, v} 1[(z_kv > 0) = y_kv] * BCE(z_kv, y_kv)`` over channels and voxels, with the labels
    taken as ``y > 0.5``.

    Args:
        logits: sigmoid logits ``(B, K, *spatial)`` (or ``(B, K)``).
        y: multi-hot labels of the same shape.
    """
    t = (y > 0.5).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    return _per_sample_mean(_right_decisions(logits, y) * bce)


@multilabel_loss
def balanced_masked_bce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_Mask-CE-Bal`` for sigmoid outputs: :func:`masked_bce_loss` with each channel's inside and outside balanced.

    ``mean_{k, v} w_kv * 1[(z_kv > 0) = y_kv] * BCE(z_kv, y_kv)`` with the weights of
    :func:`balanced_binary_weights` (a small structure counts as much as its background).

    Args:
        logits: sigmoid logits ``(B, K, *spatial)`` (or ``(B, K)``).
        y: multi-hot labels of the same shape.
    """
    t = (y > 0.5).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    weights = balanced_binary_weights(y).to(logits.dtype)
    return _per_sample_mean(weights * _right_decisions(logits, y) * bce)


@multilabel_loss
def binary_jensen_shannon_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``L_JS`` for sigmoid outputs: the Jensen-Shannon divergence of each decision from its label, averaged.

    ``mean_{k, v} JS(Bernoulli(sigmoid(z_kv)) || Bernoulli(y_kv))``: the formula of
    :func:`jensen_shannon_loss` with ``p`` the probability given to the label's side,
    ``sigmoid(z)`` where ``y > 0.5`` and ``sigmoid(-z)`` elsewhere.

    Args:
        logits: sigmoid logits ``(B, K, *spatial)`` (or ``(B, K)``).
        y: multi-hot labels of the same shape.
    """
    log_p = F.logsigmoid(torch.where(y > 0.5, logits, -logits))
    return _per_sample_mean(_js_from_label_log_probability(log_p))


#: SEA's losses for multi-label sigmoid outputs (``activation="sigmoid"``), by name
SEA_MULTILABEL_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "mask-ce-bal": balanced_masked_bce_loss,
    "mask-ce": masked_bce_loss,
    "js": binary_jensen_shannon_loss,
}


def _loss_table(activation: str) -> dict[str, Callable[..., torch.Tensor]]:
    return SEA_MULTILABEL_LOSSES if activation == "sigmoid" else SEA_LOSSES


def _check_loss_name(loss: str, activation: str) -> None:
    if loss == "mask-sph" and activation == "sigmoid":
        raise ValueError(
            "the masked spherical loss 'mask-sph' has no multi-label form (a sigmoid channel's logit on the unit "
            f"sphere is +-1, without gradient); choose from {sorted(SEA_MULTILABEL_LOSSES)}."
        )
    if loss not in _loss_table(activation):
        raise ValueError(
            f"loss must be one of {sorted(_loss_table(activation))} or a callable, got {loss!r}."
        )


def _check_activation(activation: str) -> None:
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(
            f"activation must be 'softmax' (class logits, label maps of class indices or one-hot) or 'sigmoid' "
            f"(independent channels, multi-hot labels of the logits' shape), got {activation!r}."
        )


def _check_radius_schedule(
    schedule: Sequence[tuple[float, float]] | None,
) -> tuple[tuple[float, float], ...]:
    if schedule is None:
        return ((1.0, 1.0),)
    stages = tuple((float(f), float(r)) for f, r in schedule)
    if (
        not stages
        or any(not (f > 0 and np.isfinite(f)) or not (r > 0 and np.isfinite(r)) for f, r in stages)
        or not math.isclose(sum(f for f, _ in stages), 1.0, abs_tol=1e-6)
        or stages[-1][1] != 1.0
    ):
        raise ValueError(
            "radius_schedule must be (fraction of the iterations, radius / eps) pairs with positive fractions "
            f"summing to 1, positive radii and a last radius of 1 (the result lies in the eps-ball), got {schedule!r}."
        )
    return stages


def _pop_dense_rule(name: str, kwargs: dict[str, Any]) -> None:
    """SEA's own success rule replaces ``dense_success``/``dense_threshold``: refuse other settings."""
    success = kwargs.pop("dense_success", "voxels")
    threshold = kwargs.pop("dense_threshold", 0.0)
    if success != "voxels" or float(threshold) != 0.0:
        raise ValueError(
            f"{name} judges an attacked image by its pixel accuracy (the lowest wins; an image is done once no "
            f"voxel keeps its label), so dense_success={success!r} and dense_threshold={threshold!r} do not "
            "apply; leave them unset."
        )
    kwargs["dense_success"], kwargs["dense_threshold"] = "voxels", 0.0


def _refuse_targeted(name: str, kwargs: dict[str, Any]) -> None:
    if kwargs.get("targeted"):
        raise ValueError(
            f"{name} is untargeted (its losses move voxels away from their label); leave targeted unset."
        )


# ------------------------------------------------------------------------------------------------
# the attacks
# ------------------------------------------------------------------------------------------------
class SegmentationAPGD(APGD):
    """APGD on one of SEA's segmentation losses, with progressive radius reduction (Croce, Singh & Hein, ECCV 2024).

    The member attack of :class:`SEA`. It is :class:`~monai_adv.transforms.APGD` (step ``2 * radius``,
    momentum 0.75, step halving at the checkpoints) with three changes the paper makes for
    segmentation:

    - **The loss** is one of :data:`SEA_LOSSES` (``"mask-ce-bal"``, ``"mask-ce"``, ``"js"``,
      ``"mask-sph"``) or a callable ``(logits, y) -> (B,)``. The step-size checkpoints and the
      restarts from the best point follow the plain mean cross-entropy instead, as in the authors'
      code: a masked loss shrinks as its voxels get fooled, so its value does not say whether the
      attack is progressing.
    - **Progressive radius reduction**: the ``steps`` iterations are split into stages that run at
      a shrinking radius, by default 30% at ``2 * eps``, 30% at ``1.5 * eps`` and 40% at ``eps``
      (:data:`SEA_RADIUS_SCHEDULE`). Each stage is a fresh APGD run (its step size restarts at
      twice its radius) from the previous stage's result projected onto the smaller ball; the
      first starts at a random point of its ball. Exploring a larger ball first finds regions a
      small ball's optimisation gets stuck before.
    - **The result** of each stage is, per image, its iterate with the lowest pixel accuracy (the
      latest among equals), not the highest loss; an image stops early once no voxel keeps its
      label (its accuracy cannot fall further).

    **Multi-label (sigmoid) outputs** (``activation="sigmoid"``, e.g. BraTS' overlapping TC/WT/ET
    channels): the labels are multi-hot of the logits' shape, every (channel, voxel) is a binary
    decision ``logits > 0``, the losses are their binary forms (:data:`SEA_MULTILABEL_LOSSES`: the
    masked and the balanced masked binary cross-entropy, the Bernoulli Jensen-Shannon divergence;
    the spherical loss has none), the pixel accuracy counts the decisions that match the labels,
    and APGD's step-size rule follows the mean binary cross-entropy. This extension is ours; the
    paper treats softmax outputs.

    Args:
        network: the segmentation network, returning ``(B, K, *spatial)`` logits.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn per call.
        steps: iterations in all (the paper: 300 per loss; a quick check: 10-20).
        norm: ``"linf"`` (the paper) or ``"l2"``.
        loss: a name in :data:`SEA_LOSSES` (:data:`SEA_MULTILABEL_LOSSES` for sigmoid outputs) or a
            callable per-sample loss ``(logits, y) -> (B,)`` (for sigmoid outputs, one marked with
            :func:`~monai_adv.transforms.losses.multilabel_loss`).
        class_weights: for ``"mask-ce-bal"`` on softmax outputs: a weight per class ``(K,)``, or None
            for each image's inverse class frequency (:func:`balanced_masked_cross_entropy_loss`).
        radius_schedule: ``(fraction of the steps, radius / eps)`` per stage, the fractions summing
            to 1 and the last radius 1; None: one stage at ``eps`` (plain APGD on the loss).
        rho: the checkpoint condition's fraction of increasing steps (0.75 in APGD).
        activation: ``"softmax"`` (class logits) or ``"sigmoid"`` (multi-label outputs, above).
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack` (untargeted only; the
            success rule is SEA's, so ``dense_success``/``dense_threshold`` stay unset).

    Raises:
        ValueError: for an unknown loss or activation, a bad radius schedule, ``targeted=True``, a
            ``dense_success``/``dense_threshold`` other than SEA's rule, ``class_weights`` with
            sigmoid outputs, or a loss of the other kind than ``activation``.

    Example::

        atk = SegmentationAPGD(seg_net, eps=4 / 255, steps=300, loss="mask-ce")
        x_adv = atk(images, label_maps)   # label_maps: (B, 1, H, W) class indices
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        steps: int = 300,
        norm: str = "linf",
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "mask-ce",
        class_weights: torch.Tensor | Sequence[float] | None = None,
        radius_schedule: Sequence[tuple[float, float]] | None = SEA_RADIUS_SCHEDULE,
        rho: float = 0.75,
        activation: str = "softmax",
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        _check_activation(activation)
        _refuse_targeted(name, kwargs)
        _pop_dense_rule(name, kwargs)
        for key in ("n_restarts", "n_target_classes"):
            if key in kwargs:
                raise ValueError(f"{name} runs one APGD run per radius stage; {key} does not apply.")
        if class_weights is not None and activation == "sigmoid":
            raise ValueError(
                "class_weights weigh the classes of softmax outputs; with activation='sigmoid' 'mask-ce-bal' balances "
                "each channel's inside and outside by itself: leave class_weights unset."
            )
        if isinstance(loss, str):
            _check_loss_name(loss, activation)
            loss_name, loss_fn = loss, _loss_table(activation)[loss]
            if loss == "mask-ce-bal" and class_weights is not None:
                loss_fn = functools.partial(loss_fn, class_weights=class_weights)
        elif callable(loss):
            loss_name, loss_fn = getattr(loss, "__name__", "custom"), loss
            if is_multilabel_loss(loss) != (activation == "sigmoid"):
                raise ValueError(
                    f"the loss {loss_name!r} is {'a multi-label' if is_multilabel_loss(loss) else 'a softmax'} loss but "
                    f"activation={activation!r}; multi-label losses (marked with multilabel_loss) go with 'sigmoid'."
                )
        else:
            raise ValueError(
                f"loss must be one of {sorted(_loss_table(activation))} or a callable, got {loss!r}."
            )
        super().__init__(network, eps, steps=steps, norm=norm, loss=loss_fn, rho=rho, **kwargs)
        self.loss_name = loss_name
        self.class_weights = class_weights
        self.radius_schedule = _check_radius_schedule(radius_schedule)
        self.activation = activation

    def describe(self) -> dict[str, Any]:
        """:meth:`APGD.describe` named ``SegmentationAPGD-<loss>-<steps>``, with the loss and the radius schedule."""
        d = super().describe()
        d.update(
            name=f"{type(self).__name__}-{self.loss_name}-{self.steps}",
            loss=self.loss_name,
            activation=self.activation,
            radius_schedule=[list(stage) for stage in self.radius_schedule],
        )
        return d

    def stages(self) -> list[tuple[int, float]]:
        """``(iterations, radius / eps)`` of each stage; every stage but the last gets ``int(fraction * steps)``.

        Stages left without iterations (few steps) are skipped.
        """
        counts = [int(f * self.steps) for f, _ in self.radius_schedule[:-1]]
        counts.append(self.steps - sum(counts))
        return [(n, r) for n, (_, r) in zip(counts, self.radius_schedule) if n > 0]

    def iterate_score(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each run keeps, per image, its iterate with the lowest pixel accuracy."""
        return pixel_accuracy(logits, y, self.multilabel)

    def is_adversarial(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """An image is done once no voxel keeps its label: its pixel accuracy cannot fall further."""
        return pixel_accuracy(logits, y, self.multilabel) == 0

    def _attack(self, x, y, mask, generator):
        eps = self.current_eps
        x_adv = None  # the first stage starts at a random point of its ball
        for steps, radius in self.stages():
            x_adv, _, _ = self._single_run(x, y, mask, radius * eps, generator, x_init=x_adv, steps=steps)
        return x_adv

    def _grad(self, x_adv, y, target=None):
        # the gradient of SEA's loss; the value APGD's step-size rule and best point follow is the
        # plain mean cross-entropy (a masked loss falls as voxels get fooled, whatever the progress)
        grad, _, logits = self.objective_and_grad(x_adv, y)
        tracked = per_sample_bce(logits, y) if self.multilabel else per_sample_cross_entropy(logits, y)
        return grad, tracked, logits


class SEA(WorstCaseEnsemble):
    """SEA, the Segmentation Ensemble Attack (Croce, Singh & Hein, "Towards Reliable Evaluation and Fast
    Training of Robust Semantic Segmentation Models", ECCV 2024).

    Runs :class:`SegmentationAPGD` once per loss in ``losses`` (by default the authors' final
    ensemble :data:`SEA_DEFAULT_LOSSES`: the class-balanced masked cross-entropy, the masked
    cross-entropy and the Jensen-Shannon divergence; ``"mask-sph"``, the masked spherical loss of
    the paper's first version, can be added), each with ``steps`` iterations and the progressive
    radius reduction, and returns **per image the attacked image with the lowest pixel accuracy**
    (the fraction of voxels predicted as their label; ties go to the earlier loss). That is the
    authors' worst case for accuracy; they report the mIoU of these images too, and any metric can
    be computed on them. An image whose accuracy reaches 0 is not attacked by the remaining losses
    (nothing is left to fool). The result always lies in the eps-ball around the input.

    The cost is ``len(losses) * steps`` forward and backward passes per image (the paper: 3 x 300);
    ``steps=20`` with one or two losses makes a quick check.

    With ``activation="sigmoid"`` it attacks multi-label outputs (multi-hot labels of the logits'
    shape, e.g. BraTS' overlapping channels) with the binary forms of the losses, and the pixel
    accuracy counts the (channel, voxel) decisions ``logits > 0`` that match the labels (see
    :class:`SegmentationAPGD`; our extension).

    Args:
        network: the segmentation network, returning ``(B, K, *spatial)`` logits.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn once per call
            (the same radius for every loss).
        steps: iterations per loss (the paper: 300).
        norm: ``"linf"`` (the paper) or ``"l2"``.
        losses: names from :data:`SEA_LOSSES` (:data:`SEA_MULTILABEL_LOSSES` for sigmoid outputs), or
            callable per-sample losses ``(logits, y) -> (B,)`` named by their ``__name__``, in the
            order they run.
        class_weights: for ``"mask-ce-bal"`` on softmax outputs: a weight per class ``(K,)``, or None
            for each image's inverse class frequency.
        radius_schedule: see :class:`SegmentationAPGD` (None: no radius reduction).
        activation: ``"softmax"`` (class logits) or ``"sigmoid"`` (multi-label outputs, above).
        kwargs: ``value_range``, ``spatial_dims``, ``inferer``, ``amp``, ``output_transform``, ...
            for the ensemble and every member (see :class:`~monai_adv.transforms.base.AdversarialAttack`);
            untargeted only, and ``dense_success``/``dense_threshold`` stay unset.

    Raises:
        ValueError: for no losses, an unknown or repeated loss, a bad eps, norm or activation, a
            ``loss=`` (for sigmoid outputs: ``activation="sigmoid"``), or the settings
            :class:`SegmentationAPGD` refuses.

    Example::

        sea = SEA(seg_net, eps=4 / 255).set_random_state(0)          # the paper's budget
        quick = SEA(seg_net, eps=4 / 255, steps=20, losses=("mask-ce",))
        x_adv = sea(images, label_maps)
        sea.last_success   # per loss, the images it took to pixel accuracy 0
    """

    supported_norms = NormBoundedAttack.supported_norms

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        steps: int = 300,
        norm: str = "linf",
        losses: Sequence[str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = SEA_DEFAULT_LOSSES,
        class_weights: torch.Tensor | Sequence[float] | None = None,
        radius_schedule: Sequence[tuple[float, float]] | None = SEA_RADIUS_SCHEDULE,
        activation: str = "softmax",
        **kwargs: Any,
    ) -> None:
        _check_activation(activation)
        table = _loss_table(activation)
        if "loss" in kwargs:
            hint = (
                " (for sigmoid outputs: activation='sigmoid')"
                if kwargs["loss"] in ("bce", per_sample_bce)
                else ""
            )
            raise ValueError(
                f"SEA runs one attack per loss: choose them with losses=... (from {sorted(table)}){hint}."
            )
        _refuse_targeted("SEA", kwargs)
        _pop_dense_rule("SEA", kwargs)
        losses = (losses,) if isinstance(losses, str) or callable(losses) else tuple(losses)
        if not losses:
            raise ValueError(f"SEA needs at least one loss from {sorted(table)}.")
        for loss in losses:
            if isinstance(loss, str) and loss == "mask-sph":
                _check_loss_name(loss, activation)
        bad = [loss for loss in losses if not callable(loss) and loss not in table]
        names = tuple(
            loss if isinstance(loss, str) else getattr(loss, "__name__", "custom") for loss in losses
        )
        if bad or len(set(names)) != len(names):
            raise ValueError(
                f"losses must be distinct names from {sorted(table)} (or callables), got {list(names)}"
                + (f" (unknown: {bad})." if bad else " (repeated).")
            )
        self.eps = NormBoundedAttack._check_eps(eps)
        norm = str(norm).lower()
        if norm not in self.supported_norms:
            raise ValueError(f"norm must be one of {self.supported_norms} for SEA, got {norm!r}.")
        first_eps = self.eps[0] if isinstance(self.eps, tuple) else self.eps
        members = [
            SegmentationAPGD(
                network,
                first_eps,
                steps=steps,
                norm=norm,
                loss=loss,
                class_weights=class_weights,
                radius_schedule=radius_schedule,
                activation=activation,
                **kwargs,
            )
            for loss in losses
        ]
        # the ensemble reads multi-hot labels for sigmoid outputs (its loss is used for nothing else)
        super().__init__(network, members, loss=per_sample_bce if activation == "sigmoid" else None, **kwargs)
        self.norm = norm
        self.steps = members[0].steps
        self.losses = names
        self.class_weights = class_weights
        self.radius_schedule = members[0].radius_schedule
        self.activation = activation

    def randomize(self, data: Any = None) -> None:
        """Seed the members from the ensemble's stream and draw this call's eps, one for every loss."""
        super().randomize(data)
        self._eps_value = (
            float(self.R.uniform(self.eps[0], self.eps[1]))
            if isinstance(self.eps, tuple)
            else float(self.eps)
        )
        for atk in self.attacks:
            atk.eps = self._eps_value

    @property
    def current_eps(self) -> float:
        """The eps of the latest call (drawn from the range when ``eps`` is a tuple)."""
        return getattr(self, "_eps_value", self.eps if not isinstance(self.eps, tuple) else float("nan"))

    def is_adversarial(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """An image is done once no voxel keeps its label; the remaining losses skip it."""
        return pixel_accuracy(logits, y, self.multilabel) == 0

    def _attack(self, x, y, mask, generator):
        x_adv = super()._attack(x, y, mask, generator)
        # report each member's count under its loss's name
        names = {f"{i}:{type(atk).__name__}": atk.loss_name for i, atk in enumerate(self.attacks)}
        self.last_success = {names.get(k, k): v for k, v in self.last_success.items()}
        return x_adv

    def with_network(self, network: nn.Module | Callable[[torch.Tensor], Any]) -> SEA:
        """A shallow copy of this attack, and of its members, aimed at another network."""
        clone = super().with_network(network)
        clone.attacks = [atk.with_network(network) for atk in self.attacks]
        return clone

    def describe(self) -> dict[str, Any]:
        """Name ``SEA-<steps>`` (``SEA(<losses>)-<steps>`` for another set of losses), eps, norm, steps per loss, losses."""
        d = super().describe()
        losses = "" if self.losses == SEA_DEFAULT_LOSSES else f"({'+'.join(self.losses)})"
        d.update(
            name=f"SEA{losses}-{self.steps}",
            eps=list(self.eps) if isinstance(self.eps, tuple) else self.eps,
            norm=self.norm,
            steps=self.steps,
            total_steps=self.steps * len(self.losses),
            losses=list(self.losses),
            activation=self.activation,
            radius_schedule=[list(stage) for stage in self.radius_schedule],
        )
        return d
