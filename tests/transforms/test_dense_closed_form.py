"""Dense outputs on a per-voxel linear model (a 1x1 convolution): the optimal perturbations are known exactly.

With two classes, voxel ``v`` has the margin ``m_v = (W_y - W_o) . x_v + b_y - b_o`` (``y`` its label,
``o`` the other class) and the cross-entropy ``softplus(-m_v)``, which falls as the margin grows. The
mean voxel cross-entropy is a sum of per-voxel terms, each depending on its own voxel only, so over
the Linf ball its maximum is attained voxel by voxel at ``x_v - eps * sign(W_y - W_o)`` (the margin
drops by ``eps * ||W_y - W_o||_1`` at every voxel); its gradient is
``-sigma(-m_v) (W_y - W_o) / N``, which fixes the one-step L2 attack too.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import SlidingWindowInferer
from monai.losses import DiceLoss
from monai.metrics import DiceMetric

from monai_adv.transforms import (
    APGD,
    FGSM,
    MIFGSM,
    PGD,
    CosPGD,
    SegPGD,
    cospgd_loss,
    dlr_loss,
    per_sample_cross_entropy,
    per_sample_dice,
    per_sample_dice_loss,
    segpgd_loss,
)

C = 3  # input channels


def voxel_linear(spatial_dims: int, num_classes: int = 2, seed: int = 1, dtype=torch.float32) -> nn.Module:
    """``logits_v = W x_v + b`` at every voxel: a 1x1 (1x1x1) convolution."""
    g = torch.Generator().manual_seed(seed)
    conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(C, num_classes, 1)
    with torch.no_grad():
        conv.weight.copy_(0.5 * torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(0.1 * torch.randn(num_classes, generator=g))
    return conv.to(dtype).eval()


def weight_diff(net: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """``W_y - W_o`` at every voxel, ``(B, C, *spatial)``, for two classes and labels ``(B, *spatial)``."""
    w = net.weight.detach().flatten(1)  # (2, C)
    diff = w[y] - w[1 - y]  # (B, *spatial, C)
    return diff.movedim(-1, 1)


def voxel_margin(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = net(x)
    return z.gather(1, y[:, None])[:, 0] - z.gather(1, (1 - y)[:, None])[:, 0]


def problem(spatial_dims: int, b: int = 3, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    spatial = (6, 5) if spatial_dims == 2 else (4, 5, 3)
    x = torch.rand((b, C, *spatial), generator=g, dtype=dtype)
    y = torch.randint(0, 2, (b, *spatial), generator=g)
    return voxel_linear(spatial_dims, dtype=dtype), x, y


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("label_form", ["indices", "one-hot", "one item"])
def test_fgsm_is_the_closed_form_linf_optimum(spatial_dims, label_form):
    net, x, y = problem(spatial_dims)
    eps = 0.05
    expected = x - eps * weight_diff(net, y).sign()
    atk = FGSM(net, eps, value_range=None, spatial_dims=spatial_dims)
    if label_form == "indices":
        got = atk(x, y[:, None])
    elif label_form == "one-hot":
        got = atk(x, F.one_hot(y, 2).movedim(-1, 1))
    else:
        got, expected = atk(x[0], y[:1]), expected[0]
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_iterative_attacks_reach_the_exact_worst_case_voxel_margins(spatial_dims):
    net, x, y = problem(spatial_dims, seed=3)
    eps = 0.03
    worst = voxel_margin(net, x, y) - eps * weight_diff(net, y).abs().sum(1)
    common = dict(value_range=None, spatial_dims=spatial_dims)
    for atk in (
        PGD(net, eps, steps=6, **common),
        MIFGSM(net, eps, steps=6, **common),
        SegPGD(net, eps, steps=6, **common),
        CosPGD(net, eps, steps=6, **common),
        # dense_threshold=0: no early stop at the first "success"; APGD returns its highest loss
        APGD(net, eps, steps=10, dense_threshold=0.0, **common),
    ):
        got = voxel_margin(net, atk.set_random_state(0)(x, y[:, None]), y)
        torch.testing.assert_close(got, worst, rtol=1e-4, atol=1e-5, msg=type(atk).__name__)


def test_targeted_and_masked_fgsm_are_the_closed_form():
    net, x, y = problem(2)
    target = 1 - y  # drive every voxel to the other class
    eps = 0.04
    got = FGSM(net, eps, value_range=None, targeted=True)(x, target[:, None])
    torch.testing.assert_close(got, x + eps * weight_diff(net, target).sign())
    mask = torch.zeros(1, *x.shape[2:])
    mask[:, 1:4, 2:] = 1
    got = FGSM(net, eps, value_range=None)(x, y[:, None], mask=mask)
    torch.testing.assert_close(got, x - eps * weight_diff(net, y).sign() * mask)


def test_one_step_l2_follows_the_normalised_voxel_gradient():
    net, x, y = problem(3, dtype=torch.float64)
    eps = 0.5
    g = -torch.sigmoid(-voxel_margin(net, x, y))[:, None] * weight_diff(net, y)  # up to the factor 1/N
    expected = x + eps * g / g.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1, 1)
    got = FGSM(net, eps, norm="l2", value_range=None, spatial_dims=3)(x, y[:, None])
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_cospgd_weights_each_voxel_gradient_by_its_cosine_similarity(activation):
    # one L2 step shows the weights: g_v = -cos_v * sigmoid(-m_v) * (W_y - W_o), with cos_v the cosine
    # between psi(z_v) and the one-hot label, i.e. psi(z_v)_y / ||psi(z_v)||_2
    net, x, y = problem(2, dtype=torch.float64)
    eps = 0.5
    with torch.no_grad():
        z = net(x)
    probs = torch.sigmoid(z) if activation == "sigmoid" else torch.softmax(z, 1)
    cos = probs.gather(1, y[:, None])[:, 0] / probs.norm(dim=1)
    g = -(cos * torch.sigmoid(-voxel_margin(net, x, y)))[:, None] * weight_diff(net, y)
    expected = x + eps * g / g.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    atk = CosPGD(
        net, eps, alpha=eps, steps=1, norm="l2", random_start=False, value_range=None, activation=activation
    )
    torch.testing.assert_close(atk(x, y[:, None]), expected)
    # the plain mean-CE step differs: the weights matter
    plain = PGD(net, eps, alpha=eps, steps=1, norm="l2", random_start=False, value_range=None)(x, y[:, None])
    assert not torch.allclose(plain, expected)


def test_segpgd_first_step_moves_only_the_voxels_still_classified_correctly():
    # lambda_1 = 0: misclassified voxels have weight 0, so their gradient (and step) is exactly zero
    net, x, y = problem(2, b=4, seed=5)
    eps = 0.05
    correct = (voxel_margin(net, x, y) > 0)[:, None]
    assert correct.any() and (~correct).any()
    got = SegPGD(net, eps, alpha=eps, steps=1, random_start=False, value_range=None)(x, y[:, None])
    expected = torch.where(correct, x - eps * weight_diff(net, y).sign(), x)
    torch.testing.assert_close(got, expected)
    # the schedule: lambda_t = (t - 1) / (2T) for t = 1 .. T
    assert [SegPGD(net, eps, steps=4).lam(t) for t in range(4)] == [0.0, 0.125, 0.25, 0.375]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_sliding_window_attack_has_gradients_through_every_window(spatial_dims, mode):
    # a per-voxel model gives every window the same logits, so the sliding-window output equals the
    # direct one and the attack must still reach the closed form at every voxel, window borders too
    net, x, y = problem(spatial_dims, seed=2)
    roi = (3,) * spatial_dims
    window = SlidingWindowInferer(roi_size=roi, sw_batch_size=5, overlap=0.5, mode=mode)
    seen = []

    def recording_inferer(inputs, network):
        return window(inputs, lambda w: seen.append(tuple(w.shape[2:])) or network(w))

    eps = 0.05
    got = FGSM(net, eps, value_range=None, spatial_dims=spatial_dims, inferer=recording_inferer)(
        x, y[:, None]
    )
    torch.testing.assert_close(got, x - eps * weight_diff(net, y).sign())
    assert len(seen) > 1 and set(seen) == {roi}  # the network only ever saw windows


# ------------------------------------------------------------------------------------------------
# the dense losses, against direct computations
# ------------------------------------------------------------------------------------------------
def test_dense_losses_are_per_voxel_losses_averaged_per_sample():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 5, 3, generator=g)
    y = torch.randint(0, 4, (2, 5, 3), generator=g)
    ce = F.cross_entropy(z, y, reduction="none")
    torch.testing.assert_close(per_sample_cross_entropy(z, y), ce.flatten(1).mean(1))
    # DLR per voxel = the classification DLR with the voxels as samples
    voxels_as_samples = z.movedim(1, -1).reshape(-1, 4)
    expected = dlr_loss(voxels_as_samples, y.reshape(-1)).reshape(2, -1).mean(1)
    torch.testing.assert_close(dlr_loss(z, y), expected)


def test_segpgd_and_cospgd_losses_match_their_formulas():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 4, 4, generator=g)
    y = torch.randint(0, 3, (2, 4, 4), generator=g)
    ce = F.cross_entropy(z, y, reduction="none")
    correct = z.argmax(1) == y
    lam = 0.3
    expected = ((1 - lam) * (ce * correct).sum((1, 2)) + lam * (ce * ~correct).sum((1, 2))) / 16
    torch.testing.assert_close(segpgd_loss(z, y, lam), expected)
    expected_t = ((1 - lam) * (ce * ~correct).sum((1, 2)) + lam * (ce * correct).sum((1, 2))) / 16
    torch.testing.assert_close(segpgd_loss(z, y, lam, targeted=True), expected_t)
    s = torch.sigmoid(z)
    cos = s.gather(1, y[:, None])[:, 0] / s.norm(dim=1)
    torch.testing.assert_close(cospgd_loss(z, y), (cos * ce).flatten(1).mean(1))
    torch.testing.assert_close(cospgd_loss(z, y, targeted=True), ((1 - cos) * ce).flatten(1).mean(1))


def test_dice_loss_and_hard_dice_agree_with_monai():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(3, 3, 6, 5, generator=g)
    y = torch.randint(0, 3, (3, 6, 5), generator=g)
    # the soft Dice loss per sample is MONAI's per-sample, per-class loss averaged over classes
    p = torch.softmax(z, 1)
    t = F.one_hot(y, 3).movedim(-1, 1).float()
    soft = 1 - (2 * (p * t).sum((2, 3)) + 1e-5) / (p.sum((2, 3)) + t.sum((2, 3)) + 1e-5)
    torch.testing.assert_close(per_sample_dice_loss(z, y), soft.mean(1))
    no_bg = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, reduction="none")(
        z, y[:, None]
    )
    torch.testing.assert_close(per_sample_dice_loss(z, y, include_background=False), no_bg.flatten(1).mean(1))
    # the hard Dice equals MONAI's DiceMetric where every class occurs ...
    pred = z.argmax(1)
    onehot = lambda a: F.one_hot(a, 3).movedim(-1, 1)  # noqa: E731
    monai_dice = DiceMetric(include_background=True)(onehot(pred), onehot(y)).mean(1)
    torch.testing.assert_close(per_sample_dice(pred, y, 3), monai_dice)
    # ... and skips a class absent from both prediction and label
    y2 = torch.zeros(1, 4, 4, dtype=torch.long)
    y2[0, :2] = 1
    pred2 = y2.clone()
    pred2[0, 0, 0] = 0
    expected = (2 * 7 / (8 + 7) + 2 * 8 / (8 + 9)) / 2  # class 2 occurs nowhere
    torch.testing.assert_close(per_sample_dice(pred2, y2, 3), torch.tensor([expected]))
