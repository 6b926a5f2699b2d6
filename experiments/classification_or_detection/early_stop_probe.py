"""Why APGD is the attack the detector sees least: it stops each image at its first adversarial point.

APGD (Croce & Hein 2020, as in AutoAttack) returns, per image, its first iterate that the network
misclassifies; PGD-10 and C&W run all their steps and carry the image deep into the wrong class, where
its features are atypical. This probe takes PGD-10's own trajectory and returns each image's first
misclassified iterate instead of its last (the iterates of ``PGD(steps=k)`` for k = 1..10 from the same
random start and step), and prints, on one (data, seed)'s undefended network A and its experiment
detector (``run.py`` makes both; run it first), per attack on the worst-case subset at ``--eps``:
successes, AUROC over successful attacks, TPR at the calibrated threshold, and the median true-class
margin of the successful points (negative: misclassified; clean correct images for scale).

Usage (from the repository root)::

    python -m experiments.classification_or_detection.early_stop_probe --data synthetic --seed 0
"""

from __future__ import annotations

from pathlib import Path

import torch

import experiments.classification_or_detection.run as cod
import experiments.label_scarcity.run as ssat
from experiments.classification_or_detection.rule_probe import probe_arguments, undefended_network
from monai_adv.detectors import load_detector
from monai_adv.metrics import detection_summary
from monai_adv.transforms import APGD, PGD
from monai_adv.transforms.losses import margin


def first_adversarial_iterates(net, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int):
    """Per image, PGD's first misclassified iterate (the image itself where no iterate is)."""
    alpha = 2.5 * eps / steps  # PGD's default for ``steps``, kept for every prefix of the trajectory
    out, found = x.clone(), ~cod.correct(net, x, y)
    for k in range(1, steps + 1):
        xa = cod.attacked(PGD(net, eps, steps=k, alpha=alpha).set_random_state(seed), x, y)
        new = ~cod.correct(net, xa, y) & ~found
        out[new], found = xa[new], found | new
    return out


def main(argv: list[str] | None = None) -> None:
    p = probe_arguments(__doc__.splitlines()[0])
    p.add_argument("--eps", default="1/255")
    p.add_argument("--rule", default="fisher")
    a = p.parse_args(argv)
    s, d, key, net = undefended_network(a)
    det = load_detector(Path(s.runs) / f"{key}_detector_{a.rule}.pt", net, progress=False)
    sub = cod.stratified_subset(d["y_test"], 100)
    x, y = d["x_test"][sub], d["y_test"][sub]
    eps = ssat.parse_eps(a.eps)
    ok, clean = cod.correct(net, x, y), cod.scores(det, x)
    with torch.no_grad():
        clean_margin = float(margin(net(x), y)[ok].median())
    attacks = {
        "APGD-CE, 20 steps (first adversarial point)": cod.attacked(
            APGD(net, eps, steps=20, loss="ce").set_random_state(a.seed), x, y
        ),
        "APGD-DLR, 20 steps (first adversarial point)": cod.attacked(
            APGD(net, eps, steps=20, loss="dlr").set_random_state(a.seed), x, y
        ),
        "PGD-10 (last iterate)": cod.attacked(PGD(net, eps, steps=10).set_random_state(a.seed), x, y),
        "PGD-10 (first adversarial iterate)": first_adversarial_iterates(net, x, y, eps, 10, a.seed),
    }
    print(f"{a.data} seed {a.seed}, eps {a.eps}: {len(y)} images, median clean margin {clean_margin:+.2f}")
    print("| attack | successes | AUROC over successes | TPR | median margin of successes |")
    print("|---|---|---|---|---|")
    for name, xa in attacks.items():
        adv_ok = cod.correct(net, xa, y)
        sm = detection_summary(clean, cod.scores(det, xa), ok, adv_ok, threshold=det.threshold)
        with torch.no_grad():
            m = margin(net(xa), y)[ok & ~adv_ok]
        print(
            f"| {name} | {sm['n_success']} | {sm['auroc_success']:.3f} | {sm['tpr_at_fpr']:.3f} | "
            f"{float(m.median()):+.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
