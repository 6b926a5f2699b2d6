"""AutoAttack's members do no work on samples already fooled (counted with a forward hook, no timing).

Each image carries its identity in one pixel that the linear classifier ignores (``10 * i``, far
beyond any eps), so a forward hook can tell which samples every forward pass of the attack holds.
"""

import pytest
import torch
from helpers import LinearClassifier

from monai_adv.transforms import APGD, SquareAttack, autoattack

SIDE = 8


class _Recorder:
    """A forward hook recording, per forward pass, the identities of its samples and which are misclassified."""

    def __init__(self, net, y):
        self.batches, self.y = [], y
        self.handle = net.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        ids = (inputs[0][:, 0, 0, 0] / 10.0).round().long()
        wrong = output.detach().argmax(1) != self.y[ids]
        self.batches.append((ids, wrong, output.requires_grad))


def _net_and_images(margins):
    """A linear classifier (label 0 for every image) whose clean margin on image i is ``margins[i]``."""
    d = SIDE * SIDE
    w = torch.zeros(4, d)
    w[1, 1:] = 1.0  # z_0 = 0, z_1 grows with the image's intensity, z_2 and z_3 never win
    net = LinearClassifier(w, torch.tensor([0.0, 0.0, -100.0, -101.0])).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    n = len(margins)
    # z_0 = 0 and z_1 = (d - 1) * level: the level sets the margin -z_1
    levels = -torch.tensor(margins, dtype=torch.float32) / (d - 1)
    x = levels.reshape(n, 1, 1, 1).expand(n, 1, SIDE, SIDE).clone()
    x[:, 0, 0, 0] = 10.0 * torch.arange(n, dtype=torch.float32)  # the identity pixel (weight 0)
    y = torch.zeros(n, dtype=torch.long)
    return net, x, y


# clean margins: two misclassified images, three an attack can fool (eps moves z_1 by up to 3.15
# in Linf, 3.97 in L2), two it cannot
MARGINS = [-5.0, -4.0, 0.5, 1.0, 1.5, 40.0, 50.0]


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
def test_square_never_queries_a_finished_sample(norm, eps):
    net, x, y = _net_and_images(MARGINS)
    rec = _Recorder(net, y)
    atk = SquareAttack(net, eps, norm=norm, n_queries=300, value_range=None).set_random_state(0)
    x_adv = atk(x, y)
    queries = atk.last_queries.long()
    with torch.no_grad():
        fooled = net(x_adv).argmax(1) != y
    batches = rec.batches[:-1]
    # query j (from 1) holds exactly the samples whose search had not ended before it, in batch order
    for j, (ids, _, _) in enumerate(batches, start=1):
        assert ids.tolist() == (queries >= j).nonzero()[:, 0].tolist(), j
    assert len(batches) == int(queries.max())
    assert sum(len(ids) for ids, _, _ in batches) == int(queries.sum())
    # and a search ends exactly when its sample is fooled: the misclassified ones after the first query
    assert queries[:2].tolist() == [1, 1]
    assert (queries[fooled] < 300).all() and (queries[~fooled] == 300).all()
    assert fooled[2:5].any() and ((queries > 1) & (queries < 300)).any()  # some finish mid-search
    assert not fooled[5:].any()


@pytest.mark.parametrize("norm, eps", [("linf", 0.05), ("l2", 0.5)])
@pytest.mark.parametrize("targets", [None, 3])
def test_apgd_drops_a_sample_from_its_gradient_steps_once_fooled(norm, eps, targets):
    net, x, y = _net_and_images(MARGINS)
    rec = _Recorder(net, y)
    kwargs = dict(loss="dlr", targeted=True, n_target_classes=targets) if targets else dict(loss="ce")
    atk = APGD(net, eps, norm=norm, steps=40, n_restarts=2, value_range=None, **kwargs).set_random_state(0)
    x_adv = atk(x, y)
    with torch.no_grad():
        fooled = net(x_adv).argmax(1) != y
    assert fooled[:5].all() and not fooled[5:].any()
    grad_batches = [(ids, wrong) for ids, wrong, requires_grad in rec.batches if requires_grad]
    # once a gradient step's forward pass shows a sample fooled, no later gradient step holds it
    broken: set[int] = set()
    steps = torch.zeros(len(y), dtype=torch.long)
    for ids, wrong in grad_batches:
        assert not broken & set(ids.tolist()), "a gradient step on a sample already fooled"
        broken |= set(ids[wrong].tolist())
        steps[ids] += 1
    # the misclassified samples: only the random start of the first run (APGD-T: never attacked)
    assert steps[:2].tolist() == ([0, 0] if targets else [1, 1])
    assert broken | {0, 1} == set(range(5))
    # the robust samples run every step of every run; the fooled ones left early
    runs = 2 * (targets or 1)
    assert steps[5:].tolist() == [runs * 41] * 2
    assert (steps[2:5] < 41).all()


def test_ensemble_never_hands_a_member_an_image_an_earlier_member_broke():
    net, x, y = _net_and_images(MARGINS)
    aa = autoattack(net, 0.05, version="standard", steps=20, n_queries=50, value_range=None)
    seen = []
    for i, member in enumerate(aa.attacks):

        def spy(x_, y_, mask, generator, _attack=member._attack, _i=i):
            seen.append((_i, (x_[:, 0, 0, 0] / 10.0).round().long().tolist()))
            return _attack(x_, y_, mask, generator)

        member._attack = spy
    x_adv = aa.set_random_state(0)(x, y)
    with torch.no_grad():
        fooled = net(x_adv).argmax(1) != y
    assert fooled[:5].all() and not fooled[5:].any()
    assert [type(m).__name__ for m in aa.attacks] == ["APGD", "APGD", "FAB", "SquareAttack"]
    assert aa.last_success == {"clean": 2, "0:APGD": 3, "1:APGD": 0, "2:FAB": 0, "3:SquareAttack": 0}
    # APGD-CE sees the five images the network gets right; every later member only the two it left
    assert seen == [(0, [2, 3, 4, 5, 6]), (1, [5, 6]), (2, [5, 6]), (3, [5, 6])]
