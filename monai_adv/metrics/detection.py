"""Detection quality from scores: AUROC (over all attacked inputs or successful attacks only), the ROC curve,
the true-positive rate at a threshold, the referral curve, and one summary of a classifier-and-detector system."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

__all__ = [
    "detection_auroc",
    "detection_roc_curve",
    "tpr_at_threshold",
    "tpr_at_fpr",
    "referral_curve",
    "detection_summary",
    "RISK_PRIORS",
]

#: the attack priors at which :func:`detection_summary` reports the system risk
RISK_PRIORS = (0.01, 0.1, 0.5)


def _as_1d(scores: Any, name: str) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    a = np.asarray(scores, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf values.")
    return a


def detection_auroc(clean_scores: Any, adv_scores: Any) -> float:
    """Area under the ROC curve for telling adversarial (positive) from clean (negative) scores.

    Equals the probability that a random adversarial score exceeds a random clean one, ties
    counting one half (the Mann-Whitney statistic): 1.0 for perfectly separated scores, 0.5 for
    identical distributions.

    Raises:
        ValueError: for empty inputs or NaN/Inf scores.
    """
    neg, pos = _as_1d(clean_scores, "clean_scores"), _as_1d(adv_scores, "adv_scores")
    # the Mann-Whitney U of the adversarial scores from their average ranks (ties share their mean rank)
    ranks = rankdata(np.concatenate([neg, pos]), method="average")
    rank_pos = ranks[neg.size :].sum()
    return float((rank_pos - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def detection_roc_curve(clean_scores: Any, adv_scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` of the rule "flag when score > threshold", from (0, 0) to (1, 1)."""
    neg, pos = _as_1d(clean_scores, "clean_scores"), _as_1d(adv_scores, "adv_scores")
    thr = np.unique(np.concatenate([neg, pos]))[::-1]
    # "score > t" for t = each observed score from the top (the first point is (0, 0)), then -inf (all)
    thresholds = np.concatenate([thr, [-np.inf]])
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    fpr = 1.0 - np.searchsorted(neg_sorted, thresholds, side="right") / neg.size
    tpr = 1.0 - np.searchsorted(pos_sorted, thresholds, side="right") / pos.size
    return fpr, tpr, thresholds


def tpr_at_threshold(adv_scores: Any, threshold: float) -> float:
    """Fraction of adversarial scores strictly above ``threshold`` (the detection rule's TPR)."""
    return float((_as_1d(adv_scores, "adv_scores") > threshold).mean())


def tpr_at_fpr(clean_scores: Any, adv_scores: Any, fpr: float = 0.05) -> float:
    """TPR when the threshold is the ``1 - fpr`` quantile of these clean scores (an oracle threshold).

    Raises:
        ValueError: for fpr outside (0, 1).
    """
    if not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr must lie in (0, 1), got {fpr!r}.")
    neg = _as_1d(clean_scores, "clean_scores")
    thr = float(np.quantile(neg, 1.0 - float(fpr), method="higher"))
    return tpr_at_threshold(adv_scores, thr)


def referral_curve(scores: Any, correct: Any) -> dict[str, np.ndarray]:
    """Accuracy on the accepted inputs against the share referred, as the rejection threshold falls.

    Items are referred from the highest score down (ties together); the curve starts at referral 0
    (every item accepted: the plain accuracy) and ends before every item is referred.

    Args:
        scores: detector scores ``(N,)`` (higher: refer first).
        correct: 1 where the classifier is right ``(N,)``.

    Returns:
        ``{"referral_rate", "accepted_accuracy", "threshold"}``: arrays of equal length; an item is
        accepted when its score is <= the threshold.

    Raises:
        ValueError: for empty or mismatched inputs, or NaN/Inf scores.
    """
    s = _as_1d(scores, "scores")
    c = _as_1d(correct, "correct")
    if s.size != c.size:
        raise ValueError(f"scores has {s.size} items and correct {c.size}.")
    order = np.argsort(s, kind="mergesort")
    s_sorted, c_sorted = s[order], c[order]
    # accept the k lowest scores, for every k at which the score changes (ties stay together)
    ends = np.concatenate([np.nonzero(np.diff(s_sorted))[0] + 1, [s.size]])
    cum = np.cumsum(c_sorted)
    accepted = ends[::-1]
    return {
        "referral_rate": 1.0 - accepted / s.size,
        "accepted_accuracy": cum[accepted - 1] / accepted,
        "threshold": s_sorted[accepted - 1],
    }


def detection_summary(
    clean_scores: Any,
    adv_scores: Any,
    clean_correct: Any,
    adv_correct: Any,
    threshold: float | None = None,
    priors: tuple[float, ...] = RISK_PRIORS,
    **costs: float,
) -> dict[str, Any]:
    """What a classifier with a detector does against one attack, per the conventions of the literature.

    Args:
        clean_scores: detector scores of the clean inputs ``(N,)``.
        adv_scores: scores of their attacked versions ``(N,)`` (same order).
        clean_correct: 1 where the clean input is classified right.
        adv_correct: 1 where the attacked input is classified right.
        threshold: the detector's calibrated threshold (flag when score > threshold); ``None`` leaves
            the threshold-dependent numbers out.
        priors: attack priors of the system risk (``docs/risk_metric.md``).
        costs: ``cost_error``, ``cost_false_alarm``, ``cost_detected_attack`` of
            :func:`~monai_adv.metrics.compute_adversarial_risk`.

    Returns:
        ``n``, ``clean_accuracy``, ``adversarial_accuracy``, ``n_success`` (clean right, attacked
        wrong), ``auroc_all`` (clean vs every attacked input), ``auroc_success`` (clean vs successful
        attacks only; ``None`` without any), and with a threshold ``clean_flag_rate``, ``tpr_at_fpr``
        (successful attacks flagged), ``undetected_error`` (attacked inputs misclassified and not
        flagged), ``accepted_accuracy`` (clean accuracy on the accepted clean inputs) and ``risk``
        (system risk by prior).

    Raises:
        ValueError: for mismatched lengths, no items, or NaN/Inf scores.
    """
    from monai_adv.metrics.risk import compute_adversarial_risk

    cs, as_ = _as_1d(clean_scores, "clean_scores"), _as_1d(adv_scores, "adv_scores")
    cc, ac = _as_1d(clean_correct, "clean_correct") > 0.5, _as_1d(adv_correct, "adv_correct") > 0.5
    if not cs.size == as_.size == cc.size == ac.size:
        raise ValueError(
            f"clean_scores, adv_scores, clean_correct and adv_correct must have one entry per item, got "
            f"{cs.size}, {as_.size}, {cc.size}, {ac.size}."
        )
    success = cc & ~ac
    out: dict[str, Any] = {
        "n": int(cs.size),
        "clean_accuracy": float(cc.mean()),
        "adversarial_accuracy": float(ac.mean()),
        "n_success": int(success.sum()),
        "auroc_all": detection_auroc(cs, as_),
        "auroc_success": detection_auroc(cs, as_[success]) if success.any() else None,
    }
    if threshold is not None:
        cf, af = cs > threshold, as_ > threshold
        out["clean_flag_rate"] = float(cf.mean())
        out["tpr_at_fpr"] = float(af[success].mean()) if success.any() else None
        out["undetected_error"] = float((~ac & ~af).mean())
        out["accepted_accuracy"] = float(cc[~cf].mean()) if (~cf).any() else None
        t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
        out["risk"] = {
            str(p): compute_adversarial_risk(t(~cc), t(~ac), t(cf), t(af), attack_prior=p, **costs)[
                "risk_system"
            ]
            for p in priors
        }
    return out
