"""SEA (Croce, Singh & Hein, ECCV 2024): its losses in closed form, its radius schedule and iterate choice,
the per-image worst case, the invariants every attack keeps, and its strength on a trained segmenter."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import trained_segmenter
from monai.inferers import SlidingWindowInferer

from monai_adv.transforms import (
    PGD,
    SEA,
    SEA_DEFAULT_LOSSES,
    SEAD,
    SEAd,
    SEADict,
    SegmentationAPGD,
    SegmentationAPGDd,
    SegPGD,
    balanced_binary_weights,
    balanced_class_weights,
    balanced_masked_bce_loss,
    balanced_masked_cross_entropy_loss,
    binary_jensen_shannon_loss,
    jensen_shannon_loss,
    masked_bce_loss,
    masked_cross_entropy_loss,
    masked_spherical_loss,
    multilabel_loss,
    per_sample_cross_entropy,
    pixel_accuracy,
)

K = 3


def tiny_segmenter(spatial_dims: int, scale: float = 1.0, with_norm: bool = False) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(4) if with_norm else nn.Identity()
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(conv(1, 4, 3, padding=1), norm, nn.Tanh(), conv(4, K, 1))

        def forward(self, x):
            return self.body(x / scale)

    return Net().eval()


def acc(net, x, y):
    with torch.no_grad():
        return pixel_accuracy(net(x), y[:, 0])


# ------------------------------------------------------------------------------------------------
# the losses, in closed form
# ------------------------------------------------------------------------------------------------
def hand_logits():
    """One 2x2 image, 3 classes: voxels (0,0), (0,1) right, (1,0) wrong, (1,1) right."""
    z = torch.tensor(
        [
            [[2.0, 0.5], [0.1, 0.0]],  # class 0
            [[0.0, 1.5], [1.0, 0.3]],  # class 1
            [[-1.0, 0.2], [0.4, 2.0]],  # class 2
        ],
        dtype=torch.float64,
    )[None]
    y = torch.tensor([[[0, 1], [2, 2]]])
    return z, y


def test_pixel_accuracy_counts_voxels_predicted_as_their_label():
    z, y = hand_logits()  # argmax: [[0, 1], [1, 2]]
    assert pixel_accuracy(z, y).tolist() == [0.75]
    assert pixel_accuracy(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])).tolist() == [1.0, 0.0]


def test_masked_cross_entropy_is_the_cross_entropy_of_the_voxels_still_right():
    z, y = hand_logits()
    z.requires_grad_(True)
    ce = F.cross_entropy(z, y, reduction="none")[0]
    expected = (ce[0, 0] + ce[0, 1] + ce[1, 1]) / 4  # the wrong voxel (1, 0) is left out, N stays 4
    loss = masked_cross_entropy_loss(z, y)
    torch.testing.assert_close(loss, expected.reshape(1))
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.all(grad[0, :, 1, 0] == 0) and grad[0, :, 0, 0].abs().sum() > 0


def test_balanced_masked_cross_entropy_weights_each_class_by_its_inverse_frequency():
    z, y = hand_logits()  # classes: 0 once, 1 once, 2 twice: w = 4 / (3 * n_c)
    w = balanced_class_weights(y, K)
    torch.testing.assert_close(w, torch.tensor([[[4 / 3, 4 / 3], [2 / 3, 2 / 3]]], dtype=torch.float64))
    assert math.isclose(float(w.mean()), 1.0)
    ce = F.cross_entropy(z, y, reduction="none")[0]
    expected = (4 / 3 * ce[0, 0] + 4 / 3 * ce[0, 1] + 2 / 3 * ce[1, 1]) / 4
    torch.testing.assert_close(balanced_masked_cross_entropy_loss(z, y), expected.reshape(1))
    # fixed per-class weights (the authors' data-set weights) replace the per-image ones
    cw = torch.tensor([0.1, 0.5, 2.0])
    expected = (0.1 * ce[0, 0] + 0.5 * ce[0, 1] + 2.0 * ce[1, 1]) / 4
    torch.testing.assert_close(
        balanced_masked_cross_entropy_loss(z, y, class_weights=cw), expected.reshape(1)
    )
    # a class that covers most of the image counts as much as a small one: on a balanced map it is the masked CE
    y_even = torch.tensor([[[0, 0], [1, 1]]])
    torch.testing.assert_close(
        balanced_masked_cross_entropy_loss(z, y_even), masked_cross_entropy_loss(z, y_even)
    )
    with pytest.raises(ValueError, match="class_weights must be 3 finite non-negative"):
        balanced_masked_cross_entropy_loss(z, y, class_weights=[1.0, 2.0])


def test_balanced_weights_are_per_image():
    y = torch.tensor([[0, 0, 0, 1], [0, 1, 1, 1]])
    w = balanced_class_weights(y, 2)
    torch.testing.assert_close(
        w, torch.tensor([[2 / 3, 2 / 3, 2 / 3, 2.0], [2.0, 2 / 3, 2 / 3, 2 / 3]], dtype=torch.float64)
    )
    # one class only: every voxel weighs 1
    assert torch.all(balanced_class_weights(torch.zeros(1, 5, dtype=torch.long), 2) == 1)


def js_reference(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """JS(softmax(z) || onehot(y)) from its definition, per voxel averaged (float64)."""
    p = torch.softmax(z.double(), 1)
    q = F.one_hot(y, z.shape[1]).movedim(-1, 1).double()
    m = (p + q) / 2
    kl = lambda a, b: torch.where(a > 0, a * (a / b).log(), torch.zeros_like(a)).sum(1)  # noqa: E731
    return ((kl(p, m) + kl(q, m)) / 2).flatten(1).mean(1)


def test_jensen_shannon_loss_matches_its_definition_and_its_bounds():
    z, y = hand_logits()
    torch.testing.assert_close(jensen_shannon_loss(z, y), js_reference(z, y))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 4, (2, 3, 3), generator=g)
    torch.testing.assert_close(jensen_shannon_loss(z, y), js_reference(z, y))
    # zero for identical distributions (a certain right prediction), log 2 for a certain wrong one
    certain = torch.tensor([[60.0, 0.0, 0.0]], dtype=torch.float64)
    assert float(jensen_shannon_loss(certain, torch.tensor([0]))) < 1e-12
    assert math.isclose(float(jensen_shannon_loss(certain, torch.tensor([1]))), math.log(2), rel_tol=1e-9)
    # finite value and gradient where the other classes' probabilities underflow to 0
    huge = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    value = jensen_shannon_loss(huge, torch.tensor([1]))
    (grad,) = torch.autograd.grad(value.sum(), huge)
    assert torch.isfinite(value).all() and torch.isfinite(grad).all()


def test_masked_spherical_loss_is_minus_the_normalised_label_logit_on_the_voxels_still_right():
    z, y = hand_logits()
    norm = z[0].norm(dim=0)
    expected = -(z[0, 0, 0, 0] / norm[0, 0] + z[0, 1, 0, 1] / norm[0, 1] + z[0, 2, 1, 1] / norm[1, 1]) / 4
    torch.testing.assert_close(masked_spherical_loss(z, y), expected.reshape(1))
    torch.testing.assert_close(masked_spherical_loss(7.0 * z, y), masked_spherical_loss(z, y))  # scale-free


# ------------------------------------------------------------------------------------------------
# multi-label (sigmoid) outputs
# ------------------------------------------------------------------------------------------------
def test_binary_losses_are_the_softmax_losses_of_a_two_class_output():
    # a sigmoid logit z is the two-class softmax output [0, z]: each binary loss must equal its softmax form there
    g = torch.Generator().manual_seed(8)
    z = torch.randn(3, 1, 5, 4, generator=g, dtype=torch.float64) * 3
    z[0, 0, 0, 0] = 0.0  # a tie: "not > 0" is class 0 in both forms
    y = (torch.rand(3, 1, 5, 4, generator=g) > 0.6).double()
    y[2] = 1.0  # an image with one value only
    two = torch.cat([torch.zeros_like(z), z], dim=1)
    idx = y[:, 0].long()
    torch.testing.assert_close(masked_bce_loss(z, y), masked_cross_entropy_loss(two, idx))
    torch.testing.assert_close(balanced_masked_bce_loss(z, y), balanced_masked_cross_entropy_loss(two, idx))
    torch.testing.assert_close(binary_jensen_shannon_loss(z, y), jensen_shannon_loss(two, idx))
    torch.testing.assert_close(pixel_accuracy(z, y, multilabel=True), pixel_accuracy(two, idx))


def test_balanced_binary_weights_balance_each_channel_on_its_own():
    y = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]])  # (B=1, K=2, 4 voxels)
    w = balanced_binary_weights(y)
    torch.testing.assert_close(
        w, torch.tensor([[[2.0, 2 / 3, 2 / 3, 2 / 3], [1.0, 1.0, 1.0, 1.0]]], dtype=torch.float64)
    )


class Thresholds(nn.Module):
    """Two overlapping sigmoid channels: x > 0.5 and x > 0.3 (logits 20 (x - t))."""

    def forward(self, x):
        return torch.cat([20 * (x - 0.5), 20 * (x - 0.3)], dim=1)


def test_sea_attacks_multilabel_sigmoid_outputs():
    net = Thresholds()
    x = torch.full((2, 1, 6, 6, 4), 0.8)
    y = torch.ones(2, 2, 6, 6, 4)  # both channels on everywhere
    # eps 0.4 reaches 0.4: below the first threshold, not the second, so half the decisions can flip
    sea = SEA(net, 0.4, steps=6, activation="sigmoid", spatial_dims=3).set_random_state(0)
    x_adv = sea(x, y)
    assert x_adv.shape == x.shape and float((x_adv - x).abs().amax()) <= 0.4 + 1e-6
    with torch.no_grad():
        got = pixel_accuracy(net(x_adv), y, multilabel=True)
    assert got.tolist() == [0.5, 0.5]
    assert sea.describe()["activation"] == "sigmoid"
    # a custom multi-label loss goes with activation="sigmoid", and a softmax one does not
    SegmentationAPGD(net, 0.4, loss=multilabel_loss(lambda z, t: z.flatten(1).mean(1)), activation="sigmoid")
    with pytest.raises(ValueError, match="is a multi-label loss but activation='softmax'"):
        SegmentationAPGD(net, 0.4, loss=multilabel_loss(lambda z, t: z.flatten(1).mean(1)))
    # multi-label PGD on the same budget does no better
    pgd = PGD(net, 0.4, steps=18, loss="bce", spatial_dims=3).set_random_state(0)(x, y)
    with torch.no_grad():
        assert (got <= pixel_accuracy(net(pgd), y, multilabel=True)).all()


# ------------------------------------------------------------------------------------------------
# SegmentationAPGD: the radius schedule, the loss it follows and the iterate it returns
# ------------------------------------------------------------------------------------------------
def test_radius_schedule_splits_the_iterations_as_the_paper():
    net = tiny_segmenter(2)
    atk = SegmentationAPGD(net, 0.1, steps=300)
    assert atk.stages() == [(90, 2.0), (90, 1.5), (120, 1.0)]
    assert SegmentationAPGD(net, 0.1, steps=10).stages() == [(3, 2.0), (3, 1.5), (4, 1.0)]
    assert SegmentationAPGD(net, 0.1, steps=2).stages() == [(2, 1.0)]  # stages without iterations are skipped
    assert SegmentationAPGD(net, 0.1, steps=7, radius_schedule=None).stages() == [(7, 1.0)]


class Recorder:
    """Forward hook: every input the network sees and its per-image pixel accuracy."""

    def __init__(self, net, y):
        self.inputs, self.accuracy = [], []
        self.y = y
        net.register_forward_hook(self)

    def __call__(self, module, args, out):
        self.inputs.append(args[0].detach().clone())
        self.accuracy.append(pixel_accuracy(out.detach(), self.y[: out.shape[0], 0]))


def test_segmentation_apgd_visits_the_larger_balls_first_and_returns_one_in_the_eps_ball():
    net = tiny_segmenter(2)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 1, 8, 8, generator=g)
    y = torch.randint(0, K, (2, 1, 8, 8), generator=g)
    eps = 0.05
    rec = Recorder(net, y)
    x_adv = SegmentationAPGD(net, eps, steps=10, value_range=None).set_random_state(0)(x, y)
    dist = [float((xi - x).abs().amax()) for xi in rec.inputs]
    assert len(dist) == 3 * 1 + 10  # one start per stage, then one pass per step
    assert max(dist[:4]) > 1.5 * eps + 1e-6  # the first stage (2 eps) goes beyond the 1.5 eps ball
    assert max(dist[4:8]) <= 1.5 * eps + 1e-6 and max(dist[4:8]) > eps + 1e-6
    assert max(dist[8:]) <= eps + 1e-6  # the last stage stays in the eps ball, and so does the result
    assert float((x_adv - x).abs().amax()) <= eps + 1e-6


def test_segmentation_apgd_returns_its_lowest_accuracy_iterate_the_latest_among_equals():
    net = tiny_segmenter(2)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 6, 6, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1, keepdim=True)  # all right at the start, so no image is done early
    y[:, :, 0, 0] = (y[:, :, 0, 0] + 1) % K  # ... except one voxel each: accuracy < 1, never 0 here
    rec = Recorder(net, y)
    x_adv = SegmentationAPGD(net, 0.2, steps=8, radius_schedule=None).set_random_state(0)(x, y)
    accs = torch.stack(rec.accuracy)  # (iterates, B)
    assert (accs > 0).all()
    for b in range(3):
        low = accs[:, b].min()
        latest = int((accs[:, b] == low).nonzero().max())
        # (the result is projected once more in the caller's dtype, which may move a voxel by a rounding)
        dist = [float((x_adv[b] - xi[b]).abs().amax()) for xi in rec.inputs]
        assert dist[latest] <= 1e-6
        others = [i for i, xi in enumerate(rec.inputs) if not torch.equal(xi[b], rec.inputs[latest][b])]
        assert others and all(dist[i] > 1e-6 for i in others)
    assert (accs.min(0).values < accs[0]).any()  # the attack did lower the accuracy


def test_segmentation_apgd_ascends_its_loss_and_follows_the_cross_entropy():
    net = tiny_segmenter(2)
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, K, (2, 6, 6), generator=torch.Generator().manual_seed(4))
    atk = SegmentationAPGD(net, 0.1, loss="js")
    grad, tracked, logits = atk._grad(x, y)
    x_req = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(jensen_shannon_loss(net(x_req), y).sum(), x_req)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(tracked, per_sample_cross_entropy(logits, y))


# ------------------------------------------------------------------------------------------------
# SEA: the per-image worst case
# ------------------------------------------------------------------------------------------------
class Threshold(nn.Module):
    """Two classes per voxel: class 1 where the intensity exceeds 0.5 (logits [0, 20 (x - 0.5)])."""

    def forward(self, x):
        z = 20 * (x - 0.5)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def ce_on_class(c):
    """The cross-entropy of the voxels labelled ``c`` only: images without them get no gradient."""

    def loss(logits, y):
        return ((y == c) * F.cross_entropy(logits, y, reduction="none")).flatten(1).mean(1)

    loss.__name__ = f"ce-on-{c}"
    return loss


def test_sea_keeps_per_image_the_loss_that_fools_it_most():
    net = Threshold()
    # image 0: 0.8, all class 1; image 1: 0.2, all class 0
    x = torch.cat([torch.full((1, 1, 12, 12), 0.8), torch.full((1, 1, 12, 12), 0.2)])
    y = torch.cat([torch.ones(1, 1, 12, 12), torch.zeros(1, 1, 12, 12)]).long()
    # each loss moves only its own image, every voxel by eps = 0.4 across 0.5 (all wrong); the other image
    # stays at its random start, most of which is still on the right side
    losses = [ce_on_class(1), ce_on_class(0)]
    kw = dict(steps=4, radius_schedule=None, value_range=(0.0, 1.0))
    alone = []
    for loss in losses:
        atk = SegmentationAPGD(net, 0.4, loss=loss, **kw).set_random_state(0)
        alone.append(acc(net, atk(x, y), y))
    assert alone[0][0] == 0 and alone[0][1] > 0.5 and alone[1][1] == 0 and alone[1][0] > 0.5
    sea = SEA(net, 0.4, losses=losses, **kw).set_random_state(0)
    x_adv = sea(x, y)
    assert acc(net, x_adv, y).tolist() == [0.0, 0.0]  # neither loss alone gets both images
    torch.testing.assert_close(x_adv, torch.cat([torch.full_like(x[:1], 0.4), torch.full_like(x[:1], 0.6)]))
    # the second loss runs only on the image the first left with voxels to fool
    assert sea.last_success == {"clean": 0, "ce-on-1": 1, "ce-on-0": 1}


@pytest.fixture(scope="module")
def trained():
    net, x, y = trained_segmenter(2)
    return net, x[:8], y[:8]


def test_sea_is_per_image_the_worst_of_its_losses_and_at_least_as_strong_as_segpgd(trained):
    net, x, y = trained
    eps, steps = 0.05, 10
    clean = acc(net, x, y)
    sea = SEA(net, eps, steps=steps).set_random_state(0)
    # the same members with the same seeds, run one by one
    twin = copy.deepcopy(sea)
    twin.randomize()
    each = torch.stack([acc(twin.network, atk(x, y), y) for atk in twin.attacks])  # (losses, B)
    got = acc(net, sea(x, y), y)
    assert (each > 0).all()  # no image left early, so each member saw the whole batch
    torch.testing.assert_close(got, each.min(dim=0).values, rtol=0, atol=0)
    assert (got <= each).all()
    # SegPGD with the same number of gradient steps on this network
    segpgd = acc(net, SegPGD(net, eps, steps=steps * len(SEA_DEFAULT_LOSSES)).set_random_state(0)(x, y), y)
    assert float(got.mean()) <= float(segpgd.mean())
    assert float(got.mean()) < float(clean.mean()) - 0.3


# ------------------------------------------------------------------------------------------------
# invariants, describe, bad input
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spatial_dims,value_range,norm,dtype,amp",
    [
        (2, (0.0, 1.0), "linf", torch.float32, False),
        (2, None, "l2", torch.float64, False),
        (3, (-1024.0, 3071.0), "linf", torch.float32, False),
        (3, (0.0, 1.0), "linf", torch.float32, True),
    ],
)
def test_sea_keeps_the_invariants(spatial_dims, value_range, norm, dtype, amp):
    scale = 1000.0 if value_range == (-1024.0, 3071.0) else 1.0
    net = tiny_segmenter(spatial_dims, scale, with_norm=True).to(dtype)
    net.train()  # a network in training mode comes back in training mode
    spatial = (8, 8) if spatial_dims == 2 else (5, 6, 4)
    g = torch.Generator().manual_seed(0)
    if value_range is None:
        x = torch.randn(2, 1, *spatial, generator=g).to(dtype)
    else:
        lo, hi = value_range
        x = (lo + (hi - lo) * torch.rand(2, 1, *spatial, generator=g)).to(dtype)
        x.view(-1)[0], x.view(-1)[-1] = lo, hi
    y = torch.randint(0, K, (2, 1, *spatial), generator=g)
    eps = (0.1 if norm == "linf" else 0.5) * scale
    mask = torch.zeros(spatial)
    mask[1:-1, 1:-1] = 1
    sea = SEA(net, eps, steps=3, norm=norm, value_range=value_range, spatial_dims=spatial_dims, amp=amp)
    with torch.no_grad():  # evaluators run attacks under no_grad
        x_adv = sea.set_random_state(0)(x, y, mask=mask)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    delta = (x_adv - x).double()
    size = delta.flatten(1).abs().amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert (size <= eps * (1 + 1e-6)).all() and size.max() > 0
    assert torch.all(delta[..., mask == 0] == 0)
    if value_range is not None:
        assert x_adv.min() >= value_range[0] and x_adv.max() <= value_range[1]
    assert net.training and all(p.grad is None for p in net.parameters())
    # one item, one-hot labels, the same result as the batch's first image
    one_hot = F.one_hot(y[0, 0], K).movedim(-1, 0)
    single = sea.set_random_state(0)(x[0], one_hot, mask=mask)
    assert single.shape == x[0].shape and float((single - x[0]).abs().amax()) <= (
        eps if norm == "linf" else math.inf
    )


def test_sea_with_a_sliding_window_equals_the_direct_attack_when_the_window_covers_the_image():
    net = tiny_segmenter(2)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 8, 8, generator=g)
    y = torch.randint(0, K, (2, 1, 8, 8), generator=g)
    window = SlidingWindowInferer(roi_size=(8, 8), sw_batch_size=2, overlap=0.25)
    direct = SEA(net, 0.1, steps=4).set_random_state(1)(x, y)
    windowed = SEA(net, 0.1, steps=4, inferer=window).set_random_state(1)(x, y)
    torch.testing.assert_close(windowed, direct, rtol=0, atol=1e-6)


def test_sea_draws_one_eps_per_call_for_every_loss():
    net = tiny_segmenter(2)
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(6))
    y = torch.zeros(2, 1, 6, 6, dtype=torch.long)
    sea = SEA(net, (0.02, 0.2), steps=2).set_random_state(3)
    x_adv = sea(x, y)
    eps = sea.current_eps
    assert 0.02 <= eps <= 0.2 and all(atk.current_eps == eps for atk in sea.attacks)
    assert float((x_adv - x).abs().amax()) <= eps + 1e-6


def test_describe_names_the_attack_its_budget_and_losses():
    net = tiny_segmenter(2)
    d = SEA(net, 4 / 255).describe()
    assert d["name"] == "SEA-300" and d["type"] == "SEA" and d["eps"] == 4 / 255 and d["norm"] == "linf"
    assert d["steps"] == 300 and d["total_steps"] == 900 and d["losses"] == ["mask-ce-bal", "mask-ce", "js"]
    assert d["radius_schedule"] == [[0.3, 2.0], [0.3, 1.5], [0.4, 1.0]] and not d["targeted"]
    assert [m["name"] for m in d["members"]] == [f"SegmentationAPGD-{n}-300" for n in SEA_DEFAULT_LOSSES]
    quick = SEA(net, (0.01, 0.02), steps=20, losses=("mask-ce", "mask-sph")).describe()
    assert (
        quick["name"] == "SEA(mask-ce+mask-sph)-20"
        and quick["eps"] == [0.01, 0.02]
        and quick["total_steps"] == 40
    )


def test_dictionary_version_attacks_one_item():
    net = tiny_segmenter(2)
    x = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(7))
    data = {"image": x, "label": torch.randint(0, K, (1, 8, 8))}
    assert SEAD is SEAd and SEADict is SEAd
    out = SEAd("image", network=net, eps=0.1, steps=3, output_postfix="adv").set_random_state(0)(data)
    assert out["image_adv"].shape == x.shape and torch.equal(out["image"], x)
    assert float((out["image_adv"] - x).abs().amax()) <= 0.1 + 1e-6
    out = SegmentationAPGDd("image", network=net, eps=0.1, steps=3, loss="js").set_random_state(0)(data)
    assert float((out["image"] - x).abs().amax()) <= 0.1 + 1e-6


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(losses=()), "at least one loss"),
        (dict(losses=("mask-ce", "dice")), "unknown"),
        (dict(losses=("js", "js")), "repeated"),
        (dict(activation="tanh"), "activation must be 'softmax'"),
        (dict(activation="sigmoid", losses=("mask-ce", "mask-sph")), "has no multi-label form"),
        (dict(activation="sigmoid", class_weights=[1.0, 2.0]), "leave class_weights unset"),
        (dict(loss="bce"), "activation='sigmoid'"),
        (dict(targeted=True), "untargeted"),
        (dict(dense_success="dice"), "pixel accuracy"),
        (dict(dense_threshold=0.5), "pixel accuracy"),
        (dict(radius_schedule=((0.5, 2.0), (0.5, 1.5))), "last radius of 1"),
        (dict(radius_schedule=((0.5, 2.0), (0.4, 1.0))), "summing to 1"),
        (dict(steps=0), "steps must be an integer >= 1"),
        (dict(eps=-0.1), "eps must be a finite number >= 0"),
        (dict(norm="l1"), "norm must be one of"),
        (dict(loss="ce"), "choose them with losses="),
    ],
)
def test_bad_settings_are_refused_with_a_clear_error(kwargs, match):
    net = tiny_segmenter(2)
    kwargs = {"eps": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        SEA(net, **kwargs)


def test_segmentation_apgd_refuses_settings_that_do_not_apply():
    net = tiny_segmenter(2)
    with pytest.raises(ValueError, match="loss must be one of"):
        SegmentationAPGD(net, 0.1, loss="dlr")
    with pytest.raises(ValueError, match="n_restarts does not apply"):
        SegmentationAPGD(net, 0.1, n_restarts=2)
    assert np.isclose(
        SegmentationAPGD(net, 0.1, loss="mask-ce-bal", class_weights=[1, 2, 3]).loss(
            torch.zeros(1, K, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)
        ),
        math.log(K),
    )
