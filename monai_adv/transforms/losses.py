"""Per-sample attack losses: cross-entropy, DLR (Croce & Hein 2020), the C&W margin, KL (TRADES), Dice,
and binary cross-entropy for multi-label (sigmoid) outputs.

Every loss takes class logits ``(B, K)`` with labels ``(B,)``, or dense logits ``(B, K, *spatial)``
with dense labels ``(B, *spatial)`` (class indices, no channel axis), and returns one value per
sample ``(B,)``: for dense outputs the per-voxel loss averaged over the voxels.

**Multi-label losses** (:func:`per_sample_bce`, or any loss marked with :func:`multilabel_loss`)
are for networks whose outputs are independent sigmoid logits, one per label (a multi-label
classifier) or per channel (BraTS-style overlapping tumour regions): they take the logits with
multi-hot labels *of the logits' shape*, ``(B, K)`` or ``(B, K, *spatial)`` in [0, 1]. An attack
given such a loss (``PGD(net, eps, loss="bce")``) reads its labels that way and judges success on
the thresholded prediction ``logits > 0`` (see :class:`~monai_adv.transforms.AdversarialAttack`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

__all__ = [
    "per_sample_cross_entropy",
    "dlr_loss",
    "targeted_dlr_loss",
    "margin",
    "per_sample_kl",
    "kl_attack_loss",
    "mean_over_voxels",
    "per_sample_dice_loss",
    "per_sample_dice",
    "segpgd_loss",
    "cospgd_loss",
    "per_sample_bce",
    "multilabel_loss",
    "is_multilabel_loss",
    "resolve_attack_loss",
    "ATTACK_LOSSES",
    "multilabel_margin",
    "multilabel_agreement",
]


def mean_over_voxels(t: torch.Tensor) -> torch.Tensor:
    """A per-voxel value ``(B, *spatial)`` averaged over the voxels, ``(B,)``; a ``(B,)`` tensor is returned as is."""
    return t if t.ndim == 1 else t.flatten(1).mean(dim=1)


def per_sample_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample, ``(B,)``; for dense outputs the mean voxel cross-entropy."""
    return mean_over_voxels(F.cross_entropy(logits, y, reduction="none"))


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j``: positive while ``y`` wins, negative once another class does.

    One value per sample ``(B,)`` for class logits, one per voxel ``(B, *spatial)`` for dense logits.
    """
    true = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    is_true = F.one_hot(y, logits.shape[1]).movedim(-1, 1).bool()
    others = logits.masked_fill(is_true, float("-inf"))
    return true - others.amax(dim=1)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio, untargeted (Croce & Hein 2020, eq. 6).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi`` the logits sorted in decreasing
    order: invariant to shifting and rescaling the logits, so it cannot be masked by logit scaling.
    For dense outputs it is computed per voxel and averaged.

    Raises:
        ValueError: for fewer than 3 classes.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the network has {logits.shape[1]}.")
    z_sorted = logits.sort(dim=1, descending=True).values
    return mean_over_voxels(-margin(logits, y) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12))


def targeted_dlr_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7) from the target alone.

    ``-(z_t - max_{j != t} z_j) / (z_pi1 - (z_pi3 + z_pi4) / 2)``: the paper's ``z_y`` is taken as the
    strongest non-target logit, which equals it whenever the true class leads (the case the targeted
    attack starts from). A targeted attack *decreases* this loss.

    Raises:
        ValueError: for fewer than 4 classes.
    """
    if logits.shape[1] < 4:
        raise ValueError(
            f"the targeted DLR loss needs at least 4 classes, the network has {logits.shape[1]}."
        )
    z_sorted = logits.sort(dim=1, descending=True).values
    return mean_over_voxels(
        -margin(logits, target) / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)
    )


def per_sample_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(p) || softmax(q))`` per sample ``(B,)`` (dense: averaged over voxels); gradients flow into both."""
    log_p = F.log_softmax(p_logits, dim=1)
    log_q = F.log_softmax(q_logits, dim=1)
    return mean_over_voxels((log_p.exp() * (log_p - log_q)).sum(dim=1))


def kl_attack_loss(clean_logits: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An attack loss ``loss(logits, y) = KL(softmax(clean) || softmax(logits))`` per sample (TRADES' inner max).

    The labels are ignored; ``clean_logits`` are detached. An attack with this loss must start from a
    random point (the KL gradient is zero at the clean input).
    """
    clean = clean_logits.detach()

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_kl(clean.to(logits.dtype), logits)

    return loss


# ------------------------------------------------------------------------------------------------
# dense (segmentation) outputs
# ------------------------------------------------------------------------------------------------
def _require_dense(logits: torch.Tensor, name: str) -> None:
    if logits.ndim < 3:
        raise ValueError(
            f"{name} is a loss for dense outputs (B, K, *spatial); got logits of shape {tuple(logits.shape)}."
        )


