"""Classification or detection? Four systems at equal labels, attacked non-adaptively and adaptively.

- **A** undefended: standard training on the labeled part.
- **B** = A + the clean-fitted combined detector (``CombinedDetector.standard``: multi-layer
  Mahalanobis, two-sided logit margin, feature squeezing; their clean p-values combined by Fisher's
  rule at one FPR, ``--rule``; see the README for why Fisher and not the library's default min-p).
- **C** adversarially trained: RST (Carmon et al. 2019), the best method of the label-scarcity
  experiment (``experiments/label_scarcity/README.md``), on the same labeled part plus the unlabeled pool.
- **D** = C + rejection: the same combined detector fitted on C.

Data (the label-scarcity experiment's settings and training recipes, ``experiments/label_scarcity/run.py``):
synthetic OCT at 10% labels (2,000 of the 20,000 pool; 1,000 test images) and real Kermany at 25% labels
(split by patient; the 313-image test set). Every detector is fitted on clean training images only and
calibrated at ``--fpr`` on clean images no model trained on: 1,000 held out of the synthetic pool; a
patient-disjoint 30% of the Kermany unlabeled pool (fewer than 1,000: there are 1,233 real images in all).

Per data, seed and eps, one JSON line per system and attack in ``results.jsonl``:

- non-adaptive (``adaptive: false``) on the whole test set: PGD-10, APGD-CE, APGD-DLR (20 steps) and C&W
  (L-inf hinge, 50 steps), the same adversarial images for A and B (and for C and D);
- the worst case (``attack: "worst_case"``) on a fixed stratified subset (``--subset-per-class`` per class,
  the same for every system): AutoAttack's standard suite for A and C; for B and D the *adaptive* worst
  case (``adaptive: true``): per image, the first success over the standard suite and the attacker's
  menu against the detector (``monai_adv.transforms.adaptive_worst_case``: margin + detector score at
  lambda 0.1, 1, 10 and kappa 0 and the median clean margin, the selective-step mode, HFC), an image
  counting as broken when it is misclassified and not flagged. The menu starts from the suite's images of
  the undefended twin (A's for B, C's for D; kept in ``runs/``) and attacks what they leave unbroken;
  Square runs ``--queries`` (1,000) queries. The README says why both economies are safe.

Fields: ``system``, ``data``, ``seed``, ``eps``, ``attack``, ``adaptive``, ``n``, ``clean_accuracy``,
``clean_flag_rate``, ``undetected_error`` (attacked images misclassified and not flagged; without a
detector, the robust error), ``auroc_all``, ``auroc_success``, ``tpr_at_fpr``, ``risk`` (system risk by
attack prior, ``docs/risk_metric.md``), ``accepted_accuracy``, and the settings. ``--report`` writes the
tables, the answer and ``figures/undetected_error_vs_eps.png`` into this folder's README.

Usage::

    nice python -m experiments.classification_or_detection.run            # resumable; rows as they finish
    python -m experiments.classification_or_detection.run --report
    python -m experiments.classification_or_detection.run --toy --out /tmp/cod   # a minute: the CI check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

import experiments.label_scarcity.run as ssat  # noqa: E402  (the label-scarcity experiment's data and training)
from experiments.stats import mean_sd  # noqa: E402
from monai_adv.detectors import COMBINATION_RULES, CombinedDetector, load_detector  # noqa: E402
from monai_adv.metrics import detection_summary  # noqa: E402
from monai_adv.precision import PRECISION_AMP  # noqa: E402
from monai_adv.transforms import APGD, PGD, adaptive_worst_case, autoattack  # noqa: E402
from monai_adv.transforms.losses import margin  # noqa: E402

SYSTEMS = {"A": ("standard", False), "B": ("standard", True), "C": ("rst", False), "D": ("rst", True)}
NON_ADAPTIVE = ("pgd10", "apgd_ce", "apgd_dlr", "cw")
EPS = ("0.5/255", "1/255", "2/255", "4/255")
FRACTION = {"synthetic": 0.1, "kermany": 0.25}
FIELDS = (
    "system",
    "data",
    "seed",
    "eps",
    "attack",
    "adaptive",
    "n",
    "clean_accuracy",
    "clean_flag_rate",
    "undetected_error",
    "auroc_all",
    "auroc_success",
    "tpr_at_fpr",
    "risk",
)


# ----------------------------------------------------------------------------------------------
# rows
# ----------------------------------------------------------------------------------------------
def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def row_key(r: dict) -> tuple:
    return (r["system"], r["data"], r["seed"], r["eps"], r["attack"], r.get("detector_rule", "min_p"))


def network_key(system: str, data: str, seed: int) -> str:
    """The training key (``train.jsonl``, the weights' name) of the network a system uses."""
    return ssat.run_key(data, FRACTION[data], seed, SYSTEMS[system][0])


def current_rows(rows: list[dict], train: Path) -> list[dict]:
    """The rows measured on the networks ``train`` records now.

    A network trained again (its weights lost: another machine gives other weights for the same recipe)
    gets a new train row with another ``weights_sha256``; the rows of the one before stay in the file but
    no longer count. Rows written before rows carried ``weights_sha256`` belong to a key's first (and then
    only) train row, which lacks it too.
    """
    networks = ssat.recorded_networks(train)
    return [
        r
        for r in rows
        if r.get("weights_sha256") == networks.get(network_key(r["system"], r["data"], r["seed"]), "")
    ]


# ----------------------------------------------------------------------------------------------
# models and detectors
# ----------------------------------------------------------------------------------------------
def ssat_settings(a: argparse.Namespace) -> argparse.Namespace:
    """The label-scarcity experiment's settings, with this experiment's folders and held-out calibration."""
    argv = ["--runs", str(Path(a.out) / "runs"), "--results", str(Path(a.out) / "train.jsonl")]
    argv += ["--weights", str(Path(a.out) / "networks")]
    argv += ["--threads", str(a.threads), "--cache", a.cache, "--precision", getattr(a, "precision", "fp32")]
    if a.toy:
        argv += ["--size", "32", "--n-pool", "80", "--n-test", "20", "--width", "8"]
        argv += ["--synthetic-iterations", "25", "--kermany-iterations", "20"]
    s = ssat.parse_args(argv)
    s.synthetic_holdout = 40 if a.toy else a.synthetic_calibration
    s.kermany_holdout = a.kermany_calibration
    return s


def feature_layers(net: nn.Module) -> list[str]:
    """The outputs of the network's convolutional blocks and its penultimate features."""
    blocks = [n for n, m in net.named_children() if not isinstance(m, (nn.Linear, nn.Flatten, nn.Dropout))]
    if len(blocks) == 1 and isinstance(getattr(net, blocks[0]), nn.Sequential):
        seq = getattr(net, blocks[0])
        blocks = [
            f"{blocks[0]}.{n}" for n, m in seq.named_children() if isinstance(m, (nn.ReLU, nn.Sequential))
        ]
    return blocks[-3:] + ["penultimate"]


def batches(x: torch.Tensor, y: torch.Tensor | None = None, size: int = 256) -> list:
    return [
        x[i : i + size] if y is None else (x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)
    ]


def detector_for(
    net: nn.Module, d: dict, key: str, a: argparse.Namespace, s: argparse.Namespace
) -> CombinedDetector:
    path = Path(s.runs) / f"{key}_detector_{a.rule}.pt"
    if path.exists():
        return load_detector(path, net, progress=False)
    det = CombinedDetector.standard(net, feature_layers=feature_layers(net), rule=a.rule, progress=False)
    det.fit(batches(d["x_l"], d["y_l"]))
    det.calibrate(batches(d["x_cal"]), fpr=a.fpr)
    det.save(path)
    return det


# ----------------------------------------------------------------------------------------------
# measurements
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def correct(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cat([net(xb).argmax(1) == yb for xb, yb in batches(x, y)])


def scores(det: CombinedDetector, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([det.score(xb).detach() for xb in batches(x)])


def attacked(attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.cat([attack(xb, yb) for xb, yb in batches(x, y)])


def worst_case_attacked(
    ens, x: torch.Tensor, y: torch.Tensor, size: int = 256
) -> tuple[torch.Tensor, dict[str, int]]:
    """The ensemble's images and, per member, how many images it fooled first, over every batch
    (``last_success`` holds only the latest batch's counts)."""
    out, first = [], {}
    for xb, yb in batches(x, y, size):
        out.append(ens(xb, yb))
        for name, n in ens.last_success.items():
            first[name] = first.get(name, 0) + n
    return torch.cat(out), first


def non_adaptive_attack(name: str, net: nn.Module, eps: float, a: argparse.Namespace):
    steps = 3 if a.toy else 20
    if name == "pgd10":
        return PGD(net, eps, steps=3 if a.toy else 10)
    if name == "apgd_ce":
        return APGD(net, eps, steps=steps, loss="ce")
    if name == "apgd_dlr":
        return APGD(net, eps, steps=steps, loss="dlr")
    # C&W's margin loss under the L-inf budget (the "CW-Linf" of RobustBench): PGD ascending -margin
    return PGD(net, eps, steps=5 if a.toy else 50, loss=cw_loss)


def cw_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -margin(logits, y)


def system_row(
    system: str,
    data: str,
    seed: int,
    eps: str,
    attack: str,
    adaptive: bool,
    net_correct,
    adv_correct,
    det,
    clean_scores,
    adv_scores,
    extra: dict,
) -> dict:
    if det is None:
        zeros = torch.zeros(len(net_correct))
        s = detection_summary(zeros, zeros, net_correct, adv_correct, threshold=0.0)
        s.update(auroc_all=None, auroc_success=None, tpr_at_fpr=None)
    else:
        s = detection_summary(clean_scores, adv_scores, net_correct, adv_correct, threshold=det.threshold)
    row = {
        "system": system,
        "data": data,
        "seed": seed,
        "eps": eps,
        "attack": attack,
        "adaptive": adaptive,
        "n": s["n"],
        "clean_accuracy": round(s["clean_accuracy"], 4),
        "clean_flag_rate": round(s["clean_flag_rate"], 4),
        "undetected_error": round(s["undetected_error"], 4),
        "auroc_all": None if s["auroc_all"] is None else round(s["auroc_all"], 4),
        "auroc_success": None if s["auroc_success"] is None else round(s["auroc_success"], 4),
        "tpr_at_fpr": None if s["tpr_at_fpr"] is None else round(s["tpr_at_fpr"], 4),
        "risk": {k: round(v, 4) for k, v in s["risk"].items()},
        "accepted_accuracy": None if s["accepted_accuracy"] is None else round(s["accepted_accuracy"], 4),
        "adversarial_accuracy": round(s["adversarial_accuracy"], 4),
        "n_success": s["n_success"],
    }
    row.update(extra)
    return row


def stratified_subset(y: torch.Tensor, per_class: int) -> torch.Tensor:
    return ssat.suite_subset(y, per_class)


def run_setting(data: str, seed: int, a: argparse.Namespace, s: argparse.Namespace, results: Path) -> None:
    frac = FRACTION[data]
    train = Path(s.results)
    done = {row_key(r) for r in current_rows(load_rows(results), train)}
    todo = [
        (sys_, data, seed, e, atk, a.rule)
        for e in a.eps
        for sys_ in SYSTEMS
        for atk in (*NON_ADAPTIVE, "worst_case")
    ]
    if all(k in done for k in todo):
        return
    d = ssat.setting_data(data, frac, seed, s)
    d["data"] = data
    train_done = ssat.finished_keys(Path(s.results), "train")
    models = {
        m: ssat.ensure_trained((data, frac, seed, m), s, Path(s.results), train_done)
        for m in ("standard", "rst")
    }
    for m in models.values():
        m.eval()
    recorded = ssat.recorded_networks(train)
    networks = {m: recorded[ssat.run_key(data, frac, seed, m)] for m in models}
    # what runs/ keeps of a network (its detector, its suite images) is named after the network itself
    keys = {m: ssat.run_key(data, frac, seed, m) + (f"_{networks[m]}" if networks[m] else "") for m in models}
    # a network trained again makes its earlier rows stale: measure them anew on this one
    done = {row_key(r) for r in current_rows(load_rows(results), train)}
    dets = {m: detector_for(models[m], d, keys[m], a, s) for m in models}
    x, y = d["x_test"], d["y_test"]
    sub = stratified_subset(y, a.subset_per_class)
    base = {
        "label_fraction": frac,
        "fpr": a.fpr,
        "n_calibration": len(d["x_cal"]),
        "detector_rule": a.rule,
        "toy": a.toy,
    }
    for m, net in models.items():
        det = dets[m]
        base["weights_sha256"] = networks[m]
        net_ok = correct(net, x, y)
        clean_s = scores(det, x)
        fresh_flag = float((clean_s > det.threshold).float().mean())
        pair = [k for k, (mm, _) in SYSTEMS.items() if mm == m]
        for e in a.eps:
            eps = ssat.parse_eps(e)
            for atk_name in NON_ADAPTIVE:
                if all((k, data, seed, e, atk_name, a.rule) in done for k in pair):
                    continue
                atk = non_adaptive_attack(atk_name, net, eps, a).set_random_state(seed)
                c0 = time.process_time()
                xa = attacked(atk, x, y)
                adv_ok, adv_s = correct(net, xa, y), scores(det, xa)
                cpu = round(time.process_time() - c0, 1)
                for k in pair:
                    with_det = SYSTEMS[k][1]
                    row = system_row(
                        k,
                        data,
                        seed,
                        e,
                        atk_name,
                        False,
                        net_ok,
                        adv_ok,
                        det if with_det else None,
                        clean_s,
                        adv_s,
                        {**base, "cpu_s": cpu},
                    )
                    append(results, row)
                    print(json.dumps({f: row[f] for f in FIELDS if f != "risk"}), flush=True)
            wc_todo = [k for k in pair if (k, data, seed, e, "worst_case", a.rule) not in done]
            if not wc_todo:
                continue
            xs, ys = x[sub], y[sub]
            suite = Path(s.runs) / f"{keys[m]}_suite_{e.replace('/', '_')}_q{a.queries}.pt"
            xa_suite, suite_first, suite_cpu = suite_images(net, eps, xs, ys, sub, suite, a, seed)
            for k in wc_todo:
                with_det = SYSTEMS[k][1]
                extra = {**base, "queries": a.queries, "test_clean_flag_rate": round(fresh_flag, 4)}
                if with_det:
                    c0 = time.process_time()
                    xa, menu_first = adaptive_menu_after_suite(net, det, eps, d, xs, ys, xa_suite, a, seed)
                    extra.update(
                        cpu_s=round(time.process_time() - c0, 1),
                        suite_cpu_s=suite_cpu,
                        last_success=menu_first,
                        adaptive_after_suite=True,
                    )
                else:
                    xa = xa_suite
                    extra.update(cpu_s=suite_cpu, last_success=suite_first)
                row = system_row(
                    k,
                    data,
                    seed,
                    e,
                    "worst_case",
                    with_det,
                    net_ok[sub],
                    correct(net, xa, ys),
                    det if with_det else None,
                    clean_s[sub],
                    scores(det, xa),
                    extra,
                )
                append(results, row)
                print(json.dumps({f: row[f] for f in FIELDS if f != "risk"}), flush=True)


def suite_images(
    net: nn.Module,
    eps: float,
    xs: torch.Tensor,
    ys: torch.Tensor,
    index: torch.Tensor,
    path: Path,
    a: argparse.Namespace,
    seed: int,
) -> tuple[torch.Tensor, dict[str, int], float]:
    """AutoAttack's standard suite on the worst-case subset: its images, first successes and CPU seconds.

    Kept in ``runs/`` (written whole, then renamed) so that the detector system's adaptive worst case, and a
    resumed run, start from the same images instead of paying for the suite again. ``index`` (the subset's
    test indices) is kept with them: images of another subset (``--subset-per-class``) are attacked anew.
    """
    if path.is_file():
        saved = torch.load(path)
        kept = saved.get("index")
        # the first caches (fourth session) hold no index; they were all made on the default subset
        same = len(saved["x"]) == len(index) if kept is None else torch.equal(kept, index)
        if same:
            return saved["x"], saved["last_success"], saved["cpu_s"]
    ens = autoattack(
        net, eps, version="standard", steps=5 if a.toy else 100, n_queries=50 if a.toy else a.queries
    )
    ens.set_random_state(seed)
    c0 = time.process_time()
    xa, first = worst_case_attacked(ens, xs, ys)
    cpu = round(time.process_time() - c0, 1)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"x": xa, "index": index, "last_success": first, "cpu_s": cpu}, tmp)
    os.replace(tmp, path)
    return xa, first, cpu


def adaptive_menu_after_suite(
    net: nn.Module,
    det: CombinedDetector,
    eps: float,
    d: dict,
    xs: torch.Tensor,
    ys: torch.Tensor,
    xa_suite: torch.Tensor,
    a: argparse.Namespace,
    seed: int,
) -> tuple[torch.Tensor, dict[str, int]]:
    """The adaptive worst case against ``det``, starting from the suite's images.

    An image the suite left misclassified and unflagged is broken already; the attacker's menu
    (``adaptive_worst_case(standard=False)``: lambda x kappa, selective, HFC) runs on the rest. This is the
    per-image worst case over the suite and the menu, except that the suite's later members do not go on
    attacking an image an earlier one misclassified but the detector flagged (the menu, which aims at the
    detector, does).
    """
    broken = ~correct(net, xa_suite, ys) & (scores(det, xa_suite) <= det.threshold)
    rest = (~broken).nonzero()[:, 0]
    xa, first = xa_suite.clone(), {"suite": int(broken.sum())}
    if rest.numel():
        menu = adaptive_worst_case(
            net,
            det,
            eps,
            clean_data=batches(d["x_l"], d["y_l"]),
            adaptive_steps=5 if a.toy else 50,
            standard=False,
        )
        menu.set_random_state(seed)
        xa_rest, menu_first = worst_case_attacked(menu, xs[rest], ys[rest])
        xa[rest] = xa_rest
        first.update({k: v for k, v in menu_first.items() if k != "clean"})
    return xa, first


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------


def detection_table(rows: list[dict], system: str, eps_list: list[str]) -> list[str]:
    """Per non-adaptive attack and eps: AUROC over successful attacks / TPR / undetected error of ``system``."""
    out = [
        "| attack | " + " | ".join(f"eps {e}" for e in eps_list) + " |",
        "|---" * (1 + len(eps_list)) + "|",
    ]
    for atk in NON_ADAPTIVE:
        cells = []
        for e in eps_list:
            rr = [r for r in rows if r["system"] == system and r["attack"] == atk and r["eps"] == e]
            cells.append(
                f"{mean_sd([r['auroc_success'] for r in rr])} / {mean_sd([r['tpr_at_fpr'] for r in rr])} / "
                f"{mean_sd([r['undetected_error'] for r in rr])}"
            )
        out.append(f"| {atk} | " + " | ".join(cells) + " |")
    return out


def seeds_cell(rows: list[dict], n_seeds: int) -> str:
    """Mean ± sd of the rows' undetected error, saying over how many seeds when not over all of them."""
    cell = mean_sd([r["undetected_error"] for r in rows])
    return cell if not rows or len(rows) == n_seeds else f"{cell} ({len(rows)} of {n_seeds} seeds)"


def report_rows(a: argparse.Namespace) -> list[dict]:
    """The rows of ``--rule``'s detector (and, unless ``--toy``, no toy rows)."""
    rows = current_rows(load_rows(Path(a.out) / "results.jsonl"), Path(a.out) / "train.jsonl")
    rows = [r for r in rows if r.get("detector_rule", "min_p") == a.rule]
    return rows if a.toy else [r for r in rows if not r.get("toy")]


def paired_worst_cases(rows: list[dict], eps: str) -> tuple[list[int], dict[str, list[dict]]]:
    """The seeds where all four systems have a worst-case row at ``eps``, and those rows by system (by seed).

    The answer and the plot compare systems over these seeds only: a mean over whichever seeds happen to
    be measured would compare different networks.
    """
    wc = {
        k: [r for r in rows if r["system"] == k and r["attack"] == "worst_case" and r["eps"] == eps]
        for k in SYSTEMS
    }
    paired = sorted(set.intersection(*({r["seed"] for r in v} for v in wc.values())))
    return paired, {
        k: sorted((r for r in v if r["seed"] in paired), key=lambda r: r["seed"]) for k, v in wc.items()
    }


def report(a: argparse.Namespace) -> str:
    rows = report_rows(a)
    if not rows:
        return "No results yet: run `python -m experiments.classification_or_detection.run`."
    # per-class clean recall of each network (test set), from the training rows: a system whose network
    # ignores a class demonstrates little, whatever its undetected error
    recall = {
        (r["data"], r["seed"], r["method"]): r["recall_clean"]
        for r in load_rows(Path(a.out) / "train.jsonl")
        if r.get("label_fraction") == FRACTION.get(r.get("data")) and r.get("recall_clean")
    }
    out = []
    for data in ("synthetic", "kermany"):
        dr = [r for r in rows if r["data"] == data]
        if not dr:
            continue
        seeds = sorted({r["seed"] for r in dr})
        eps_list = [e for e in EPS if any(r["eps"] == e for r in dr)]
        out += [f"### {data} ({FRACTION[data]:.0%} labels; seeds {seeds})", ""]
        out += [
            "Undetected error (misclassified and not flagged) under the worst case: A and C under AutoAttack's "
            "standard suite, B and D under the adaptive worst case (mean ± sd over seeds).",
            "",
        ]
        out += [
            "| system | clean acc | smallest clean recall | clean flag rate | "
            + " | ".join(f"eps {e}" for e in eps_list)
            + " |"
        ]
        out += ["|---" * (4 + len(eps_list)) + "|"]
        for k in SYSTEMS:
            wc = [r for r in dr if r["system"] == k and r["attack"] == "worst_case"]
            cells = [seeds_cell([r for r in wc if r["eps"] == e], len(seeds)) for e in eps_list]
            # one non-adaptive row per seed: its clean accuracy and flag rate are the seed's (whole test set)
            any_rows = list(
                {
                    r["seed"]: r
                    for r in dr
                    if r["system"] == k and r["attack"] != "worst_case" and r["eps"] == eps_list[0]
                }.values()
            )
            recalls = [
                min(recall[(data, seed, SYSTEMS[k][0])])
                for seed in seeds
                if (data, seed, SYSTEMS[k][0]) in recall
            ]
            out.append(
                f"| {k} | {mean_sd([r['clean_accuracy'] for r in any_rows])} "
                f"| {mean_sd(recalls)} "
                f"| {mean_sd([r['clean_flag_rate'] for r in any_rows])} | " + " | ".join(cells) + " |"
            )
        for system, what in (
            ("B", "Non-adaptive detection on the undefended network (B)"),
            ("D", "Rejection on the robust network (D) under the same non-adaptive attacks"),
        ):
            out += [
                "",
                f"{what}: AUROC over successful attacks / TPR at the calibrated FPR / undetected error.",
                "",
            ]
            out += detection_table(dr, system, eps_list)
        out += [
            "",
            "The answer, per eps (adaptive worst case; risk at attack prior 0.1), over the seeds where all four "
            "systems are measured:",
            "",
        ]
        for e in eps_list:
            paired, wc = paired_worst_cases(dr, e)
            if not paired:
                out.append(f"- eps {e}: no seed has all four systems measured yet.")
                continue
            means = {k: statistics.mean(r["undetected_error"] for r in v) for k, v in wc.items()}
            d_minus_c = [d["undetected_error"] - c["undetected_error"] for d, c in zip(wc["D"], wc["C"])]
            best = min(means, key=means.get)
            second = sorted(means.values())[1]
            risk = {k: statistics.mean(r["risk"]["0.1"] for r in v) for k, v in wc.items()}
            clean = {
                k: (
                    statistics.mean(r["clean_accuracy"] for r in v),
                    # the whole test set's clean flag rate (nothing is referred without a detector)
                    statistics.mean(r["test_clean_flag_rate"] if SYSTEMS[k][1] else 0.0 for r in v),
                )
                for k, v in wc.items()
            }
            out.append(
                f"- eps {e}, seeds {paired}: **{best}** has the lowest undetected error, {means[best]:.3f}, at "
                "clean accuracy "
                f"{clean[best][0]:.3f} (worst-case subset) and a clean referral rate of {clean[best][1]:.3f} "
                f"(next {second:.3f}; "
                + ", ".join(f"{k} {v:.3f}" for k, v in means.items())
                + "); risk at prior 0.1: "
                + ", ".join(f"{k} {v:.3f}" for k, v in risk.items())
                + f". D minus C: {means['D'] - means['C']:+.3f}"
                + (f" (per seed {', '.join(f'{v:+.3f}' for v in d_minus_c)})." if len(paired) > 1 else ".")
            )
        # Tramer (ICML 2022): a detector robust at eps gives an (inefficient) classifier robust at eps/2
        out += [
            "",
            "Tramer's bound: a detector with undetected error u at eps gives a classifier with robust error "
            "about u at eps/2. A detector system (B, D) whose u at eps is far below the best robust "
            "classifier's (C) error at eps/2 would beat every classifier we can train, and its claim is "
            "suspect:",
            "",
        ]
        for k in ("B", "D"):
            for e, half in (("1/255", "0.5/255"), ("2/255", "1/255"), ("4/255", "2/255")):
                u = [
                    r["undetected_error"]
                    for r in dr
                    if r["system"] == k and r["attack"] == "worst_case" and r["eps"] == e
                ]
                c = [
                    r["undetected_error"]
                    for r in dr
                    if r["system"] == "C" and r["attack"] == "worst_case" and r["eps"] == half
                ]
                if u and c:
                    mu, mc = statistics.mean(u), statistics.mean(c)
                    verdict = "consistent" if mu >= mc - 0.05 else "below the bound's reference: suspect"
                    out.append(f"- {k} at {e}: {mu:.3f}; C at {half}: {mc:.3f} ({verdict}).")
        out.append("")
    return "\n".join(out)


def plot_points(rows: list[dict]) -> dict[str, dict[str, tuple[list[int], dict[str, tuple[float, float]]]]]:
    """The figure's points: by data and eps, the paired seeds and each system's mean and sd over them.

    Each point is a mean over the seeds where all four systems are measured at that eps, as in the answer;
    an eps with no such seed has no point.
    """
    out = {}
    for data in ("synthetic", "kermany"):
        dr = [r for r in rows if r["data"] == data]
        points = {}
        for e in EPS:
            seeds, wc = paired_worst_cases(dr, e)
            if seeds:
                u = {k: [r["undetected_error"] for r in v] for k, v in wc.items()}
                points[e] = (
                    seeds,
                    {
                        k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
                        for k, v in u.items()
                    },
                )
        if points:
            out[data] = points
    return out


def plot(a: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = plot_points(report_rows(a))
    if not points:
        return
    fig, axes = plt.subplots(1, len(points), figsize=(5 * len(points), 4), squeeze=False)
    for ax, (data, by_eps) in zip(axes[0], points.items()):
        xs = [ssat.parse_eps(e) * 255 for e in by_eps]
        for k in SYSTEMS:
            ax.errorbar(
                xs,
                [m[k][0] for _, m in by_eps.values()],
                yerr=[m[k][1] for _, m in by_eps.values()],
                marker="o",
                capsize=3,
                label=k,
            )
        # eps doubles from one to the next: a log axis spaces them evenly
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:g}\n({len(seeds)} seeds)" for x, (seeds, _) in zip(xs, by_eps.values())])
        ax.minorticks_off()
        ax.set_xlabel("eps (x 1/255)")
        ax.set_ylabel("undetected error (worst case)")
        ax.set_title(data)
        ax.grid(alpha=0.3)
        ax.legend(title="system")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_readme(a: argparse.Namespace) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    body = report(a)
    plot(a, HERE / "figures" / "undetected_error_vs_eps.png")
    if (HERE / "figures" / "undetected_error_vs_eps.png").is_file():
        body = (
            "![undetected error against eps](figures/undetected_error_vs_eps.png)\n\n"
            "Worst-case undetected error against eps, mean ± sd over the seeds where all four systems are "
            "measured at that eps (the axis says how many; an eps with no such seed is left out).\n\n" + body
        )
    new = text[: text.index(start) + len(start)] + "\n" + body + "\n" + text[text.index(end) :]
    readme.write_text(new)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", choices=["synthetic", "kermany"], default=["synthetic", "kermany"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eps", nargs="+", default=list(EPS))
    p.add_argument("--fpr", type=float, default=0.05)
    p.add_argument(
        "--rule",
        choices=COMBINATION_RULES,
        default="fisher",
        help="how the combined detector joins its members' p-values (rows and detector files say which)",
    )
    p.add_argument("--subset-per-class", type=int, default=100)
    p.add_argument(
        "--queries",
        type=int,
        default=1000,
        help="Square's queries in the suite of the worst cases (1,000 to fit the budget: see the README)",
    )
    p.add_argument("--synthetic-calibration", type=int, default=1000)
    p.add_argument("--kermany-calibration", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--precision",
        choices=list(PRECISION_AMP),
        default="fp32",
        help="the networks' training precision (train.jsonl records it). fp32 by default, unlike the other "
        "experiments' auto: every network so far was trained in fp32, and one experiment's seeds should not "
        "differ in how they were trained. The attacks and detectors run in fp32 whatever this says",
    )
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache"))
    p.add_argument("--out", default=str(HERE), help="where results.jsonl, train.jsonl and runs/ go")
    p.add_argument("--toy", action="store_true", help="a tiny run of the whole pipeline (CI)")
    p.add_argument("--report", action="store_true", help="print the tables and write them into README.md")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.toy:
        a.data, a.seeds, a.eps, a.subset_per_class = ["synthetic"], [0], ["2/255"], 5
        a.cache = str(Path(a.out) / "cache")
    if a.report:
        print(report(a))
        if not a.toy:
            write_readme(a)
        return
    s = ssat_settings(a)
    print(
        f"# {platform.platform()} torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}",
        flush=True,
    )
    for data in a.data:
        for seed in a.seeds:
            run_setting(data, seed, a, s, Path(a.out) / "results.jsonl")


if __name__ == "__main__":
    main()
