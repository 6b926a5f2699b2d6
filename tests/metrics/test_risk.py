"""AdversarialRiskMetric and its handler against the hand-computed worked example of docs/risk_metric.md."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine
from monai.data import decollate_batch

from monai_adv.handlers import AdversarialRisk, RobustKeys, risk_output_transform
from monai_adv.metrics import (
    AdversarialRiskMetric,
    detection_auroc,
    detection_roc_curve,
    risk_inputs,
    tpr_at_fpr,
    tpr_at_threshold,
)

# the worked example of docs/risk_metric.md: label, clean pred, clean flag, attacked pred, attacked flag
EXAMPLE = torch.tensor(
    [
        [0, 0, 0, 1, 1],
        [1, 1, 0, 2, 1],
        [2, 2, 0, 0, 0],
        [3, 3, 1, 3, 0],
        [0, 1, 0, 1, 1],
        [1, 1, 0, 1, 0],
        [2, 2, 0, 3, 1],
        [3, 3, 0, 0, 1],
        [0, 0, 0, 2, 0],
        [1, 1, 0, 1, 1],
    ]
)
HAND = {  # computed by hand in docs/risk_metric.md (pi = 0.1, C_err = 1, C_fa = 0.1, C_det = 0)
    "n": 10.0,
    "clean_error": 0.1,
    "adversarial_error": 0.7,
    "false_alarm_rate": 0.1,
    "detection_rate": 0.6,
    "missed_attack_rate": 2 / 7,
    "undetected_clean_error": 0.1,
    "undetected_error": 0.2,
    "risk_classifier": 0.16,
    "risk_detector": 0.049,
    "risk_system": 0.119,
    "risk_reduction": 0.041,
}


def example_batch(rows: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    e = EXAMPLE[rows]
    return risk_inputs(e[:, 1], e[:, 3], e[:, 2], e[:, 4]), e[:, 0]


def assert_matches(values: dict, expected: dict, prefix: str = "") -> None:
    for k, v in expected.items():
        assert math.isclose(values[prefix + k], v, abs_tol=1e-9), (k, values[prefix + k], v)


def test_worked_example_over_two_batches():
    metric = AdversarialRiskMetric(attack_prior=0.1, cost_error=1.0, cost_false_alarm=0.1)
    metric(*example_batch(slice(0, 4)))
    metric(*example_batch(slice(4, 10)))
    assert_matches(metric.aggregate(), HAND)
    metric.reset()
    with pytest.raises(ValueError, match="no data"):
        metric.aggregate()


def test_logits_and_decollated_lists():
    y_pred, y = example_batch()
    logits = torch.nn.functional.one_hot(y_pred[:, 0].long(), 4).float() * 5
    adv_logits = torch.nn.functional.one_hot(y_pred[:, 1].long(), 4).float() * 5
    batch = risk_inputs(logits, adv_logits, y_pred[:, 2].bool(), y_pred[:, 3].bool())
    metric = AdversarialRiskMetric(prefix="pgd_")
    metric(list(batch), list(y.reshape(-1, 1)))  # decollated items
    assert_matches(metric.aggregate(), HAND, prefix="pgd_")


def test_other_costs_and_return_key():
    # pi = 0.5, C_fa = 0.2, C_det = 0.05:
    # classifier 0.5*0.1 + 0.5*0.7 = 0.4;  system 0.5*(0.1 + 0.2*0.1) + 0.5*(0.2 + 0.05*0.6) = 0.175
    metric = AdversarialRiskMetric(0.5, 1.0, 0.2, 0.05, return_key="risk_system")
    metric(*example_batch())
    assert math.isclose(float(metric.aggregate()), 0.175, abs_tol=1e-9)
    metric = AdversarialRiskMetric(0.5, 1.0, 0.2, 0.05, return_key="risk_classifier")
    metric(*example_batch())
    assert math.isclose(float(metric.aggregate()), 0.4, abs_tol=1e-9)


def test_without_detector_system_equals_classifier():
    e = EXAMPLE
    metric = AdversarialRiskMetric()
    metric(risk_inputs(e[:, 1], e[:, 3], None, None), e[:, 0])
    v = metric.aggregate()
    assert v["risk_system"] == pytest.approx(v["risk_classifier"]) and v["risk_reduction"] == pytest.approx(0)
    assert v["missed_attack_rate"] == 1.0 and v["false_alarm_rate"] == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="attack_prior"):
        AdversarialRiskMetric(attack_prior=1.5)
    with pytest.raises(ValueError, match="cost_false_alarm"):
        AdversarialRiskMetric(cost_false_alarm=-1)
    with pytest.raises(ValueError, match="return_key"):
        AdversarialRiskMetric(return_key="nope")
    metric = AdversarialRiskMetric()
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        metric(torch.zeros(3, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="labels for a batch"):
        metric(torch.zeros(3, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="0 or 1"):
        metric(torch.tensor([[0.0, 0.0, 2.0, 0.0]]), torch.zeros(1))
    with pytest.raises(ValueError, match="NaN"):
        metric(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), torch.zeros(1))
    with pytest.raises(ValueError, match="same batch size"):
        risk_inputs(torch.zeros(3), torch.zeros(3), torch.zeros(2), None)


def test_ignite_handler_on_evaluator_output():
    rows = EXAMPLE
    batches = [rows[:5], rows[5:]]

    def step(engine, b):
        out = {
            RobustKeys.LABEL: b[:, 0],
            RobustKeys.PRED: torch.nn.functional.one_hot(b[:, 1], 4).float(),
            RobustKeys.FLAG: b[:, 2].bool(),
            RobustKeys.adv(RobustKeys.PRED, "pgd"): torch.nn.functional.one_hot(b[:, 3], 4).float(),
            RobustKeys.adv(RobustKeys.FLAG, "pgd"): b[:, 4].bool(),
        }
        return decollate_batch(out) if engine.state.iteration == 2 else out  # both output forms

    engine = Engine(step)
    AdversarialRisk(prefix="pgd_", output_transform=risk_output_transform("pgd")).attach(engine, "pgd_risk")
    AdversarialRisk(return_key="risk_system", output_transform=risk_output_transform("pgd")).attach(
        engine, "sys"
    )
    engine.run(batches, max_epochs=1)
    assert_matches(engine.state.metrics, HAND, prefix="pgd_")
    assert engine.state.metrics["sys"] == pytest.approx(0.119)
    with pytest.raises(KeyError, match="pred/fgsm"):
        risk_output_transform("fgsm")(engine.state.output)


def test_detection_auroc_hand_computed():
    clean, adv = [0.1, 0.4, 0.35, 0.8], [0.9, 0.4, 0.2]
    # pairs (adv > clean) + 0.5 ties: 4 + (2 + 0.5) + 1 = 7.5 of 12
    assert detection_auroc(clean, adv) == pytest.approx(7.5 / 12)
    assert detection_auroc([0, 1], [2, 3]) == 1.0 and detection_auroc([2, 3], [0, 1]) == 0.0
    assert detection_auroc([1, 1, 1], [1, 1]) == 0.5
    fpr, tpr, _ = detection_roc_curve(clean, adv)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    # trapezoid area of the curve equals the rank statistic
    area = float(sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(fpr) - 1)))
    assert area == pytest.approx(7.5 / 12)
    assert tpr_at_threshold(adv, 0.35) == pytest.approx(2 / 3)
    # clean 0..99: the 0.95 quantile (next higher observed) is 95, so 96..99 (4%) are flagged
    assert tpr_at_fpr(list(range(100)), [95.5, 10, 99.5], fpr=0.05) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="NaN"):
        detection_auroc([float("nan")], [1.0])
    with pytest.raises(ValueError, match="empty"):
        detection_auroc([], [1.0])
