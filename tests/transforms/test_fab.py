"""FAB (Croce & Hein 2020): closed-form minimal perturbations, the box-constrained projection, targets."""

import pytest
import torch
from helpers import LinearClassifier, accuracy, trained_cnn

from monai_adv.transforms import FAB, FABD, FABd, FABDict, project_onto_hyperplane

D = 3 * 5 * 4  # (C=3, 5, 4) images


@pytest.fixture
def two_class():
    g = torch.Generator().manual_seed(3)
    w = 0.2 * torch.randn(2, D, generator=g)
    b = torch.tensor([0.1, -0.2])
    net = LinearClassifier(w, b).eval()
    # inputs in the middle of [0, 1], so that the minimal perturbations never meet the box
    x = 0.3 + 0.4 * torch.rand(8, 3, 5, 4, generator=g)
    with torch.no_grad():
        y = net(x).argmax(1)
    f = x.flatten(1) @ (w[1] - w[0]) + (b[1] - b[0])  # the margin of class 1 over class 0
    return net, x, y, f, w[1] - w[0]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_closed_form_minimal_perturbation_of_a_linear_model(two_class, norm):
    # for f(x) = w . x + b the distance to the boundary is |f(x)| / ||w||_1 (Linf) or / ||w||_2 (L2)
    net, x, y, f, w = two_class
    dual = w.abs().sum() if norm == "linf" else w.norm()
    d_min = f.abs() / dual
    # the unconstrained closest boundary points lie inside [0, 1]: the box plays no part
    closest = x.flatten(1) - (f / dual**2 if norm == "l2" else f / dual)[:, None] * (
        w if norm == "l2" else w.sign()
    )
    assert closest.min() > 0 and closest.max() < 1
    atk = FAB(net, float(d_min.max()) * 1.1, steps=20, norm=norm)
    x_adv = atk(x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    with torch.no_grad():
        assert (net(x_adv).argmax(1) != y).all()
    # at least the minimum (nothing smaller exists), at most 3% above it
    assert (size >= d_min * (1 - 1e-4)).all(), (size, d_min)
    assert (size <= d_min * 1.03).all(), size / d_min
    torch.testing.assert_close(atk.last_distance, size, rtol=1e-5, atol=1e-7)


def test_fab_below_the_minimal_distance_returns_the_input(two_class):
    net, x, y, f, w = two_class
    d_min = f.abs() / w.abs().sum()
    atk = FAB(net, float(d_min.min()) * 0.95, steps=20)
    x_adv = atk(x, y)
    # nothing adversarial lies in the ball, so the input (in the ball, not adversarial) comes back
    assert torch.equal(x_adv, x)
    with torch.no_grad():
        assert (net(x_adv).argmax(1) == y).all()
    # the smallest perturbation it found, beyond eps, is still reported, close to the minimum
    assert (atk.last_distance >= d_min * (1 - 1e-4)).all()
    assert (atk.last_distance <= d_min * 1.03).all()


def test_fab_takes_the_closest_of_several_boundaries():
    # four classes: the nearest boundary (in Linf, |z_l - z_y| / ||w_l - w_y||_1) decides
    g = torch.Generator().manual_seed(5)
    w = 0.3 * torch.randn(4, D, generator=g)
    net = LinearClassifier(w, torch.zeros(4)).eval()
    x = 0.4 + 0.2 * torch.rand(6, 3, 5, 4, generator=g)
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)
    z_y = z.gather(1, y[:, None])[:, 0]
    dists = torch.stack([(z[:, c] - z_y).abs() / (w[c] - w[y]).abs().sum(1) for c in range(4)], dim=1)
    dists[torch.arange(6), y] = float("inf")
    d_min = dists.min(dim=1).values  # the nearest pairwise boundary bounds the true distance from above
    atk = FAB(net, 1.0, steps=50, value_range=None)
    x_adv = atk(x, y)
    with torch.no_grad():
        assert (net(x_adv).argmax(1) != y).all()
    assert (atk.last_distance <= d_min * 1.03).all(), atk.last_distance / d_min


def _smallest_step_by_bisection(t, w, value, norm, low, high):
    """An independent solver: bisection on the step size, float64, one row at a time."""
    out = []
    for ti, wi, ci in zip(t.double(), w.double(), value.double()):
        direction = -torch.sign(ci if ci != 0 else torch.tensor(1.0)) * torch.sign(wi)
        room = torch.where(direction > 0, high - ti, ti - low).clamp_min(0)

        def step(mu, room=room, wi=wi, direction=direction):
            size = (
                torch.minimum(torch.full_like(room, mu), room)
                if norm == "linf"
                else torch.minimum(mu * wi.abs(), room)
            )
            return direction * size

        def progress(mu, wi=wi, step=step, ci=ci):
            return -(wi * step(mu)).sum() * torch.sign(ci)

        hi_mu = 1e6
        if progress(hi_mu) < ci.abs():  # not even the whole box closes the gap
            out.append(direction * room)
            continue
        lo_mu = 0.0
        for _ in range(200):
            mid = 0.5 * (lo_mu + hi_mu)
            lo_mu, hi_mu = (mid, hi_mu) if progress(mid) < ci.abs() else (lo_mu, mid)
        out.append(step(hi_mu))
    return torch.stack(out)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("value_range", [(0.0, 1.0), (-1024.0, 3071.0)])
