"""Compare the ``report.json`` of several systems (classification or segmentation) in Markdown tables:
``python -m monai_adv.bundle compare A=eval/a/report.json B=...``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_adv.bundle.components import require_file

__all__ = ["compare_reports", "compare_segmentation_reports", "compare_report_files"]


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{float(v):.{digits}f}"


def compare_reports(reports: Mapping[str, str | os.PathLike | Mapping[str, Any]]) -> str:
    """Markdown tables comparing the bundle's ``report.json`` of several systems.

    The first table gives each system's clean quality: accuracy, per-class recall, and the clean flag
    rate (the detector's false alarms on clean inputs, a rate, not a risk); a system whose clean
    predictions are more than 90% one class is marked DEGENERATE. The second gives, attack by attack,
    robust accuracy, detection AUROC and system risk; a degenerate system's AUROC and risk are marked
    ``(n/m)``: not meaningful.

    Args:
        reports: ``{system name: report.json path or its loaded dict}``.

    Raises:
        FileNotFoundError: for a missing report file.
        ValueError: for a file that is not a bundle report.
    """
    loaded: dict[str, Mapping[str, Any]] = {}
    for name, r in reports.items():
        if not isinstance(r, Mapping):
            path = require_file(r, "report", "run configs/evaluate.json first")
            with open(path) as f:
                r = json.load(f)
            if "clean_accuracy" not in r or not isinstance(r.get("attacks"), list):
                raise ValueError(f"{path!r} is not a bundle report (no clean_accuracy / attacks list).")
        loaded[name] = r
    names = list(loaded)
    classes: list[str] = []
    for n in names:
        classes += [c for c in (loaded[n].get("per_class_recall") or {}) if c not in classes]
    lines = [
        "| system | clean accuracy | " + "".join(f"recall {c} | " for c in classes) + "clean flag rate | |",
        "|---|---|" + "---|" * len(classes) + "---|---|",
    ]
    for n in names:
        r = loaded[n]
        recall = r.get("per_class_recall") or {}
        lines.append(
            f"| {n} | {_num(r['clean_accuracy'])} | "
            + "".join(f"{_num(recall.get(c))} | " for c in classes)
            + f"{_num(r.get('clean_flag_rate'))} | "
            + ("**DEGENERATE**: one class > 90% of predictions |" if r.get("degenerate") else "|")
        )
    lines += [
        "",
        "| attack | eps | " + " | ".join(f"{n}: accuracy | {n}: AUROC | {n}: risk" for n in names) + " |",
    ]
    lines.append("|" + "---|" * (2 + 3 * len(names)))
    order: list[str] = []
    for n in names:
        order += [a["name"] for a in loaded[n]["attacks"] if a["name"] not in order]
    for atk in order:
        cells, eps = [], None
        for n in names:
            a = next((a for a in loaded[n]["attacks"] if a["name"] == atk), None)
            if a is None:
                cells.append("- | - | -")
                continue
            eps = a.get("eps") if eps is None else eps
            nm = " (n/m)" if loaded[n].get("degenerate") else ""
            cells.append(
                f"{_num(a.get('robust_accuracy'))} | {_num(a.get('detection_auroc'))}{nm} | "
                f"{_num(a.get('risk_system'))}{nm}"
            )
        lines.append(f"| {atk} | {eps if eps is not None else '-'} | " + " | ".join(cells) + " |")
    if any(loaded[n].get("degenerate") for n in names):
        lines += [
            "",
            "(n/m): not meaningful, the classifier is degenerate (it predicts one class for > 90% of items).",
        ]
    lines += _compute_lines(loaded)
    return "\n".join(lines) + "\n"


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


def _is_segmentation_report(r: Mapping[str, Any]) -> bool:
    return isinstance(r.get("clean"), Mapping) and "mean_dice" in r["clean"]


def compare_segmentation_reports(reports: Mapping[str, str | os.PathLike | Mapping[str, Any]]) -> str:
    """A Markdown table comparing the segmentation bundle's ``report.json`` of several systems.

    One row per attack (clean first), one mean-Dice column and one mean-HD95 column per system.

    Args:
        reports: ``{system name: report.json path or its loaded dict}``
            (:class:`~monai_adv.handlers.SegmentationRobustnessReport`'s layout).

    Raises:
        FileNotFoundError: for a missing report file.
        ValueError: for a file that is not a segmentation report.
    """
    loaded: dict[str, Mapping[str, Any]] = {}
    for name, r in reports.items():
        if not isinstance(r, Mapping):
            path = require_file(r, "report", "run configs/evaluate.json first")
            with open(path) as f:
                r = json.load(f)
            if not _is_segmentation_report(r) or not isinstance(r.get("attacks"), Mapping):
                raise ValueError(f"{path!r} is not a segmentation report (no clean mean_dice / attacks).")
        loaded[name] = r
    names = list(loaded)
    hd = next(
        (r["metrics"]["hausdorff"] for r in loaded.values() if (r.get("metrics") or {}).get("hausdorff")),
        None,
    )
    head = " | ".join(f"{n}: mean Dice" + (f" | {n}: mean {hd.upper()}" if hd else "") for n in names)
    lines = [f"| attack | eps | {head} |", "|" + "---|" * (2 + len(names) * (2 if hd else 1))]
    order: list[str] = []
    for n in names:
        order += [a for a in loaded[n]["attacks"] if a not in order]
    for atk in ["clean"] + order:
        cells, eps = [], 0.0 if atk == "clean" else None
        for n in names:
            a = loaded[n]["clean"] if atk == "clean" else loaded[n]["attacks"].get(atk)
            if a is None:
                cells.append("- | -" if hd else "-")
                continue
            eps = a.get("eps") if eps is None else eps
            cells.append(_num(a.get("mean_dice")) + (f" | {_num(a.get('mean_' + hd), 2)}" if hd else ""))
        lines.append(f"| {atk} | {eps if eps is not None else '-'} | " + " | ".join(cells) + " |")
    lines += _compute_lines(loaded)
    return "\n".join(lines) + "\n"


def compare_report_files(specs: list[str]) -> str:
    """The comparison of ``NAME=PATH`` (or ``PATH``, named after its folder) report files, of either task."""
    reports: dict[str, str] = {}
    for r in specs:
        name, _, path = r.rpartition("=") if "=" in r else (Path(r).parent.name, "", r)
        reports[name] = path
    first = require_file(next(iter(reports.values())), "report", "run configs/evaluate.json first")
    with open(first) as f:
        segmentation = _is_segmentation_report(json.load(f))
    return compare_segmentation_reports(reports) if segmentation else compare_reports(reports)


def add_commands(sub: Any) -> dict[str, Any]:
    """Register ``compare`` on the ``python -m monai_adv.bundle`` sub-parsers; returns its runner."""
    c = sub.add_parser("compare", help="compare report.json files (classification or segmentation)")
    c.add_argument("reports", nargs="+", help="NAME=PATH or PATH (named after its folder)")

    def run(args: Any, extra: list[str], parser: Any) -> int:
        print(compare_report_files(args.reports))
        return 0

    return {"compare": run}
