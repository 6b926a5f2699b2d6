"""End to end on a small trained classifier: the attacks really lower accuracy, in the expected order."""

import pytest
import torch
import torch.nn as nn
from helpers import accuracy, trained_cnn

from monai_adv.transforms import (
    APGD,
    FGSM,
    MIFGSM,
    PGD,
    CarliniWagnerL2,
    SquareAttack,
    TransferAttack,
    WorstCaseEnsemble,
    autoattack,
)

EPS = 0.03  # small enough that the order of the attacks shows; large enough to hurt an undefended model


@pytest.fixture(scope="module")
def model():
    net, x, y = trained_cnn(2)
    clean = accuracy(net, x, y)
    assert clean >= 0.95, f"the test classifier must train to high clean accuracy, got {clean}"
    return net, x, y, clean


def test_every_white_box_attack_drops_accuracy_far_below_clean(model):
    net, x, y, clean = model
    results = {}
    for name, atk in {
        "FGSM": FGSM(net, EPS),
        "PGD": PGD(net, EPS, steps=10),
        "PGD-L2": PGD(net, EPS * 8, steps=10, norm="l2"),
        "MIFGSM": MIFGSM(net, EPS, steps=10),
        "APGD-CE": APGD(net, EPS, steps=10),
        "APGD-DLR": APGD(net, EPS, steps=10, loss="dlr"),
    }.items():
        x_adv = atk.set_random_state(0)(x, y)
        results[name] = accuracy(net, x_adv, y)
    assert all(acc < clean - 0.4 for acc in results.values()), results


def test_pgd_at_least_as_strong_as_fgsm_and_apgd_at_least_as_strong_as_pgd(model):
    net, x, y, _ = model
    fgsm = accuracy(net, FGSM(net, EPS)(x, y), y)
    pgd = accuracy(net, PGD(net, EPS, steps=10).set_random_state(0)(x, y), y)
    apgd = accuracy(net, APGD(net, EPS, steps=10).set_random_state(0)(x, y), y)
    assert pgd <= fgsm, (pgd, fgsm)
    assert apgd <= pgd, (apgd, pgd)


def test_apgd_restarts_only_help(model):
    net, x, y, _ = model
    one = accuracy(net, APGD(net, EPS / 2, steps=5).set_random_state(0)(x, y), y)
    three = accuracy(net, APGD(net, EPS / 2, steps=5, n_restarts=3).set_random_state(0)(x, y), y)
    assert three <= one


class GradientMasker(nn.Module):
    """Passes values through but returns zero input gradients: a broken-gradient 'defence'."""

    class _Block(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return torch.zeros_like(g)

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(self._Block.apply(x))


def test_square_breaks_a_network_that_blocks_gradients(model):
    net, x, y, clean = model
    masked = GradientMasker(net).eval()
    x, y = x[:64], y[:64]
    pgd = accuracy(masked, PGD(masked, 2 * EPS, steps=10, random_start=False)(x, y), y)
    square_atk = SquareAttack(masked, 2 * EPS, n_queries=200).set_random_state(0)
    square = accuracy(masked, square_atk(x, y), y)
    assert pgd >= clean - 0.05, "the masked gradient should defeat PGD"
    assert square < 0.3, f"Square should not need gradients, got accuracy {square}"
    assert square_atk.last_queries.max() <= 200


def test_targeted_attacks_hit_their_target(model):
    net, x, y, _ = model
    target = (y + 1) % 4
    for atk in (
        PGD(net, 0.1, steps=20, targeted=True),
        APGD(net, 0.1, steps=20, targeted=True, loss="dlr"),
        SquareAttack(net, 0.1, n_queries=300, targeted=True),
        CarliniWagnerL2(net, targeted=True),
    ):
        with torch.no_grad():
            pred = net(atk.set_random_state(0)(x, target)).argmax(1)
        hit = (pred == target).float().mean()
        assert hit >= 0.9, (type(atk).__name__, float(hit))


def test_carlini_wagner_defaults_succeed_with_small_perturbations(model):
    net, x, y, _ = model
    atk = CarliniWagnerL2(net)
    x_adv = atk(x[:64], y[:64])
    assert accuracy(net, x_adv, y[:64]) <= 0.02
    # minimal: smaller than the L2 size of a successful Linf PGD perturbation at EPS
    pgd_l2 = (PGD(net, EPS, steps=10)(x[:64], y[:64]) - x[:64]).flatten(1).norm(dim=1)
    cw_l2 = (x_adv - x[:64]).flatten(1).norm(dim=1)
    assert cw_l2.median() < pgd_l2.median()
    torch.testing.assert_close(atk.last_l2.sqrt(), cw_l2, rtol=1e-4, atol=1e-5)


def test_transfer_from_an_independently_trained_surrogate_hurts_the_target(model):
    net, x, y, clean = model
    surrogate, _, _ = trained_cnn(2, seed=1)
    atk = TransferAttack(surrogate, MIFGSM, eps=2 * EPS, steps=10)
    transferred = accuracy(net, atk(x, y), y)
    white_box = accuracy(net, MIFGSM(net, 2 * EPS, steps=10)(x, y), y)
    assert white_box <= transferred < clean - 0.2


def test_worst_case_ensemble_is_at_most_its_strongest_member(model):
    net, x, y, _ = model
    # deterministic members, so the ensemble sees exactly the runs measured alone
    members = [
        FGSM(net, EPS / 2),
        PGD(net, EPS / 2, steps=5, random_start=False),
        MIFGSM(net, EPS / 2, steps=5),
    ]
    fooled_alone = torch.zeros(len(y), dtype=torch.bool)
    accs = []
    for m in members:
        with torch.no_grad():
            ok = net(m(x, y)).argmax(1) == y
        fooled_alone |= ~ok
        accs.append(float(ok.float().mean()))
    ens = WorstCaseEnsemble(net, members)
    x_adv = ens(x, y)
    with torch.no_grad():
        fooled = net(x_adv).argmax(1) != y
    robust = accuracy(net, x_adv, y)
    assert robust <= min(accs)
    # per sample: anything a member fooled, the ensemble fooled, and nothing else
    assert torch.equal(fooled, fooled_alone)
    assert (x_adv - x).abs().max() <= EPS / 2 + 1e-6
    assert sum(ens.last_success.values()) == round((1 - robust) * len(y))


def test_autoattack_preset_runs_and_is_strong(model):
    net, x, y, _ = model
    aa = autoattack(net, EPS, steps=10, n_queries=50).set_random_state(0)
    assert accuracy(net, aa(x, y), y) <= accuracy(net, PGD(net, EPS, steps=10).set_random_state(0)(x, y), y)


def test_3d_volumes_are_attacked_too():
    net, x, y = trained_cnn(3, size=8)
    clean = accuracy(net, x, y)
    assert clean >= 0.9
    for atk in (
        FGSM(net, 0.05, spatial_dims=3),
        PGD(net, 0.05, spatial_dims=3),
        SquareAttack(net, 0.05, n_queries=100, spatial_dims=3),
    ):
        assert accuracy(net, atk.set_random_state(0)(x, y), y) < clean - 0.4, type(atk).__name__


def test_mask_limits_the_damage(model):
    net, x, y, clean = model
    # perturbing only one corner (where no class's blob is) is much weaker than the whole image
    corner = torch.zeros(1, 16, 16)
    corner[:, :3, :3] = 1
    masked = accuracy(net, PGD(net, EPS, steps=10)(x, y, mask=corner), y)
    whole = accuracy(net, PGD(net, EPS, steps=10)(x, y), y)
    assert whole < masked