def test_projection_onto_the_hyperplane_in_the_box_is_the_smallest_step(norm, value_range):
    g = torch.Generator().manual_seed(0)
    low, high = value_range
    n, d = 40, 25
    t = low + (high - low) * torch.rand(n, d, generator=g, dtype=torch.float64)
    t[:, 0] = low  # coordinates on the bounds
    t[:, 1] = high
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[torch.rand(n, d, generator=g) < 0.2] = 0.0  # coordinates that cannot move (outside a mask)
    # gaps from easily closed to impossible within the box
    value = torch.randn(n, generator=g, dtype=torch.float64) * (high - low) * torch.linspace(0.1, 8, n)
    step = project_onto_hyperplane(t, w, value, norm, value_range)
    ref = _smallest_step_by_bisection(t, w, value, norm, low, high)
    torch.testing.assert_close(step, ref, rtol=1e-7, atol=1e-7 * (high - low))
    assert ((t + step) >= low - 1e-9).all() and ((t + step) <= high + 1e-9).all()
    assert (step[w == 0] == 0).all()
    reached = ((w * (t + step)).sum(1) - (w * t).sum(1) + value).abs() <= 1e-8 * (high - low) * w.abs().sum(1)
    assert 0 < reached.sum() < n  # both kinds of row occur


def test_projection_without_a_box_is_the_closed_form():
    g = torch.Generator().manual_seed(1)
    t, w = (
        torch.randn(5, 30, generator=g, dtype=torch.float64),
        torch.randn(5, 30, generator=g, dtype=torch.float64),
    )
    value = torch.randn(5, generator=g, dtype=torch.float64)
    linf = project_onto_hyperplane(t, w, value, "linf", None)
    torch.testing.assert_close(linf, -(value / w.abs().sum(1))[:, None] * w.sign())
    l2 = project_onto_hyperplane(t, w, value, "l2", None)
    torch.testing.assert_close(l2, -(value / (w * w).sum(1))[:, None] * w)


@pytest.fixture(scope="module")
def model():
    net, x, y = trained_cnn(2)
    return net, x[:64], y[:64]


def test_fab_t_chooses_its_targets_and_counts_any_misclassification(model):
    net, x, y = model
    eps = 0.015
    fab_t = FAB(net, eps, steps=20, targeted=True, n_target_classes=9)
    assert not fab_t.label_is_target and fab_t.describe()["name"] == "FAB-T-20"
    x_adv = fab_t(x, y)
    robust = accuracy(net, x_adv, y)
    assert robust < 0.9  # it breaks a good part of an undefended model at this eps
    assert (x_adv - x).abs().max() <= eps
    changed = (x_adv != x).flatten(1).any(1)
    with torch.no_grad():
        pred = net(x_adv).argmax(1)
    # exactly the samples it fooled changed; the rest came back as they were
    assert torch.equal(changed, pred != y)
    assert (fab_t.last_distance[changed] <= eps).all()
    # one target class only: never stronger than all three
    one = accuracy(net, FAB(net, eps, steps=20, targeted=True, n_target_classes=1)(x, y), y)
    assert one >= robust
    # deterministic (a single run starts at the input)
    assert torch.equal(FAB(net, eps, steps=20, targeted=True, n_target_classes=9)(x, y), x_adv)


def test_fab_with_an_explicit_target_reaches_it(model):
    net, x, y = model
    target = (y + 1) % 4
    x_adv = FAB(net, 0.1, steps=30, targeted=True)(x, target)
    with torch.no_grad():
        hit = (net(x_adv).argmax(1) == target).float().mean()
    assert hit >= 0.9


def test_fab_untargeted_and_in_3d():
    net, x, y = trained_cnn(3, size=8)
    clean = accuracy(net, x, y)
    atk = FAB(net, 0.05, steps=10, spatial_dims=3, n_restarts=2).set_random_state(0)
    assert accuracy(net, atk(x, y), y) < clean - 0.4


def test_fab_under_mixed_precision_returns_only_what_full_precision_confirms(model):
    net, x, y = model
    atk = FAB(net, 0.015, steps=10, targeted=True, n_target_classes=3, amp=True)
    x_adv = atk(x, y)
    changed = (x_adv != x).flatten(1).any(1)
    with torch.no_grad():
        fooled = net(x_adv).argmax(1) != y  # judged in float32
    assert changed.any() and torch.equal(changed, fooled)


def test_fab_dictionary_version(model):
    net, x, y = model
    assert FABD is FABd and FABDict is FABd
    out = FABd("image", net, eps=0.02, steps=5, output_postfix="adv")({"image": x[:4], "label": y[:4]})
    assert set(out) == {"image", "image_adv", "label"}
    assert torch.equal(out["image_adv"], FAB(net, 0.02, steps=5)(x[:4], y[:4]))
