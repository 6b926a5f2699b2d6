"""Attacks describe themselves (for reports), and every attack uses one success test."""

from __future__ import annotations

import torch
import torch.nn as nn

from monai_adv.transforms import (
    APGD,
    FGSM,
    PGD,
    AdaptiveAttack,
    AdversarialAttack,
    CarliniWagnerL2,
    SquareAttack,
    TransferAttack,
    WorstCaseEnsemble,
)
from monai_adv.transforms.base import describe_attack


def _net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def test_describe_norm_bounded_attacks():
    net = _net()
    d = PGD(net, eps=0.01, steps=10, norm="l2").describe()
    assert d == {
        "name": "PGD-10",
        "type": "PGD",
        "eps": 0.01,
        "norm": "l2",
        "steps": 10,
        "needs_detector": False,
        "uses_gradients": True,
        "targeted": False,
    }
    assert FGSM(net, eps=(0.001, 0.003)).describe()["eps"] == [0.001, 0.003]
    assert FGSM(net, eps=0.1).describe()["name"] == "FGSM"
    sq = SquareAttack(net, eps=0.1, n_queries=50).describe()
    assert sq["steps"] == 50 and not sq["uses_gradients"] and sq["name"] == "SquareAttack-50"
    assert APGD(net, eps=0.1, steps=7).describe()["steps"] == 7
    cw = CarliniWagnerL2(net, steps=5).describe()
    assert cw["eps"] is None and cw["norm"] is None and cw["steps"] == 5


def test_describe_composites_and_wrappers():
    net, surrogate = _net(), _net()
    t = TransferAttack(surrogate, PGD(net, eps=0.02, steps=3)).describe()
    assert t["type"] == "TransferAttack" and t["eps"] == 0.02 and t["base"]["type"] == "PGD"
    ens = WorstCaseEnsemble(net, [FGSM(net, 0.01), PGD(net, 0.03, steps=2)]).describe()
    assert ens["eps"] == 0.03 and ens["norm"] == "linf" and len(ens["members"]) == 2

    class Cache:
        def __init__(self, attack):
            self.__wrapped__ = attack

    assert describe_attack(Cache(FGSM(net, 0.5)))["eps"] == 0.5
    assert describe_attack(lambda x, y: x)["type"] == "function"
    assert AdaptiveAttack.needs_detector and not PGD.needs_detector


def test_one_success_definition():
    atk = PGD(_net(), eps=0.1)
    logits = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 1, 0])
    m = atk.attack_margin(logits, y)
    assert m.tolist() == [1.0, 0.0, -3.0]
    # a tie is not a success; kappa asks for a margin of at least kappa
    assert atk.is_adversarial(logits, y).tolist() == [False, False, True]
    assert AdversarialAttack.succeeded(m, kappa=3.0).tolist() == [False, False, True]
    assert AdversarialAttack.succeeded(m, kappa=3.5).tolist() == [False, False, False]
    targeted = PGD(_net(), eps=0.1, targeted=True)
    assert targeted.is_adversarial(logits, torch.tensor([0, 1, 1])).tolist() == [True, False, True]
