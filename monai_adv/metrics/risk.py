"""The system adversarial-risk metric: classifier and detector scored together.

An attack only hurts a system with a detector when it is both *missed* by the detector and
*misclassified*; a false alarm on a clean input costs something too (a referral to a human). The
definitions, with a worked example, are in ``docs/risk_metric.md``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.metrics import CumulativeIterationMetric

from monai_adv.utils import predicted_classes

__all__ = ["AdversarialRiskMetric", "RISK_KEYS", "compute_adversarial_risk", "risk_inputs"]

#: the quantities :meth:`AdversarialRiskMetric.aggregate` returns, in order
RISK_KEYS = (
    "n",
    "clean_error",
    "adversarial_error",
    "false_alarm_rate",
    "detection_rate",
    "missed_attack_rate",
    "undetected_clean_error",
    "undetected_error",
    "risk_classifier",
    "risk_detector",
    "risk_system",
    "risk_reduction",
)


def risk_inputs(pred: Any, adv_pred: Any, flag: Any, adv_flag: Any) -> torch.Tensor:
    """Stack one batch into the ``(B, 4)`` ``y_pred`` of :class:`AdversarialRiskMetric`.

    Args:
        pred: clean predictions: logits ``(B, K)`` or class indices ``(B,)``.
        adv_pred: predictions on the attacked inputs, likewise.
        flag: detector flags on the clean inputs ``(B,)`` (bool or 0/1); ``None`` for no detector.
        adv_flag: detector flags on the attacked inputs ``(B,)``; ``None`` for no detector.

    Returns:
        a float tensor ``(B, 4)``: ``[clean class, attacked class, clean flag, attacked flag]``.

    Raises:
        ValueError: when the batch sizes differ.
    """
    p, a = predicted_classes(pred), predicted_classes(adv_pred)
    f = torch.zeros_like(p) if flag is None else torch.as_tensor(flag).reshape(-1).long()
    g = torch.zeros_like(p) if adv_flag is None else torch.as_tensor(adv_flag).reshape(-1).long()
    sizes = {p.shape[0], a.shape[0], f.shape[0], g.shape[0]}
    if len(sizes) != 1:
        raise ValueError(
            f"pred, adv_pred, flag and adv_flag must have the same batch size, got "
            f"{p.shape[0]}, {a.shape[0]}, {f.shape[0]}, {g.shape[0]}."
        )
    return torch.stack([p.cpu(), a.cpu(), f.cpu(), g.cpu()], dim=1).float()


def compute_adversarial_risk(
    clean_error: torch.Tensor,
    adv_error: torch.Tensor,
    clean_flag: torch.Tensor,
    adv_flag: torch.Tensor,
    attack_prior: float = 0.1,
    cost_error: float = 1.0,
    cost_false_alarm: float = 0.1,
    cost_detected_attack: float = 0.0,
) -> dict[str, float]:
    """The risk quantities from per-item 0/1 indicators ``(N,)`` (see ``docs/risk_metric.md``).

    Args:
        clean_error: 1 where the clean input is misclassified.
        adv_error: 1 where the attacked input is misclassified.
        clean_flag: 1 where the detector flags the clean input.
        adv_flag: 1 where the detector flags the attacked input.
        attack_prior: probability ``pi`` that an input the system sees is attacked.
        cost_error: cost of a misclassification that reaches the user unflagged.
        cost_false_alarm: cost of flagging a clean input (a needless referral).
        cost_detected_attack: cost of flagging an attacked input (its referral).

    Raises:
        ValueError: for no items.
    """
    n = int(clean_error.numel())
    if n == 0:
        raise ValueError("no items to compute the adversarial risk of.")
    e, ea = clean_error.double(), adv_error.double()
    f, fa = clean_flag.double(), adv_flag.double()
    pi = float(attack_prior)
    clean_err, adv_err = e.mean().item(), ea.mean().item()
    far, det = f.mean().item(), fa.mean().item()
    undetected_clean = (e * (1 - f)).mean().item()
    undetected = (ea * (1 - fa)).mean().item()
    fooled = ea.sum().item()
    missed = ((1 - fa) * ea).sum().item() / fooled if fooled > 0 else float("nan")
    risk_cls = (1 - pi) * cost_error * clean_err + pi * cost_error * adv_err
    risk_det = (1 - pi) * cost_false_alarm * far + pi * cost_error * (1 - det)
    risk_sys = (1 - pi) * (cost_error * undetected_clean + cost_false_alarm * far) + pi * (
        cost_error * undetected + cost_detected_attack * det
    )
    return {
        "n": float(n),
        "clean_error": clean_err,
        "adversarial_error": adv_err,
        "false_alarm_rate": far,
        "detection_rate": det,
        "missed_attack_rate": missed,
        "undetected_clean_error": undetected_clean,
        "undetected_error": undetected,
        "risk_classifier": risk_cls,
        "risk_detector": risk_det,
        "risk_system": risk_sys,
        "risk_reduction": risk_cls - risk_sys,
    }


class AdversarialRiskMetric(CumulativeIterationMetric):
    """System adversarial risk of a classifier with an unsupervised detector, accumulated over batches.

    ``y_pred`` per batch is ``(B, 4)``: ``[clean class, attacked class, clean flag, attacked
    flag]`` (build it with :func:`risk_inputs`, or read it from a
    :class:`~monai_adv.engines.RobustEvaluator` output with
    :func:`~monai_adv.handlers.risk_output_transform`); ``y`` is the true class ``(B,)`` or
    ``(B, 1)``. A list of per-item ``(4,)`` tensors (a decollated batch) works too. Without a
    detector, pass flags of 0: the system quantities then equal the classifier-alone ones.

    :meth:`aggregate` returns a dict of the quantities in :data:`RISK_KEYS` (names prefixed by
    ``prefix``), or only the one named by ``return_key`` as a tensor. See ``docs/risk_metric.md``.

    Args:
        attack_prior: probability ``pi`` in [0, 1] that an input is attacked.
        cost_error: cost (>= 0) of an unflagged misclassification.
        cost_false_alarm: cost (>= 0) of flagging a clean input.
        cost_detected_attack: cost (>= 0) of flagging an attacked input.
        return_key: return only this quantity from :meth:`aggregate` (e.g. ``"risk_system"``).
        prefix: prepended to the keys of the returned dict (e.g. ``"pgd_"``).

    Raises:
        ValueError: for a prior outside [0, 1], a negative cost, or an unknown ``return_key``.

    Example::

        metric = AdversarialRiskMetric(attack_prior=0.1)
        metric(risk_inputs(logits, adv_logits, flags, adv_flags), labels)
        metric.aggregate()["risk_system"]
    """

    def __init__(
        self,
        attack_prior: float = 0.1,
        cost_error: float = 1.0,
        cost_false_alarm: float = 0.1,
        cost_detected_attack: float = 0.0,
        return_key: str | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        if not 0.0 <= float(attack_prior) <= 1.0:
            raise ValueError(f"attack_prior must lie in [0, 1], got {attack_prior!r}.")
        for name, value in (
            ("cost_error", cost_error),
            ("cost_false_alarm", cost_false_alarm),
            ("cost_detected_attack", cost_detected_attack),
        ):
            if not float(value) >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        if return_key is not None and return_key not in RISK_KEYS:
            raise ValueError(f"return_key must be one of {RISK_KEYS}, got {return_key!r}.")
        self.attack_prior = float(attack_prior)
        self.cost_error = float(cost_error)
        self.cost_false_alarm = float(cost_false_alarm)
        self.cost_detected_attack = float(cost_detected_attack)
        self.return_key = return_key
        self.prefix = str(prefix)

    def _compute_tensor(
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("AdversarialRiskMetric needs the true labels y.")
        y_pred = torch.as_tensor(y_pred)
        if y_pred.ndim == 1:
            y_pred = y_pred.unsqueeze(0)
        if y_pred.ndim == 3 and y_pred.shape[1] == 1:  # decollated items given as (1, 4)
            y_pred = y_pred[:, 0]
        if y_pred.ndim != 2 or y_pred.shape[1] != 4:
            raise ValueError(
                f"y_pred must be (B, 4) [clean class, attacked class, clean flag, attacked flag], got shape "
                f"{tuple(y_pred.shape)}; build it with risk_inputs(...)."
            )
        if not torch.isfinite(y_pred.float()).all():
            raise ValueError("y_pred contains NaN or Inf values.")
        y = torch.as_tensor(y).reshape(-1).to(y_pred.device)
        if y.shape[0] != y_pred.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels for a batch of {y_pred.shape[0]}.")
        flags = y_pred[:, 2:]
        if ((flags != 0) & (flags != 1)).any():
            raise ValueError("the flag columns of y_pred must be 0 or 1.")
        pred, adv = y_pred[:, 0].round().long(), y_pred[:, 1].round().long()
        y = y.round().long()
        return torch.stack(
            [(pred != y).float(), (adv != y).float(), flags[:, 0].float(), flags[:, 1].float()], 1
        )

    def aggregate(self) -> dict[str, float] | torch.Tensor:  # type: ignore[override]
        """The risk quantities over everything accumulated since the last reset.

        Raises:
            ValueError: when nothing has been accumulated.
        """
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ValueError("AdversarialRiskMetric has no data: call it on at least one batch first.")
        values = compute_adversarial_risk(
            data[:, 0],
            data[:, 1],
            data[:, 2],
            data[:, 3],
            attack_prior=self.attack_prior,
            cost_error=self.cost_error,
            cost_false_alarm=self.cost_false_alarm,
            cost_detected_attack=self.cost_detected_attack,
        )
        if self.return_key is not None:
            return torch.tensor(values[self.return_key], dtype=torch.float64)
        return {self.prefix + k: v for k, v in values.items()}
