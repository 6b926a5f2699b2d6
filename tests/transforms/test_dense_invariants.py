"""Properties every attack keeps on dense outputs, for any shape, eps, norm, range, label form and mask (hypothesis)."""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.inferers import SlidingWindowInferer

from monai_adv.transforms import (
    APGD,
    FGSM,
    MIFGSM,
    PGD,
    CarliniWagnerL2,
    CosPGD,
    SegPGD,
    SquareAttack,
    WorstCaseEnsemble,
    per_sample_dice_loss,
)

# example counts scale with the profile loaded in conftest.py ("explore" searches 25x wider)
SCALE = max(1, settings.default.max_examples // 40)
SETTINGS = settings(max_examples=40 * SCALE)
K = 4  # classes (the targeted DLR loss needs 4)


def tiny_segmenter(spatial_dims: int, channels: int, scale: float = 1.0) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(conv(channels, 4, 3, padding=1), nn.Tanh(), conv(4, K, 1))

        def forward(self, x):
            # rescale so any intensity range gives well-conditioned logits
            return self.body(x / scale)

    return Net().eval()


@st.composite
def problems(
    draw, attack_names=("fgsm", "pgd", "mifgsm", "apgd", "square", "segpgd", "cospgd", "dice", "ensemble")
):
    spatial_dims = draw(st.sampled_from([2, 3]))
    batched = draw(st.booleans())
    b = draw(st.integers(1, 3)) if batched else 1
    c = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(4, 8 if spatial_dims == 2 else 5)) for _ in range(spatial_dims))
    range_kind = draw(st.sampled_from(["unit", "hu", "none"]))
    value_range, scale = {"unit": ((0.0, 1.0), 1.0), "hu": ((-1024.0, 3071.0), 1000.0), "none": (None, 1.0)}[
        range_kind
    ]
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    shape = ((b,) if batched else ()) + (c,) + spatial
    if value_range is None:
        x = torch.randn(shape, generator=g) * 3
    else:
        lo, hi = value_range
        x = lo + (hi - lo) * torch.rand(shape, generator=g)
        x.view(-1)[0] = lo  # voxels exactly on the bounds, where clipping matters most
        x.view(-1)[-1] = hi
    x = x.to(dtype)
    name = draw(st.sampled_from(attack_names))
    norm = draw(st.sampled_from(["linf", "l2"])) if name in ("pgd", "fgsm", "segpgd", "cospgd") else "linf"
    unit = scale if norm == "linf" else scale * np.sqrt(np.prod(spatial) * c)
    if draw(st.booleans()):
        eps = draw(st.floats(0.0, 0.3)) * unit
    else:
        low = draw(st.floats(0.0, 0.2))
        eps = (low * unit, (low + draw(st.floats(0.0, 0.1))) * unit)
    mask = None
    if draw(st.booleans()):
        mask_shape = ((b,) if batched and draw(st.booleans()) else ()) + (1,) + spatial
        mask = (torch.rand(mask_shape, generator=g) > 0.5).float()
    indices = torch.randint(0, K, ((b,) if batched else ()) + spatial, generator=g)
    if draw(st.booleans()):  # one-hot (K, *spatial) per item
        labels = F.one_hot(indices, K).movedim(-1, 1 if batched else 0)
    else:  # class indices (1, *spatial) per item
        labels = indices.unsqueeze(1 if batched else 0)
    inferer = None
    if draw(st.booleans()):
        inferer = SlidingWindowInferer(roi_size=(3,) * spatial_dims, sw_batch_size=4, overlap=0.25)
    return dict(
        name=name,
        spatial_dims=spatial_dims,
        x=x,
        labels=labels,
        eps=eps,
        norm=norm,
        mask=mask,
        value_range=value_range,
        net=tiny_segmenter(spatial_dims, c, scale=scale),
        seed=seed,
        inferer=inferer,
        targeted=draw(st.booleans()),
    )


def build(p):
    common = dict(
        value_range=p["value_range"],
        spatial_dims=p["spatial_dims"],
        inferer=p["inferer"],
        targeted=p["targeted"],
    )
    net, eps, norm = p["net"], p["eps"], p["norm"]
    return {
        "fgsm": lambda: FGSM(net, eps, norm=norm, **common),
        "pgd": lambda: PGD(net, eps, steps=3, norm=norm, **common),
        "mifgsm": lambda: MIFGSM(net, eps, steps=3, **common),
        "apgd": lambda: APGD(net, eps, steps=4, loss="dlr", n_restarts=2, **common),
        "square": lambda: SquareAttack(net, eps, n_queries=6, **common),
        "segpgd": lambda: SegPGD(net, eps, steps=3, norm=norm, **common),
        "cospgd": lambda: CosPGD(net, eps, steps=3, norm=norm, **common),
        "dice": lambda: PGD(net, eps, steps=2, loss=per_sample_dice_loss, **common),
        "ensemble": lambda: WorstCaseEnsemble(
            net,
            [FGSM(net, eps, **common), SegPGD(net, eps, steps=2, **common)],
            dense_threshold=0.0,
            **common,
        ),
    }[p["name"]]().set_random_state(p["seed"])


def check_common(p, x_adv):
    x = p["x"]
    assert isinstance(x_adv, torch.Tensor)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert torch.isfinite(x_adv).all()
    if p["value_range"] is not None:
        lo, hi = p["value_range"]
        assert x_adv.min() >= lo and x_adv.max() <= hi
    if p["mask"] is not None:
        outside = torch.broadcast_to(p["mask"], x.shape) == 0
        assert torch.equal(x_adv[outside], x[outside])


