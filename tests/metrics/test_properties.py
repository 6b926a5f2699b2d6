"""Properties of the risk and detection metrics for any data (checked with hypothesis)."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_adv.metrics import AdversarialRiskMetric, risk_inputs
from monai_adv.metrics.detection import detection_auroc, detection_roc_curve, tpr_at_fpr


@st.composite
def evaluations(draw):
    """Per-item labels, clean/attacked predictions and flags, cut into batches of random sizes."""
    n = draw(st.integers(1, 40))
    k = draw(st.integers(2, 5))
    ints = st.lists(st.integers(0, k - 1), min_size=n, max_size=n)
    bits = st.lists(st.integers(0, 1), min_size=n, max_size=n)
    y, p, a = (torch.tensor(draw(ints)) for _ in range(3))
    f, g = (torch.tensor(draw(bits)) for _ in range(2))
    cuts = sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=4)) if n > 1 else []))
    costs = dict(
        attack_prior=draw(st.floats(0.0, 1.0)),
        cost_error=draw(st.floats(0.0, 10.0)),
        cost_false_alarm=draw(st.floats(0.0, 10.0)),
        cost_detected_attack=draw(st.floats(0.0, 10.0)),
    )
    return y, p, a, f, g, [0, *cuts, n], costs


def _metric(y, p, a, f, g, bounds, costs):
    m = AdversarialRiskMetric(**costs)
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        m(risk_inputs(p[lo:hi], a[lo:hi], f[lo:hi], g[lo:hi]), y[lo:hi])
    return m.aggregate()


@settings(max_examples=60)
@given(evaluations())
def test_risk_is_the_same_however_the_data_is_batched_and_matches_the_definition(e):
    y, p, a, f, g, bounds, costs = e
    r = _metric(y, p, a, f, g, bounds, costs)
    one = _metric(y, p, a, f, g, [0, len(y)], costs)
    assert r.keys() == one.keys()
    for key in r:
        assert r[key] == one[key] or (math.isnan(r[key]) and math.isnan(one[key]))
    # the definition, item by item, in plain Python
    err, aerr = (p != y).double(), (a != y).double()
    f, g = f.double(), g.double()
    pi, ce, cfa, cd = (
        costs[k] for k in ("attack_prior", "cost_error", "cost_false_alarm", "cost_detected_attack")
    )
    sys = (1 - pi) * (ce * (err * (1 - f)).mean() + cfa * f.mean()) + pi * (
        ce * (aerr * (1 - g)).mean() + cd * g.mean()
    )
    assert math.isclose(r["risk_system"], float(sys), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(
        r["risk_classifier"], float((1 - pi) * ce * err.mean() + pi * ce * aerr.mean()), abs_tol=1e-12
    )
    for rate in (
        "clean_error",
        "adversarial_error",
        "false_alarm_rate",
        "detection_rate",
        "undetected_error",
    ):
        assert 0.0 <= r[rate] <= 1.0
    # a successful attack is undetected at most as often as it succeeds
    assert r["undetected_error"] <= r["adversarial_error"] + 1e-12
    assert math.isclose(r["risk_reduction"], r["risk_classifier"] - r["risk_system"], abs_tol=1e-12)


@settings(max_examples=40)
@given(evaluations())
def test_without_flags_the_system_risk_is_the_classifier_risk(e):
    y, p, a, _, _, bounds, costs = e
    zeros = torch.zeros_like(y)
    r = _metric(y, p, a, zeros, zeros, bounds, costs)
    assert math.isclose(r["risk_system"], r["risk_classifier"], rel_tol=1e-12, abs_tol=1e-12)
    assert r["undetected_error"] == r["adversarial_error"]


scores = st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=30)


@settings(max_examples=60)
@given(scores, scores)
def test_auroc_is_the_mann_whitney_probability_and_agrees_with_the_roc_curve(clean, adv):
    c, d = np.array(clean), np.array(adv)
    # P(adversarial score > clean score) + P(tie) / 2, by brute force over all pairs
    brute = ((d[:, None] > c[None, :]) + 0.5 * (d[:, None] == c[None, :])).mean()
    auc = detection_auroc(c, d)
    assert math.isclose(auc, brute, abs_tol=1e-12)
    # swapping the roles mirrors it; a strictly increasing map of the scores changes nothing
    assert math.isclose(detection_auroc(d, c), 1.0 - auc, abs_tol=1e-12)
    assert math.isclose(detection_auroc(np.tanh(c / 100) + c, np.tanh(d / 100) + d), auc, abs_tol=1e-12)
    # the trapezoid area under the ROC curve is the same number
    fpr, tpr, _ = detection_roc_curve(c, d)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert math.isclose(float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)), auc, abs_tol=1e-9)


@settings(max_examples=40)
@given(scores, scores, st.floats(0.01, 0.99))
def test_tpr_at_fpr_uses_a_threshold_that_keeps_false_alarms_at_most_fpr(clean, adv, fpr):
    c, d = np.array(clean), np.array(adv)
    thr = float(np.quantile(c, 1.0 - fpr, method="higher"))
    assert (c > thr).mean() <= fpr + 1e-12
    assert tpr_at_fpr(c, d, fpr) == (d > thr).mean()
