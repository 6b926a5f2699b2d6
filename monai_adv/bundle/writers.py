"""What the OCT bundle writes: ``report.json`` in the bundle's layout and ``predictions.csv``."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_adv.data.utils import OCT_CLASSES
from monai_adv.distributed import is_main_process
from monai_adv.io import atomic_write_json, atomic_write_text, json_safe

__all__ = ["bundle_report", "BundleReportWriter", "PredictionWriter"]

logger = logging.getLogger(__name__)


def bundle_report(report: Mapping[str, Any], eps_of: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's ``report.json`` layout from a :class:`~monai_adv.handlers.RobustnessReport` report.

    ``{"clean_accuracy", "clean_flag_rate", "per_class_recall", "confusion_matrix", "class_names",
    "degenerate", "n", "detector", "risk_parameters", "attacks": [{"name", "type", "eps",
    "robust_accuracy", "detection_auroc", "detection_tpr", "undetected_error", "risk_classifier",
    "risk_detector", "risk_system", "risk", "risk_no_detector"}, ...]}``. ``degenerate`` is true when
    one class takes more than 90% of the clean predictions (detection and risk numbers are then not
    meaningful).

    Args:
        report: the :class:`~monai_adv.handlers.RobustnessReport` report (``engine.state.robustness_report``).
        eps_of: ``{attack name: eps}`` for attacks whose report entry has no eps (reports written before
            attacks described themselves).
    """
    attacks = []
    for name, a in report.get("attacks", {}).items():
        risk = a.get("risk") or {}
        no_det = a.get("risk_no_detector") or {}
        eps = a.get("eps")
        if eps is None and eps_of is not None:
            eps = eps_of.get(name)
        attacks.append(
            {
                "name": name,
                "type": a.get("type"),
                "eps": eps,
                "robust_accuracy": a.get("accuracy"),
                "detection_auroc": a.get("auroc"),
                "detection_tpr": a.get("tpr"),
                "undetected_error": risk.get("undetected_error", no_det.get("undetected_error")),
                "risk_classifier": no_det.get("risk_classifier"),
                "risk_detector": risk.get("risk_detector"),
                "risk_system": risk.get("risk_system", no_det.get("risk_system")),
                "risk": risk or None,
                "risk_no_detector": no_det or None,
            }
        )
    clean = report.get("clean", {})
    return json_safe(
        {
            "title": report.get("title", ""),
            "n": report.get("n"),
            "clean_accuracy": clean.get("accuracy"),
            "clean_flag_rate": clean.get("flag_rate"),
            "per_class_recall": clean.get("per_class_recall"),
            "confusion_matrix": clean.get("confusion_matrix"),
            "class_names": clean.get("class_names"),
            "degenerate": bool(report.get("degenerate", False)),
            "detector": report.get("detector"),
            "risk_parameters": report.get("risk_parameters"),
            "compute": report.get("compute"),
            "attacks": attacks,
        }
    )


