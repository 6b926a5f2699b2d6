"""AutoAttack's standard suite: APGD-T, the suite's composition, and its per-sample worst case."""

import numpy as np
import pytest
import torch
from helpers import LinearClassifier, accuracy, trained_cnn

from monai_adv.transforms import (
    APGD,
    FAB,
    APGDd,
    SquareAttack,
    WorstCaseEnsemble,
    autoattack,
    top_target_classes,
)
from monai_adv.transforms.composite import AUTOATTACK_VERSIONS

EPS = 0.015  # where APGD-CE leaves about 70% of the toy classifier's test set correct


@pytest.fixture(scope="module")
def model():
    net, x, y = trained_cnn(2)
    assert accuracy(net, x, y) == 1.0  # every sample enters the suite, as it enters a lone attack
    return net, x, y


def test_top_target_classes_are_the_strongest_other_classes():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 1.0, 4.0, 3.0, 2.0]])
    y = torch.tensor([1, 0])
    assert top_target_classes(logits, y, 9).tolist() == [[3, 2, 0, 4], [2, 3, 4, 1]]  # capped at K - 1
    assert top_target_classes(logits, y, 2).tolist() == [[3, 2], [2, 3]]
    # a misclassified input: its true class is still never a target
    assert top_target_classes(logits, torch.tensor([2, 3]), 1).tolist() == [[1], [0]]


def test_apgd_t_is_at_least_as_strong_as_apgd_ce(model):
    net, x, y = model
    ce = accuracy(net, APGD(net, EPS, steps=10, loss="ce").set_random_state(0)(x, y), y)
    apgd_t = APGD(net, EPS, steps=10, loss="dlr", targeted=True, n_target_classes=9).set_random_state(0)
    robust = accuracy(net, apgd_t(x, y), y)
    assert robust <= ce, (robust, ce)
    assert robust < 0.9  # and it really attacks
    assert apgd_t.describe()["name"] == "APGD-T-10" and apgd_t.describe()["n_target_classes"] == 9


def test_apgd_t_takes_the_true_class_and_moves_towards_the_second_class():
    # a linear 4-class model: APGD-T with one target drives each sample to its runner-up class
    g = torch.Generator().manual_seed(2)
    w = 0.5 * torch.randn(4, 48, generator=g)
    net = LinearClassifier(w).eval()
    x = torch.rand(16, 3, 4, 4, generator=g)
    with torch.no_grad():
        z = net(x)
    y = z.argmax(1)
    runner_up = top_target_classes(z, y, 1)[:, 0]
    atk = APGD(net, 0.5, steps=20, loss="dlr", targeted=True, n_target_classes=1).set_random_state(0)
    assert not atk.label_is_target
    x_adv = atk(x, y)
    with torch.no_grad():
        pred = net(x_adv).argmax(1)
    fooled = pred != y
    assert fooled.float().mean() > 0.5
    # the first misclassified point on the way is kept, so a third class may win now and then
    assert (pred[fooled] == runner_up[fooled]).float().mean() >= 0.8
    weakest = top_target_classes(z, y, 3)[:, -1]
    assert (pred[fooled] == weakest[fooled]).float().mean() <= 0.2


def test_apgd_t_leaves_misclassified_samples_alone_and_keeps_the_explicit_target_contract(model):
    net, x, y = model
    wrong = (y + 1) % 4  # every sample "misclassified" for these labels: nothing to attack
    x_adv = APGD(net, EPS, steps=3, loss="dlr", targeted=True, n_target_classes=3)(x[:8], wrong[:8])
    assert torch.equal(x_adv, x[:8])
    # without n_target_classes the label is the target, as for every targeted attack
    explicit = APGD(net, 0.1, steps=10, loss="dlr", targeted=True).set_random_state(0)
    assert explicit.label_is_target
    with torch.no_grad():
        hit = (net(explicit(x, wrong)).argmax(1) == wrong).float().mean()
    assert hit >= 0.9


def test_apgd_t_dictionary_version(model):
    net, x, y = model
    kw = dict(eps=EPS, steps=3, loss="dlr", targeted=True, n_target_classes=2)
    out = APGDd("image", net, **kw).set_random_state(1)({"image": x[:8], "label": y[:8]})
    assert torch.equal(out["image"], APGD(net, **kw).set_random_state(1)(x[:8], y[:8]))


def test_standard_suite_is_autoattacks_standard_version():
    net = trained_cnn(2)[0]
    aa = autoattack(net, 8 / 255, version="standard")
    apgd_ce, apgd_t, fab_t, square = aa.attacks
    assert [type(a) for a in aa.attacks] == [APGD, APGD, FAB, SquareAttack]
    assert apgd_ce.loss_name == "ce" and apgd_ce.n_target_classes is None
    assert apgd_t.loss_name == "dlr" and apgd_t.targeted and apgd_t.n_target_classes == 9
    assert fab_t.targeted and fab_t.n_target_classes == 9
    assert (fab_t.alpha_max, fab_t.eta, fab_t.beta) == (0.1, 1.05, 0.9)
    assert all(a.steps == 100 and a.n_restarts == 1 for a in (apgd_ce, apgd_t, fab_t))
    assert all(a.eps == 8 / 255 and a.norm == "linf" for a in aa.attacks)
    assert square.n_queries == 5000 and square.p_init == 0.8 and square.loss_name == "margin"
    assert not square.rescale_schedule and square.square_fraction(11) == 0.4  # AutoAttack's raw schedule
    assert not aa.label_is_target
    # L2: the same attacks in L2, Square included
    l2 = autoattack(net, 0.5, norm="l2", version="standard", steps=7)
    assert [a.describe()["name"] for a in l2.attacks] == [
        "APGD-7",
        "APGD-T-7",
        "FAB-T-7",
        "SquareAttack-5000",
    ]
    assert all(a.norm == "l2" for a in l2.attacks)
    # the default is still the cheaper suite this function built before (no Square for L2)
    assert len(autoattack(net, 0.5, norm="l2").attacks) == 2
    fast = autoattack(net, 8 / 255)
    assert [a.describe()["name"] for a in fast.attacks] == ["APGD-100", "APGD-100", "SquareAttack-5000"]
    assert [a.loss_name for a in fast.attacks[:2]] == ["ce", "dlr"] and fast.attacks[2].rescale_schedule
    assert AUTOATTACK_VERSIONS == ("fast", "standard")


