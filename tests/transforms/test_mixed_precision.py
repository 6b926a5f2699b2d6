"""Mixed precision (``amp=True``) and channels-last attacks: same invariants, same strength, safe float16."""

import pytest
import torch
import torch.nn as nn
from helpers import LinearClassifier, accuracy, trained_cnn
from hypothesis import given, settings

from monai_adv.transforms import APGD, FGSM, PGD, AdaptiveAttack, CarliniWagnerL2
from monai_adv.transforms.base import default_amp_dtype, network_memory_format
from tests.transforms.test_invariants import SCALE, build, check_common, problems


@settings(max_examples=30 * SCALE)
@given(problems())
def test_amp_results_keep_every_invariant(p):
    # the same problems as the full-precision invariants: any shape, eps, norm, range, mask, dtype
    atk = build(p)
    atk.amp = True
    atk.channels_last = p["seed"] % 2 == 0
    x_adv = atk(p["x"], p["labels"], mask=p["mask"])
    check_common(p, x_adv)  # shape, dtype, device, range, mask: in the caller's dtype
    x = p["x"] if p["x"].ndim == p["spatial_dims"] + 2 else p["x"][None]
    batch = x_adv if x_adv.ndim == x.ndim else x_adv[None]
    delta = (batch.double() - x.double()).flatten(1)
    eps = atk.current_eps
    if p["norm"] == "linf":
        assert (delta.abs().amax(dim=1) <= eps).all()
    else:
        ulp = torch.finfo(x.dtype).eps * float(x.abs().max()) / 2
        assert (delta.norm(dim=1) <= eps + 1e-6 * max(eps, 1.0) + ulp * delta.shape[1] ** 0.5).all()


def test_default_amp_dtype_is_bfloat16_on_cpu_and_float16_on_cuda():
    assert default_amp_dtype("cpu") == torch.bfloat16
    assert default_amp_dtype("cuda") == torch.float16
    net = LinearClassifier(torch.randn(2, 4))
    assert FGSM(net, 0.1, amp=True, amp_dtype="bfloat16").amp_dtype == torch.bfloat16
    with pytest.raises(ValueError, match="amp_dtype"):
        FGSM(net, 0.1, amp=True, amp_dtype=torch.float64)


def test_network_really_runs_in_low_precision_and_the_gradient_comes_back_in_the_callers_dtype():
    seen = []
    net, x, y = trained_cnn(2)
    handle = net.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        atk = PGD(net, 0.03, steps=2, amp=True)
        x_adv = atk(x[:4], y[:4])
    finally:
        handle.remove()
    assert set(seen) == {torch.bfloat16}
    assert x_adv.dtype == torch.float32
    grad, objective, logits = atk.objective_and_grad(x[:4], y[:4])
    assert grad.dtype == objective.dtype == logits.dtype == torch.float32


@pytest.mark.parametrize(
    "make",
    [
        lambda net: PGD(net, 0.03, steps=20),
        lambda net: APGD(net, 0.03, steps=20, loss="ce"),
    ],
    ids=["PGD-20", "APGD-CE-20"],
)
def test_amp_is_as_strong_as_full_precision_on_a_trained_classifier(make):
    net, x, y = trained_cnn(2)
    assert accuracy(net, x, y) >= 0.95
    full = make(net).set_random_state(0)
    mixed = make(net).set_random_state(0)
    mixed.amp = True
    acc_full = accuracy(net, full(x, y), y)
    acc_mixed = accuracy(net, mixed(x, y), y)
    # the attacks must work at all (else parity is trivial), and bf16 must cost at most 1 point
    assert acc_full < 0.5
    assert abs(acc_mixed - acc_full) <= 0.01 + 1e-9, (acc_full, acc_mixed)


def test_float16_loss_scale_keeps_gradients_that_would_underflow():
    # a confident network: the true class wins by 20 logits, so d loss / d logits is ~2e-9, below
    # float16's smallest subnormal (6e-8); an unscaled float16 backward pass returns an all-zero
    # gradient and FGSM could not move
    w0 = torch.tensor([5.0, -3.0, 5.0, -3.0])
    net = LinearClassifier(torch.stack([w0, -w0]))
    x = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(1, 1, 2, 2)
    y = torch.tensor([0])
    reference = FGSM(net, 0.1).objective_and_grad(x, y)[0]
    assert torch.count_nonzero(reference) == 4
    with torch.autocast("cpu", dtype=torch.float16):
        xi = x.clone().requires_grad_(True)
        logits = net(xi)
    (unscaled,) = torch.autograd.grad(nn.functional.cross_entropy(logits.float(), y), xi)
    assert torch.count_nonzero(unscaled) == 0  # the failure the loss scale prevents
    atk = FGSM(net, 0.1, amp=True, amp_dtype=torch.float16)
    scaled = atk.objective_and_grad(x, y)[0]
    assert torch.equal(scaled.sign(), reference.sign())
    assert torch.allclose(scaled, reference, rtol=0.05)
    x_adv = atk(x, 0)
    assert torch.equal((x_adv - x).sign(), reference.sign())  # every voxel moves inside [0, 1]


