"""Detection quality from scores: AUROC, the ROC curve and the true-positive rate at a threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["detection_auroc", "detection_roc_curve", "tpr_at_threshold", "tpr_at_fpr"]


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
    allv = np.concatenate([neg, pos])
    # average ranks (1-based), ties share their mean rank
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, dtype=np.float64)
    sorted_v = allv[order]
    i = 0
    while i < allv.size:
        j = i
        while j + 1 < allv.size and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
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
