"""Properties every attack keeps for any shape, eps, norm, range and mask (checked with hypothesis)."""

import numpy as np
import torch
import torch.nn as nn
from helpers import LinearClassifier
from hypothesis import given, settings
from hypothesis import strategies as st

from monai_adv.transforms import APGD, FAB, FGSM, MIFGSM, PGD, CarliniWagnerL2, SquareAttack

# example counts scale with the profile loaded in conftest.py ("explore" searches 25x wider)
SCALE = max(1, settings.default.max_examples // 40)
SETTINGS = settings(max_examples=40 * SCALE)


def tiny_net(spatial_dims: int, channels: int, num_classes: int = 4, scale: float = 1.0) -> nn.Module:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(conv(channels, 4, 3, padding=1), nn.Tanh(), pool(2), nn.Flatten())
            self.head = nn.Linear(4 * 2**spatial_dims, num_classes)

        def forward(self, x):
            # rescale so any intensity range gives well-conditioned logits
            return self.head(self.body(x / scale))

    return Net().eval()


@st.composite
def problems(draw, attack_names=("fgsm", "pgd", "mifgsm", "apgd", "square"), allow_l2=True):
    spatial_dims = draw(st.sampled_from([2, 3]))
    batched = draw(st.booleans())
    b = draw(st.integers(1, 3)) if batched else 1
    c = draw(st.integers(1, 2))
    spatial = tuple(draw(st.integers(4, 9 if spatial_dims == 2 else 6)) for _ in range(spatial_dims))
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
        # include voxels exactly on the bounds, where clipping matters most
        x = (lo + (hi - lo) * torch.rand(shape, generator=g)).clamp(
            lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo)
        )
        x.view(-1)[0] = lo
        x.view(-1)[-1] = hi
    x = x.to(dtype)
    name = draw(st.sampled_from(attack_names))
    norm = (
        draw(st.sampled_from(["linf", "l2"]))
        if allow_l2 and name in ("pgd", "apgd", "fgsm", "mifgsm", "fab", "fab_t", "apgd_t", "square")
        else "linf"
    )
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
    labels = (
        torch.randint(0, 4, (b,), generator=g) if batched else int(torch.randint(0, 4, (1,), generator=g))
    )
    return dict(
        name=name,
        spatial_dims=spatial_dims,
        x=x,
        labels=labels,
        eps=eps,
        norm=norm,
        mask=mask,
        value_range=value_range,
        net=tiny_net(spatial_dims, c, scale=scale),
        seed=seed,
    )


