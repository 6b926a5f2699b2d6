"""End to end on a small trained segmentation network: every attack lowers Dice, in the expected order."""

import pytest
import torch
from helpers import mean_dice, trained_segmenter
from monai.inferers import SlidingWindowInferer

from monai_adv.transforms import (
    APGD,
    FGSM,
    MIFGSM,
    PGD,
    CarliniWagnerL2,
    CosPGD,
    CosPGDd,
    SegPGD,
    SegPGDd,
    SquareAttack,
    TransferAttack,
    WorstCaseEnsemble,
    per_sample_dice,
    per_sample_dice_loss,
)

EPS = 0.1  # per-voxel contrast 0.1 under noise 0.1: the network pools, so a small Linf budget hurts


@pytest.fixture(scope="module")
def model():
    net, x, y = trained_segmenter(2)
    clean = mean_dice(net, x, y)
    assert clean >= 0.9, f"the test segmenter must train to a high clean Dice, got {clean}"
    return net, x, y, clean


def test_every_attack_drops_mean_dice_far_below_clean(model):
    net, x, y, clean = model
    # dense_threshold=0: no sample counts as fooled, so APGD and Square spend their whole budget
    attacks = {
        "FGSM": FGSM(net, EPS),
        "PGD": PGD(net, EPS, steps=5),
        "PGD-L2": PGD(net, EPS * 16, steps=5, norm="l2"),
        "MIFGSM": MIFGSM(net, EPS, steps=5),
        "APGD-CE": APGD(net, EPS, steps=10, dense_threshold=0.0),
        "SegPGD": SegPGD(net, EPS, steps=5),
        "CosPGD": CosPGD(net, EPS, steps=5),
        "PGD-Dice": PGD(net, EPS, steps=5, loss=per_sample_dice_loss),
        "Square": SquareAttack(net, EPS, n_queries=100, dense_threshold=0.0),
        "Transfer": TransferAttack(net, FGSM, eps=EPS),
    }
    results = {}
    for name, atk in attacks.items():
        atk.set_random_state(0)
        x_adv = atk(x, y)
        assert (x_adv - x).abs().max() <= EPS + 1e-6 or name == "PGD-L2"
        results[name] = mean_dice(net, x_adv, y)
    for name, dice in results.items():
        assert dice < clean - 0.35, (name, dice, clean, results)


def test_segpgd_and_cospgd_are_at_least_as_strong_as_pgd_at_the_same_budget(model):
    net, x, y, _ = model
    for steps in (3, 10):
        dice = {}
        for cls in (PGD, SegPGD, CosPGD):
            atk = cls(net, EPS, steps=steps).set_random_state(0)
            dice[cls.__name__] = mean_dice(net, atk(x, y), y)
        assert dice["SegPGD"] <= dice["PGD"], (steps, dice)
        assert dice["CosPGD"] <= dice["PGD"], (steps, dice)


def test_targeted_attacks_drive_the_prediction_to_the_target_mask(model):
    net, x, y, _ = model
    target = 1 - y  # swap the two regions
    with torch.no_grad():
        before = float((net(x).argmax(1) == target[:, 0]).float().mean())
    assert before < 0.1
    for cls in (PGD, SegPGD, CosPGD):
        x_adv = cls(net, EPS, steps=10, targeted=True).set_random_state(0)(x, target)
        with torch.no_grad():
            after = float((net(x_adv).argmax(1) == target[:, 0]).float().mean())
        assert after > 0.8, (cls.__name__, after)


def test_carlini_wagner_finds_dense_successes_with_a_small_perturbation(model):
    net, x, y, _ = model
    atk = CarliniWagnerL2(net, steps=30, binary_search_steps=3)
    x_adv = atk(x, y)
    with torch.no_grad():
        fooled = atk.is_adversarial(net(x_adv), y[:, 0])
        agreement = per_sample_dice(net(x_adv).argmax(1), y[:, 0], 2)
    # success means Dice below dense_threshold=0.5, reached by (almost) every sample ...
    assert fooled.float().mean() >= 0.9
    assert torch.equal(fooled, agreement < 0.5)
    # ... and C&W stops there: the smallest perturbation, not the largest damage
    assert float(agreement[fooled].min()) > 0.3


