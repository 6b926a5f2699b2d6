"""Robust self-training (RST): pseudo-labels are the teacher's argmax, the batches are half labeled and half
pseudo-labeled, the loss is TRADES' on the mixed batch, and a few iterations train a classifier and a
segmentation network end to end."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import SmallCNN, toy_dataset
from ignite.engine import Events
from monai.losses import DiceCELoss
from monai.utils import CommonKeys as Keys

from monai_adv.engines import (
    AdvTrainingKeys,
    CyclingLoader,
    PseudoLabeledLoader,
    RobustSelfTrainingTrainer,
    create_trainer,
    pseudo_label,
)
from monai_adv.transforms import PGD
from monai_adv.transforms.losses import kl_attack_loss, per_sample_kl

K = AdvTrainingKeys
LR = 0.1


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = SmallCNN(width=8)
    net.dropout.p = 0.0
    return net


def _seg(seed: int = 0, k: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, k, 1))


def _maps(n: int = 4, size: int = 12, seed: int = 1):
    """Images whose classes are intensity bands: 0 below 0.33, 1 up to 0.66, 2 above."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    return x, ((x > 0.33).long() + (x > 0.66).long())


def _rst(net, labeled, unlabeled, attack, **kwargs):
    return RobustSelfTrainingTrainer(
        "cpu",
        1,
        labeled,
        unlabeled,
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        kwargs.pop("loss_function", nn.CrossEntropyLoss()),
        attack,
        decollate=False,
        **kwargs,
    )


# --------------------------------------------------------------------------------------- pseudo-labels
def test_pseudo_labels_are_the_teachers_argmax_per_item_and_per_voxel():
    teacher = _net(3)
    x, _ = toy_dataset(10, seed=4)
    with torch.no_grad():
        expected = teacher.eval()(x).argmax(1)
    teacher.train()
    got = pseudo_label(teacher, x, batch_size=3)  # 4 forward passes, the last one of a single item
    assert torch.equal(got, expected) and got.dtype == torch.long
    assert teacher.training  # the teacher's mode is restored
    # a loader's batches, in its order, dicts or tuples
    assert torch.equal(pseudo_label(teacher, [{"image": x[:6]}, {"image": x[6:]}]), expected)
    assert torch.equal(pseudo_label(teacher, [(x[:5], None), (x[5:], None)]), expected)

    seg = _seg(2)
    xs, _ = _maps(3)
    masks = pseudo_label(seg, xs)
    assert masks.shape == (3, 1, 12, 12)
    assert torch.equal(masks[:, 0], seg(xs).argmax(1))
    with pytest.raises(ValueError, match="no images"):
        pseudo_label(teacher, [])


def test_pseudo_labeled_loader_labels_each_batch_as_drawn():
    teacher = _net(3)
    x, _ = toy_dataset(8, seed=4)
    loader = PseudoLabeledLoader([{"image": x[:4], "id": 0}, x[4:]], teacher)
    batches = list(loader)
    assert len(loader) == 2 and batches[0]["id"] == 0
    with torch.no_grad():
        expected = teacher.eval()(x).argmax(1)
    assert torch.equal(torch.cat([b["label"] for b in batches]), expected)
    assert torch.equal(torch.cat([b["image"] for b in batches]), x)


