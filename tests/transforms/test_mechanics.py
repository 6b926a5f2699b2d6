"""The shared mechanics: network mode, gradients, no_grad, output types, seeding, eps draws, pipelines."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import SmallCNN, trained_cnn
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_adv.transforms import (
    APGD,
    FAB,
    FGSM,
    MIFGSM,
    PGD,
    PGDD,
    AdversarialAttackd,
    APGDd,
    CarliniWagnerL2,
    FGSMd,
    PGDd,
    PGDDict,
    SquareAttack,
    SquareAttackd,
    TransferAttack,
    WorstCaseEnsemble,
)

ALL = {
    "fgsm": lambda n: FGSM(n, 0.03),
    "pgd": lambda n: PGD(n, 0.03, steps=2),
    "mifgsm": lambda n: MIFGSM(n, 0.03, steps=2),
    "apgd": lambda n: APGD(n, 0.03, steps=2),
    "apgd_t": lambda n: APGD(n, 0.03, steps=2, loss="dlr", targeted=True, n_target_classes=3),
    "fab": lambda n: FAB(n, 0.03, steps=2, n_restarts=2),
    "fab_t": lambda n: FAB(n, 0.03, steps=2, targeted=True, n_target_classes=3),
    "square": lambda n: SquareAttack(n, 0.03, n_queries=3),
    "cw": lambda n: CarliniWagnerL2(n, steps=2, binary_search_steps=1),
    "transfer": lambda n: TransferAttack(SmallCNN(), PGD(n, 0.03, steps=2)),
    "ensemble": lambda n: WorstCaseEnsemble(n, [FGSM(n, 0.03), SquareAttack(n, 0.03, n_queries=3)]),
}


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 12, 12, generator=g), torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("name", sorted(ALL))
def test_mode_restored_params_untouched_and_works_under_no_grad(name, batch):
    torch.manual_seed(0)
    net = SmallCNN()
    net.train()
    for p in net.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    seen_modes = []
    net.register_forward_pre_hook(lambda m, i: seen_modes.append(m.training))
    atk = ALL[name](net)
    with torch.no_grad():
        x_adv = atk(*batch)
    assert net.training, "the network's previous mode must be restored"
    if seen_modes:
        assert not any(seen_modes), "the network must run in eval mode during the attack"
    for p in net.parameters():
        assert torch.equal(p.grad, torch.full_like(p, 7.0))
    after = net.state_dict()
    for k in before:  # batch-norm running statistics are not updated either
        assert torch.equal(before[k], after[k]), k
    assert x_adv.shape == batch[0].shape and not x_adv.requires_grad


@pytest.mark.parametrize("name", ["pgd", "square", "cw"])
def test_works_under_inference_mode(name, batch):
    net = SmallCNN().eval()
    with torch.inference_mode():
        x_adv = ALL[name](net).set_random_state(0)(*batch)
    assert torch.equal(x_adv, ALL[name](net).set_random_state(0)(*batch))


def test_mixed_modes_restored_exactly(batch):
    net = SmallCNN().train()
    frozen_bn = net.features[1]
    frozen_bn.eval()  # fine-tuning with frozen batch norm
    PGD(net, 0.03, steps=1)(*batch)
    assert net.training and net.features[0].training and not frozen_bn.training


def test_eval_mode_kept_when_it_was_eval(batch):
    net = SmallCNN().eval()
    PGD(net, 0.03, steps=1)(*batch)
    assert not net.training


def test_restores_mode_even_when_the_attack_fails(batch):
    net = SmallCNN().train()
    with pytest.raises(ValueError):
        PGD(net, 0.03, steps=1)(batch[0], torch.tensor([0, 1, 2, 9]))
    assert net.training


@pytest.mark.parametrize(
    "wrap, transform",
    [
        (lambda out: (out, out.mean()), None),
        (lambda out: {"logits": out, "features": out}, None),
        (lambda out: {"cls": out}, lambda o: o["cls"]),
    ],
)
def test_output_transform_picks_logits(wrap, transform, batch):
    base = SmallCNN().eval()

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.base = base

        def forward(self, x):
            return wrap(self.base(x))

    kwargs = {} if transform is None else {"output_transform": transform}
    a = PGD(Wrapped(), 0.03, steps=2, **kwargs).set_random_state(1)(*batch)
    b = PGD(base, 0.03, steps=2).set_random_state(1)(*batch)
    assert torch.equal(a, b)


def test_item_and_batch_agree(batch):
    net = SmallCNN().eval()
    x, y = batch
    whole = FGSM(net, 0.03)(x, y)
    for i in range(4):
        item = FGSM(net, 0.03)(x[i], int(y[i]))
        assert item.shape == x[i].shape
        torch.testing.assert_close(item, whole[i])


@pytest.mark.parametrize("label", [2, torch.tensor(2), torch.tensor([2]), np.int64(2), torch.tensor([[2]])])
def test_label_forms_for_one_item(label, batch):
    net = SmallCNN().eval()
    ref = FGSM(net, 0.03)(batch[0][0], 2)
    torch.testing.assert_close(FGSM(net, 0.03)(batch[0][0], label), ref)


def test_label_forms_for_a_batch(batch):
    net = SmallCNN().eval()
    x, y = batch
    ref = FGSM(net, 0.03)(x, y)
    for label in (y[:, None], y.numpy(), y.float(), y.tolist()):
        torch.testing.assert_close(FGSM(net, 0.03)(x, label), ref)


def test_metatensor_numpy_and_dtype_preserved(batch):
    net = SmallCNN().eval()
    x, y = batch
    meta = MetaTensor(x[0], meta={"filename_or_obj": "scan.png"})
    out = FGSM(net, 0.03)(meta, 1)
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "scan.png"
    out_np = FGSM(net, 0.03)(x.numpy(), y)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        out_d = PGD(net, 0.03, steps=2)(x.to(dtype), y)
        assert out_d.dtype == dtype
        # in half precision the ball holds to the dtype's resolution (one ulp near 1.0)
        ulp = torch.finfo(dtype).eps if dtype != torch.float64 else 1e-12
        assert (out_d.double() - x.to(dtype).double()).abs().max() <= 0.03 + ulp
        assert out_d.min() >= 0 and out_d.max() <= 1


def test_seeding_repeats_and_different_seeds_differ(batch):
    net = SmallCNN().eval()
    a = PGD(net, 0.03, steps=2).set_random_state(3)(*batch)
    b = PGD(net, 0.03, steps=2).set_random_state(3)(*batch)
    c = PGD(net, 0.03, steps=2).set_random_state(4)(*batch)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_eps_range_is_drawn_per_call(batch):
    net = SmallCNN().eval()
    atk = FGSM(net, eps=(0.001, 0.003)).set_random_state(0)
    drawn = []
    for _ in range(20):
        x_adv = atk(*batch)
        drawn.append(atk.current_eps)
        assert (x_adv - batch[0]).abs().max() <= atk.current_eps + 1e-7
    assert all(0.001 <= e <= 0.003 for e in drawn)
    assert len(set(drawn)) == 20 and np.std(drawn) > 2e-4  # really drawn, not fixed


def test_transfer_attack_crafts_on_the_surrogate_only(batch):
    target, surrogate = SmallCNN().eval(), SmallCNN().eval()
    calls = {"target": 0}
    target.register_forward_hook(lambda *a: calls.__setitem__("target", calls["target"] + 1))
    base = PGD(target, 0.03, steps=2).set_random_state(0)
    x_adv = TransferAttack(surrogate, base)(*batch)
    assert calls["target"] == 0, "a transfer attack must not query the target"
    expected = PGD(surrogate, 0.03, steps=2).set_random_state(0)(*batch)
    assert torch.equal(x_adv, expected)
    assert base.network is target, "the user's attack object is not modified"
    from_class = TransferAttack(surrogate, PGD, eps=0.03, steps=2).set_random_state(0)(*batch)
    assert torch.equal(from_class, expected)


def test_dictionary_versions_in_a_compose_pipeline(batch):
    net, x_test, y_test = trained_cnn(2)
    x, y = x_test[:4], y_test[:4]
    roi = torch.zeros(1, 16, 16)
    roi[:, 4:12, 4:12] = 1
    pipeline = Compose(
        [
            PGDd(keys="image", network=net, eps=0.05, steps=3, output_postfix="adv"),
            FGSMd(keys=["image"], network=net, eps=0.05, mask_key="roi"),
        ]
    )
    pipeline.set_random_state(0)
    for i in range(4):
        out = pipeline({"image": x[i], "label": y[i], "roi": roi})
        assert set(out) == {"image", "image_adv", "label", "roi"}
        assert (out["image_adv"] - x[i]).abs().max() <= 0.05 + 1e-6
        changed = out["image"] != x[i]
        assert changed.any() and not changed[roi == 0].any()
    # a collated batch works the same way, and the aliases are the same classes
    assert PGDD is PGDd and PGDDict is PGDd
    d = APGDd("image", net, eps=0.05, steps=3)({"image": x, "label": y})
    assert d["image"].shape == x.shape
    d2 = AdversarialAttackd("image", SquareAttack(net, 0.05, n_queries=3), label_key="target")
    with pytest.raises(KeyError, match="target"):
        d2({"image": x, "label": y})
    assert SquareAttackd("image", net, 0.05, n_queries=2)({"image": x, "label": y})["image"].shape == x.shape


def test_dictionary_seed_propagates(batch):
    net = SmallCNN().eval()
    data = {"image": batch[0], "label": batch[1]}
    a = PGDd("image", net, 0.03, steps=2).set_random_state(5)(data)["image"]
    b = PGDd("image", net, 0.03, steps=2).set_random_state(5)(data)["image"]
    assert torch.equal(a, b)


def test_custom_loss_replaces_cross_entropy(batch):
    net = SmallCNN().eval()
    x, y = batch
    calls = []

    def minus_ce(logits, labels):
        calls.append(logits.shape)
        return -torch.nn.functional.cross_entropy(logits, labels, reduction="none")

    # ascending minus the loss is the same step as descending the loss, i.e. the targeted step
    custom = FGSM(net, 0.03, loss=minus_ce)(x, y)
    targeted = FGSM(net, 0.03, targeted=True)(x, y)
    assert calls and torch.equal(custom, targeted)
    assert not torch.equal(custom, FGSM(net, 0.03)(x, y))
    # a scalar loss works for gradient attacks; APGD, which needs per-sample values, says so
    PGD(net, 0.03, steps=1, loss=lambda z, t: torch.nn.functional.cross_entropy(z, t))(x, y)
    with pytest.raises(ValueError, match="one value per sample"):
        APGD(net, 0.03, steps=2, loss=lambda z, t: torch.nn.functional.cross_entropy(z, t))(x, y)