def per_sample_dice_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    include_background: bool = True,
    squared_pred: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss of each sample ``(B,)``, from :class:`monai.losses.DiceLoss` on the softmax of the logits.

    ``DiceLoss(to_onehot_y=True, softmax=True, reduction="none")`` gives one loss per sample and
    class; they are averaged over the classes. Pass options with ``functools.partial``, e.g.
    ``loss=partial(per_sample_dice_loss, include_background=False)``.

    Args:
        logits: dense logits ``(B, K, *spatial)``.
        y: class indices ``(B, *spatial)``.
        include_background: keep class 0 in the average (MONAI's ``include_background``).
        squared_pred: square the predictions in the denominator (MONAI's ``squared_pred``).
        smooth_nr: added to the numerator (MONAI's ``smooth_nr``).
        smooth_dr: added to the denominator (MONAI's ``smooth_dr``).

    Raises:
        ValueError: for logits that are not dense.
    """
    _require_dense(logits, "per_sample_dice_loss")
    dice = DiceLoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        squared_pred=squared_pred,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        reduction="none",
    )
    return dice(logits, y.unsqueeze(1)).flatten(1).mean(dim=1)


def per_sample_dice(pred: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Hard Dice of a predicted label map to a reference one, per sample ``(B,)``.

    ``2 |P_c & L_c| / (|P_c| + |L_c|)`` averaged over the classes ``c`` that occur in the prediction
    or the reference (a class in neither is skipped, so a perfect prediction scores 1 and one that
    shares no voxel with the reference scores 0).

    Args:
        pred: predicted class indices ``(B, *spatial)``.
        y: reference class indices ``(B, *spatial)``.
        num_classes: ``K``.
    """
    p = F.one_hot(pred.flatten(1), num_classes).to(torch.float64)  # (B, N, K)
    t = F.one_hot(y.flatten(1), num_classes).to(torch.float64)
    inter = (p * t).sum(dim=1)
    sizes = p.sum(dim=1) + t.sum(dim=1)
    present = sizes > 0
    dice = torch.where(present, 2 * inter / sizes.clamp_min(1), torch.zeros_like(inter))
    return (dice.sum(dim=1) / present.sum(dim=1).clamp_min(1)).to(torch.float32)


def segpgd_loss(logits: torch.Tensor, y: torch.Tensor, lam: float, targeted: bool = False) -> torch.Tensor:
    """SegPGD's weighted voxel cross-entropy, per sample (Gu et al., ECCV 2022, eq. 6).

    ``((1 - lam) * sum_{correct} CE + lam * sum_{wrong} CE) / N`` over the ``N`` voxels, where
    "correct" voxels are those the network still predicts as ``y``. Early iterations (small ``lam``)
    spend the gradient on the voxels that are not yet fooled. Targeted (``y`` the target), the roles
    swap: weight ``1 - lam`` on the voxels not yet at the target, ``lam`` on those already there.

    Args:
        logits: dense logits ``(B, K, *spatial)`` (class logits ``(B, K)`` work too: one voxel each).
        y: class indices ``(B, *spatial)`` (the target when ``targeted``).
        lam: the weight ``lambda`` in [0, 1] (SegPGD's schedule: ``(t - 1) / (2T)`` at step ``t`` of ``T``).
        targeted: whether ``y`` is the target.

    Raises:
        ValueError: for ``lam`` outside [0, 1].
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam!r}.")
    ce = F.cross_entropy(logits, y, reduction="none")
    at_y = logits.argmax(dim=1) == y
    # the voxels the attack still has to move: correct ones (untargeted), not yet at the target (targeted)
    to_move = ~at_y if targeted else at_y
    weights = torch.where(to_move, 1.0 - float(lam), float(lam)).to(ce.dtype)
    return mean_over_voxels(weights.detach() * ce)


def cospgd_loss(
    logits: torch.Tensor, y: torch.Tensor, targeted: bool = False, activation: str = "sigmoid"
) -> torch.Tensor:
    """CosPGD's voxel cross-entropy weighted by prediction-label cosine similarity (Agnihotri et al., ICML 2024).

    ``mean_v cos(psi(z_v), onehot(y_v)) * CE_v`` with ``psi`` the sigmoid of the logits (as in the
    paper; ``activation="softmax"`` as in the authors' code). The weight is large where the voxel is
    still confidently right and shrinks as it is fooled, so the gradient goes where it is needed.
    Targeted (``y`` the target), the weight is ``1 - cos``. The weights are constants for the
    gradient (detached), as in the reference implementation.

    Args:
        logits: dense logits ``(B, K, *spatial)`` (class logits ``(B, K)`` work too).
        y: class indices ``(B, *spatial)`` (the target when ``targeted``).
        targeted: whether ``y`` is the target.
        activation: ``"sigmoid"`` or ``"softmax"``.

    Raises:
        ValueError: for an unknown activation.
    """
    if activation not in ("sigmoid", "softmax"):
        raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}.")
    probs = torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=1)
    onehot = F.one_hot(y, logits.shape[1]).movedim(-1, 1).to(probs.dtype)
    cos = F.cosine_similarity(probs, onehot, dim=1)
    weights = 1.0 - cos if targeted else cos
    return mean_over_voxels(weights.detach() * F.cross_entropy(logits, y, reduction="none"))


# ------------------------------------------------------------------------------------------------
# multi-label (sigmoid) outputs
# ------------------------------------------------------------------------------------------------
def multilabel_loss(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """Mark ``fn`` as a multi-label loss: attacks then pass it multi-hot labels of the logits' shape.

    ``fn(logits, y)`` gets sigmoid logits ``(B, K)`` or ``(B, K, *spatial)`` and float labels of the
    same shape in [0, 1], and returns one value per sample ``(B,)``. Use it on a loss of your own::

        @multilabel_loss
        def focal(logits, y):
            return torchvision.ops.sigmoid_focal_loss(logits, y, reduction="none").flatten(1).mean(1)

        atk = PGD(net, eps=0.01, loss=focal)
    """
    fn.multilabel = True  # type: ignore[attr-defined]
    return fn


def is_multilabel_loss(loss: Any) -> bool:
    """Whether ``loss`` was marked with :func:`multilabel_loss` (also behind ``functools.partial``)."""
    return bool(
        getattr(loss, "multilabel", False) or getattr(getattr(loss, "func", None), "multilabel", False)
    )


@multilabel_loss
def per_sample_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with logits of each sample ``(B,)``: the mean over its labels (and voxels).

    ``mean_{k, v} BCE(sigmoid(z_kv), y_kv)``: the loss of a multi-label classifier (``(B, K)``) or of
    a sigmoid segmentation network with one binary mask per channel (``(B, K, *spatial)``, e.g. the
    BraTS regions TC/WT/ET, which overlap). The attack loss ``loss="bce"``.

    Args:
        logits: sigmoid logits ``(B, K)`` or ``(B, K, *spatial)``.
        y: multi-hot labels of the same shape, in [0, 1].

    Raises:
        ValueError: when the shapes differ.
    """
    if tuple(y.shape) != tuple(logits.shape):
        raise ValueError(
            f"per_sample_bce needs multi-hot labels of the logits' shape {tuple(logits.shape)}, got {tuple(y.shape)}."
        )
    bce = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")
    return bce.flatten(1).mean(dim=1)


#: the attack losses that may be named by a string (``loss="bce"``); ``"ce"`` is the default (None)
ATTACK_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None] = {
    "ce": None,
    "bce": per_sample_bce,
}


def resolve_attack_loss(loss: str | Callable | None) -> Callable | None:
    """An attack's ``loss`` argument as a callable (None: the default cross-entropy).

    Args:
        loss: None, a callable, or a name of :data:`ATTACK_LOSSES` (``"ce"``, ``"bce"``).

    Raises:
        ValueError: for an unknown name.
        TypeError: for anything else that is not callable.
    """
    if loss is None or callable(loss):
        return loss
    if isinstance(loss, str):
        name = loss.lower()
        if name not in ATTACK_LOSSES:
            raise ValueError(
                f"unknown attack loss {loss!r}: use one of {sorted(ATTACK_LOSSES)} or a callable."
            )
        return ATTACK_LOSSES[name]
    raise TypeError(
        f"loss must be None, a name {sorted(ATTACK_LOSSES)} or a callable, got {type(loss).__name__}."
    )


def multilabel_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The smallest signed logit ``min_k (2 y_k - 1) z_k`` over the labels (channel axis 1).

    Positive while every label is predicted as given (``z_k > 0`` exactly where ``y_k`` is 1), negative
    once one of them flips. One value per sample ``(B,)`` for ``(B, K)`` logits, per voxel
    ``(B, *spatial)`` for dense ones.
    """
    sign = (y > 0.5).to(logits.dtype) * 2 - 1
    return (sign * logits).amin(dim=1)


def multilabel_agreement(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample agreement ``(B,)`` in [0, 1] of the thresholded prediction ``logits > 0`` with multi-hot labels.

    Class logits ``(B, K)``: the fraction of labels predicted as given. Dense logits ``(B, K,
    *spatial)``: the Dice of each channel's mask with the label's, averaged over the channels present
    in either (1 when none is).
    """
    pred = logits > 0
    ref = y > 0.5
    if logits.ndim == 2:
        return (pred == ref).to(torch.float32).mean(dim=1)
    p, t = pred.flatten(2).to(torch.float64), ref.flatten(2).to(torch.float64)
    inter = (p * t).sum(dim=2)
    sizes = p.sum(dim=2) + t.sum(dim=2)
    present = sizes > 0
    dice = torch.where(present, 2 * inter / sizes.clamp_min(1), torch.zeros_like(inter))
    n = present.sum(dim=1)
    return torch.where(n > 0, dice.sum(dim=1) / n.clamp_min(1), torch.ones_like(dice[:, 0])).to(torch.float32)
