"""Compare the ``report.json`` of several systems, of either task, in Markdown tables:
``python -m monai_adv.bundle compare A=eval/a/report.json B=...``.

The reports are :class:`~monai_adv.handlers.RobustnessReport`'s one schema (``task``, ``metric``, ``clean``,
``attacks`` with ``name``/``eps``/``value``, ``worst_case``, ``details``); a file in an older layout is
refused with a message that says so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_adv.bundle.components import require_file

__all__ = ["compare_reports", "compare_segmentation_reports", "compare_report_files", "load_report"]

# how each task's headline metric is named in the tables
_LABEL = {"classification": "accuracy", "segmentation": "mean Dice"}


def _num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{float(v):.{digits}f}"


def _note(text: str) -> str:
    """The last cell of a row: the text, or empty."""
    return f" {text} |" if text else " |"


def _old_layout(r: Mapping[str, Any]) -> str | None:
    """What marks ``r`` as a report in a layout older than the one schema, or None."""
    if "clean_accuracy" in r:
        return "the classification bundle's former layout, with 'clean_accuracy'"
    if isinstance(r.get("clean"), Mapping):
        kind = "segmentation" if "mean_dice" in r["clean"] else "classification"
        return f"the former {kind} report layout, with 'clean' as a table and 'attacks' keyed by name"
    return None


def load_report(report: str | os.PathLike | Mapping[str, Any], name: str = "report") -> dict[str, Any]:
    """A ``report.json`` (a path, or its loaded content) checked against the one report schema.

    Args:
        report: the file, or its content.
        name: how to call it in an error (the system name when it is not a file).

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a file in an older layout (the message says so) or one that is not a report.
    """
    where = repr(name)
    if not isinstance(report, Mapping):
        path = require_file(report, "report", "run configs/evaluate.json first")
        where = repr(os.fspath(path))
        with open(path) as f:
            report = json.load(f)
    if not isinstance(report, Mapping):
        raise ValueError(f"{where} is not a robustness report (not a JSON object).")
    old = _old_layout(report)
    if old is not None:
        raise ValueError(
            f"{where} is a report.json in an old layout ({old}), written before monai-adv's one report schema; "
            "run the evaluation again (configs/evaluate.json, or python -m monai_adv.bundle audit) to write it anew."
        )
    missing = [k for k in ("task", "metric", "clean", "attacks") if k not in report]
    if missing or not isinstance(report.get("attacks"), list):
        raise ValueError(
            f"{where} is not a robustness report: it has no {missing or ['attacks list']} "
            "(monai_adv.handlers.RobustnessReport writes them)."
        )
    return dict(report)


def _hd_name(r: Mapping[str, Any]) -> str | None:
    hd = (r.get("metrics") or {}).get("hausdorff")
    if hd:
        return str(hd)
    return next((k[5:] for k in (r.get("details") or {}) if k.startswith("mean_hd")), None)


def compare_reports(
    reports: Mapping[str, str | os.PathLike | Mapping[str, Any]], task: str | None = None
) -> str:
    """Markdown tables comparing the ``report.json`` of several systems (all of one task).

    1. Per system its clean quality: the headline metric (accuracy, or mean Dice), and for
       classification the per-class recall and the clean flag rate (the detector's false alarms on clean
       inputs, a rate, not a risk; a system whose clean predictions are more than 90% one class is
       marked DEGENERATE), for segmentation the clean mean Hausdorff distance; label-free reports
       (labels were the network's own clean predictions) are marked.
    2. Clean, then attack by attack: the headline metric under it, and for classification the detection
       AUROC and the system risk (marked ``(n/m)``, not meaningful, for a degenerate system), for
       segmentation the mean Hausdorff distance.
    3. The per-image worst case over the attacks at each eps, where the reports have one.

    Args:
        reports: ``{system name: report.json path or its loaded dict}``.
        task: the task the reports must be of (``"classification"``, ``"segmentation"``); None: any, the
            same for all.

    Raises:
        FileNotFoundError: for a missing report file.
        ValueError: for a file in an old layout or not a report, reports of different tasks, or of
            another task than ``task``.
    """
    if not reports:
        raise ValueError("no reports to compare.")
    loaded = {name: load_report(r, name) for name, r in reports.items()}
    tasks = {r["task"] for r in loaded.values()}
    if len(tasks) > 1:
        raise ValueError(
            "reports of different tasks cannot share a table: "
            + ", ".join(f"{n}: {r['task']}" for n, r in loaded.items())
            + "."
        )
    found = next(iter(tasks))
    if task is not None and found != task:
        raise ValueError(f"not a {task} report: {', '.join(loaded)} are {found} reports.")
    label = _LABEL.get(found, str(next(iter(loaded.values()))["metric"]))
    names = list(loaded)
    lines = _systems_table(loaded, found, label)
    lines += [""] + _attacks_table(loaded, found, label)
    worst = _worst_table(loaded, label)
    if worst:
        lines += [""] + worst
    if found == "classification" and any(loaded[n].get("degenerate") for n in names):
        lines += [
            "",
            "(n/m): not meaningful, the classifier is degenerate (it predicts one class for > 90% of items).",
        ]
    if any(r.get("label_free") for r in loaded.values()):
        lines += [
            "",
            "label-free: the labels were the network's own clean predictions; the numbers measure stability "
            "under attack, not correctness.",
        ]
    lines += _compute_lines(loaded)
    return "\n".join(lines) + "\n"


def compare_segmentation_reports(reports: Mapping[str, str | os.PathLike | Mapping[str, Any]]) -> str:
    """:func:`compare_reports` for segmentation reports (refuses others); kept for the former callers."""
    return compare_reports(reports, task="segmentation")


def _systems_table(loaded: Mapping[str, Mapping[str, Any]], task: str, label: str) -> list[str]:
    names = list(loaded)
    if task == "classification":
        classes: list[str] = []
        for n in names:
            recall = (loaded[n].get("details") or {}).get("per_class_recall") or {}
            classes += [c for c in recall if c not in classes]
        lines = [
            f"| system | clean {label} | "
            + "".join(f"recall {c} | " for c in classes)
            + "clean flag rate | notes |",
            "|---|---|" + "---|" * len(classes) + "---|---|",
        ]
        for n in names:
            r = loaded[n]
            details = r.get("details") or {}
            recall = details.get("per_class_recall") or {}
            notes = []
            if r.get("degenerate"):
                notes.append("**DEGENERATE**: one class > 90% of predictions")
            if r.get("label_free"):
                notes.append("label-free")
            lines.append(
                f"| {n} | {_num(r['clean'])} | "
                + "".join(f"{_num(recall.get(c))} | " for c in classes)
                + f"{_num(details.get('flag_rate'))} |"
                + _note("; ".join(notes))
            )
        return lines
    hd = next((h for h in (_hd_name(r) for r in loaded.values()) if h), None)
    lines = [
        f"| system | clean {label} | " + (f"clean mean {hd.upper()} | " if hd else "") + "notes |",
        "|---|---|" + ("---|" if hd else "") + "---|",
    ]
    for n in names:
        r = loaded[n]
        details = r.get("details") or {}
        units = details.get("distance_units")
        hd_cell = f" {_num(details.get('mean_' + hd), 2)}{' ' + units if units else ''} |" if hd else ""
        lines.append(
            f"| {n} | {_num(r['clean'])} |{hd_cell}" + _note("label-free" if r.get("label_free") else "")
        )
    return lines


def _attacks_table(loaded: Mapping[str, Mapping[str, Any]], task: str, label: str) -> list[str]:
    names = list(loaded)
    hd = (
        next((h for h in (_hd_name(r) for r in loaded.values()) if h), None)
        if task == "segmentation"
        else None
    )
    if task == "classification":
        columns = [f"{n}: {label} | {n}: AUROC | {n}: risk" for n in names]
        width = 3
    else:
        columns = [f"{n}: {label}" + (f" | {n}: mean {hd.upper()}" if hd else "") for n in names]
        width = 2 if hd else 1
    lines = ["| attack | eps | " + " | ".join(columns) + " |", "|" + "---|" * (2 + width * len(names))]
    order: list[str] = []
    for n in names:
        order += [a["name"] for a in loaded[n]["attacks"] if a["name"] not in order]
    empty = " | ".join(["-"] * width)
    # the clean row first, at eps 0
    cells = []
    for n in names:
        r = loaded[n]
        if task == "classification":
            cells.append(f"{_num(r['clean'])} | - | -")
        else:
            cells.append(
                _num(r["clean"]) + (f" | {_num((r.get('details') or {}).get('mean_' + hd), 2)}" if hd else "")
            )
    lines.append("| clean | 0.0 | " + " | ".join(cells) + " |")
    for atk in order:
        cells, eps = [], None
        for n in names:
            a = next((a for a in loaded[n]["attacks"] if a["name"] == atk), None)
            if a is None:
                cells.append(empty)
                continue
            eps = a.get("eps") if eps is None else eps
            if task == "classification":
                nm = " (n/m)" if loaded[n].get("degenerate") else ""
                cells.append(
                    f"{_num(a.get('value'))} | {_num(a.get('auroc'))}{nm} | {_num(a.get('risk_system'))}{nm}"
                )
            else:
                cells.append(_num(a.get("value")) + (f" | {_num(a.get('mean_' + hd), 2)}" if hd else ""))
        eps_cell = f"{eps:.4g}" if isinstance(eps, (int, float)) else "-"
        lines.append(f"| {atk} | {eps_cell} | " + " | ".join(cells) + " |")
    return lines


def _worst_table(loaded: Mapping[str, Mapping[str, Any]], label: str) -> list[str]:
    names = list(loaded)
    by_eps: dict[float, dict[str, Any]] = {}
    for n in names:
        for w in loaded[n].get("worst_case") or []:
            if isinstance(w.get("eps"), (int, float)):
                by_eps.setdefault(float(w["eps"]), {})[n] = w
    if not by_eps:
        return []
    with_detector = any("undetected_error" in w for row in by_eps.values() for w in row.values())
    if with_detector:
        # what a defended system is judged by: the share of images some attack turns into an error the
        # detector lets through, beside the classifier's own worst-case accuracy
        header = (
            "| eps | "
            + " | ".join(f"{label}, {n}" for n in names)
            + " | "
            + " | ".join(f"undetected error, {n}" for n in names)
            + " |"
        )
        lines = [
            f"Per-image worst case over the attacks at each eps: {label} of the classifier alone, and the "
            "undetected error of the system (misclassified and not flagged by its detector; lower is better):",
            "",
            header,
            "|---|" + "---|" * (2 * len(names)),
        ]
    else:
        lines = [
            f"Per-image worst case over the attacks at each eps ({label}):",
            "",
            "| eps | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
    for eps in sorted(by_eps):
        row = by_eps[eps]
        cells = [_num((row.get(n) or {}).get("value")) for n in names]
        if with_detector:
            cells += [_num((row.get(n) or {}).get("undetected_error")) for n in names]
        lines.append(f"| {eps:g} | " + " | ".join(cells) + " |")
    return lines


def _compute_lines(loaded: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line saying how the reports' numbers were computed (precision, layout, CPU), from their ``compute``."""
    said = {}
    for n, r in loaded.items():
        c = r.get("compute") or {}
        if c:
            layout = ", channels-last" if c.get("channels_last") else ""
            said[n] = (
                f"{c.get('precision')}{layout} on {c.get('device')} (CPU capability {c.get('cpu_capability')})"
            )
    if not said:
        return []
    if len(set(said.values())) == 1 and len(said) == len(loaded):
        return ["", f"Computed in {next(iter(said.values()))}."]
    return ["", "Computed in: " + "; ".join(f"{n}: {v}" for n, v in said.items()) + "."]


def compare_report_files(specs: list[str]) -> str:
    """The comparison of ``NAME=PATH`` (or ``PATH``, named after its folder) report files, of either task."""
    reports: dict[str, str] = {}
    for r in specs:
        name, _, path = r.rpartition("=") if "=" in r else (Path(r).parent.name, "", r)
        reports[name] = path
    return compare_reports(reports)


def add_commands(sub: Any) -> dict[str, Any]:
    """Register ``compare`` on the ``python -m monai_adv.bundle`` sub-parsers; returns its runner."""
    c = sub.add_parser("compare", help="compare report.json files (classification or segmentation)")
    c.add_argument("reports", nargs="+", help="NAME=PATH or PATH (named after its folder)")

    def run(args: Any, extra: list[str], parser: Any) -> int:
        try:
            print(compare_report_files(args.reports))
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"error: {e}\n")
        return 0

    return {"compare": run}