def build(p):
    common = dict(value_range=p["value_range"], spatial_dims=p["spatial_dims"])
    net, eps, norm = p["net"], p["eps"], p["norm"]
    return {
        "fgsm": lambda: FGSM(net, eps, norm=norm, **common),
        "pgd": lambda: PGD(net, eps, steps=3, norm=norm, **common),
        "mifgsm": lambda: MIFGSM(net, eps, steps=3, norm=norm, **common),
        "apgd": lambda: APGD(net, eps, steps=5, norm=norm, loss="dlr", n_restarts=2, **common),
        "square": lambda: SquareAttack(net, eps, n_queries=8, norm=norm, **common),
        # AutoAttack's standard members: APGD-T and FAB-T over chosen targets, FAB with a random restart
        "apgd_t": lambda: APGD(
            net, eps, steps=3, norm=norm, loss="dlr", targeted=True, n_target_classes=2, **common
        ),
        "fab": lambda: FAB(net, eps, steps=3, norm=norm, n_restarts=2, **common),
        "fab_t": lambda: FAB(net, eps, steps=3, norm=norm, targeted=True, n_target_classes=3, **common),
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
def test_result_lies_in_the_eps_ball_the_range_and_the_mask(p):
    check_in_ball(p)


@SETTINGS
@given(problems(attack_names=("apgd_t", "fab", "fab_t")))
def test_autoattack_members_stay_in_the_eps_ball_the_range_and_the_mask(p):
    check_in_ball(p)


def check_in_ball(p):
    atk = build(p)
    x_adv = atk(p["x"], p["labels"], mask=p["mask"])
    check_common(p, x_adv)
    eps = atk.current_eps
    if isinstance(p["eps"], tuple):
        assert p["eps"][0] <= eps <= p["eps"][1]
    x = p["x"]
    batch = x_adv if x.ndim == p["spatial_dims"] + 2 else x_adv[None]
    # the exact difference, in float64 (a float32 subtraction would itself round)
    delta = (batch.double() - (x if x.ndim == p["spatial_dims"] + 2 else x[None]).double()).flatten(1)
    if p["norm"] == "linf":
        # exact: voxels that rounding put outside the ball are moved back onto the dtype's grid
        assert (delta.abs().amax(dim=1) <= eps).all(), (delta.abs().amax(dim=1), eps)
    else:
        # L2 to the rounding of x + delta: half a grid step at the image's magnitude per voxel
        ulp = torch.finfo(x.dtype).eps * float(x.abs().max()) / 2
        tol = 1e-6 * max(eps, 1.0) + ulp * delta.shape[1] ** 0.5
        assert (delta.norm(dim=1) <= eps + tol).all(), (delta.norm(dim=1), eps)


@SETTINGS
@given(problems(attack_names=("fgsm",), allow_l2=False))
def test_carlini_wagner_stays_in_range_and_mask(p):
    atk = CarliniWagnerL2(
        p["net"], steps=3, binary_search_steps=2, value_range=p["value_range"], spatial_dims=p["spatial_dims"]
    )
    check_common(p, atk(p["x"], p["labels"], mask=p["mask"]))


@settings(max_examples=15 * SCALE)
@given(problems(attack_names=("pgd", "apgd", "square", "apgd_t", "fab")))
def test_seeded_attacks_repeat_exactly(p):
    a = build(p)(p["x"], p["labels"], mask=p["mask"])
    b = build(p)(p["x"], p["labels"], mask=p["mask"])
    assert torch.equal(a, b)


@settings(max_examples=15 * SCALE)
@given(problems(attack_names=("fgsm", "pgd", "fab", "fab_t")))
def test_zero_eps_returns_the_input(p):
    p = dict(p, eps=0.0)
    x_adv = build(p)(p["x"], p["labels"], mask=p["mask"])
    assert torch.equal(x_adv, p["x"])


def test_linf_ball_is_exact_where_the_adversarial_voxel_is_far_finer_grained_than_the_clean_one():
    # found by hypothesis in CI: x = 115.44 (float32 grid 7.6e-6) pushed by eps = 115.77 to about
    # -0.33 (grid 3e-8): the float32 rounding of x - eps lands ~1e-4 outside the ball, thousands
    # of representable values away, which a one-value-at-a-time correction never closed
    x = torch.tensor([[[115.4439697265625, 2661.5], [-614.5, 3071.0]]])  # (C, H, W)
    # small weights keep the softmax unsaturated at these intensities, so the gradient is not zero
    net = LinearClassifier(1e-4 * torch.tensor([[1.0, 1.0, -1.0, 1.0], [-1.0, -1.0, 1.0, -1.0]]))
    eps = 115.77235180121697
    x_adv = FGSM(net, eps, value_range=None)(x, 0)
    delta = x_adv.double() - x.double()
    assert (delta.abs() <= eps).all(), delta
    # and the attack still spends its budget: every voxel within a float32 grid step of eps
    assert torch.allclose(delta.abs(), torch.full_like(delta, eps), atol=4e-4)
    # FGSM's closed form: -eps * sign(w_0 - w_1), so the first voxel goes from 115.44 to about -0.33
    assert torch.equal(delta.sign().flatten(), torch.tensor([-1.0, -1.0, 1.0, -1.0], dtype=torch.float64))