# ----------------------------------------------------------------------------------------- mixed batch
@pytest.mark.parametrize("unlabeled_batch", [4, 3, 6])
def test_mixed_batch_is_half_labeled_half_pseudo_labeled(unlabeled_batch):
    """4 labeled items and 4 unlabeled ones, whatever the unlabeled loader's batch size (3: two batches drawn,
    the surplus left out; 6: the first 4 taken); the unlabeled loader is cycled on its own."""
    x, y = toy_dataset(8, seed=1)
    xu, _ = toy_dataset(12, seed=2)
    teacher = _net(7)
    with torch.no_grad():
        yu = teacher.eval()(xu).argmax(1)
    labeled = [{"image": x[:4], "label": y[:4]}, {"image": x[4:], "label": y[4:]}]
    unlabeled = [xu[i : i + unlabeled_batch] for i in range(0, 12, unlabeled_batch)]
    seen = []
    net = _net()
    trainer = _rst(net, labeled, unlabeled, PGD(net, eps=0.03, steps=1), teacher_network=teacher)

    @trainer.on(Events.ITERATION_COMPLETED)
    def record(engine):
        seen.append((engine.state.output[Keys.IMAGE].clone(), engine.state.output[Keys.LABEL].clone()))

    trainer.run()
    assert len(seen) == 2
    used = 0  # unlabeled items drawn so far (12 in all: the loader does not wrap around here)
    for i, (img, lab) in enumerate(seen):
        assert img.shape[0] == 8 and lab.shape == (8,)
        assert torch.equal(img[:4], x[4 * i : 4 * i + 4]) and torch.equal(lab[:4], y[4 * i : 4 * i + 4])
        # the pseudo-labeled half: the next unlabeled items (whole batches drawn; a surplus is dropped)
        start = used
        assert torch.equal(img[4:], xu[start : start + 4])
        idx = torch.arange(start, start + 4)
        assert torch.equal(lab[4:], yu[idx])
        used = -(-(start + 4) // unlabeled_batch) * unlabeled_batch
    assert 0.0 <= trainer.state.output[K.PSEUDO_CONFIDENCE] <= 1.0
    assert trainer.state.output[K.PSEUDO_HISTOGRAM].sum().item() == pytest.approx(1.0)


def test_rst_loss_is_trades_on_the_mixed_batch():
    x, y = toy_dataset(4, seed=1)
    xu, _ = toy_dataset(4, seed=2)
    teacher = _net(7)
    net = _net()
    ref = copy.deepcopy(net)
    atk = PGD(net, eps=0.03, steps=3)
    atk.set_random_state(5)
    trainer = _rst(net, [{"image": x, "label": y}], [xu], atk, teacher_network=teacher, beta=6.0)
    trainer.run()

    with torch.no_grad():
        yu = teacher.eval()(xu).argmax(1)
    xm, ym = torch.cat([x, xu]), torch.cat([y, yu])
    ref.eval()
    with torch.no_grad():
        clean_eval = ref(xm)
    ref_atk = PGD(ref, eps=0.03, steps=3, loss=kl_attack_loss(clean_eval))
    ref_atk.set_random_state(5)
    x_adv = ref_atk(xm, ym)
    ref.train()
    logits = ref(xm)
    loss_r = per_sample_kl(logits, ref(x_adv)).mean()
    loss = F.cross_entropy(logits, ym) + 6.0 * loss_r
    assert trainer.state.output[K.LOSS_ROBUST] == pytest.approx(loss_r.item(), rel=1e-4, abs=1e-7)
    assert trainer.state.output[K.LOSS].item() == pytest.approx(loss.item(), rel=1e-5)
    ref.zero_grad()
    loss.backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), (q - LR * q.grad).detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_batches_already_pseudo_labeled_need_no_teacher():
    """Carmon et al. label the pool once: a loader of (images, pseudo-labels) trains without a teacher."""
    x, y = toy_dataset(4, seed=1)
    xu, _ = toy_dataset(4, seed=2)
    yu = torch.tensor([3, 2, 1, 0])
    net = _net()
    out = []
    trainer = _rst(net, [{"image": x, "label": y}], [{"image": xu, "label": yu}], PGD(net, eps=0.03, steps=1))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: out.append(e.state.output[Keys.LABEL].clone()),
    )
    trainer.run()
    assert torch.equal(out[0], torch.cat([y, yu]))
    # without a teacher, batches without pseudo-labels are refused with the fix named
    net = _net()
    bare = _rst(net, [{"image": x, "label": y}], [xu], PGD(net, eps=0.03, steps=1))
    with pytest.raises(ValueError, match="teacher_network"):
        bare.run()


def test_teacher_from_a_checkpoint_and_bad_input(tmp_path):
    x, y = toy_dataset(4, seed=1)
    xu, _ = toy_dataset(4, seed=2)
    teacher = _net(7)
    path = tmp_path / "teacher.pt"
    torch.save({"model": teacher.state_dict()}, path)
    net = _net()
    trainer = _rst(
        net, [{"image": x, "label": y}], [xu], PGD(net, eps=0.03, steps=1), teacher_network=str(path)
    )
    loaded = trainer.teacher_network
    assert loaded is not net and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        _rst(net, [{"image": x, "label": y}], [xu], PGD(net, eps=0.03, steps=1), teacher_network="missing.pt")
    with pytest.raises(ValueError, match="random start"):
        _rst(
            net,
            [{"image": x, "label": y}],
            [xu],
            PGD(net, eps=0.03, random_start=False),
            teacher_network=teacher,
        )
    with pytest.raises(ValueError, match="empty"):
        _rst(net, [{"image": x, "label": y}], [], PGD(net, eps=0.03), teacher_network=teacher)
    small, _ = toy_dataset(4, size=8, seed=2)
    wrong = _rst(net, [{"image": x, "label": y}], [small], PGD(net, eps=0.03), teacher_network=teacher)
    with pytest.raises(ValueError, match="same channels and spatial size"):
        wrong.run()


