"""Dense (segmentation) input that does not fit gets a clear error that names the problem."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import SmallCNN

from monai_adv.transforms import (
    FGSM,
    PGD,
    AdaptiveAttack,
    CosPGD,
    SegPGD,
    SegPGDd,
    per_sample_dice_loss,
)

K = 3


@pytest.fixture
def seg_net():
    torch.manual_seed(0)
    return nn.Conv2d(1, K, 3, padding=1).eval()


@pytest.fixture
def x():
    return torch.rand(2, 1, 8, 8)


@pytest.mark.parametrize(
    "label, match",
    [
        (torch.zeros(2, 1, 8, 7, dtype=torch.long), r"spatial shape \(8, 7\) do not fit the network output"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.long), r"spatial shape \(4, 4\) do not fit"),
        (
            F.one_hot(torch.zeros(2, 8, 8, dtype=torch.long), 4).movedim(-1, 1),
            "K=4 channels .* 3 class logits",
        ),
        (torch.full((2, 1, 8, 8), 3), r"dense labels \[3\] are out of range for a network with 3 classes"),
        (torch.full((2, 1, 8, 8), -1), "must be non-negative"),
        (torch.full((2, 1, 8, 8), 0.5), "non-integer"),
        (torch.full((2, 1, 8, 8), float("nan")), "non-integer"),
        (torch.ones(2, 3, 8, 8), "must be one-hot"),  # every voxel of every class set
        (torch.zeros(3, 1, 8, 8, dtype=torch.long), "do not fit a batch of 2"),
        (torch.zeros(2, 1, 1, 8, 8, dtype=torch.long), "have 5 dimensions"),
    ],
)
def test_label_maps_that_do_not_fit_the_output_are_named(seg_net, x, label, match):
    for atk in (FGSM(seg_net, 0.1), SegPGD(seg_net, 0.1, steps=1), CosPGD(seg_net, 0.1, steps=1)):
        with pytest.raises(ValueError, match=match):
            atk(x, label)


def test_class_labels_for_a_segmentation_output_and_label_maps_for_a_classifier(seg_net, x):
    with pytest.raises(ValueError, match="looks like a segmentation output: pass dense labels"):
        PGD(seg_net, 0.1, steps=1)(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"returns class logits \(2, 4\) but the labels are a dense map"):
        PGD(SmallCNN().eval(), 0.1, steps=1)(x, torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_one_channel_outputs_are_refused_with_the_two_logit_recipe(x):
    sigmoid_net = nn.Conv2d(1, 1, 3, padding=1).eval()
    y = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"one channel; .* torch.cat\(\[torch.zeros_like\(z\), z\], 1\)"):
        FGSM(sigmoid_net, 0.1)(x, y)
    # and the recipe works: softmax over (0, z) is (1 - sigmoid(z), sigmoid(z))
    atk = FGSM(sigmoid_net, 0.1, output_transform=lambda z: torch.cat([torch.zeros_like(z), z], 1))
    assert atk(x, y).shape == x.shape


def test_custom_dense_loss_must_reduce_to_one_value_per_sample(seg_net, x):
    y = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    per_voxel = lambda z, t: F.cross_entropy(z, t, reduction="none")  # noqa: E731
    with pytest.raises(ValueError, match=r"got \(2, 8, 8\); average a per-voxel loss over the voxels"):
        PGD(seg_net, 0.1, steps=1, loss=per_voxel)(x, y)
    with pytest.raises(ValueError, match="per_sample_dice_loss is a loss for dense outputs"):
        per_sample_dice_loss(torch.randn(2, K), torch.tensor([0, 1]))


def test_bad_dense_options_are_named(seg_net):
    with pytest.raises(ValueError, match="dense_success must be one of"):
        PGD(seg_net, 0.1, dense_success="iou")
    with pytest.raises(ValueError, match=r"dense_threshold must be in \[0, 1\]"):
        PGD(seg_net, 0.1, dense_threshold=1.5)
    with pytest.raises(TypeError, match="inferer must be a MONAI Inferer or a callable"):
        PGD(seg_net, 0.1, inferer="sliding")
    with pytest.raises(ValueError, match="SegPGD has its own loss"):
        SegPGD(seg_net, 0.1, loss=per_sample_dice_loss)
    with pytest.raises(ValueError, match="CosPGD has its own loss"):
        CosPGD(seg_net, 0.1, loss=per_sample_dice_loss)
    with pytest.raises(ValueError, match="activation must be 'sigmoid' or 'softmax'"):
        CosPGD(seg_net, 0.1, activation="tanh")


def test_adaptive_attack_refuses_label_maps(x):
    class FittedDetector:
        is_fitted = True
        network = None

        def predict_and_score(self, inputs, grad=False):  # pragma: no cover - never reached
            raise AssertionError("the label check comes first")

    net = SmallCNN().eval()
    det = FittedDetector()
    det.network = net
    atk = AdaptiveAttack(net, det, eps=0.1, steps=1)
    with pytest.raises(ValueError, match="AdaptiveAttack does not attack dense"):
        atk(x, torch.zeros(2, 1, 8, 8, dtype=torch.long))


def test_label_maps_are_accepted_in_every_documented_form(seg_net, x):
    # (B, 1, H, W) indices, (B, K, H, W) one-hot (bool too), one (1, H, W) map broadcast over the
    # batch, numpy arrays and float indices as LoadImage gives them: all the same attack
    y = torch.randint(0, K, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    y[1] = y[0]
    onehot = F.one_hot(y, K).movedim(-1, 1)
    atk = lambda: FGSM(seg_net, 0.1)  # noqa: E731
    ref = atk()(x, y[:, None])
    for label in (onehot, onehot.bool(), y[:1], y[:, None].float(), y[:, None].numpy(), np.asarray(onehot)):
        torch.testing.assert_close(atk()(x, label), ref)
    # one item: (1, H, W) indices or (K, H, W) one-hot
    torch.testing.assert_close(atk()(x[0], y[:1]), ref[0])
    torch.testing.assert_close(atk()(x[0], onehot[0]), ref[0])


def test_dictionary_version_names_a_missing_label_map(seg_net):
    with pytest.raises(KeyError, match="label key 'seg'"):
        SegPGDd("image", network=seg_net, eps=0.1, label_key="seg")({"image": torch.rand(1, 8, 8)})
