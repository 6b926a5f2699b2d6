"""Segmentation in the engines: the trainers on label maps (the losses they document, pseudo-label masks),
and RobustSegmentationEvaluator's Dice and Hausdorff distance, checked in closed form."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import HausdorffDistanceMetric

from monai_adv.engines import (
    AdvTrainingKeys,
    AutocastSupervisedTrainer,
    RobustSegmentationEvaluator,
    SemiSupervisedAdversarialTrainer,
    SupervisedAdversarialTrainer,
)
from monai_adv.metrics import (
    SegmentationDiceMetric,
    SegmentationHausdorffMetric,
    SegmentationOutputTransform,
    dense_indices,
    one_hot_masks,
)
from monai_adv.transforms import FGSM, PGD

K = AdvTrainingKeys
LR = 0.1


def _net(k: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, k, 1))


def _maps(n: int = 4, size: int = 12, seed: int = 1):
    """Images whose classes are intensity bands: 0 below 0.33, 1 up to 0.66, 2 above."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size, size, generator=g)
    return x, (x > 0.33).long() + (x > 0.66).long()


def _sgd_step_matches(net: nn.Module, ref: nn.Module, loss: torch.Tensor) -> None:
    ref.zero_grad()
    loss.backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.detach(), (q - LR * q.grad).detach(), rtol=1e-5, atol=1e-6, msg=name)


class _Recording(FGSM):
    """FGSM that remembers the labels it was called with."""

    seen: list

    def __call__(self, img, label, mask=None):
        self.seen.append(label.detach().clone())
        return super().__call__(img, label, mask)


# ------------------------------------------------------------------------------------------- metrics
def test_dice_and_hausdorff_state_the_empty_cases():
    y = torch.zeros(1, 4, 10, 10)
    p = torch.zeros(1, 4, 10, 10)
    y[0, 0], p[0, 0] = 1, 1
    y[0, 0, 2:6, 2:6], y[0, 1, 2:6, 2:6] = 0, 1  # class 1: a 4x4 square in the label ...
    p[0, 0, 2:6, 5:9], p[0, 1, 2:6, 5:9] = 0, 1  # ... predicted 3 pixels to the right
    p[0, 0, 8, 8], p[0, 2, 8, 8] = 0, 1  # class 2: invented by the prediction; class 3 in neither
    dice = SegmentationDiceMetric(reduction="none")(p, y)
    inter = 4 * 1  # one column of the square overlaps
    assert dice[0, 1].item() == pytest.approx(2 * inter / 32)
    assert dice[0, 2].item() == 0.0 and torch.isnan(dice[0, 3])
    hd = SegmentationHausdorffMetric(percentile=None, reduction="none")(p, y)
    assert hd[0, 1].item() == pytest.approx(3.0)  # the square moved by 3 pixels
    assert hd[0, 2].item() == pytest.approx(np.hypot(10, 10)) and torch.isnan(hd[0, 3])
    hd_mm = SegmentationHausdorffMetric(percentile=None, spacing=(2.0, 0.5), reduction="none")(p, y)
    assert hd_mm[0, 1].item() == pytest.approx(1.5)
    assert hd_mm[0, 2].item() == pytest.approx(np.hypot(20, 5))
    # where both hold the class, MONAI's numbers unchanged
    monai_hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(
        p[:, :2], y[:, :2]
    )
    ours = SegmentationHausdorffMetric(reduction="none")(p, y)
    torch.testing.assert_close(ours[0, :2], monai_hd[0].float())
    with pytest.raises(ValueError, match="percentile"):
        SegmentationHausdorffMetric(percentile=101)


def test_output_transform_and_label_checks():
    logits = torch.randn(2, 3, 5, 5)
    y = torch.randint(0, 3, (2, 1, 5, 5))
    t = SegmentationOutputTransform(3)
    p1, y1 = t({"pred": logits, "label": y})
    torch.testing.assert_close(p1, one_hot_masks(logits.argmax(1), 3))
    torch.testing.assert_close(y1, one_hot_masks(y[:, 0], 3))
    # MONAI's decollated list of items, and one-hot labels, give the same
    items = [{"pred": logits[i], "label": one_hot_masks(y[:, 0], 3)[i]} for i in range(2)]
    p2, y2 = t(items)
    torch.testing.assert_close(p2, p1)
    torch.testing.assert_close(y2, y1)
    with pytest.raises(ValueError, match="does not fit"):
        t({"pred": logits, "label": y[..., :4]})
    with pytest.raises(ValueError, match="out of range for 3 classes"):
        t({"pred": logits, "label": y + 3})
    with pytest.raises(ValueError, match="2 channels"):
        dense_indices(torch.zeros(2, 2, 5, 5), 3)
    with pytest.raises(ValueError, match="not a dense label map"):
        dense_indices(torch.zeros(2, 1), 3)
    with pytest.raises(ValueError, match="non-integer"):
        dense_indices(torch.full((1, 1, 2, 2), 0.5), 3)
    with pytest.raises(ValueError, match="not dense logits with 3 channels"):
        t({"pred": torch.randn(2, 3), "label": y})


