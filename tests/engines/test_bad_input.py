"""Bad input to the adversarial trainers gives an error that names the problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import SmallCNN, toy_dataset
from torch.utils.data import DataLoader, TensorDataset

from monai_adv.engines import CyclingLoader, SemiSupervisedAdversarialTrainer, SupervisedAdversarialTrainer
from monai_adv.transforms import FGSM, PGD


def _setup(n=8):
    x, y = toy_dataset(n, seed=1)
    xu, _ = toy_dataset(n, seed=2)
    net = SmallCNN(width=4)
    return x, y, xu, net, torch.optim.SGD(net.parameters(), lr=0.1)


def _ssat(labeled, unlabeled, net, opt, attack=None, **kw):
    return SemiSupervisedAdversarialTrainer(
        "cpu", 1, labeled, unlabeled, net, opt, nn.CrossEntropyLoss(), attack or FGSM(net, eps=0.002), **kw
    )


@pytest.mark.parametrize(
    "empty", [[], DataLoader(TensorDataset(torch.zeros(0, 1, 16, 16)), batch_size=4)], ids=["list", "loader"]
)
def test_empty_unlabeled_loader(empty):
    x, y, _, net, opt = _setup()
    with pytest.raises(ValueError, match="unlabeled_data_loader is empty"):
        _ssat([{"image": x, "label": y}], empty, net, opt)


def test_unlabeled_loader_that_yields_nothing_at_run_time():
    x, y, _, net, opt = _setup()

    class Unsized:  # no __len__: emptiness shows only when iterated
        def __iter__(self):
            return iter(())

    tr = _ssat([{"image": x, "label": y}], Unsized(), net, opt)
    with pytest.raises(ValueError, match="unlabeled_data_loader yielded no batches"):
        tr.run()
    with pytest.raises(ValueError, match="yielded no batches"):
        CyclingLoader(Unsized()).next()


def test_label_fraction_zero_gives_an_empty_labeled_loader():
    _, _, xu, net, opt = _setup()
    labeled = DataLoader(TensorDataset(torch.zeros(0, 1, 16, 16), torch.zeros(0)), batch_size=4)
    with pytest.raises(ValueError, match="train_data_loader .*is empty .*label fraction of 0"):
        _ssat(labeled, [xu], net, opt)
    with pytest.raises(ValueError, match="train_data_loader is empty"):
        SupervisedAdversarialTrainer("cpu", 1, [], net, opt, nn.CrossEntropyLoss(), FGSM(net, eps=0.01))


@pytest.mark.parametrize("shape", [(8, 1, 8, 8), (8, 3, 16, 16), (8, 1, 16, 16, 16)])
def test_unlabeled_shape_differs_from_labeled(shape):
    x, y, _, net, opt = _setup()
    tr = _ssat([{"image": x, "label": y}], [torch.rand(shape)], net, opt)
    with pytest.raises(
        ValueError, match=r"unlabeled images of shape .* differ from the labeled images' shape"
    ):
        tr.run()


def test_unlabeled_batch_of_another_batch_size_is_fine():
    x, y, xu, net, opt = _setup()
    _ssat([{"image": x, "label": y}], [xu[:3]], net, opt).run()


@pytest.mark.parametrize("trainer", ["ssat", "madry"])
def test_labels_outside_the_network_classes(trainer):
    x, _, xu, net, opt = _setup()
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])  # SmallCNN has 4 classes
    labeled = [{"image": x, "label": y}]
    if trainer == "ssat":
        tr = _ssat(labeled, [xu], net, opt)
    else:
        tr = SupervisedAdversarialTrainer(
            "cpu", 1, labeled, net, opt, nn.CrossEntropyLoss(), PGD(net, eps=0.01, steps=1)
        )
    with pytest.raises(
        ValueError, match=r"labels.*\[(4, 5|0, 1, 2, 3, 4, 5)\] are out.*(classes 0..3|4 classes)"
    ):
        tr.run()


@pytest.mark.parametrize(
    "label, match",
    [
        (torch.nn.functional.one_hot(torch.arange(8) % 4, 4), "not one-hot"),
        (torch.full((8,), -1), "non-negative"),
        (torch.full((8,), 0.5), "integer class indices"),
        (torch.zeros(5, dtype=torch.long), "do not fit a batch of 8"),
    ],
)
def test_malformed_labels(label, match):
    x, _, xu, net, opt = _setup()
    with pytest.raises(ValueError, match=match):
        _ssat([{"image": x, "label": label}], [xu], net, opt).run()


def test_nan_in_unlabeled_batch():
    x, y, xu, net, opt = _setup()
    xu = xu.clone()
    xu[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="unlabeled batch contains NaN"):
        _ssat([{"image": x, "label": y}], [xu], net, opt).run()


def test_dict_unlabeled_batch_without_the_image_key():
    x, y, xu, net, opt = _setup()
    with pytest.raises(ValueError, match="without the image key 'image'"):
        _ssat([{"image": x, "label": y}], [{"img": xu}], net, opt).run()


@pytest.mark.parametrize(
    "kw, err, match",
    [
        (dict(unlabeled_weight=-1.0), ValueError, "unlabeled_weight must be >= 0"),
        (dict(pseudo_labels="oracle"), ValueError, "pseudo_labels must be 'online', 'teacher' or 'ema'"),
        (dict(ema_decay=1.0), ValueError, "ema_decay"),
        (dict(warmup_epochs=-1), ValueError, "warmup_epochs"),
        (dict(pseudo_labels="teacher"), ValueError, "needs teacher_network"),
        (dict(teacher_network=nn.Identity()), ValueError, "set pseudo_labels='teacher'"),
        (dict(consistency="mse"), ValueError, "consistency must be 'ce' or 'kl'"),
        (dict(confidence_threshold=1.0), ValueError, r"confidence_threshold must lie in \[0, 1\)"),
        (dict(labeled_attack="pgd"), TypeError, "labeled_attack must be an attack"),
        (dict(accumulation_steps=2), ValueError, "accumulation_steps"),
    ],
)
def test_bad_ssat_options(kw, err, match):
    x, y, xu, net, opt = _setup()
    with pytest.raises(err, match=match):
        _ssat([{"image": x, "label": y}], [xu], net, opt, **kw)


def test_bad_supervised_options():
    x, y, _, net, opt = _setup()
    lab = [{"image": x, "label": y}]
    loss = nn.CrossEntropyLoss()
    with pytest.raises(TypeError, match="attack must be an attack"):
        SupervisedAdversarialTrainer("cpu", 1, lab, net, opt, loss, lambda a, b: a)
    with pytest.raises(ValueError, match="method must be 'madry' or 'trades'"):
        SupervisedAdversarialTrainer("cpu", 1, lab, net, opt, loss, FGSM(net, eps=0.01), method="mart")
    with pytest.raises(ValueError, match="needs a random start"):
        SupervisedAdversarialTrainer("cpu", 1, lab, net, opt, loss, FGSM(net, eps=0.01), method="trades")
    with pytest.raises(ValueError, match="needs a random start"):
        SupervisedAdversarialTrainer(
            "cpu", 1, lab, net, opt, loss, PGD(net, eps=0.01, random_start=False), method="trades"
        )
    with pytest.raises(ValueError, match="beta must be >= 0"):
        SupervisedAdversarialTrainer(
            "cpu", 1, lab, net, opt, loss, PGD(net, eps=0.01), method="trades", beta=-1
        )
    with pytest.raises(ValueError, match=r"clean_weight must lie in \[0, 1\]"):
        SupervisedAdversarialTrainer("cpu", 1, lab, net, opt, loss, PGD(net, eps=0.01), clean_weight=2)


def test_network_that_does_not_return_logits():
    x, y, xu, _, _ = _setup()
    net = nn.Sequential(nn.Flatten(), nn.Linear(256, 4), nn.Unflatten(1, (2, 2)))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not class logits"):
        _ssat([{"image": x, "label": y}], [xu], net, opt).run()


def test_supervised_methods_are_classes():
    from monai_adv.engines import MadryAdversarialTrainer, TradesAdversarialTrainer

    x, y, _, net, opt = _setup()
    lab = [{"image": x, "label": y}]
    loss = nn.CrossEntropyLoss()
    madry = SupervisedAdversarialTrainer("cpu", 1, lab, net, opt, loss, PGD(net, eps=0.01, steps=1))
    trades = SupervisedAdversarialTrainer("cpu", 1, lab, net, opt, loss, PGD(net, eps=0.01), method="trades")
    assert type(madry) is MadryAdversarialTrainer and madry.method == "madry"
    assert type(trades) is TradesAdversarialTrainer and trades.method == "trades"
    assert isinstance(trades, SupervisedAdversarialTrainer)
    assert (
        type(TradesAdversarialTrainer("cpu", 1, lab, net, opt, loss, PGD(net, eps=0.01)))
        is TradesAdversarialTrainer
    )
    with pytest.raises(ValueError, match="trains with method='madry'"):
        MadryAdversarialTrainer("cpu", 1, lab, net, opt, loss, PGD(net, eps=0.01), method="trades")
