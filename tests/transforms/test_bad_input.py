"""Bad input gets a clear error that names the problem."""

import pytest
import torch
import torch.nn as nn
from helpers import SmallCNN

from monai_adv.transforms import (
    APGD,
    FAB,
    FGSM,
    MIFGSM,
    PGD,
    CarliniWagnerL2,
    SquareAttack,
    TransferAttack,
    WorstCaseEnsemble,
)


@pytest.fixture
def net():
    return SmallCNN().eval()


@pytest.fixture
def x():
    return torch.rand(2, 1, 8, 8)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda n: FGSM(n, -0.1), "eps must be a finite number >= 0"),
        (lambda n: FGSM(n, float("nan")), "eps must be a finite number"),
        (lambda n: FGSM(n, (0.3, 0.1)), "eps range"),
        (lambda n: FGSM(n, (-0.1, 0.1)), "eps range"),
        (lambda n: FGSM(n, (0.1, 0.2, 0.3)), r"\(low, high\)"),
        (lambda n: PGD(n, 0.1, steps=0), "steps must be an integer >= 1"),
        (lambda n: PGD(n, 0.1, steps=2.5), "steps must be an integer >= 1"),
        (lambda n: PGD(n, 0.1, alpha=0.0), "alpha must be > 0"),
        (lambda n: PGD(n, 0.1, norm="l1"), "norm must be one of"),
        (lambda n: SquareAttack(n, 0.1, norm="l1"), "norm must be one of"),
        (lambda n: SquareAttack(n, 0.1, n_queries=0), "n_queries"),
        (lambda n: SquareAttack(n, 0.1, p_init=1.5), "p_init"),
        (lambda n: MIFGSM(n, 0.1, decay=-1), "decay must be >= 0"),
        (lambda n: APGD(n, 0.1, loss="hinge"), "loss must be 'ce', 'dlr'"),
        (lambda n: APGD(n, 0.1, n_restarts=0), "n_restarts"),
        (lambda n: APGD(n, 0.1, n_target_classes=9), "pass targeted=True"),
        (lambda n: FAB(n, 0.1, steps=0), "steps must be an integer >= 1"),
        (lambda n: FAB(n, 0.1, n_restarts=0), "n_restarts"),
        (lambda n: FAB(n, 0.1, alpha_max=1.5), "alpha_max must be in"),
        (lambda n: FAB(n, 0.1, eta=0.9), "eta"),
        (lambda n: FAB(n, 0.1, beta=0.0), "beta must be in"),
        (lambda n: FAB(n, 0.1, norm="l1"), "norm must be one of"),
        (lambda n: FAB(n, 0.1, targeted=True, n_target_classes=0), "n_target_classes"),
        (lambda n: CarliniWagnerL2(n, c=0), "c must be > 0"),
        (lambda n: CarliniWagnerL2(n, kappa=-1), "kappa must be >= 0"),
        (lambda n: FGSM(n, 0.1, value_range=(1.0, 0.0)), "inverted"),
        (lambda n: FGSM(n, 0.1, value_range=(0.0, float("inf"))), "finite"),
        (lambda n: FGSM(n, 0.1, spatial_dims=4), "spatial_dims must be 2 or 3"),
        (lambda n: FGSM("not a network", 0.1), "network must be"),
        (lambda n: WorstCaseEnsemble(n, []), "at least one attack"),
        (lambda n: WorstCaseEnsemble(n, [FGSM(n, 0.1, spatial_dims=3)]), "spatial_dims"),
        (lambda n: TransferAttack(n, "pgd"), "base_attack must be"),
    ],
)
def test_bad_arguments(make, match, net):
    with pytest.raises((ValueError, TypeError), match=match):
        make(net)


@pytest.mark.parametrize(
    "img, label, match",
    [
        (torch.rand(8, 8), 0, "expected 3 .* or 4"),
        (torch.rand(1, 1, 1, 8, 8), 0, "expected 3 .* or 4"),
        (torch.full((1, 8, 8), float("nan")), 0, "NaN or Inf"),
        (torch.full((1, 8, 8), float("inf")), 0, "NaN or Inf"),
        (torch.randint(0, 255, (1, 8, 8), dtype=torch.uint8), 0, "floating point"),
        (torch.rand(1, 8, 8) * 255, 0, "outside value_range"),
        (torch.rand(2, 1, 8, 8), 7, "out of range for a network with 4 classes"),
        (torch.rand(2, 1, 8, 8), -1, "non-negative"),
        (torch.rand(2, 1, 8, 8), torch.tensor([0, 1, 2]), "do not fit a batch of 2"),
        (torch.rand(2, 1, 8, 8), torch.eye(4)[:2], "not one-hot"),
        (torch.rand(2, 1, 8, 8), torch.tensor([0.5, 1.0]), "integer class indices"),
        (torch.rand(2, 1, 8, 8), None, "label is required"),
        ("an image", 0, "must be a torch tensor or numpy array"),
    ],
)
def test_bad_images_and_labels(img, label, match, net):
    with pytest.raises((ValueError, TypeError), match=match):
        FGSM(net, 0.1)(img, label)


def test_bad_mask(net, x):
    with pytest.raises(ValueError, match="does not fit"):
        FGSM(net, 0.1)(x, 0, mask=torch.ones(1, 7, 8))
    with pytest.raises(ValueError, match="mask has 5 dimensions"):
        FGSM(net, 0.1)(x, 0, mask=torch.ones(1, 1, 1, 8, 8))
    with pytest.raises(ValueError, match="mask contains NaN"):
        FGSM(net, 0.1)(x, 0, mask=torch.full((8, 8), float("nan")))


class Returns(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value
        self.p = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.value(x) + 0 * self.p if isinstance(self.value(x), torch.Tensor) else self.value(x)


@pytest.mark.parametrize(
    "output, match",
    [
        (lambda x: x, "not class logits"),  # an image, e.g. a segmentation network
        (lambda x: x.flatten(1)[:, :1], "not class logits"),  # one output: not a classifier
        (lambda x: x.flatten(1)[:1, :4], "not class logits"),  # wrong batch size
        (lambda x: {"seg": x}, "none of which"),
        (lambda x: "logits", "not class logits"),
    ],
)
def test_network_output_that_is_not_logits(output, match, x):
    with pytest.raises((ValueError, TypeError), match=match):
        PGD(Returns(output), 0.1, steps=1)(x, 0)


def test_dlr_needs_three_classes(x):
    two = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ValueError, match="at least 3 classes"):
        APGD(two, 0.1, loss="dlr", steps=2)(x, 0)
