"""How the combined detector's members are joined: the probe that chose the experiment's ``--rule``.

On one (data, seed)'s undefended network A (trained by ``run.py``; run it first), fits each candidate
combination on the clean labeled part, calibrates it at 5% on the held-out clean images, and prints, per
non-adaptive attack at 1/255 and 2/255 on the worst-case subset (100 test images per class), the AUROC over
successful attacks / the TPR at the calibrated threshold, and the clean flag rate. The candidates: the
standard members (multi-layer Mahalanobis, two-sided margin, squeezing) under min-p and Fisher; one
Mahalanobis member per layer; Mahalanobis with Lee et al.'s input preprocessing; squeezing alone with
Mahalanobis; a 4-bit squeezer added.

Usage (from the repository root)::

    python -m experiments.classification_or_detection.rule_probe --data synthetic --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import experiments.classification_or_detection.run as cod
import experiments.label_scarcity.run as ssat
from monai_adv.detectors import (
    CombinedDetector,
    FeatureSqueezingDetector,
    MahalanobisDetector,
    OutputDetector,
)
from monai_adv.metrics import detection_summary


def candidates(net, layers):
    def margin():
        return OutputDetector(net, statistic="margin", progress=False)

    def squeeze(**kw):
        return FeatureSqueezingDetector(net, progress=False, **kw)

    def maha(ls=layers, **kw):
        return MahalanobisDetector(net, ls, progress=False, **kw)

    per_layer = len(layers) * [False] + [True, False]
    yield "standard, min-p", CombinedDetector.standard(net, feature_layers=layers, progress=False)
    yield (
        "standard, Fisher",
        CombinedDetector.standard(net, feature_layers=layers, rule="fisher", progress=False),
    )
    for rule, label in (("min_p", "min-p"), ("fisher", "Fisher")):
        members = [maha([layer]) for layer in layers] + [margin(), squeeze()]
        yield (
            f"per-layer Mahalanobis, {label}",
            CombinedDetector(net, members, two_sided=per_layer, rule=rule, progress=False),
        )
    yield (
        "Mahalanobis + squeezing, Fisher",
        CombinedDetector(net, [maha(), squeeze()], rule="fisher", progress=False),
    )
    yield (
        "standard with input preprocessing 0.5/255, min-p",
        CombinedDetector(
            net,
            [maha(input_preprocessing=0.5 / 255), margin(), squeeze()],
            two_sided=[False, True, False],
            progress=False,
        ),
    )
    yield (
        "standard with a 4-bit squeezer too, min-p",
        CombinedDetector(net, [maha(), margin(), squeeze(bit_depths=(5, 4))], two_sided=[False, True, False]),
    )


def probe_arguments(description: str) -> argparse.ArgumentParser:
    """The probes' common options: which (data, seed)'s network A, threads and folders."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", choices=["synthetic", "kermany"], default="synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(cod.HERE))
    p.add_argument("--cache", default=str(cod.ROOT / "benchmarks" / ".cache"))
    return p


def undefended_network(a: argparse.Namespace):
    """The experiment's settings, data and frozen network A of ``a.data`` and ``a.seed`` (``run.py`` trains it)."""
    torch.set_num_threads(a.threads)
    a.toy, a.synthetic_calibration, a.kermany_calibration = False, 1000, 0.3
    s = cod.ssat_settings(a)
    d = ssat.setting_data(a.data, cod.FRACTION[a.data], a.seed, s)
    key = ssat.run_key(a.data, cod.FRACTION[a.data], a.seed, "standard")
    net = ssat.load_trained(s, key, ssat.recorded_networks(Path(s.results)).get(key)).eval()
    for q in net.parameters():
        q.requires_grad_(False)
    return s, d, key, net


def main(argv: list[str] | None = None) -> None:
    a = probe_arguments(__doc__.splitlines()[0]).parse_args(argv)
    s, d, _, net = undefended_network(a)
    sub = cod.stratified_subset(d["y_test"], 100)
    x, y = d["x_test"][sub], d["y_test"][sub]
    clean_ok = cod.correct(net, x, y)
    attacked = {}
    for eps in ("1/255", "2/255"):
        for name in ("pgd10", "apgd_ce", "apgd_dlr"):
            atk = cod.non_adaptive_attack(name, net, ssat.parse_eps(eps), a).set_random_state(a.seed)
            xa = cod.attacked(atk, x, y)
            attacked[(eps, name)] = (xa, cod.correct(net, xa, y))
    print(
        f"{a.data} seed {a.seed}: {len(y)} test images, clean accuracy {float(clean_ok.float().mean()):.3f}"
    )
    print("| combination | " + " | ".join(f"{n} @ {e}" for e, n in attacked) + " | clean flag rate |")
    print("|---" * (len(attacked) + 2) + "|")
    for name, det in candidates(net, cod.feature_layers(net)):
        det.fit(cod.batches(d["x_l"], d["y_l"]))
        det.calibrate(cod.batches(d["x_cal"]), fpr=0.05)
        clean = cod.scores(det, x)
        cells = []
        for xa, ok in attacked.values():
            sm = detection_summary(clean, cod.scores(det, xa), clean_ok, ok, threshold=det.threshold)
            cells.append(f"{sm['auroc_success']:.2f} / {sm['tpr_at_fpr']:.2f}")
        flag = float((clean > det.threshold).float().mean())
        print(f"| {name} | " + " | ".join(cells) + f" | {flag:.3f} |", flush=True)


if __name__ == "__main__":
    main()