def test_float16_loss_scale_backs_off_on_overflow():
    # gradients of ~1e3 overflow float16 (max 65504) at the initial scale 2**16: the scale halves
    # until the backward pass is finite, and the gradient still equals the full-precision one
    w = 1e3 * torch.tensor([[1.0, -2.0, 3.0, -4.0], [-1.0, 2.0, -3.0, 4.0]])
    net = LinearClassifier(w)
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])  # class 1 wins by 2,000 logits: cross-entropy's gradient is ~(w_1 - w_0)
    reference = FGSM(net, 0.1).objective_and_grad(x, y)[0]
    atk = FGSM(net, 0.1, amp=True, amp_dtype=torch.float16)
    grad = atk.objective_and_grad(x, y)[0]
    assert atk._grad_scale < 2.0**16
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, reference, rtol=0.01)


def test_channels_last_converts_the_network_and_feeds_it_channels_last_batches():
    net, x, y = trained_cnn(2)
    net = type(net)(2)
    net.load_state_dict(trained_cnn(2)[0].state_dict())
    net.eval()
    layouts = []
    # the first conv sees one channel, where both layouts coincide: watch the second one
    handle = net.features[3].register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    try:
        assert network_memory_format(net) is None
        reference = PGD(net, 0.03, steps=3).set_random_state(0)(x[:8], y[:8])
        assert not any(layouts)
        atk = PGD(net, 0.03, steps=3, channels_last=True).set_random_state(0)
        x_adv = atk(x[:8], y[:8])
        assert network_memory_format(net) == torch.channels_last
        assert layouts[-1]
        # a channels-last network gets channels-last inputs without being asked
        layouts.clear()
        PGD(net, 0.03, steps=1)(x[:2], y[:2])
        assert all(layouts)
    finally:
        handle.remove()
    assert x_adv.is_contiguous()  # the caller's layout comes back
    # the same attack, only the layout differs: the same signs almost everywhere
    assert (x_adv - reference).abs().max() <= 0.06 + 1e-6
    assert ((x_adv - x[:8]).sign() == (reference - x[:8]).sign()).float().mean() > 0.95


def test_carlini_wagner_and_the_adaptive_attack_run_under_amp():
    from monai_adv.detectors import MahalanobisDetector

    net, x, y = trained_cnn(2)
    x_cw = CarliniWagnerL2(net, steps=20, amp=True)(x[:16], y[:16])
    assert accuracy(net, x_cw, y[:16]) < 0.5
    det = MahalanobisDetector(net)
    det.fit([(x[16:], y[16:])])
    clean_score = det.score(x[:16]).mean()
    x_ad = AdaptiveAttack(net, det, 0.05, steps=10, mode="selective", amp=True).set_random_state(0)(
        x[:16], y[:16]
    )
    assert (x_ad.double() - x[:16].double()).abs().max() <= 0.05
    assert accuracy(net, x_ad, y[:16]) < 0.5
    # and it lowers the detector score below the one a plain PGD leaves
    pgd_score = det.score(PGD(net, 0.05, steps=10).set_random_state(0)(x[:16], y[:16])).mean()
    assert det.score(x_ad).mean() < pgd_score, (clean_score, pgd_score)


class FlipsUnderAutocast(nn.Module):
    """Class 0 in full precision, class 1 under autocast: a near tie that low-precision rounding flips."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        flip = torch.is_autocast_enabled(x.device.type)
        base = torch.tensor([[0.0, 1.0]] if flip else [[1.0, 0.0]], device=x.device)
        return base + 1e-3 * self.scale * x.flatten(1).mean(1, keepdim=True)


def test_apgd_confirms_bf16_successes_in_full_precision():
    net = FlipsUnderAutocast()
    x, y = torch.full((1, 1, 2, 2), 0.5), torch.tensor([0])
    atk = APGD(net, 0.01, steps=2, loss="ce", amp=True)
    assert atk.is_adversarial(atk.logits(x, y), y).item()  # under autocast: "fooled"
    assert not atk.is_adversarial_full_precision(x, y).item()  # the network itself: not
    _, _, fooled = atk._single_run(x, y, None, 0.01, torch.Generator().manual_seed(0))
    assert not fooled.item()  # APGD neither reports it nor stops restarting it


def test_seeding_an_attack_seeds_its_precision_and_network_copies():
    # an engine runs a copy of the attack in its step's precision, made when the engine is built; a
    # bundle seeds the attack it holds afterwards (its initialize list). The copy must follow that seed,
    # or training under autocast does not repeat for a seed (it did not, on a CPU with native bf16).
    torch.manual_seed(0)
    net = LinearClassifier(torch.randn(3, 16))
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    atk = PGD(net, eps=(0.01, 0.05), steps=2, random_start=True)
    copies = [atk.with_precision(True), atk.with_network(net), atk.with_precision(True).with_network(net)]
    for copy_ in copies:
        assert copy_ is not atk
        runs = []
        for _ in range(2):
            atk.set_random_state(seed=7)
            runs.append((copy_(x, y), copy_.current_eps))
        assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
        # and the copy's draws are the original's: one stream, not two seeded alike
        atk.set_random_state(seed=7)
        first = atk.R.uniform()
        atk.set_random_state(seed=7)
        assert copy_.R.uniform() == first
    # a deep copy is independent
    import copy

    deep = copy.deepcopy(atk)
    deep.set_random_state(seed=1)
    atk.set_random_state(seed=2)
    assert deep.R.uniform() != atk.R.uniform()
