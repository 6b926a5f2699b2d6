"""The adversarial trainers compute exactly the losses they document, step the optimizer on them, and
report their per-iteration values."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import SmallCNN, accuracy, toy_dataset, trained_cnn
from monai.handlers import StatsHandler

from monai_adv.engines import (
    PRESETS,
    AdversarialTrainingEvents,
    AdvTrainingKeys,
    SemiSupervisedAdversarialTrainer,
    SupervisedAdversarialTrainer,
    adversarial_training_metrics,
    create_trainer,
    training_stats,
)
from monai_adv.transforms import FGSM, PGD
from monai_adv.transforms.losses import kl_attack_loss, per_sample_kl

K = AdvTrainingKeys
LR = 0.1


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = SmallCNN(width=8)
    net.dropout.p = 0.0  # batch norm stays: train/eval mode matters, dropout randomness does not
    return net


def _data(n: int = 8):
    x_l, y_l = toy_dataset(n, seed=1)
    x_u, _ = toy_dataset(n, seed=2)
    return x_l, y_l, x_u


def _sgd_step_matches(net: nn.Module, ref: nn.Module, loss: torch.Tensor) -> None:
    """``net`` (after one engine iteration) equals ``ref`` after one SGD step on the hand-computed loss."""
    ref.zero_grad()
    loss.backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), (q - LR * q.grad).detach(), rtol=1e-5, atol=1e-6, msg=name)


def _ssat(net, x_l, y_l, x_u, attack, **kwargs):
    return SemiSupervisedAdversarialTrainer(
        "cpu",
        1,
        [{"image": x_l, "label": y_l}],
        [x_u],
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        nn.CrossEntropyLoss(),
        attack,
        decollate=False,
        **kwargs,
    )


def test_paper_ssat_loss_by_hand():
    """loss = CE(f(x_l), y_l) + 3 * CE(f(FGSM(x_u, argmax f(x_u))), argmax f(x_u)), eps ~ U(0.001, 0.003)."""
    x_l, y_l, x_u = _data()
    net = _net()
    ref = copy.deepcopy(net)
    atk = FGSM(net, eps=(0.001, 0.003))
    atk.set_random_state(7)
    trainer = _ssat(net, x_l, y_l, x_u, atk)
    trainer.run()
    out = trainer.state.output

    ref_atk = FGSM(ref, eps=(0.001, 0.003))
    ref_atk.set_random_state(7)
    ref.eval()
    with torch.no_grad():
        probs = ref(x_u).softmax(1)
    y_u = probs.argmax(1)
    x_adv = ref_atk(x_u, y_u)
    eps = ref_atk.current_eps
    assert 0.001 <= eps <= 0.003
    torch.testing.assert_close((x_adv - x_u).abs().max().item(), eps, rtol=1e-4, atol=1e-6)
    ref.train()
    loss_l = F.cross_entropy(ref(x_l), y_l)
    adv_logits = ref(x_adv)
    loss_u = F.cross_entropy(adv_logits, y_u)
    loss = loss_l + 3.0 * loss_u

    torch.testing.assert_close(out[K.LOSS].item(), loss.item(), rtol=1e-5, atol=1e-6)
    assert out[K.LOSS_LABELED] == pytest.approx(loss_l.item(), rel=1e-5)
    assert out[K.LOSS_UNLABELED] == pytest.approx(loss_u.item(), rel=1e-5)
    assert out[K.PSEUDO_CONFIDENCE] == pytest.approx(probs.max(1).values.mean().item(), rel=1e-5)
    assert out[K.PSEUDO_KEPT] == 1.0
    assert out[K.ATTACK_EPS] == pytest.approx(eps)
    expected_success = (adv_logits.argmax(1) != y_u).float().mean().item()
    assert out[K.ATTACK_SUCCESS] == pytest.approx(expected_success)
    _sgd_step_matches(net, ref, loss)


def test_ssat_preset_is_the_paper_recipe():
    x_l, y_l, x_u = _data()
    net = _net()
    trainer = create_trainer(
        "ssat",
        "cpu",
        1,
        [{"image": x_l, "label": y_l}],
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        unlabeled_data_loader=[x_u],
    )
    assert isinstance(trainer, SemiSupervisedAdversarialTrainer)
    assert isinstance(trainer.attack, FGSM) and trainer.attack.eps == (0.001, 0.003)
    assert trainer.attack.network is net and trainer.attack.value_range == (0.0, 1.0)
    assert trainer.unlabeled_weight == 3.0 and trainer.pseudo_labels == "online"
    assert (
        trainer.consistency == "ce" and trainer.confidence_threshold == 0.0 and trainer.labeled_attack is None
    )
    with pytest.raises(ValueError, match="unknown preset"):
        create_trainer("nope", "cpu", 1, [x_l], net, torch.optim.SGD(net.parameters(), lr=LR))
    assert {"ssat", "ssat_pgd", "ssat_kl", "ssat_threshold", "ssat_teacher", "madry", "trades"} <= set(
        PRESETS
    )


class _FixedTeacher(nn.Module):
    """Logits that give class 2 with confidence 0.95 to even items and class 1 with ~0.4 to odd ones."""

    def forward(self, x):
        b = x.shape[0]
        logits = torch.zeros(b, 4)
        logits[0::2, 2] = 4.0  # softmax max = e^4 / (e^4 + 3) ~ 0.948
        logits[1::2, 1] = 0.7  # ~ 0.40
        return logits


def test_teacher_pseudo_labels_and_confidence_threshold_by_hand():
    x_l, y_l, x_u = _data()
    net = _net()
    ref = copy.deepcopy(net)
    atk = FGSM(net, eps=0.002)
    trainer = _ssat(
        net,
        x_l,
        y_l,
        x_u,
        atk,
        pseudo_labels="teacher",
        teacher_network=_FixedTeacher(),
        confidence_threshold=0.9,
        unlabeled_weight=2.0,
    )
    trainer.run()
    out = trainer.state.output
    y_u = torch.tensor([2, 1] * 4)
    keep = torch.tensor([1.0, 0.0] * 4)
    x_adv = FGSM(ref, eps=0.002)(x_u, y_u)  # the attack targets the student, with the teacher's labels
    ref.train()
    loss_l = F.cross_entropy(ref(x_l), y_l)
    loss_u = (F.cross_entropy(ref(x_adv), y_u, reduction="none") * keep).mean()
    loss = loss_l + 2.0 * loss_u
    assert out[K.PSEUDO_KEPT] == 0.5
    assert out[K.LOSS_UNLABELED] == pytest.approx(loss_u.item(), rel=1e-5)
    _sgd_step_matches(net, ref, loss)


def test_kl_consistency_and_labeled_attack_by_hand():
    x_l, y_l, x_u = _data()
    net = _net()
    ref = copy.deepcopy(net)
    atk = FGSM(net, eps=0.003)
    latk = PGD(net, eps=0.01, steps=2)
    latk.set_random_state(3)
    trainer = _ssat(
        net, x_l, y_l, x_u, atk, consistency="kl", labeled_attack=latk, labeled_adversarial_weight=0.5
    )
    trainer.run()
    out = trainer.state.output
    ref.eval()
    with torch.no_grad():
        y_u = ref(x_u).argmax(1)
    x_adv = FGSM(ref, eps=0.003)(x_u, y_u)
    ref_latk = PGD(ref, eps=0.01, steps=2)
    ref_latk.set_random_state(3)
    x_l_adv = ref_latk(x_l, y_l)
    ref.train()
    loss_l = F.cross_entropy(ref(x_l), y_l)
    adv = ref(x_adv)
    clean = ref(x_u)  # the clean side carries gradient (TRADES / UAT-OT)
    loss_u = per_sample_kl(clean, adv).mean()
    loss_la = F.cross_entropy(ref(x_l_adv), y_l)
    loss = loss_l + 3.0 * loss_u + 0.5 * loss_la
    assert out[K.LOSS_UNLABELED] == pytest.approx(loss_u.item(), rel=1e-4, abs=1e-7)
    assert out[K.LOSS_LABELED_ADV] == pytest.approx(loss_la.item(), rel=1e-5)
    _sgd_step_matches(net, ref, loss)


def _supervised(net, x, y, attack, **kwargs):
    return SupervisedAdversarialTrainer(
        "cpu",
        1,
        [{"image": x, "label": y}],
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        nn.CrossEntropyLoss(),
        attack,
        decollate=False,
        **kwargs,
    )


def test_madry_loss_by_hand():
    x, y, _ = _data()
    net = _net()
    ref = copy.deepcopy(net)
    atk = PGD(net, eps=0.03, steps=3)
    atk.set_random_state(5)
    trainer = _supervised(net, x, y, atk)
    trainer.run()
    ref_atk = PGD(ref, eps=0.03, steps=3)
    ref_atk.set_random_state(5)
    x_adv = ref_atk(x, y)
    ref.train()
    logits = ref(x_adv)
    loss = F.cross_entropy(logits, y)
    out = trainer.state.output
    assert out[K.LOSS_LABELED_ADV] == pytest.approx(loss.item(), rel=1e-5)
    assert out[K.ATTACK_SUCCESS] == pytest.approx((logits.argmax(1) != y).float().mean().item())
    _sgd_step_matches(net, ref, loss)


def test_trades_loss_by_hand():
    x, y, _ = _data()
    net = _net()
    ref = copy.deepcopy(net)
    atk = PGD(net, eps=0.03, steps=3)
    atk.set_random_state(5)
    trainer = _supervised(net, x, y, atk, method="trades", beta=6.0)
    trainer.run()
    ref.eval()
    with torch.no_grad():
        clean_eval = ref(x)
    ref_atk = PGD(ref, eps=0.03, steps=3, loss=kl_attack_loss(clean_eval))
    ref_atk.set_random_state(5)
    x_adv = ref_atk(x, y)
    assert (x_adv - x).abs().max() > 0.01  # the KL attack moved (random start, then ascent)
    ref.train()
    logits = ref(x)
    loss_r = per_sample_kl(logits, ref(x_adv)).mean()
    loss = F.cross_entropy(logits, y) + 6.0 * loss_r
    assert trainer.state.output[K.LOSS_ROBUST] == pytest.approx(loss_r.item(), rel=1e-4, abs=1e-7)
    _sgd_step_matches(net, ref, loss)
    assert atk.loss is None  # the trainer's per-call KL loss did not leak into the user's attack


class _Recording:
    """A re-iterable loader that counts the passes and batches drawn from it."""

    def __init__(self, batches):
        self.batches, self.passes, self.drawn = batches, 0, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.passes += 1
        for b in self.batches:
            self.drawn += 1
            yield b


@pytest.mark.parametrize("form", ["tensor", "dict", "tuple"])
def test_unlabeled_loader_cycles_independently(form):
    x, y = toy_dataset(16, seed=3)
    xu, _ = toy_dataset(12, seed=4)
    labeled = [{"image": x[i : i + 4], "label": y[i : i + 4]} for i in range(0, 16, 4)]  # 4 batches
    ub = [xu[i : i + 4] for i in range(0, 12, 4)]  # 3 batches
    if form == "dict":
        ub = [{"image": b, "meta": "no label"} for b in ub]
    elif form == "tuple":
        ub = [(b, torch.zeros(4)) for b in ub]
    unlabeled = _Recording(ub)
    net = _net()
    trainer = SemiSupervisedAdversarialTrainer(
        "cpu",
        2,
        labeled,
        unlabeled,
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        nn.CrossEntropyLoss(),
        FGSM(net, eps=0.002),
    )
    seen = []
    trainer.add_event_handler(
        AdversarialTrainingEvents.ATTACK_COMPLETED, lambda e: seen.append(e.state.iteration)
    )
    trainer.run()
    assert trainer.state.iteration == 8 and seen == list(range(1, 9))
    assert unlabeled.drawn == 8 and unlabeled.passes == 3  # 3 + 3 + 2 batches


def test_stats_and_metrics_reach_monai_handlers():
    x, y = toy_dataset(16, seed=3)
    xu, _ = toy_dataset(16, seed=4)
    net = _net()
    labeled = [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in (0, 8)]
    trainer = SemiSupervisedAdversarialTrainer(
        "cpu",
        1,
        labeled,
        [xu[:8], xu[8:]],
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        nn.CrossEntropyLoss(),
        FGSM(net, eps=0.002),
        key_train_metric=adversarial_training_metrics(),
        train_handlers=[StatsHandler(name="ssat_test", output_transform=training_stats, tag_name="train")],
    )
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("ssat_test")
    logger.addHandler(handler)
    try:
        trainer.run()
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    for key in (K.LOSS_LABELED, K.LOSS_UNLABELED, K.PSEUDO_CONFIDENCE, K.ATTACK_SUCCESS):
        assert key in text
        assert key in trainer.state.metrics and 0 <= trainer.state.metrics[key] < 100
    # default decollation turns the output into per-item dicts; training_stats reads either
    assert isinstance(trainer.state.output, list)
    stats = training_stats(trainer.state.output)
    assert set(stats) >= {K.LOSS, K.LOSS_LABELED, K.LOSS_UNLABELED, K.PSEUDO_CONFIDENCE, K.ATTACK_SUCCESS}


def test_attack_is_aimed_at_the_trained_network_and_leaves_grads_alone():
    x_l, y_l, x_u = _data()
    net, other = _net(0), _net(1)
    trainer = _ssat(net, x_l, y_l, x_u, FGSM(other, eps=0.002))
    assert trainer.attack.network is net

    grads = []
    trainer.add_event_handler(
        AdversarialTrainingEvents.ATTACK_COMPLETED,
        lambda e: grads.append([p.grad for p in net.parameters()]),
    )
    trainer.run()
    assert all(g is None for g in grads[0])  # the attacks did not write parameter gradients


def test_ssat_from_a_trained_network_keeps_it_accurate():
    """Started from a trained network (online pseudo-labels are only as good as the network), SSAT keeps
    clean accuracy; from scratch, weight 3 on early pseudo-labels can collapse (see experiments/label_scarcity/README.md)."""
    trained, xt, yt = trained_cnn()
    net = copy.deepcopy(trained)
    before = accuracy(net, xt, yt)
    x, y = toy_dataset(64, seed=5)
    xu, _ = toy_dataset(128, seed=6)
    labeled = [{"image": x[i : i + 16], "label": y[i : i + 16]} for i in range(0, 64, 16)]
    unlabeled = [xu[i : i + 16] for i in range(0, 128, 16)]
    trainer = create_trainer(
        "ssat",
        "cpu",
        3,
        labeled,
        net,
        torch.optim.Adam(net.parameters(), lr=1e-3),
        unlabeled_data_loader=unlabeled,
    )
    trainer.run()
    after = accuracy(net, xt, yt)
    assert before > 0.85 and after > before - 0.1, (before, after)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_and_runs_one_iteration(preset):
    x, y = toy_dataset(8, seed=1)
    xu, _ = toy_dataset(8, seed=2)
    net = _net()
    kw = {}
    if PRESETS[preset].trainer is SemiSupervisedAdversarialTrainer:
        kw["unlabeled_data_loader"] = [xu]
    if preset == "ssat_teacher":
        kw["teacher_network"] = _net(1)
    trainer = create_trainer(
        preset,
        "cpu",
        1,
        [{"image": x, "label": y}],
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        steps=2,
        decollate=False,
        **kw,
    )
    assert isinstance(trainer, PRESETS[preset].trainer)
    before = [p.detach().clone() for p in net.parameters()]
    trainer.run()
    out = trainer.state.output
    assert torch.isfinite(out[K.LOSS]) and K.ATTACK_SUCCESS in out
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