@SETTINGS
@given(problems())
def test_dense_result_lies_in_the_eps_ball_the_range_and_the_mask(p):
    atk = build(p)
    x_adv = atk(p["x"], p["labels"], mask=p["mask"])
    check_common(p, x_adv)
    if p["name"] == "ensemble":  # each member draws its own eps: the range's top bounds them all
        eps = p["eps"][1] if isinstance(p["eps"], tuple) else p["eps"]
    else:
        eps = atk.current_eps
        if isinstance(p["eps"], tuple):
            assert p["eps"][0] <= eps <= p["eps"][1]
    x = p["x"]
    one = x.ndim == p["spatial_dims"] + 1
    delta = ((x_adv[None] if one else x_adv).double() - (x[None] if one else x).double()).flatten(1)
    if p["norm"] == "linf":
        assert (delta.abs().amax(dim=1) <= eps).all(), (delta.abs().amax(dim=1), eps)
    else:
        ulp = torch.finfo(x.dtype).eps * float(x.abs().max()) / 2
        tol = 1e-6 * max(eps, 1.0) + ulp * delta.shape[1] ** 0.5
        assert (delta.norm(dim=1) <= eps + tol).all(), (delta.norm(dim=1), eps)


@settings(max_examples=20 * SCALE)
@given(problems(attack_names=("fgsm",)))
def test_dense_carlini_wagner_stays_in_range_and_mask(p):
    atk = CarliniWagnerL2(
        p["net"],
        steps=3,
        binary_search_steps=2,
        value_range=p["value_range"],
        spatial_dims=p["spatial_dims"],
        inferer=p["inferer"],
        targeted=p["targeted"],
    )
    check_common(p, atk(p["x"], p["labels"], mask=p["mask"]))


@settings(max_examples=15 * SCALE)
@given(problems(attack_names=("pgd", "apgd", "square", "segpgd", "cospgd")))
def test_dense_seeded_attacks_repeat_exactly(p):
    a = build(p)(p["x"], p["labels"], mask=p["mask"])
    b = build(p)(p["x"], p["labels"], mask=p["mask"])
    assert torch.equal(a, b)


@settings(max_examples=15 * SCALE)
@given(problems(attack_names=("fgsm", "pgd", "segpgd", "cospgd")))
def test_dense_zero_eps_returns_the_input(p):
    p = dict(p, eps=0.0)
    x_adv = build(p)(p["x"], p["labels"], mask=p["mask"])
    assert torch.equal(x_adv, p["x"])


def test_dense_attacks_restore_modes_and_leave_parameter_gradients_alone():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, K, 1))
    net.train()
    net[1].eval()  # a partly frozen network comes back exactly as it was
    for q in net.parameters():
        q.grad = torch.full_like(q, 7.0)
    running = net[1].running_mean.clone()
    x, y = torch.rand(2, 1, 6, 6), torch.randint(0, K, (2, 1, 6, 6))
    with torch.no_grad():  # as inside a MONAI evaluator
        for atk in (PGD(net, 0.1, steps=2), SegPGD(net, 0.1, steps=2), CosPGD(net, 0.1, steps=2)):
            x_adv = atk(x, y)
            assert not torch.equal(x_adv, x)
    assert net.training and not net[1].training and net[2].training
    assert torch.equal(net[1].running_mean, running)
    assert all(torch.equal(q.grad, torch.full_like(q, 7.0)) for q in net.parameters())


def test_dense_attacks_under_mixed_precision_keep_every_invariant():
    net = tiny_segmenter(2, 1)
    x, y = torch.rand(2, 1, 8, 8), torch.randint(0, K, (2, 1, 8, 8))
    for atk in (
        PGD(net, 0.05, steps=3, amp=True),
        SegPGD(net, 0.05, steps=3, amp=True),
        CosPGD(net, 0.05, steps=3, amp=True),
    ):
        x_adv = atk.set_random_state(0)(x, y)
        assert (
            x_adv.dtype == x.dtype
            and (x_adv - x).abs().max() <= 0.05
            and x_adv.min() >= 0
            and x_adv.max() <= 1
        )
        assert not torch.equal(x_adv, x)


def test_ensemble_with_a_mask_keeps_its_members_on_the_ball_surface_exactly():
    # found by hypothesis (explore profile): re-applying the mask as x + (x_adv - x) * m rounded a
    # member's voxel at exactly |delta| = eps to just outside the ball
    x = torch.tensor(
        [[[0.0000, 0.7682, 0.0885, 0.1320], [0.3074, 0.6341, 0.4901, 0.8964],
          [0.4556, 0.6323, 0.3489, 0.4017], [0.0223, 0.1689, 0.2939, 1.0000]]]
    )  # fmt: skip
    labels = torch.tensor([[[3, 0, 3, 1], [2, 3, 3, 0], [2, 3, 0, 1], [3, 1, 3, 3]]])
    mask = torch.tensor([[[1.0, 1, 0, 0], [1, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 1]]])
    eps = 0.2720946892263337
    net = tiny_segmenter(2, 1)
    atk = WorstCaseEnsemble(net, [FGSM(net, eps), SegPGD(net, eps, steps=2)], dense_threshold=0.0)
    x_adv = atk.set_random_state(0)(x, labels, mask=mask)
    assert (x_adv.double() - x.double()).abs().max() <= eps
    assert torch.equal(x_adv[mask == 0], x[mask == 0])
