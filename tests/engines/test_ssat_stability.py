"""SSAT's stability options: the paper's recipe collapses on a small case, a stability option does not.

The case: 128 labeled toy images, 256 unlabeled, a freshly initialised network whose head favours
one class (as a random initialisation often does: the collapsing demo runs started with 88% of the
pseudo-labels in one class). The paper's SSAT (unlabeled weight 3, online pseudo-labels) then trains
itself into a constant prediction: a network that always predicts its own pseudo-label has a near-zero
unlabeled loss, which at weight 3 outweighs the labeled loss it gives up.
"""

from __future__ import annotations

import math

import helpers
import pytest
import torch
import torch.nn as nn
from helpers import SmallCNN
from ignite.engine import Events

from monai_adv.engines import AdvTrainingKeys, create_trainer
from monai_adv.metrics import classification_summary


def _data(n: int, seed: int):
    x, y = helpers.toy_dataset(n, seed=seed)
    return (0.3 + (x - 0.3) * 2.5).clamp(0, 1), y  # higher contrast: a few steps teach it


def _train(**options):
    torch.manual_seed(0)
    net = SmallCNN(width=8)
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))
    x, y = _data(128, 1)
    xu, yu = _data(256, 2)
    labeled = [{"image": x[i : i + 16], "label": y[i : i + 16]} for i in range(0, 128, 16)]
    unlabeled = [{"image": xu[i : i + 32], "hidden": yu[i : i + 32]} for i in range(0, 256, 32)]
    trainer = create_trainer(
        "ssat", "cpu", 12, labeled, net, torch.optim.Adam(net.parameters(), lr=1e-2),
        unlabeled_data_loader=unlabeled, decollate=False, hidden_label_key="hidden", **options,
    )  # fmt: skip
    trainer.attack.set_random_state(0)
    trainer.run()
    xt, yt = _data(128, 3)
    net.eval()
    with torch.no_grad():
        summary = classification_summary(yt, net(xt).argmax(1))
    return summary, trainer.state.output


def test_paper_preset_collapses_and_the_confidence_threshold_prevents_it():
    supervised, _ = _train(unlabeled_weight=0.0)
    paper, out = _train()
    assert paper["degenerate"] and paper["accuracy"] < 0.3  # the collapse
    hist = out[AdvTrainingKeys.PSEUDO_HISTOGRAM]
    assert hist.max() == 1.0  # every pseudo-label one class, measured by the trainer itself
    assert out[AdvTrainingKeys.PSEUDO_ACCURACY] == pytest.approx(0.25, abs=0.1)
    stable, out = _train(confidence_threshold=0.9)
    assert not stable["degenerate"]
    assert stable["accuracy"] >= supervised["accuracy"] >= 0.6, (stable, supervised)
    assert min(stable["per_class_recall"].values()) >= 0.5


def test_warmup_and_rampup_schedule_the_unlabeled_weight():
    x, y = _data(32, 1)
    net = SmallCNN(width=8)
    weights = []
    trainer = create_trainer(
        "ssat", "cpu", 4, [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in range(0, 32, 8)], net,
        torch.optim.SGD(net.parameters(), lr=0.0), unlabeled_data_loader=[x], decollate=False,
        warmup_epochs=1, rampup_epochs=2,
    )  # fmt: skip
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: weights.append(e.state.output[AdvTrainingKeys.UNLABELED_WEIGHT])
    )
    trainer.run()
    assert weights[:4] == [0.0] * 4  # labeled only in the first epoch (and no attack)
    expected = [3.0 * math.exp(-5 * (1 - min(((i - 4) / 4) / 2, 1.0)) ** 2) for i in range(4, 16)]
    assert weights[4:] == pytest.approx(expected)
    assert weights[-1] == 3.0


def test_ema_labeller_follows_the_network():
    x, y = _data(32, 1)
    torch.manual_seed(0)
    net = SmallCNN(width=8)
    trainer = create_trainer(
        "ssat", "cpu", 1, [{"image": x, "label": y}], net, torch.optim.SGD(net.parameters(), lr=0.5),
        unlabeled_data_loader=[x], decollate=False, pseudo_labels="ema", ema_decay=0.5,
    )  # fmt: skip
    before = [p.detach().clone() for p in trainer.ema_network.parameters()]
    trainer.run()
    for p_ema, p0, p in zip(trainer.ema_network.parameters(), before, net.parameters()):
        torch.testing.assert_close(p_ema, 0.5 * p0 + 0.5 * p.detach())
    assert not any(p.requires_grad for p in trainer.ema_network.parameters())


def test_unlabeled_weight_schedule_closed_form():
    from monai_adv.engines import UnlabeledWeightSchedule

    s = UnlabeledWeightSchedule(3.0, warmup_epochs=1.0, rampup_epochs=2.0)
    assert s(1, 10) == 0.0 and s(10, 10) == 0.0  # the first epoch: labeled loss only
    assert s(11, 10) == pytest.approx(3.0 * math.exp(-5.0))  # the ramp-up starts at exp(-5)
    assert s(21, 10) == pytest.approx(3.0 * math.exp(-5.0 * 0.25))  # halfway: t = 0.5
    assert s(31, 10) == pytest.approx(3.0) and s(99, 10) == pytest.approx(3.0)
    assert UnlabeledWeightSchedule(2.0)(1, 5) == 2.0
    with pytest.raises(ValueError, match="rampup_epochs"):
        UnlabeledWeightSchedule(1.0, rampup_epochs=-1)


def test_pseudo_labellers_by_name():
    from monai_adv.engines import (
        MeanTeacherPseudoLabeller,
        OnlinePseudoLabeller,
        TeacherPseudoLabeller,
        make_pseudo_labeller,
    )

    net, teacher = nn.Linear(2, 2), nn.Linear(2, 2)
    assert isinstance(make_pseudo_labeller("online", net), OnlinePseudoLabeller)
    assert make_pseudo_labeller("online", net).network(net) is net
    t = make_pseudo_labeller("teacher", net, teacher_network=teacher)
    assert isinstance(t, TeacherPseudoLabeller) and t.network(net) is teacher
    m = make_pseudo_labeller("ema", net, ema_decay=0.0)
    assert isinstance(m, MeanTeacherPseudoLabeller) and m.network(net) is not net
    with torch.no_grad():
        net.weight.add_(1.0)
    m.after_step(net)  # decay 0: the mean teacher takes the weights as they are
    torch.testing.assert_close(m.ema_network.weight, net.weight)