def test_worst_case_ensemble_keeps_the_lowest_dice_per_sample(model):
    net, x, y, _ = model
    # deterministic members: the ensemble's outputs can be recomputed one by one
    members = [
        FGSM(net, EPS),
        PGD(net, EPS, steps=3, random_start=False),
        SegPGD(net, EPS, steps=3, random_start=False),
    ]

    def agreement(x_adv):
        with torch.no_grad():
            return per_sample_dice(net(x_adv).argmax(1), y[:, 0], 2)

    each = torch.stack([agreement(atk(x, y)) for atk in members])  # (attacks, B)
    ens = WorstCaseEnsemble(net, members, dense_threshold=0.0)
    got = agreement(ens(x, y))
    torch.testing.assert_close(got, each.min(dim=0).values)
    assert (each.argmin(0) > 0).any()  # the later, stronger members do win on some samples

    # with the default threshold (Dice 0.5), a sample leaves the ensemble once an attack takes it
    # below 0.5, keeping the lowest Dice of the attacks that ran on it
    ens = WorstCaseEnsemble(net, members)
    got = agreement(ens(x, y))
    expected, ran = [], []
    for sample in each.T:
        stop = int((sample < 0.5).nonzero()[0]) if (sample < 0.5).any() else len(members) - 1
        expected.append(sample[: stop + 1].min())
        ran.append(stop + 1)
    torch.testing.assert_close(got, torch.stack(expected))
    assert 1 in ran and len(members) in ran  # some samples stop after FGSM, some see every attack
    assert ens.last_success["clean"] == 0 and ens.last_success["0:FGSM"] == int((each[0] < 0.5).sum())


def test_sliding_window_attack_equals_the_direct_attack_when_the_window_covers_the_image(model):
    net, x, y, _ = model
    window = SlidingWindowInferer(roi_size=tuple(x.shape[2:]), sw_batch_size=4, overlap=0.25)
    for cls in (PGD, SegPGD, CosPGD):
        direct = cls(net, EPS, steps=3).set_random_state(1)(x, y)
        windowed = cls(net, EPS, steps=3, inferer=window).set_random_state(1)(x, y)
        torch.testing.assert_close(windowed, direct, rtol=0, atol=1e-6)


def test_sliding_window_attack_on_a_larger_image_hurts_as_it_is_evaluated(model):
    net, _, _, _ = model
    from helpers import two_region_dataset

    x, y = two_region_dataset(4, size=32, seed=7)  # twice the training size
    window = SlidingWindowInferer(roi_size=(16, 16), sw_batch_size=8, overlap=0.5)

    def windowed_dice(x_in):
        with torch.no_grad():
            pred = window(x_in, net).argmax(1)
        return float(per_sample_dice(pred, y[:, 0], 2).mean())

    clean = windowed_dice(x)
    x_adv = SegPGD(net, EPS, steps=5, inferer=window).set_random_state(0)(x, y)
    assert clean > 0.85 and windowed_dice(x_adv) < clean - 0.35


def test_dictionary_versions_attack_one_item_in_a_pipeline(model):
    net, x, y, _ = model
    data = {"image": x[0], "label": y[0]}  # one channel-first item and its (1, H, W) label map
    for cls in (SegPGDd, CosPGDd):
        out = cls("image", network=net, eps=EPS, steps=5, output_postfix="adv").set_random_state(0)(data)
        assert out["image_adv"].shape == x[0].shape and torch.equal(out["image"], x[0])
        assert (out["image_adv"] - x[0]).abs().max() <= EPS + 1e-6
        assert mean_dice(net, out["image_adv"][None], y[:1]) < mean_dice(net, x[:1], y[:1]) - 0.2
