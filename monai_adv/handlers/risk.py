"""The ignite handler of :class:`~monai_adv.metrics.AdversarialRiskMetric`, like MONAI's ``ROCAUC``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.handlers.ignite_metric import IgniteMetricHandler

from monai_adv.keys import RobustKeys
from monai_adv.metrics.risk import AdversarialRiskMetric, risk_inputs
from monai_adv.utils import gather_output

# gather_output lives in monai_adv.utils; it is exported here too, where it was first published
__all__ = ["AdversarialRisk", "risk_output_transform", "gather_output"]


def risk_output_transform(
    attack: str,
    pred_key: str = RobustKeys.PRED,
    label_key: str = RobustKeys.LABEL,
    flag_key: str = RobustKeys.FLAG,
) -> Callable[[Any], tuple[torch.Tensor, torch.Tensor]]:
    """An ``output_transform`` that builds ``(y_pred, y)`` for the risk metric from an evaluator output.

    Reads the clean prediction ``pred_key``, the attacked one ``"<pred_key>/<attack>"``, and the
    flags ``flag_key`` and ``"<flag_key>/<attack>"`` (taken as 0 when there is no detector).

    Args:
        attack: the attack's name in the :class:`~monai_adv.engines.RobustEvaluator`.
        pred_key: key of the clean predictions (logits or class indices).
        label_key: key of the labels.
        flag_key: key of the detector flags.
    """

    def _transform(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
        pred = gather_output(output, pred_key)
        adv = gather_output(output, RobustKeys.adv(pred_key, attack))
        flag = gather_output(output, flag_key, required=False)
        adv_flag = gather_output(output, RobustKeys.adv(flag_key, attack), required=False)
        label = gather_output(output, label_key)
        return risk_inputs(pred, adv, flag, adv_flag), label.reshape(-1)

    return _transform


class AdversarialRisk(IgniteMetricHandler):
    """Accumulates :class:`~monai_adv.metrics.AdversarialRiskMetric` over an epoch.

    With ``return_key=None`` the metric value is a dict, and ignite also writes each of its entries
    to ``engine.state.metrics`` under its own (``prefix``-ed) name.

    Args:
        attack_prior: probability that an input is attacked.
        cost_error: cost of an unflagged misclassification.
        cost_false_alarm: cost of flagging a clean input.
        cost_detected_attack: cost of flagging an attacked input.
        return_key: report only this quantity (e.g. ``"risk_system"``), as a number.
        prefix: prefix of the reported names (e.g. ``"pgd_"``) when reporting them all.
        output_transform: maps ``engine.state.output`` to ``(y_pred (B, 4), y)``; e.g.
            ``risk_output_transform("pgd")`` for a :class:`~monai_adv.engines.RobustEvaluator`.

    Example::

        AdversarialRisk(prefix="pgd_", output_transform=risk_output_transform("pgd")).attach(evaluator, "pgd_risk")
    """

    def __init__(
        self,
        attack_prior: float = 0.1,
        cost_error: float = 1.0,
        cost_false_alarm: float = 0.1,
        cost_detected_attack: float = 0.0,
        return_key: str | None = None,
        prefix: str = "",
        output_transform: Callable = lambda x: x,
    ) -> None:
        metric_fn = AdversarialRiskMetric(
            attack_prior=attack_prior,
            cost_error=cost_error,
            cost_false_alarm=cost_false_alarm,
            cost_detected_attack=cost_detected_attack,
            return_key=return_key,
            prefix=prefix,
        )
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=False)