class BundleReportWriter:
    """Writes ``report.json`` in the bundle's layout (see :func:`bundle_report`) at the end of an evaluation.

    Attach it after a :class:`~monai_adv.handlers.RobustnessReport` (which puts its report in
    ``engine.state.robustness_report`` and writes ``report.md`` and the plots); the full
    report of that handler stays in ``output_dir`` as ``robustness_report.json``.

    Args:
        output_dir: where ``report.json`` goes.
        filename: the file name.
        summary: print a one-line summary per attack to the log.
    """

    def __init__(
        self, output_dir: str | os.PathLike, filename: str = "report.json", summary: bool = True
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.filename = filename
        self.summary = summary
        self.report: dict[str, Any] | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        full = getattr(engine.state, "robustness_report", None)
        if full is None:
            raise RuntimeError(
                "BundleReportWriter found no engine.state.robustness_report; attach a "
                "monai_adv.handlers.RobustnessReport before it."
            )
        # the robustness report carries each attack's own description (eps included)
        self.report = bundle_report(full)
        if not is_main_process():
            return
        out = os.path.join(self.output_dir, self.filename)
        full_path = os.path.join(self.output_dir, "robustness_report.json")
        atomic_write_json(full_path, full)
        atomic_write_json(out, self.report)
        if self.summary:
            logger.info(f"clean accuracy {self.report['clean_accuracy']:.4f}")
            recall = self.report.get("per_class_recall") or {}
            if recall:
                logger.info(
                    "per-class recall "
                    + ", ".join(f"{k} {v:.3f}" for k, v in recall.items() if v is not None)
                )
            for a in self.report["attacks"]:
                acc, auroc = a["robust_accuracy"], a["detection_auroc"]
                logger.info(
                    f"{a['name']}: eps {a['eps']}, robust accuracy {'-' if acc is None else f'{acc:.4f}'}, "
                    f"detection AUROC {'-' if auroc is None else f'{auroc:.4f}'}, system risk {a['risk_system']}"
                )
        print(f"report written to {out}", flush=True)


class PredictionWriter:
    """Writes ``predictions.csv``: one row per image with class probabilities, the predicted class and,
    when a detector scores the predictions, the adversarial score and flag.

    Columns: ``image``, ``frame``, ``prob_<CLASS>`` for each class, ``pred_class``, ``pred_index``,
    ``adversarial_score``, ``adversarial_flag`` (empty without a detector).

    Args:
        output_dir: where the file goes.
        filename: the file name.
        class_names: the class names in output order.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "predictions.csv",
        class_names: Sequence[str] = OCT_CLASSES,
        score_key: str = "uad_score",
        flag_key: str = "uad_flag",
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.filename = filename
        self.class_names = [str(c) for c in class_names]
        self.score_key = score_key
        self.flag_key = flag_key
        self.rows: list[list[Any]] = []

    @property
    def path(self) -> str:
        return os.path.join(self.output_dir, self.filename)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows = []

    @staticmethod
    def _meta_list(batch: Any, key: str, n: int) -> list:
        img = batch.get("image") if isinstance(batch, Mapping) else None
        meta = getattr(img, "meta", None) or {}
        v = meta.get(key)
        if v is None:
            return [""] * n
        if isinstance(v, torch.Tensor):
            v = v.reshape(-1).tolist()
        if isinstance(v, (str, int, float)):
            v = [v] * n
        return list(v)

    def _collect(self, engine: Any) -> None:
        from monai_adv.utils import gather_output

        output = engine.state.output
        logits = gather_output(output, "pred").detach().float().cpu()
        if logits.ndim != 2 or logits.shape[1] != len(self.class_names):
            raise ValueError(
                f"predictions of shape {tuple(logits.shape)} do not match the {len(self.class_names)} class names."
            )
        probs = logits.softmax(dim=1)
        n = probs.shape[0]
        scores = gather_output(output, self.score_key, required=False)
        flags = gather_output(output, self.flag_key, required=False)
        batch = engine.state.batch
        names = self._meta_list(batch, "filename_or_obj", n)
        frames = self._meta_list(batch, "frame", n)
        for i in range(n):
            idx = int(probs[i].argmax())
            frame = frames[i]
            row = [names[i], "" if frame is None or frame == "" or int(frame) < 0 else int(frame)]
            row += [f"{float(p):.6f}" for p in probs[i]]
            row += [self.class_names[idx], idx]
            row.append("" if scores is None else f"{float(scores.reshape(-1)[i]):.6g}")
            row.append("" if flags is None else int(bool(flags.reshape(-1)[i])))
            self.rows.append(row)

    def _write(self, engine: Any) -> None:
        if not is_main_process():
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(
            ["image", "frame", *[f"prob_{c}" for c in self.class_names], "pred_class", "pred_index",
             "adversarial_score", "adversarial_flag"]
        )  # fmt: skip
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        print(f"{len(self.rows)} predictions written to {self.path}", flush=True)
