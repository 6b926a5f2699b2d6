"""The robustness report: report.json, a Markdown table, PNG plots and TensorBoard, at the end of an evaluation."""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import optional_import

from monai_adv.io import atomic_torch_save, atomic_write_json, atomic_write_text
from monai_adv.keys import RobustKeys
from monai_adv.metrics.classification import DEGENERATE_FRACTION, classification_summary
from monai_adv.metrics.detection import detection_auroc, tpr_at_threshold
from monai_adv.metrics.risk import compute_adversarial_risk
from monai_adv.precision import record_of
from monai_adv.utils import first_output, gather_output, predicted_classes

Events, _ = optional_import("ignite.engine", name="Events")
if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["RobustnessReport"]

_CLASS_KEYS = (RobustKeys.PRED, RobustKeys.LABEL)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


class RobustnessReport:
    """Writes the robustness of a classifier (and its detector) at the end of each evaluation epoch.

    Reads a :class:`~monai_adv.engines.RobustEvaluator` output (clean and per-attack predictions,
    detector scores and flags) and writes to ``output_dir``:

    - ``report.json``: clean accuracy and flag rate, per-class recall and the confusion matrix on
      clean inputs, and ``degenerate`` (one class takes more than ``degenerate_fraction`` of the
      clean predictions: a warning is logged and the detection and risk numbers are marked as not
      meaningful); per attack its type, eps, accuracy, detection AUROC, TPR at the calibrated
      threshold, and the risk quantities of :func:`~monai_adv.metrics.compute_adversarial_risk`
      with the detector and without it;
    - ``report.md``: the same as Markdown tables;
    - ``accuracy_vs_eps.png``, ``roc.png`` (with a detector), ``risk.png``, ``confusion_matrix.png``;
    - ``items.pt`` (with ``save_items``): the per-item labels, predicted classes, scores and flags
      under the output keys, as tensors (loads with ``torch.load(..., weights_only=True)``);

    and, given a ``summary_writer``, the scalars and the figures to TensorBoard. The report is also
    kept in :attr:`report` and in ``engine.state.robustness_report`` (not in ``engine.state.metrics``,
    whose entries MONAI's StatsHandler formats as numbers).

    Args:
        output_dir: folder for the files (created).
        attack_prior: probability that an input is attacked (see ``docs/risk_metric.md``).
        cost_error: cost of an unflagged misclassification.
        cost_false_alarm: cost of flagging a clean input.
        cost_detected_attack: cost of flagging an attacked input.
        summary_writer: optional TensorBoard ``SummaryWriter``.
        plots: write the PNG plots.
        save_items: write ``items.pt``.
        title: a title for the table and plots.
        class_names: the class names in index order (default ``"0"``, ``"1"``, ...).
        num_classes: the number of classes (default ``len(class_names)``, else inferred from the data).
        degenerate_fraction: the share of one predicted class above which the classifier is flagged.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        attack_prior: float = 0.1,
        cost_error: float = 1.0,
        cost_false_alarm: float = 0.1,
        cost_detected_attack: float = 0.0,
        summary_writer: Any | None = None,
        plots: bool = True,
        save_items: bool = True,
        title: str = "",
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        degenerate_fraction: float = DEGENERATE_FRACTION,
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.risk_parameters = {
            "attack_prior": float(attack_prior),
            "cost_error": float(cost_error),
            "cost_false_alarm": float(cost_false_alarm),
            "cost_detected_attack": float(cost_detected_attack),
        }
        self.summary_writer = summary_writer
        self.plots = bool(plots)
        self.save_items = bool(save_items)
        self.title = title
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.num_classes = num_classes
        self.degenerate_fraction = float(degenerate_fraction)
        self.report: dict[str, Any] | None = None
        self.logger = logging.getLogger(__name__)
        self._data: dict[str, list[torch.Tensor]] = defaultdict(list)

    def attach(self, engine: Engine) -> None:
        """Register the handler's event callbacks on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._data = defaultdict(list)

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        first = first_output(output) or {}
        for key in first:
            if not isinstance(key, str):
                continue
            base = key.split("/", 1)[0]
            if base not in (RobustKeys.PRED, RobustKeys.LABEL, RobustKeys.SCORE, RobustKeys.FLAG):
                continue
            v = gather_output(output, key).detach().cpu()
            if base in _CLASS_KEYS:
                v = predicted_classes(v)
            self._data[key].append(v.reshape(-1).float())

    # the report ------------------------------------------------------------------------------------
    def compute(self, engine: Engine | None = None) -> dict[str, Any]:
        """The report of what was collected in the current epoch (see the class docstring).

        Raises:
            ValueError: when nothing with labels and predictions was collected.
        """
        data = {k: torch.cat(v) for k, v in self._data.items()}
        if RobustKeys.PRED not in data or RobustKeys.LABEL not in data:
            raise ValueError("the engine output has no 'pred' and 'label': nothing to report.")
        y, pred = data[RobustKeys.LABEL].long(), data[RobustKeys.PRED].long()
        detector = getattr(engine, "detector", None)
        threshold = getattr(detector, "threshold", None)
        clean_score, clean_flag = data.get(RobustKeys.SCORE), data.get(RobustKeys.FLAG)
        # the evaluator publishes what its attacks are; any other engine has none to describe
        descriptions = getattr(engine, "attack_descriptions", None) or {}
        names = [k.split("/", 1)[1] for k in data if k.startswith(RobustKeys.PRED + "/")]
        summary = classification_summary(
            y, pred, self.class_names, self.num_classes, degenerate_fraction=self.degenerate_fraction
        )
        report: dict[str, Any] = {
            "title": self.title,
            "epoch": int(engine.state.epoch) if engine is not None else None,
            "n": int(y.numel()),
            "degenerate": summary["degenerate"],
            "clean": {
                "accuracy": float((pred == y).float().mean()),
                "flag_rate": None if clean_flag is None else float(clean_flag.mean()),
                "per_class_recall": summary["per_class_recall"],
                "confusion_matrix": summary["confusion_matrix"],
                "class_names": summary["class_names"],
                "majority_class": summary["majority_class"],
                "majority_share": summary["majority_share"],
            },
            "detector": None
            if detector is None
            else {
                "class": type(detector).__name__,
                "layers": list(detector.layers),
                "threshold": threshold,
                "target_fpr": getattr(detector, "fpr", None),
            },
            "risk_parameters": dict(self.risk_parameters),
            # how the numbers were computed (precision, layout, CPU capability), see monai_adv.precision
            "compute": record_of(engine),
            "attacks": {},
        }
        zeros = torch.zeros_like(y, dtype=torch.float32)
        for name in names:
            adv_pred = data[RobustKeys.adv(RobustKeys.PRED, name)].long()
            adv_score = data.get(RobustKeys.adv(RobustKeys.SCORE, name))
            adv_flag = data.get(RobustKeys.adv(RobustKeys.FLAG, name))
            desc = descriptions.get(name, {})
            entry: dict[str, Any] = {
                "type": desc.get("type", name),
                "eps": desc.get("eps"),
                "norm": desc.get("norm"),
                "steps": desc.get("steps"),
                "accuracy": float((adv_pred == y).float().mean()),
                "auroc": None,
                "tpr": None,
            }
            if clean_score is not None and adv_score is not None:
                entry["auroc"] = detection_auroc(clean_score, adv_score)
                if threshold is not None:
                    entry["tpr"] = tpr_at_threshold(adv_score, threshold)
            e, ea = (pred != y).float(), (adv_pred != y).float()
            entry["risk_no_detector"] = compute_adversarial_risk(e, ea, zeros, zeros, **self.risk_parameters)
            if clean_flag is not None and adv_flag is not None:
                entry["risk"] = compute_adversarial_risk(e, ea, clean_flag, adv_flag, **self.risk_parameters)
            report["attacks"][name] = entry
        return report

    def markdown(self, report: dict[str, Any]) -> str:
        """The report as a Markdown table."""
        lines = [f"## Robustness report{': ' + self.title if self.title else ''}", ""]
        clean = report["clean"]
        det = report["detector"]
        lines.append(
            f"{report['n']} items; clean accuracy {_fmt(clean['accuracy'])}"
            + (f"; clean flag rate {_fmt(clean['flag_rate'])}" if clean["flag_rate"] is not None else "")
            + (
                f"; detector {det['class']} on {det['layers']}, target FPR {_fmt(det['target_fpr'], 2)}"
                if det
                else "; no detector"
            )
        )
        p = report["risk_parameters"]
        if report.get("degenerate"):
            lines += ["", self._degenerate_warning(report)]
        recall = clean.get("per_class_recall") or {}
        if recall:
            lines.append(
                "Per-class recall (clean): " + ", ".join(f"{k} {_fmt(v)}" for k, v in recall.items()) + "."
            )
        lines.append(
            f"Risk parameters: attack prior {p['attack_prior']}, cost of an error {p['cost_error']}, of a false "
            f"alarm {p['cost_false_alarm']}, of a detected attack {p['cost_detected_attack']}."
        )
        lines += [
            "",
            "| attack | type | eps | accuracy | AUROC | TPR@thr | undetected error | risk (classifier) "
            "| risk (detector) | risk (system) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        mark = " (not meaningful)" if report.get("degenerate") else ""
        for name, a in report["attacks"].items():
            r = a.get("risk") or {}
            eps = a["eps"]
            eps_s = "-" if eps is None else (f"{eps:.4g}" if isinstance(eps, float) else str(eps))
            lines.append(
                f"| {name} | {a['type']} | {eps_s} | {_fmt(a['accuracy'])} | {_fmt(a['auroc'])} | {_fmt(a['tpr'])} "
                f"| {_fmt(r.get('undetected_error'))} | {_fmt(a['risk_no_detector']['risk_classifier'])} "
                f"| {_fmt(r.get('risk_detector'))} | {_fmt(r.get('risk_system'))} |"
            )
        if mark:
            lines += ["", f"AUROC, TPR and risk columns{mark}: the classifier is degenerate."]
        cm, names = clean.get("confusion_matrix"), clean.get("class_names")
        if cm and names:
            lines += ["", "Clean confusion matrix (rows true, columns predicted):", ""]
            lines.append("| true \\ predicted | " + " | ".join(names) + " |")
            lines.append("|---|" + "---|" * len(names))
            for name, row in zip(names, cm):
                lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
        return "\n".join(lines) + "\n"

    @staticmethod
    def _degenerate_warning(report: dict[str, Any]) -> str:
        clean = report["clean"]
        return (
            f"**WARNING: degenerate classifier**: it predicts {clean['majority_class']} for "
            f"{clean['majority_share']:.0%} of the {report['n']} clean items. Its robust accuracy is that class's "
            "share, and detection and risk numbers measured on it are not meaningful."
        )

    def _figures(self, report: dict[str, Any]) -> dict[str, Any]:
        from monai_adv.visualize.plots import (
            plot_accuracy_vs_eps,
            plot_confusion_matrix,
            plot_risk,
            plot_roc_curves,
        )

        figs = {}
        clean = report["clean"]
        if clean.get("confusion_matrix"):
            figs["confusion_matrix"] = plot_confusion_matrix(
                clean["confusion_matrix"], clean.get("class_names"), self.title
            )
        curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for a in report["attacks"].values():
            if isinstance(a["eps"], (int, float)):
                curves[a["type"]].append((float(a["eps"]), a["accuracy"]))
        if curves:
            figs["accuracy_vs_eps"] = plot_accuracy_vs_eps(curves, report["clean"]["accuracy"], self.title)
        data = {k: torch.cat(v) for k, v in self._data.items()}
        if RobustKeys.SCORE in data:
            scores = {
                name: (data[RobustKeys.SCORE], data[RobustKeys.adv(RobustKeys.SCORE, name)])
                for name in report["attacks"]
                if RobustKeys.adv(RobustKeys.SCORE, name) in data
            }
            if scores:
                fpr = (report["detector"] or {}).get("target_fpr")
                figs["roc"] = plot_roc_curves(scores, self.title, fpr_mark=fpr)
        risks = {}
        for name, a in report["attacks"].items():
            r = dict(a.get("risk") or {})
            r["risk_classifier"] = a["risk_no_detector"]["risk_classifier"]
            risks[name] = r
        if risks:
            figs["risk"] = plot_risk(risks, self.title)
        return figs

    def _write(self, engine: Engine) -> None:
        import matplotlib.pyplot as plt

        from monai_adv.visualize.plots import save_figure

        report = self.compute(engine)
        self.report = report
        if report["degenerate"]:
            self.logger.warning(self._degenerate_warning(report).replace("**", ""))
        engine.state.robustness_report = report
        os.makedirs(self.output_dir, exist_ok=True)
        atomic_write_json(os.path.join(self.output_dir, "report.json"), report)
        atomic_write_text(os.path.join(self.output_dir, "report.md"), self.markdown(report))
        if self.save_items:
            items = {k: torch.cat(v) for k, v in self._data.items()}
            path = os.path.join(self.output_dir, "items.pt")
            atomic_torch_save(items, path, durable=False)
        epoch = report["epoch"] or 0
        if self.summary_writer is not None:
            self.summary_writer.add_scalar("robustness/clean_accuracy", report["clean"]["accuracy"], epoch)
            for name, a in report["attacks"].items():
                for key in ("accuracy", "auroc", "tpr"):
                    if a[key] is not None:
                        self.summary_writer.add_scalar(f"robustness/{key}/{name}", a[key], epoch)
                for key, v in (a.get("risk") or a["risk_no_detector"]).items():
                    if key.startswith("risk") or key == "undetected_error":
                        self.summary_writer.add_scalar(f"robustness/{key}/{name}", v, epoch)
        if self.plots or self.summary_writer is not None:
            for fig_name, fig in self._figures(report).items():
                if self.plots:
                    save_figure(fig, os.path.join(self.output_dir, f"{fig_name}.png"))
                if self.summary_writer is not None:
                    self.summary_writer.add_figure(f"robustness/{fig_name}", fig, epoch)
                plt.close(fig)
        self.logger.info(f"robustness report written to {self.output_dir}")
