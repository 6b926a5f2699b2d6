"""The training methods registered in one place: every name builds its trainer through create_trainer, the
registry says what each needs, and an unknown or misused method is a clear error."""

from __future__ import annotations

import pytest
import torch
from helpers import SmallCNN, toy_dataset

from monai_adv.engines import (
    PRESETS,
    TRAINING_METHODS,
    AutocastSupervisedTrainer,
    MadryAdversarialTrainer,
    RobustSelfTrainingTrainer,
    SemiSupervisedAdversarialTrainer,
    TradesAdversarialTrainer,
    TrainingMethod,
    create_trainer,
    register_training_method,
    training_method,
)
from monai_adv.transforms import FGSM, PGD


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallCNN(width=4)


def test_registry_lists_the_methods_with_their_needs():
    assert list(TRAINING_METHODS)[:5] == ["supervised", "madry", "trades", "rst", "ssat"]
    assert {"ssat_pgd", "ssat_kl", "ssat_threshold", "ssat_teacher"} <= set(TRAINING_METHODS)
    needs = {n: (m.needs_unlabeled, m.needs_teacher, m.has_attack) for n, m in TRAINING_METHODS.items()}
    assert needs["supervised"] == (False, False, False)
    assert needs["madry"] == needs["trades"] == (False, False, True)
    assert needs["rst"] == needs["ssat_teacher"] == (True, True, True)
    assert needs["ssat"] == (True, False, True)
    assert training_method("ssat").eps == (0.001, 0.003) and training_method("madry").steps == 7
    assert all(m.description for m in TRAINING_METHODS.values())
    # the first release's presets are the registry's entries
    assert all(PRESETS[n] is TRAINING_METHODS[n] for n in PRESETS)
    with pytest.raises(TypeError):
        TRAINING_METHODS["x"] = TRAINING_METHODS["madry"]  # read-only: register_training_method adds
    with pytest.raises(ValueError, match="unknown preset or training method 'nope'.*'rst'"):
        training_method("nope")


EXPECTED = {
    "supervised": AutocastSupervisedTrainer,
    "madry": MadryAdversarialTrainer,
    "trades": TradesAdversarialTrainer,
    "rst": RobustSelfTrainingTrainer,
    "ssat": SemiSupervisedAdversarialTrainer,
    "ssat_teacher": SemiSupervisedAdversarialTrainer,
}


@pytest.mark.parametrize("name", sorted(TRAINING_METHODS))
def test_every_method_builds_its_trainer_and_trains(name):
    method = TRAINING_METHODS[name]
    x, y = toy_dataset(4, seed=1)
    xu, _ = toy_dataset(4, seed=2)
    net = _net()
    kw = {}
    if method.needs_unlabeled:
        kw["unlabeled_data_loader"] = [xu]
    if method.needs_teacher:
        kw["teacher_network"] = _net()
    if method.has_attack:
        kw["steps"] = 1
    before = [p.detach().clone() for p in net.parameters()]
    trainer = create_trainer(
        name, "cpu", 1, [{"image": x, "label": y}], net, torch.optim.SGD(net.parameters(), lr=0.1), **kw
    )
    assert isinstance(trainer, EXPECTED.get(name, method.trainer))
    if method.has_attack:
        assert isinstance(trainer.attack, FGSM if method.steps <= 1 else PGD)
    trainer.run()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_misuse_is_a_clear_error():
    x, y = toy_dataset(4, seed=1)
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="'rst' needs unlabeled_data_loader"):
        create_trainer("rst", "cpu", 1, [{"image": x, "label": y}], net, opt)
    with pytest.raises(ValueError, match="'supervised' trains without an attack.*eps"):
        create_trainer("supervised", "cpu", 1, [{"image": x, "label": y}], net, opt, eps=0.1)
    with pytest.raises(ValueError, match="exists"):
        register_training_method(TRAINING_METHODS["madry"])


def test_a_registered_method_is_offered_everywhere():
    method = TrainingMethod(
        "madry_test_only", MadryAdversarialTrainer, TRAINING_METHODS["madry"].make_attack, eps=0.01, steps=2
    )
    register_training_method(method)
    try:
        assert training_method("madry_test_only") is method and "madry_test_only" in TRAINING_METHODS
        x, y = toy_dataset(4, seed=1)
        net = _net()
        t = create_trainer(
            "madry_test_only",
            "cpu",
            1,
            [{"image": x, "label": y}],
            net,
            torch.optim.SGD(net.parameters(), lr=0.1),
        )
        assert t.attack.eps == 0.01 and t.attack.steps == 2
    finally:
        from monai_adv.engines import methods

        methods._METHODS.pop("madry_test_only")
