"""Closed-form cases: on a linear model the optimal one-step perturbations are known exactly."""

import pytest
import torch
from helpers import LinearClassifier

from monai_adv.transforms import FGSM, MIFGSM, PGD

torch.manual_seed(0)
D = 3 * 5 * 4  # (C=3, 5, 4) images


@pytest.fixture
def two_class_linear():
    # small weights keep the softmax away from saturation, where 1 - p loses float32 precision
    w = 0.2 * torch.randn(2, D, generator=torch.Generator().manual_seed(1))
    return LinearClassifier(w, torch.tensor([0.1, -0.2])), w


def test_fgsm_linf_is_minus_eps_sign_of_the_margin_gradient(two_class_linear):
    # for 2 classes, CE(y) is a decreasing function of the margin (w_y - w_o) . x,
    # so the Linf-optimal step is -eps * sign(w_y - w_o), attained exactly by FGSM
    net, w = two_class_linear
    x = torch.rand(6, 3, 5, 4)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    eps = 0.05
    x_adv = FGSM(net, eps, value_range=None)(x, y)
    direction = (w[y] - w[1 - y]).reshape(6, 3, 5, 4)
    torch.testing.assert_close(x_adv, x - eps * direction.sign())


def test_one_step_l2_is_minus_eps_unit_margin_gradient(two_class_linear):
    net, w = two_class_linear
    x = torch.rand(6, 3, 5, 4)
    y = torch.tensor([1, 1, 0, 1, 0, 0])
    eps = 0.7
    atk = PGD(net, eps, alpha=eps, steps=1, norm="l2", random_start=False, value_range=None)
    direction = (w[y] - w[1 - y]).reshape(6, 3, 5, 4)
    expected = x - eps * direction / direction.flatten(1).norm(dim=1).reshape(6, 1, 1, 1)
    torch.testing.assert_close(atk(x, y), expected)
    # the same for FGSM with norm="l2" (the fast gradient method)
    torch.testing.assert_close(FGSM(net, eps, norm="l2", value_range=None)(x, y), expected)


def test_linf_attack_reaches_the_exact_worst_case_margin(two_class_linear):
    # the minimal margin over the Linf ball is m(x) - eps * ||w_y - w_o||_1; FGSM, PGD and MI-FGSM attain it
    net, w = two_class_linear
    x = torch.rand(4, 3, 5, 4)
    y = torch.tensor([0, 1, 1, 0])
    eps = 0.03
    diff = w[y] - w[1 - y]
    b = net.bias[y] - net.bias[1 - y]
    expected = (diff * x.flatten(1)).sum(1) + b - eps * diff.abs().sum(1)
    for atk in (
        FGSM(net, eps, value_range=None),
        PGD(net, eps, steps=5, value_range=None),
        MIFGSM(net, eps, value_range=None),
    ):
        x_adv = atk(x, y)
        got = (diff * x_adv.flatten(1)).sum(1) + b
        torch.testing.assert_close(got.detach(), expected.detach(), rtol=1e-4, atol=1e-5)


def test_targeted_fgsm_moves_towards_the_target(two_class_linear):
    net, w = two_class_linear
    x = torch.rand(5, 3, 5, 4)
    target = torch.tensor([1, 0, 1, 1, 0])
    eps = 0.02
    x_adv = FGSM(net, eps, value_range=None, targeted=True)(x, target)
    direction = (w[target] - w[1 - target]).reshape(5, 3, 5, 4)
    torch.testing.assert_close(x_adv, x + eps * direction.sign())


def test_masked_fgsm_changes_only_the_roi_and_is_optimal_inside(two_class_linear):
    net, w = two_class_linear
    x = torch.rand(2, 3, 5, 4)
    y = torch.tensor([0, 1])
    mask = torch.zeros(1, 5, 4)
    mask[:, 1:3, 1:3] = 1
    eps = 0.1
    x_adv = FGSM(net, eps, value_range=None)(x, y, mask=mask)
    direction = (w[y] - w[1 - y]).reshape(2, 3, 5, 4)
    torch.testing.assert_close(x_adv, x - eps * direction.sign() * mask)


def test_masked_l2_step_spends_the_whole_budget_inside_the_roi(two_class_linear):
    net, w = two_class_linear
    x = torch.rand(2, 3, 5, 4)
    y = torch.tensor([1, 0])
    mask = torch.zeros(2, 1, 5, 4)
    mask[:, :, :2] = 1
    eps = 0.5
    x_adv = PGD(net, eps, alpha=eps, steps=1, norm="l2", random_start=False, value_range=None)(
        x, y, mask=mask
    )
    g = (w[y] - w[1 - y]).reshape(2, 3, 5, 4) * mask
    expected = x - eps * g / g.flatten(1).norm(dim=1).reshape(2, 1, 1, 1)
    torch.testing.assert_close(x_adv, expected)
    torch.testing.assert_close((x_adv - x).flatten(1).norm(dim=1), torch.full((2,), eps))