def test_standard_suite_worst_case_is_never_weaker_than_a_member(model):
    net, x, y = model
    aa = autoattack(net, EPS, version="standard", steps=10, n_queries=60).set_random_state(0)
    x_adv = aa(x, y)
    with torch.no_grad():
        fooled = net(x_adv).argmax(1) != y
    assert (x_adv - x).abs().max() <= EPS
    # replay: each member alone, with the seed the suite gave it, on the samples still robust
    # before it, fools exactly what it fooled inside the suite, and the suite keeps all of it
    rs = np.random.RandomState(0)
    rs.randint(0, 2**31 - 1)  # the suite's own seed, drawn first
    seeds = [int(rs.randint(0, 2**31 - 1)) for _ in aa.attacks]
    robust = torch.ones(len(y), dtype=torch.bool)
    for atk, seed in zip(aa.attacks, seeds):
        idx = robust.nonzero()[:, 0]
        if idx.numel() == 0:
            break
        with torch.no_grad():
            alone = net(atk.set_random_state(seed)(x[idx], y[idx])).argmax(1) != y[idx]
        assert fooled[idx[alone]].all()
        robust[idx[alone]] = False
    assert torch.equal(fooled, ~robust)
    assert sum(v for k, v in aa.last_success.items() if k != "clean") == int(fooled.sum())
    # and against each member run alone on the whole set: per sample for the first member (it sees
    # the same samples) and for FAB-T (deterministic), in robust accuracy for every member
    for atk, seed in zip(aa.attacks, seeds):
        with torch.no_grad():
            alone = net(atk.set_random_state(seed)(x, y)).argmax(1) != y
        assert fooled.float().mean() >= alone.float().mean(), atk.describe()["name"]
        if atk is aa.attacks[0] or isinstance(atk, FAB):
            assert fooled[alone].all(), atk.describe()["name"]
    # the standard suite is at least as strong as the cheaper one at the same budgets
    fast = autoattack(net, EPS, steps=10, n_queries=60).set_random_state(0)
    assert accuracy(net, x_adv, y) <= accuracy(net, fast(x, y), y)


def test_bad_arguments_for_the_standard_suite():
    net = trained_cnn(2)[0]
    with pytest.raises(ValueError, match="version must be one of"):
        autoattack(net, 0.1, version="plus")
    with pytest.raises(ValueError, match="untargeted"):
        autoattack(net, 0.1, version="standard", targeted=True)
    for make in (lambda: APGD(net, 0.1, n_target_classes=3), lambda: FAB(net, 0.1, n_target_classes=3)):
        with pytest.raises(ValueError, match="targeted=True"):
            make()
    with pytest.raises(ValueError, match="n_target_classes"):
        APGD(net, 0.1, targeted=True, n_target_classes=0)
    # an APGD-T member with a targeted-label attack cannot be mixed in one ensemble
    with pytest.raises(ValueError, match="takes the"):
        WorstCaseEnsemble(net, [APGD(net, 0.1), APGD(net, 0.1, targeted=True)])


def _reference_l2_pattern(s):
    """The paper's pattern written out with loops over the nested boxes, as the reference code does."""

    def boxes(rows, cols):
        out = torch.zeros(rows, cols)
        for k in range(max(rows // 2 + 1, cols // 2 + 1)):
            r0, c0 = rows // 2 - k, cols // 2 - k
            out[max(r0, 0) : min(r0 + 2 * k + 1, rows), max(c0, 0) : min(c0 + 2 * k + 1, cols)] += (
                1 / (k + 1) ** 2
            )
        return out / out.norm()

    pattern = torch.cat([boxes(s // 2, s), -boxes(s - s // 2, s)])
    return pattern / pattern.norm()


@pytest.mark.parametrize("side", [3, 4, 7])
def test_square_l2_pattern_is_the_papers(side):
    g = torch.Generator().manual_seed(0)
    ref = _reference_l2_pattern(side)
    seen = set()
    for _ in range(8):  # split along either axis at random
        p = SquareAttack._l2_pattern(side, 2, g, torch.zeros(1))
        transposed = torch.allclose(p, ref.T, atol=1e-6)
        assert torch.allclose(p, ref, atol=1e-6) or transposed
        seen.add(transposed)
    assert seen == {False, True}
    cube = SquareAttack._l2_pattern(side, 3, g, torch.zeros(1))
    assert cube.shape == (side,) * 3 and abs(float(cube.norm()) - 1) < 1e-6
    assert abs(float(cube.sum())) < float(cube.abs().sum())  # a positive and a negative half


def test_square_l2_needs_no_gradients_and_spends_exactly_eps(model):
    net, x, y = model
    atk = SquareAttack(net, 0.5, norm="l2", n_queries=300, rescale_schedule=False).set_random_state(0)
    x_adv = atk(x, y)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert (norms <= 0.5 * (1 + 1e-5)).all() and norms.min() > 0.45  # the whole budget, up to clipping
    assert accuracy(net, x_adv, y) < 0.5
    assert atk.last_queries.max() <= 300
