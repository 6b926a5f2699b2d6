"""Unsupervised adversarial detection on the OCT models of the SSAT work: who detects what, and at what risk.

For each training method (standard, Madry PGD-AT, TRADES, SSAT; trained exactly as
``experiments/label_scarcity/small_scale.py`` trains them) this script fits two detectors on clean images only
(the training pool, labels not used: the network's predictions stand in), calibrates them at 5% FPR
on one half of the clean test set, and runs a :class:`~monai_adv.engines.RobustEvaluator` on the
other half with FGSM, PGD-20, MI-FGSM, C&W-L2, APGD-CE, Square, a transfer attack (MI-FGSM on an
independently trained standard network), and the adaptive attack against that detector. A
:class:`~monai_adv.handlers.RobustnessReport` writes each run's report (JSON, Markdown, plots); one
JSON line per (data, method, detector) goes to ``--results`` and ``--summary`` writes the tables.

Usage (the commands behind experiments/detection_small_scale/README.md)::

    nice python -m experiments.detection_small_scale.run --data synthetic
    nice python -m experiments.detection_small_scale.run --data kermany --label-fraction 0.5
    python -m experiments.detection_small_scale.run --summary experiments/detection_small_scale/README.md
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from monai.data import DataLoader, Dataset

import experiments.label_scarcity.small_scale as ssat  # noqa: E402  (the SSAT work's training recipe, reused as it is)
from monai_adv.detectors import KNNDetector, MahalanobisDetector  # noqa: E402
from monai_adv.engines import RobustEvaluator  # noqa: E402
from monai_adv.handlers import RobustnessReport  # noqa: E402
from monai_adv.precision import precision_record  # noqa: E402
from monai_adv.transforms import (  # noqa: E402
    APGD,
    FGSM,
    MIFGSM,
    PGD,
    AdaptiveAttack,
    CarliniWagnerL2,
    SquareAttack,
    TransferAttack,
)

METHODS = ["standard", "madry", "trades", "ssat"]


class Memo:
    """Remembers an attack's outputs per batch, so that the second detector sees the same adversarial images.

    The evaluation loader is not shuffled and the attacks are seeded, so batch ``i`` of every run is
    the same; keyed by the batch's content to be safe.
    """

    def __init__(self, attack):
        self.__wrapped__ = attack
        self.cache: dict = {}

    def __call__(self, x, y):
        key = (tuple(x.shape), float(x.double().sum()), float((x.double() ** 2).sum()))
        if key not in self.cache:
            self.cache[key] = self.__wrapped__(x, y)
        return self.cache[key]


def attacks_for(net, surrogate, eps: float, seed: int) -> dict:
    """The detector-independent attacks, wrapped in :class:`Memo`."""
    atks = {
        f"fgsm@{eps:g}": FGSM(net, eps=eps),
        f"pgd20@{eps / 2:g}": PGD(net, eps=eps / 2, steps=20),
        f"pgd20@{eps:g}": PGD(net, eps=eps, steps=20),
        f"pgd20@{2 * eps:g}": PGD(net, eps=2 * eps, steps=20),
        f"mifgsm@{eps:g}": MIFGSM(net, eps=eps, steps=10),
        "cw_l2": CarliniWagnerL2(net, steps=50, binary_search_steps=3),
        f"apgd_ce@{eps:g}": APGD(net, eps=eps, steps=20),
        f"square@{eps:g}": SquareAttack(net, eps=eps, n_queries=300),
        f"transfer@{eps:g}": TransferAttack(surrogate, MIFGSM(surrogate, eps=eps, steps=10)),
    }
    for i, a in enumerate(atks.values()):
        a.set_random_state(seed + i)
    return {k: Memo(v) for k, v in atks.items()}


def adaptive_attacks_for(net, detector, eps: float, seed: int) -> dict:
    """The attacks that know the detector."""
    atks = {
        f"adaptive@{eps:g}": AdaptiveAttack(net, detector, eps=eps, steps=50),
        f"adaptive_sel@{eps:g}": AdaptiveAttack(net, detector, eps=eps, steps=50, mode="selective"),
    }
    for i, a in enumerate(atks.values()):
        a.set_random_state(seed + 100 + i)
    return atks


def load_data(a: argparse.Namespace, seed: int) -> dict:
    if a.data == "synthetic":
        pool = ssat.synthetic_data(a.size, a.n_train, a.n_test, Path(a.cache))
        m = ssat.stratified_labeled_mask(pool["y_pool"], a.label_fraction, seed)
        return {
            "x_l": pool["x_pool"][m],
            "y_l": pool["y_pool"][m],
            "x_u": pool["x_pool"][~m],
            "x_test": pool["x_test"],
            "y_test": pool["y_test"],
        }
    return ssat.kermany_data(a.root, a.split, a.size, a.test_fraction, a.label_fraction, seed)


def run(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    seed = a.seed
    data = load_data(a, seed)
    x_fit = torch.cat([data["x_l"], data["x_u"]])  # clean training images; labels not used
    n_test = len(data["x_test"])
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_test, generator=g)
    cal, ev = perm[: n_test // 2], perm[n_test // 2 :]
    x_cal = data["x_test"][cal]
    x_ev, y_ev = data["x_test"][ev], data["y_test"][ev]
    print(f"{a.data}: fit {len(x_fit)}, calibrate {len(x_cal)}, evaluate {len(x_ev)}", flush=True)
    tr_args = argparse.Namespace(
        iterations=a.iterations,
        batch=16,
        lr=2e-3,
        finetune_lr_scale=0.5,
        train_eps=a.train_eps,
        train_steps=a.train_steps,
        progress=False,
        tensorboard=None,
        data=a.data,
        label_fraction=a.label_fraction,
    )
    init = None
    if a.init_from:
        init = torch.load(a.init_from.format(seed=seed), map_location="cpu", weights_only=True)
    surrogate, _, _ = ssat.train("standard", data, tr_args, seed + 100, None, init)
    out_root = Path(a.out) / a.data
    for method in a.methods:
        t0 = time.time()
        net, _, _ = ssat.train(method, data, tr_args, seed, None, init)
        print(f"  trained {method} in {time.time() - t0:.0f}s", flush=True)
        shared_attacks = attacks_for(net, surrogate, a.eps, seed)
        for det_name, det in (
            ("mahalanobis", MahalanobisDetector(net, progress=False)),
            ("knn", KNNDetector(net, k=10, progress=False)),
        ):
            t0 = time.time()
            det.fit([x_fit[i : i + 100] for i in range(0, len(x_fit), 100)], use_labels=False)
            det.calibrate([x_cal], fpr=0.05)
            loader = DataLoader(
                Dataset([{"image": x_ev[i], "label": y_ev[i]} for i in range(len(x_ev))]), batch_size=50
            )
            evaluator = RobustEvaluator(
                "cpu",
                loader,
                net,
                attacks={**shared_attacks, **adaptive_attacks_for(net, det, a.eps, seed)},
                detector=det,
                keep_adversarial_images=False,
            )
            folder = out_root / f"{method}_{det_name}"
            report = RobustnessReport(folder, title=f"{a.data} {method} {det_name}")
            report.attach(evaluator)
            evaluator.run()
            rec = {
                "data": a.data,
                "method": method,
                "detector": det_name,
                "seed": seed,
                "eps": a.eps,
                "label_fraction": a.label_fraction,
                "n_fit": len(x_fit),
                "n_cal": len(x_cal),
                "wall_s": round(time.time() - t0, 1),
                **precision_record(False),  # trained, attacked and scored in fp32
                "report": report.report,
            }
            with open(a.results, "a") as f:
                f.write(json.dumps(rec, default=lambda v: None) + "\n")
            print(f"  {method}/{det_name}: evaluated in {rec['wall_s']}s -> {folder}", flush=True)


def _f(v, d: int = 2) -> str:
    return "-" if v is None or v != v else f"{v:.{d}f}"


def summary(a: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in Path(a.results).read_text().splitlines() if line.strip()]
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        rs = [r for r in rows if r["data"] == data]
        r0 = rs[0]
        lines += [
            f"\n### {data}: detection (AUROC / TPR at the 5%-FPR threshold calibrated on clean data)\n",
            f"{r0['report']['n']} evaluation images; detectors fitted on {r0['n_fit']} clean training images "
            f"(no labels), calibrated on {r0['n_cal']} other clean images; seed {r0['seed']}.\n",
        ]
        attacks = list(r0["report"]["attacks"])
        lines.append("| model | detector | clean acc | clean flagged | " + " | ".join(attacks) + " |")
        lines.append("|---" * (4 + len(attacks)) + "|")
        for r in rs:
            rep = r["report"]
            cells = [f"{_f(rep['attacks'][k]['auroc'])} / {_f(rep['attacks'][k]['tpr'])}" for k in attacks]
            lines.append(
                f"| {r['method']} | {r['detector']} | {_f(rep['clean']['accuracy'])} | "
                f"{_f(rep['clean']['flag_rate'])} | " + " | ".join(cells) + " |"
            )
        lines += [
            f"\n### {data}: accuracy under attack (classifier alone)\n",
            "| model | clean | " + " | ".join(attacks) + " |",
            "|---" * (2 + len(attacks)) + "|",
        ]
        for r in rs:
            if r["detector"] != "mahalanobis":
                continue
            rep = r["report"]
            lines.append(
                f"| {r['method']} | {_f(rep['clean']['accuracy'])} | "
                + " | ".join(_f(rep["attacks"][k]["accuracy"]) for k in attacks)
                + " |"
            )
        lines += [
            f"\n### {data}: error on attacked inputs, classifier alone -> missed by the detector and misclassified\n",
            "| model | detector | " + " | ".join(attacks) + " |",
            "|---" * (2 + len(attacks)) + "|",
        ]
        for r in rs:
            rep = r["report"]
            cells = [
                f"{_f(rep['attacks'][k]['risk']['adversarial_error'])} -> {_f(rep['attacks'][k]['risk']['undetected_error'])}"
                for k in attacks
            ]
            lines.append(f"| {r['method']} | {r['detector']} | " + " | ".join(cells) + " |")
        p = r0["report"]["risk_parameters"]
        lines += [
            f"\n### {data}: risk (attack prior {p['attack_prior']}, cost of an error {p['cost_error']}, "
            f"of a false alarm {p['cost_false_alarm']}); classifier alone / detector alone / system\n",
            "| model | detector | " + " | ".join(attacks) + " |",
            "|---" * (2 + len(attacks)) + "|",
        ]
        for r in rs:
            rep = r["report"]
            cells = []
            for k in attacks:
                at = rep["attacks"][k]
                cells.append(
                    f"{_f(at['risk_no_detector']['risk_classifier'], 3)} / {_f(at['risk']['risk_detector'], 3)} / "
                    f"{_f(at['risk']['risk_system'], 3)}"
                )
            lines.append(f"| {r['method']} | {r['detector']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    if a.summary == "-":
        print(text)
    else:
        Path(a.summary).write_text(text)
        print(f"wrote {a.summary}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ssat.add_data_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=150)
    p.add_argument("--n-test", type=int, default=75)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--train-eps", type=float, default=0.005, help="Madry / TRADES training eps")
    p.add_argument("--train-steps", type=int, default=5, help="Madry / TRADES PGD steps")
    p.add_argument("--eps", type=float, default=0.01, help="attack eps (images in [0, 1])")
    p.add_argument("--init-from", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/monai_adv"))
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "runs"))
    p.add_argument("--results", default=str(Path(__file__).resolve().parent / "results" / "results.jsonl"))
    p.add_argument("--summary", default=None, help="write the tables (Markdown) here ('-' prints them)")
    a = p.parse_args(argv)
    if a.summary:
        summary(a)
    else:
        run(a)


if __name__ == "__main__":
    main()