# ------------------------------------------------------------------------------------------ trainers
def test_ssat_on_label_maps_is_the_documented_loss_with_argmax_masks():
    x_l, y_l = _maps(seed=1)
    x_u, hidden = _maps(seed=2)
    net = _net()
    ref = copy.deepcopy(net)
    attack = _Recording(net, eps=0.0)  # eps 0: the attacked batch is the unlabeled one, in closed form
    attack.seen = []
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    trainer = SemiSupervisedAdversarialTrainer(
        "cpu", 1, [{"image": x_l, "label": y_l}], [{"image": x_u, "hidden": hidden}], net,
        torch.optim.SGD(net.parameters(), lr=LR), loss_fn, attack, unlabeled_weight=3.0,
        confidence_threshold=0.4, hidden_label_key="hidden", decollate=False,
    )  # fmt: skip
    trainer.run()
    out = trainer.state.output
    # the attack got the argmax masks (B, 1, H, W) of the network's prediction
    with torch.no_grad():
        probs = ref(x_u).softmax(1)
    conf, y_u = probs.max(1)
    assert len(attack.seen) == 1 and torch.equal(attack.seen[0], y_u[:, None])
    keep = (conf >= 0.4).float()
    loss_u = (F.cross_entropy(ref(x_u), y_u, reduction="none") * keep).mean()
    loss = loss_fn(ref(x_l), y_l) + 3.0 * loss_u
    assert out[K.LOSS_UNLABELED] == pytest.approx(loss_u.item(), rel=1e-5)
    assert out[K.PSEUDO_KEPT] == pytest.approx(keep.mean().item())
    assert out[K.PSEUDO_ACCURACY] == pytest.approx((y_u == hidden[:, 0]).float().mean().item())
    assert out[K.PSEUDO_HISTOGRAM].sum().item() == pytest.approx(1.0) and out[K.PSEUDO_HISTOGRAM].numel() == 3
    assert out["pred"].shape == (4, 3, 12, 12)
    _sgd_step_matches(net, ref, loss)


@pytest.mark.parametrize("method", ["madry", "trades"])
def test_supervised_adversarial_training_on_label_maps(method):
    x, y = _maps()
    net = _net()
    attack = PGD(net, eps=0.05, steps=2, random_start=True)
    trainer = SupervisedAdversarialTrainer(
        "cpu", 3, [{"image": x, "label": y}], net, torch.optim.Adam(net.parameters(), lr=0.05),
        DiceCELoss(to_onehot_y=True, softmax=True), attack, method=method, decollate=False,
    )  # fmt: skip
    trainer.run()
    out = trainer.state.output
    assert 0.0 <= out[K.ATTACK_SUCCESS] <= 1.0 and torch.isfinite(out[K.LOSS])
    # attack_success is the share of voxels the network gets wrong on the attacked batch
    if method == "madry":
        expected = (out["pred"].argmax(1) != y[:, 0]).float().mean().item()
        assert out[K.ATTACK_SUCCESS] == pytest.approx(expected)
    else:
        assert out[K.LOSS_ROBUST] >= 0.0


def test_one_hot_label_maps_train_like_index_maps():
    x, y = _maps()
    runs = []
    for labels, loss in (
        (y, DiceCELoss(to_onehot_y=True, softmax=True)),
        (one_hot_masks(y[:, 0], 3), DiceCELoss(softmax=True)),
    ):
        net = _net()
        t = AutocastSupervisedTrainer(
            "cpu", 2, [{"image": x, "label": labels}], net, torch.optim.SGD(net.parameters(), lr=LR), loss
        )
        t.run()
        runs.append([p.detach().clone() for p in net.parameters()])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b)