# ------------------------------------------------------------------------------------------ end to end
def test_rst_trains_a_classifier_for_a_few_iterations():
    x, y = toy_dataset(16, seed=1)
    xu, _ = toy_dataset(24, seed=2)
    teacher = _net(7)
    net = _net()
    before = copy.deepcopy(net.state_dict())
    labeled = [{"image": x[i : i + 4], "label": y[i : i + 4]} for i in range(0, 16, 4)]
    trainer = create_trainer(
        "rst",
        "cpu",
        1,
        labeled,
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        unlabeled_data_loader=[xu[i : i + 4] for i in range(0, 24, 4)],
        teacher_network=teacher,
        steps=2,
        decollate=False,
    )
    assert isinstance(trainer, RobustSelfTrainingTrainer) and trainer.beta == 6.0
    assert trainer.attack.eps == pytest.approx(8 / 255) and trainer.attack.steps == 2
    trainer.run()
    assert trainer.state.iteration == 4
    assert isinstance(trainer.unlabeled, CyclingLoader) and trainer.unlabeled.position == 4
    assert torch.isfinite(trainer.state.output[K.LOSS]) and K.ATTACK_SUCCESS in trainer.state.output
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("one_hot", [False, True])
def test_rst_trains_a_segmentation_network_on_pseudo_label_masks(one_hot):
    x, y = _maps(4, seed=1)
    xu, _ = _maps(4, seed=2)
    teacher = _seg(5)
    net = _seg(0)
    before = copy.deepcopy(net.state_dict())
    labels = F.one_hot(y[:, 0], 3).movedim(-1, 1).float() if one_hot else y
    seen = []
    trainer = create_trainer(
        "rst",
        "cpu",
        2,
        [{"image": x[:2], "label": labels[:2]}, {"image": x[2:], "label": labels[2:]}],
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        DiceCELoss(to_onehot_y=not one_hot, softmax=True),
        unlabeled_data_loader=[xu],
        teacher_network=teacher,
        eps=0.03,
        steps=1,
        decollate=False,
    )
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: seen.append(e.state.output[Keys.LABEL].clone()),
    )
    trainer.run()
    assert trainer.state.iteration == 4 and torch.isfinite(trainer.state.output[K.LOSS])
    with torch.no_grad():
        masks = teacher(xu).argmax(1)
    first = seen[0]
    assert first.shape == ((4, 3, 12, 12) if one_hot else (4, 1, 12, 12))
    pseudo = first[2:].argmax(1) if one_hot else first[2:, 0]
    assert torch.equal(pseudo.long(), masks[:2])  # the teacher's argmax masks, in the labels' format
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_monai_postprocessing_sees_every_item_of_the_mixed_batch():
    """With decollate=True MONAI post-processes the batch's items paired with the output's: all 2n of them."""
    from ignite.metrics import Accuracy
    from monai.handlers import from_engine
    from monai.transforms import AsDiscreted

    x, y = toy_dataset(4, seed=1)
    xu, _ = toy_dataset(4, seed=2)
    net = _net()
    trainer = RobustSelfTrainingTrainer(
        "cpu",
        1,
        [{"image": x, "label": y}],
        [xu],
        net,
        torch.optim.SGD(net.parameters(), lr=LR),
        nn.CrossEntropyLoss(),
        PGD(net, eps=0.03, steps=1),
        teacher_network=_net(7),
        postprocessing=AsDiscreted(keys=["pred", "label"], argmax=[True, False], to_onehot=4),
        key_train_metric={"acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
    )
    trainer.run()
    assert len(trainer.state.output) == 8
    assert all(item["label"].shape == (4,) and item["pred"].shape == (4,) for item in trainer.state.output)
    assert 0.0 <= trainer.state.metrics["acc"] <= 1.0