def test_label_maps_that_do_not_fit_are_clear_errors():
    x, y = _maps()
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    bad = [
        (y[..., :8], "do not fit the network output"),
        (torch.zeros(4, 2, 12, 12), "2 channels"),
        (y + 3, "out of range for 3 classes"),
    ]
    for labels, msg in bad:
        with pytest.raises(ValueError, match=msg):
            AutocastSupervisedTrainer("cpu", 1, [{"image": x, "label": labels}], net, opt, loss).run()
    with pytest.raises(ValueError, match="not class logits.*segmentation output"):
        AutocastSupervisedTrainer(
            "cpu",
            1,
            [{"image": x, "label": torch.zeros(4, dtype=torch.long)}],
            net,
            opt,
            nn.CrossEntropyLoss(),
        ).run()
    flat = nn.Sequential(nn.Flatten(), nn.Linear(144, 3))
    with pytest.raises(ValueError, match="not dense logits"):
        AutocastSupervisedTrainer("cpu", 1, [{"image": x, "label": y}], flat, opt, loss).run()


# ------------------------------------------------------------------------------------------ evaluator
class _Threshold(nn.Module):
    """Per-pixel logits ``(-s (x - 1/2), s (x - 1/2))``: class 1 exactly where the image is above one half."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight[:] = torch.tensor([-10.0, 10.0]).view(2, 1, 1, 1)
            self.conv.bias[:] = torch.tensor([5.0, -5.0])

    def forward(self, x):
        return self.conv(x)


def test_robust_segmentation_evaluator_in_closed_form(tmp_path):
    """FGSM on a per-pixel threshold moves every pixel by eps against its class: the attacked mask, its
    Dice and its HD95 are known exactly."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 16, 16, generator=g)
    y = (x > 0.5).long()
    net = _Threshold()
    eps = 0.1
    ev = RobustSegmentationEvaluator(
        "cpu", [{"image": x[:4], "label": y[:4]}, {"image": x[4:], "label": y[4:]}], net, num_classes=2,
        attacks={"fgsm": FGSM(net, eps, value_range=(0.0, 1.0))}, decollate=False,
    )  # fmt: skip
    ev.run()
    m = ev.state.metrics
    assert m["dice"] == 1.0 and m["hd95"] == 0.0
    x_adv = torch.where(y.bool(), x - eps, x + eps).clamp(0, 1)
    p_adv, yy = one_hot_masks((x_adv > 0.5).long()[:, 0], 2), one_hot_masks(y[:, 0], 2)
    inter = (p_adv * yy).sum((2, 3))
    dice = 2 * inter / (p_adv.sum((2, 3)) + yy.sum((2, 3)))
    assert m["dice/fgsm"] == pytest.approx(dice.mean().item(), rel=1e-5)
    res = ev.per_class_results()
    assert res["fgsm"]["dice"] == pytest.approx(dice.mean(0).tolist(), rel=1e-5)
    assert res["clean"]["dice"] == [1.0, 1.0]
    hd = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(p_adv, yy)
    assert m["hd95/fgsm"] == pytest.approx(hd.mean().item(), rel=1e-5)
    assert ev.state.metric_details["dice/fgsm"].shape == (6, 2)


def test_robust_segmentation_evaluator_options_and_errors():
    x, y = _maps(n=2, size=8)
    net = _net()
    data = [{"image": x, "label": y}]
    ev = RobustSegmentationEvaluator(
        "cpu", data, net, num_classes=3, hausdorff=False, include_background=False
    )
    ev.run()
    assert set(ev.state.metrics) == {"dice"} and ev.hausdorff_name is None
    assert len(ev.per_class_results()["clean"]["dice"]) == 2  # classes 1 and 2
    assert RobustSegmentationEvaluator("cpu", data, net, 3, hausdorff_percentile=None).hausdorff_name == "hd"
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        RobustSegmentationEvaluator("cpu", data, net, num_classes=1)
    with pytest.raises(ValueError, match="named 'clean'"):
        RobustSegmentationEvaluator("cpu", data, net, 3, attacks={"clean": FGSM(net, 0.1)})
    with pytest.raises(ValueError, match="evaluator's own"):
        RobustSegmentationEvaluator("cpu", data, net, 3, additional_metrics={"hd95": None})
    with pytest.raises(RuntimeError, match="run the evaluator first"):
        RobustSegmentationEvaluator("cpu", data, net, 3).per_class_results()
    with pytest.raises(ValueError, match="does not fit"):
        RobustSegmentationEvaluator("cpu", [{"image": x, "label": y[..., :4]}], net, 3).run()
