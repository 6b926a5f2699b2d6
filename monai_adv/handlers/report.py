"""The robustness report of a classifier or a segmentation network, at the end of a robust evaluation: one
``report.json`` schema for both tasks, written once, atomically and last, with ``report.md``, the
metric-against-eps plot, a gallery and TensorBoard scalars.

The schema (``report.json``)::

    {"task": "classification" | "segmentation",
     "metric": "accuracy" | "mean_dice",     # the headline metric's name
     "clean": float,                         # the headline metric on clean inputs
     "label_free": bool,                     # the labels were the network's own clean predictions
     "n": int, "title": str, "class_names": [...],
     "attacks": [{"name", "attack", "eps", "value", ...task details...}, ...],
     "worst_case": [{"eps", "value", "attacks": [names], "undetected_error"?}, ...],
     "details": {...the task details on clean inputs...},
     "compute": {...precision record...}, "epoch": int, ...task extras..., ...every key of ``info``}
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import optional_import

from monai_adv.distributed import is_main_process
from monai_adv.io import OutputSet, atomic_torch_save, atomic_write_json, atomic_write_text, json_safe
from monai_adv.keys import RobustKeys
from monai_adv.metrics.classification import (
    DEGENERATE_FRACTION,
    classification_correctness,
    classification_summary,
)
from monai_adv.metrics.detection import detection_auroc, detection_summary, referral_curve, tpr_at_threshold
from monai_adv.metrics.risk import compute_adversarial_risk
from monai_adv.metrics.robust import worst_case_per_image
from monai_adv.metrics.segmentation import dense_indices
from monai_adv.precision import record_of
from monai_adv.utils import first_output, gather_output, plain_tensor, predicted_classes

Events, _ = optional_import("ignite.engine", name="Events")
if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["RobustnessReport", "CLASSIFICATION", "SEGMENTATION", "HEADLINE_METRICS", "REPORT_KEYS"]

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
#: the headline metric of each task: ``report["metric"]``, the ``value`` of every attack entry
HEADLINE_METRICS = {CLASSIFICATION: "accuracy", SEGMENTATION: "mean_dice"}
#: the keys every ``report.json`` holds, whatever the task (``info`` may not replace them)
REPORT_KEYS = (
    "task",
    "metric",
    "clean",
    "label_free",
    "n",
    "title",
    "class_names",
    "attacks",
    "worst_case",
    "details",
    "compute",
    "epoch",
)
#: the keys of an attack entry that ``attack_info`` may not replace
_ATTACK_KEYS = ("name", "attack", "eps", "value")
# the plot of the headline metric against eps, per task (the file names the bundles always wrote)
_CURVE_FILE = {CLASSIFICATION: "accuracy_vs_eps", SEGMENTATION: "dice_vs_eps"}
_METRIC_LABEL = {CLASSIFICATION: "accuracy", SEGMENTATION: "mean Dice"}


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _fmt_eps(eps: Any) -> str:
    if eps is None:
        return "-"
    if isinstance(eps, float):
        return f"{eps:.4g}"
    if isinstance(eps, (list, tuple)):
        return "[" + ", ".join(_fmt_eps(e) for e in eps) + "]"
    return str(eps)


def _number(v: Any) -> float | None:
    """``v`` as a float, None for anything else (a metric left out, a tensor with several values)."""
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _eps_key(eps: Any) -> float | None:
    """A number to group attacks by eps (None for a range or no eps)."""
    return round(float(eps), 12) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None


def _thin_curve(curve: dict[str, Any], points: int = 101) -> dict[str, list[float]]:
    """A referral curve as lists, thinned to about ``points`` points for the JSON report."""
    n = len(curve["referral_rate"])
    idx = sorted(set(np.linspace(0, n - 1, min(points, n)).round().astype(int).tolist()))
    return {k: [round(float(v[i]), 6) for i in idx] for k, v in curve.items()}


def _gather(t: torch.Tensor) -> torch.Tensor:
    """``t`` concatenated over the DDP ranks (unchanged in a single process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return t
    if torch.distributed.get_world_size() < 2:
        return t
    from monai.utils import evenly_divisible_all_gather

    return evenly_divisible_all_gather(t, concat=True)


class RobustnessReport:
    """Writes how a classifier or a segmentation network holds up under attack, at the end of each evaluation.

    Attach it to a :class:`~monai_adv.engines.RobustEvaluator` (classification) or a
    :class:`~monai_adv.engines.RobustSegmentationEvaluator` (segmentation: it has ``per_class_results``);
    the task is read from the engine. At each epoch end it writes to ``output_dir``, in this order, the
    figures and the gallery, ``items.pt`` (classification, with ``save_items``), ``report.md`` and last
    ``report.json`` (atomically, on rank 0 only), so that a reader never finds a new ``report.json``
    beside old figures, and a failed run leaves no new report:

    - ``report.json``: one schema for both tasks (see the module docstring): ``task``, ``metric`` (the
      headline metric: ``"accuracy"`` or ``"mean_dice"``), ``clean`` (its clean value), ``label_free``,
      ``n``, ``title``, ``class_names``, ``attacks`` (a list: per attack ``name`` in the evaluator,
      ``attack`` (its type, e.g. ``"PGD"``), ``eps``, ``value`` (the headline metric under it), ``norm``,
      ``steps``, the task details and the entries of ``attack_info[name]``), ``worst_case`` (per eps
      shared by two or more attacks, the per-image worst case over them: a classified image counts
      correct only if it is correct under all of them, a segmented image takes its lowest Dice; Croce &
      Hein 2020, Croce, Singh & Hein 2024; with a detector also ``undetected_error``, the share of images
      that some attack at that eps makes misclassified *and* unflagged), ``details`` (the clean task
      details), ``compute`` (how the numbers were computed, :func:`~monai_adv.precision.record_of`),
      ``epoch`` and every key of ``info``.

      Classification details (clean and per attack): ``accuracy``, ``per_class_recall``,
      ``flag_rate`` (detector flags), and per attack the detection ``auroc`` (clean against every
      attacked input) and ``tpr`` (at the calibrated threshold), ``auroc_success`` and ``tpr_success``
      (against the successful attacks only: clean right, attacked wrong, the literature's convention),
      ``undetected_error``, ``risk_classifier``, ``risk_detector``, ``risk_system``, ``risk_at_priors``
      (the system risk at attack priors 0.01, 0.1 and 0.5) and the full ``risk`` / ``risk_no_detector``
      of :func:`~monai_adv.metrics.compute_adversarial_risk`; clean also ``referral_curve`` (accuracy on
      the accepted clean inputs against the share the detector refers), ``confusion_matrix`` and
      ``degenerate`` (one class takes more than ``degenerate_fraction`` of the clean predictions: a
      warning is logged and the detection and risk numbers are marked as not meaningful). Top level:
      ``degenerate``, ``detector``, ``risk_parameters``, ``activation``.

      Segmentation details: ``mean_dice``, ``dice`` per class, ``mean_<hd>`` and ``<hd>`` per class
      (``hd95``), ``distance_units``; per attack also ``dice_drop``. Top level: ``metrics`` (the metric
      settings).
    - ``report.md``: the same as Markdown tables;
    - classification: ``accuracy_vs_eps.png``, ``roc.png`` and ``referral.png`` (with a detector), ``risk.png``,
      ``confusion_matrix.png``, ``attack_gallery.png`` (the first image under the gallery attacks, when the
      evaluator keeps the adversarial images), ``items.pt``
      (per-item labels, predicted classes, scores and flags; ``torch.load(..., weights_only=True)``);
    - segmentation: ``dice_vs_eps.png`` and ``segmentation_gallery.png`` (image, label, clean and
      attacked predictions as overlays for the first ``gallery_items`` images);

    and, given a ``summary_writer``, the scalars and figures to TensorBoard. The report is also kept in
    :attr:`report` and ``engine.state.robustness_report``; the numbers themselves are the evaluator's
    ``engine.state.metrics`` (``"accuracy/<attack>"``, ``"dice/<attack>"``: where MONAI's ``StatsHandler``,
    ``MetricsSaver`` and ``--tracking mlflow`` see them), read here when present.

    Args:
        output_dir: folder for the files (created).
        attack_prior: probability that an input is attacked (see ``docs/risk_metric.md``).
        cost_error: cost of an unflagged misclassification.
        cost_false_alarm: cost of flagging a clean input.
        cost_detected_attack: cost of flagging an attacked input.
        summary_writer: optional TensorBoard ``SummaryWriter``.
        plots: write the PNG figures.
        save_items: write ``items.pt`` (classification).
        title: a title for the tables and plots.
        class_names: the class names in index order (default ``"0"``, ``"1"``, ...).
        num_classes: the number of classes (classification; default ``len(class_names)``, else inferred).
        degenerate_fraction: the share of one predicted class above which a classifier is flagged.
        gallery_items: images in the gallery (0: none).
        gallery_attacks: the attacks shown in the gallery; None: per attack type the one with the largest eps.
        info: entries added to the top level of ``report.json`` (the bundle, the configs, eps units...).
        attack_info: ``{attack name: entries}`` added to that attack's entry (e.g. ``eps_original``).

    Raises:
        ValueError: for a negative ``gallery_items``, or ``info`` / ``attack_info`` keys that would replace
            the schema's own (``task``, ``clean``, ``attacks``...; ``name``, ``attack``, ``eps``, ``value``).

    Example::

        evaluator = RobustEvaluator(device, loader, net, attacks={"pgd": PGD(net, 4 / 255)},
                                    val_handlers=[RobustnessReport("eval", class_names=["CNV", "NORMAL"])])
        evaluator.run()
        json.load(open("eval/report.json"))["attacks"][0]["value"]  # robust accuracy under PGD
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
        gallery_items: int = 4,
        gallery_attacks: Sequence[str] | None = None,
        info: Mapping[str, Any] | None = None,
        attack_info: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        if int(gallery_items) < 0:
            raise ValueError(f"gallery_items must be >= 0, got {gallery_items!r}.")
        info = dict(info or {})
        clash = sorted(set(info) & set(REPORT_KEYS))
        if clash:
            raise ValueError(f"info keys {clash} are report.json's own; name them otherwise.")
        attack_info = {str(k): dict(v) for k, v in (attack_info or {}).items()}
        for name, entries in attack_info.items():
            clash = sorted(set(entries) & set(_ATTACK_KEYS))
            if clash:
                raise ValueError(
                    f"attack_info[{name!r}] keys {clash} are the attack entry's own; name them otherwise."
                )
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
        self.gallery_items = int(gallery_items)
        self.gallery_attacks = None if gallery_attacks is None else list(gallery_attacks)
        self.info = info
        self.attack_info = attack_info
        self.report: dict[str, Any] | None = None
        self.logger = logging.getLogger(__name__)
        self._data: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._correct: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._gallery: dict[str, list[torch.Tensor]] = defaultdict(list)

    def attach(self, engine: Engine) -> None:
        """Register the handler's event callbacks on ``engine``."""
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    @staticmethod
    def task_of(engine: Any) -> str:
        """``"segmentation"`` for an engine with per-class results (``RobustSegmentationEvaluator``), else
        ``"classification"``."""
        return SEGMENTATION if callable(getattr(engine, "per_class_results", None)) else CLASSIFICATION

    def _reset(self, engine: Engine) -> None:
        self._data = defaultdict(list)
        self._correct = defaultdict(list)
        self._gallery = defaultdict(list)

    # collecting ------------------------------------------------------------------------------------
    def _shown_attacks(self, engine: Engine) -> list[str]:
        descriptions = getattr(engine, "attack_descriptions", None) or {}
        if self.gallery_attacks is not None:
            return [a for a in self.gallery_attacks if a in descriptions]
        strongest: dict[str, tuple[float, str]] = {}
        for name, d in descriptions.items():
            eps = d.get("eps")
            e = float(eps) if isinstance(eps, (int, float)) else 0.0
            t = str(d.get("type", name))
            if t not in strongest or e > strongest[t][0]:
                strongest[t] = (e, name)
        return [name for _, name in strongest.values()]

    def _collect(self, engine: Engine) -> None:
        if self.task_of(engine) == SEGMENTATION:
            self._collect_segmentation_gallery(engine)
        else:
            self._collect_classification(engine)

    def _collect_classification(self, engine: Engine) -> None:
        output = engine.state.output
        first = first_output(output) or {}
        label = gather_output(output, RobustKeys.LABEL) if first.get(RobustKeys.LABEL) is not None else None
        activation = str(getattr(engine, "activation", "softmax"))
        pred = first.get(RobustKeys.PRED)
        if isinstance(pred, torch.Tensor) and pred.ndim > (2 if first is output else 1):
            shape = tuple(plain_tensor(gather_output(output, RobustKeys.PRED)).shape)
            raise ValueError(
                f"'pred' of shape {shape} is dense (a segmentation network's logits): evaluate it with "
                "monai_adv.engines.RobustSegmentationEvaluator, whose report is a segmentation report."
            )
        for key in first:
            if not isinstance(key, str):
                continue
            base = key.split("/", 1)[0]
            if (
                base not in (RobustKeys.PRED, RobustKeys.LABEL, RobustKeys.SCORE, RobustKeys.FLAG)
                or first[key] is None
            ):
                continue
            v = plain_tensor(gather_output(output, key)).detach().cpu()
            if base == RobustKeys.PRED and label is not None:
                self._correct[key].append(classification_correctness(v, label, activation).cpu())
            if base in (RobustKeys.PRED, RobustKeys.LABEL):
                if activation == "sigmoid":
                    continue  # multi-label: no single class per image
                v = predicted_classes(v)
            self._data[key].append(v.reshape(-1).float())
        if self.gallery_items and not self._gallery and RobustKeys.IMAGE in first:
            shown = [n for n in self._shown_attacks(engine) if RobustKeys.adv(RobustKeys.IMAGE, n) in first]
            if shown:
                self._gallery[RobustKeys.IMAGE] = [
                    plain_tensor(gather_output(output, RobustKeys.IMAGE))[0].cpu()
                ]
                for name in shown:
                    key = RobustKeys.adv(RobustKeys.IMAGE, name)
                    self._gallery[key] = [plain_tensor(gather_output(output, key))[0].cpu()]

    def _collect_segmentation_gallery(self, engine: Engine) -> None:
        wanted = self.plots or self.summary_writer is not None
        if not wanted or len(self._gallery[RobustKeys.IMAGE]) >= self.gallery_items:
            return
        output = engine.state.output
        first = first_output(output) or {}
        if RobustKeys.PRED not in first or first.get(RobustKeys.LABEL) is None:
            return
        take = self.gallery_items - len(self._gallery[RobustKeys.IMAGE])
        pred = plain_tensor(gather_output(output, RobustKeys.PRED))[:take]
        k = pred.shape[1]
        self._gallery[RobustKeys.IMAGE] += list(
            plain_tensor(gather_output(output, RobustKeys.IMAGE))[:take, :1].cpu()
        )
        label = gather_output(output, RobustKeys.LABEL)[:take]
        if getattr(engine, "activation", "softmax") == "sigmoid":
            labels = list((plain_tensor(label) > 0.5).long().argmax(1).cpu())
        else:
            labels = list(dense_indices(label, k).cpu())
        self._gallery[RobustKeys.LABEL] += labels
        self._gallery["clean"] += list(pred.argmax(1).cpu())
        for name in self._shown_attacks(engine):
            key = RobustKeys.adv(RobustKeys.PRED, name)
            if key in first:
                self._gallery[key] += list(plain_tensor(gather_output(output, key))[:take].argmax(1).cpu())
            image_key = RobustKeys.adv(RobustKeys.IMAGE, name)
            if image_key in first:
                self._gallery[image_key] += list(
                    plain_tensor(gather_output(output, image_key))[:take, :1].cpu()
                )

    # the report ------------------------------------------------------------------------------------
    def compute(self, engine: Engine) -> dict[str, Any]:
        """The report of the engine's last epoch (see the class docstring); JSON-ready.

        Under ``torch.distributed`` every rank must call it (the per-image values are gathered).

        Raises:
            ValueError: for a classification engine whose output has no ``"pred"`` and ``"label"``, or a
                number of class names that does not fit the network.
        """
        task = self.task_of(engine)
        body = self._segmentation(engine) if task == SEGMENTATION else self._classification(engine)
        descriptions = getattr(engine, "attack_descriptions", None) or {}
        attacks = []
        for name, details in body.pop("attacks").items():
            d = descriptions.get(name, {})
            entry: dict[str, Any] = {
                "name": name,
                "attack": d.get("type", name),
                "eps": d.get("eps"),
                "value": details[HEADLINE_METRICS[task]],
                "norm": d.get("norm"),
                "steps": d.get("steps"),
            }
            entry.update(details)
            entry.update(self.attack_info.get(name, {}))
            attacks.append(entry)
        worst = body.pop("worst_case")
        report: dict[str, Any] = {
            "task": task,
            "metric": HEADLINE_METRICS[task],
            "clean": body["details"][HEADLINE_METRICS[task]],
            "label_free": bool(getattr(engine, "label_free", False)),
            "n": body.pop("n"),
            "title": self.title,
            "class_names": body.pop("class_names"),
            "attacks": attacks,
            "worst_case": [
                {"eps": eps, "value": value, "attacks": names, **extra} for eps, value, names, extra in worst
            ],
            "details": body.pop("details"),
            **body,
            "epoch": int(engine.state.epoch) if getattr(engine, "state", None) is not None else None,
            # how the numbers were computed (precision, layout, CPU capability), see monai_adv.precision
            "compute": record_of(engine),
        }
        report.update(self.info)
        return json_safe(report)

    @staticmethod
    def _eps_groups(
        names: Sequence[str], descriptions: Mapping[str, Mapping[str, Any]]
    ) -> dict[float, list[str]]:
        """``{eps: [attack names]}`` for every eps that two or more attacks share, in eps order."""
        groups: dict[float, list[str]] = defaultdict(list)
        for name in names:
            e = _eps_key(descriptions.get(name, {}).get("eps"))
            if e is not None:
                groups[e].append(name)
        return {e: groups[e] for e in sorted(groups) if len(groups[e]) >= 2}

    def _classification(self, engine: Engine) -> dict[str, Any]:
        data = {k: _gather(torch.cat(v)) for k, v in self._data.items()}
        correct = {k: _gather(torch.cat(v)) for k, v in self._correct.items()}
        if RobustKeys.PRED not in correct:
            raise ValueError("the engine output has no 'pred' and 'label': nothing to report.")
        activation = str(getattr(engine, "activation", "softmax"))
        metrics = getattr(getattr(engine, "state", None), "metrics", None) or {}
        detector = getattr(engine, "detector", None)
        threshold = getattr(detector, "threshold", None)
        clean_score, clean_flag = data.get(RobustKeys.SCORE), data.get(RobustKeys.FLAG)
        descriptions = getattr(engine, "attack_descriptions", None) or {}
        names = [k.split("/", 1)[1] for k in correct if k.startswith(RobustKeys.PRED + "/")]
        n = int(correct[RobustKeys.PRED].numel())

        def accuracy(name: str | None) -> float:
            # the evaluator's own metric when it has one (reduced across DDP ranks by MONAI), else ours
            key = "accuracy" if name is None else f"accuracy/{name}"
            value = _number(metrics.get(key))
            pred_key = RobustKeys.PRED if name is None else RobustKeys.adv(RobustKeys.PRED, name)
            return value if value is not None else float(correct[pred_key].mean())

        summary: dict[str, Any] = {}
        y = pred = None
        if activation != "sigmoid" and RobustKeys.LABEL in data:
            y, pred = data[RobustKeys.LABEL].long(), data[RobustKeys.PRED].long()
            summary = classification_summary(
                y, pred, self.class_names, self.num_classes, degenerate_fraction=self.degenerate_fraction
            )
        clean = accuracy(None)
        details = {
            "accuracy": clean,
            "flag_rate": None if clean_flag is None else float(clean_flag.mean()),
            # accuracy on the accepted clean inputs as the detector refers more of them (rejection)
            "referral_curve": None
            if clean_score is None or activation == "sigmoid"
            else _thin_curve(referral_curve(clean_score, correct[RobustKeys.PRED])),
            "per_class_recall": summary.get("per_class_recall"),
            "confusion_matrix": summary.get("confusion_matrix"),
            "prediction_share": summary.get("prediction_share"),
            "majority_class": summary.get("majority_class"),
            "majority_share": summary.get("majority_share"),
            "degenerate": bool(summary.get("degenerate", False)),
        }
        attacks: dict[str, dict[str, Any]] = {}
        e = 1.0 - correct[RobustKeys.PRED]
        zeros = torch.zeros_like(e)
        undetected: dict[str, torch.Tensor] = {}  # per image: misclassified and not flagged, per attack
        for name in names:
            adv_correct = correct[RobustKeys.adv(RobustKeys.PRED, name)]
            adv_score = data.get(RobustKeys.adv(RobustKeys.SCORE, name))
            adv_flag = data.get(RobustKeys.adv(RobustKeys.FLAG, name))
            if adv_flag is not None:
                undetected[name] = (1.0 - adv_correct.float()) * (1.0 - adv_flag.float())
            entry: dict[str, Any] = {"accuracy": accuracy(name)}
            if y is not None:
                adv_pred = data[RobustKeys.adv(RobustKeys.PRED, name)].long()
                entry["per_class_recall"] = classification_summary(
                    y,
                    adv_pred,
                    self.class_names,
                    self.num_classes,
                    degenerate_fraction=self.degenerate_fraction,
                )["per_class_recall"]
            else:
                entry["per_class_recall"] = None
            entry["flag_rate"] = None if adv_flag is None else float(adv_flag.mean())
            entry["auroc"] = entry["tpr"] = entry["auroc_success"] = entry["tpr_success"] = None
            entry["risk_at_priors"] = None
            if clean_score is not None and adv_score is not None:
                entry["auroc"] = detection_auroc(clean_score, adv_score)
                if threshold is not None:
                    entry["tpr"] = tpr_at_threshold(adv_score, threshold)
                if activation != "sigmoid":
                    both = detection_summary(
                        clean_score,
                        adv_score,
                        correct[RobustKeys.PRED],
                        adv_correct,
                        threshold=threshold,
                        **{k: v for k, v in self.risk_parameters.items() if k != "attack_prior"},
                    )
                    entry["auroc_success"] = both["auroc_success"]
                    entry["tpr_success"] = both.get("tpr_at_fpr")
                    entry["risk_at_priors"] = both.get("risk")
            ea = 1.0 - adv_correct
            no_det = compute_adversarial_risk(e, ea, zeros, zeros, **self.risk_parameters)
            risk = None
            if clean_flag is not None and adv_flag is not None:
                risk = compute_adversarial_risk(e, ea, clean_flag, adv_flag, **self.risk_parameters)
            chosen = risk or no_det
            entry["undetected_error"] = chosen.get("undetected_error")
            entry["risk_classifier"] = no_det.get("risk_classifier")
            entry["risk_detector"] = None if risk is None else risk.get("risk_detector")
            entry["risk_system"] = chosen.get("risk_system")
            entry["risk"] = risk
            entry["risk_no_detector"] = no_det
            attacks[name] = entry
        worst = []
        for eps, group in self._eps_groups(names, descriptions).items():
            # an image counts only if it is right under every attack at this eps (for multi-label outputs:
            # its lowest share of labels right)
            per_image = torch.stack([correct[RobustKeys.adv(RobustKeys.PRED, a)] for a in group]).amin(dim=0)
            extra = {}
            if all(a in undetected for a in group):
                # broken by some attack at this eps: misclassified there and not flagged there
                extra["undetected_error"] = float(
                    torch.stack([undetected[a] for a in group]).amax(dim=0).mean()
                )
            worst.append((eps, float(per_image.mean()), group, extra))
        class_names = summary.get("class_names") or self.class_names
        return {
            "n": n,
            "class_names": class_names,
            "details": details,
            "attacks": attacks,
            "worst_case": worst,
            "degenerate": details["degenerate"],
            "activation": activation,
            "detector": None
            if detector is None
            else {
                "class": type(detector).__name__,
                "layers": list(getattr(detector, "layers", []) or []),
                "threshold": threshold,
                "target_fpr": getattr(detector, "fpr", None),
            },
            "risk_parameters": dict(self.risk_parameters),
        }

    def _segmentation(self, engine: Engine) -> dict[str, Any]:
        results = engine.per_class_results()
        hd = getattr(engine, "hausdorff_name", None)
        first = 0 if getattr(engine, "include_background", True) else 1
        k = int(engine.num_classes)
        names = self.class_names or [str(i) for i in range(k)]
        if len(names) != k:
            raise ValueError(f"{len(names)} class names for a network with {k} output classes.")
        names = names[first:]
        state_details = getattr(engine.state, "metric_details", None) or {}
        units = getattr(engine, "distance_units", None)
        if units is None:
            units = "pixels" if getattr(engine, "spacing", None) is None else "spacing units"

        def numbers(entry: Mapping[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {"mean_dice": entry["mean_dice"], "dice": dict(zip(names, entry["dice"]))}
            if hd is not None:
                out["mean_" + hd] = entry.get("mean_" + hd)
                out[hd] = dict(zip(names, entry.get(hd) or []))
            return out

        details = numbers(results["clean"])
        details["distance_units"] = units if hd is not None else None
        attacks: dict[str, dict[str, Any]] = {}
        # the attack variants only (the evaluator may add others, e.g. its worst case over all attacks)
        attack_names = list(getattr(engine, "attacks", None) or [n for n in results if n != "clean"])
        for name in attack_names:
            entry = results.get(name)
            if entry is None:
                continue
            a = numbers(entry)
            a["dice_drop"] = (
                None
                if details["mean_dice"] is None or a["mean_dice"] is None
                else details["mean_dice"] - a["mean_dice"]
            )
            attacks[name] = a
        descriptions = getattr(engine, "attack_descriptions", None) or {}
        worst = []
        for eps, group in self._eps_groups(list(attacks), descriptions).items():
            keys = [f"dice/{a}" for a in group]
            if all(key in state_details for key in keys):
                worst.append(self._segmentation_worst(eps, group, [state_details[key] for key in keys]))
        n_details = state_details.get("dice")
        return {
            "n": int(torch.as_tensor(n_details).shape[0]) if n_details is not None else 0,
            "class_names": names,
            "details": details,
            "attacks": attacks,
            "worst_case": worst,
            "metrics": {
                "dice": "Dice per image and class (0 where the class is in only one of label and prediction)",
                "hausdorff": hd,
                "distance_units": units if hd is not None else None,
                "include_background": bool(getattr(engine, "include_background", True)),
            },
        }

    @staticmethod
    def _segmentation_worst(eps: float, group: list[str], values: list[Any]) -> tuple:
        """Per image the attack with the lowest Dice (the mean over the classes that count in it), then MONAI's
        mean of those images' values, as the evaluator's mean Dice is computed (Croce, Singh & Hein 2024)."""
        from monai.metrics.utils import do_metric_reduction

        if torch.as_tensor(values[0]).numel() == 0:
            return (eps, None, group, {"chosen": {a: 0 for a in group}})
        selected, choice = worst_case_per_image(values, mode="min")
        value, _ = do_metric_reduction(selected, "mean")
        return (
            eps,
            float(value),
            group,
            {"chosen": {a: int((choice == i).sum()) for i, a in enumerate(group)}},
        )

    # the Markdown -------------------------------------------------------------------------------------
    def markdown(self, report: Mapping[str, Any]) -> str:
        """The report as Markdown: a summary line, one row per attack, the worst case, the per-class tables."""
        task, metric = report["task"], report["metric"]
        label = _METRIC_LABEL.get(task, metric)
        title = report.get("title") or ""
        lines = [f"## Robustness report{': ' + title if title else ''}", ""]
        summary = f"{report['n']} images ({task}); clean {label} {_fmt(report['clean'])}"
        details = report.get("details") or {}
        if task == CLASSIFICATION:
            det = report.get("detector")
            if details.get("flag_rate") is not None:
                summary += f"; clean flag rate {_fmt(details['flag_rate'])}"
            summary += (
                f"; detector {det['class']} on {det['layers']}, target FPR {_fmt(det['target_fpr'], 2)}"
                if det
                else "; no detector"
            )
        else:
            hd = (report.get("metrics") or {}).get("hausdorff")
            if hd:
                summary += f", mean {hd.upper()} {_fmt(details.get('mean_' + hd), 2)} {details.get('distance_units')}"
        lines.append(summary + ".")
        if report.get("label_free"):
            lines += [
                "",
                "**Label-free**: the labels are the network's own clean predictions, so the numbers measure how "
                "stable its predictions are under attack (clean is 1 by construction), not how correct they are.",
            ]
        if task == CLASSIFICATION:
            lines += self._classification_markdown(report)
        else:
            lines += self._segmentation_markdown(report)
        if report.get("worst_case"):
            lines += ["", f"Per-image worst case over the attacks at each eps ({label}):", ""]
            with_detector = any("undetected_error" in w for w in report["worst_case"])
            if with_detector:
                lines += [
                    "| eps | worst case | undetected error (misclassified and not flagged) | attacks |",
                    "|---|---|---|---|",
                ]
            else:
                lines += ["| eps | worst case | attacks |", "|---|---|---|"]
            for w in report["worst_case"]:
                und = f" {_fmt(w.get('undetected_error'))} |" if with_detector else ""
                lines.append(
                    f"| {_fmt_eps(w['eps'])} | {_fmt(w['value'])} |{und} {', '.join(w['attacks'])} |"
                )
        originals = [a for a in report["attacks"] if a.get("eps_original") is not None]
        if originals:
            lines += [
                "",
                "eps in the image's original units:",
                "",
                "| attack | eps | eps (original) |",
                "|---|---|---|",
            ]
            for a in originals:
                lines.append(
                    f"| {a['name']} | {_fmt_eps(a['eps'])} | {_fmt_eps(a['eps_original'])} {a.get('original_units') or ''} |"
                )
        return "\n".join(lines) + "\n"

    def _classification_markdown(self, report: Mapping[str, Any]) -> list[str]:
        details = report["details"]
        lines: list[str] = []
        if report.get("degenerate"):
            lines += ["", self._degenerate_warning(report)]
        recall = details.get("per_class_recall") or {}
        if recall:
            lines += [
                "",
                "Per-class recall (clean): " + ", ".join(f"{k} {_fmt(v)}" for k, v in recall.items()) + ".",
            ]
        p = report.get("risk_parameters") or {}
        if p:
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
        for a in report["attacks"]:
            lines.append(
                f"| {a['name']} | {a['attack']} | {_fmt_eps(a['eps'])} | {_fmt(a['value'])} | {_fmt(a.get('auroc'))} "
                f"| {_fmt(a.get('tpr'))} | {_fmt(a.get('undetected_error'))} | {_fmt(a.get('risk_classifier'))} "
                f"| {_fmt(a.get('risk_detector'))} | {_fmt(a.get('risk_system'))} |"
            )
        if report.get("degenerate"):
            lines += ["", "AUROC, TPR and risk columns (not meaningful): the classifier is degenerate."]
        cm, names = details.get("confusion_matrix"), report.get("class_names")
        if cm and names:
            lines += ["", "Clean confusion matrix (rows true, columns predicted):", ""]
            lines.append("| true \\ predicted | " + " | ".join(names) + " |")
            lines.append("|---|" + "---|" * len(names))
            for name, row in zip(names, cm):
                lines.append(f"| {name} | " + " | ".join(str(int(v)) for v in row) + " |")
        return lines

    @staticmethod
    def _segmentation_markdown(report: Mapping[str, Any]) -> list[str]:
        hd = (report.get("metrics") or {}).get("hausdorff")
        clean = report["details"]
        lines = [
            "",
            "| attack | type | eps | steps | mean Dice | Dice drop |"
            + (f" mean {hd.upper()} |" if hd else ""),
        ]
        lines.append("|---|---|---|---|---|---|" + ("---|" if hd else ""))
        lines.append(
            f"| clean | - | 0 | - | {_fmt(clean['mean_dice'])} | - |"
            + (f" {_fmt(clean.get('mean_' + hd), 2)} |" if hd else "")
        )
        for a in report["attacks"]:
            lines.append(
                f"| {a['name']} | {a['attack']} | {_fmt_eps(a['eps'])} | {_fmt(a.get('steps'))} | {_fmt(a['mean_dice'])} | "
                f"{_fmt(a.get('dice_drop'))} |" + (f" {_fmt(a.get('mean_' + hd), 2)} |" if hd else "")
            )
        columns = ["clean"] + [a["name"] for a in report["attacks"]]
        for metric, digits in (("dice", 3), (hd, 2)):
            if metric is None:
                continue
            lines += ["", f"{'Dice' if metric == 'dice' else metric.upper()} per class:", ""]
            lines.append("| class | " + " | ".join(columns) + " |")
            lines.append("|---|" + "---|" * len(columns))
            for c in report["class_names"]:
                row = [(clean.get(metric) or {}).get(c)] + [
                    (a.get(metric) or {}).get(c) for a in report["attacks"]
                ]
                lines.append(f"| {c} | " + " | ".join(_fmt(v, digits) for v in row) + " |")
        return lines

    @staticmethod
    def _degenerate_warning(report: Mapping[str, Any]) -> str:
        details = report["details"]
        return (
            f"**WARNING: degenerate classifier**: it predicts {details['majority_class']} for "
            f"{details['majority_share']:.0%} of the {report['n']} clean items. Its robust accuracy is that class's "
            "share, and detection and risk numbers measured on it are not meaningful."
        )

    # the figures ------------------------------------------------------------------------------------
    def _figures(self, report: Mapping[str, Any]) -> dict[str, Any]:
        from monai_adv.visualize.plots import plot_metric_vs_eps

        task = report["task"]
        figs: dict[str, Any] = {}
        curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for a in report["attacks"]:
            if _eps_key(a["eps"]) is not None and a["value"] is not None:
                curves[str(a["attack"])].append((float(a["eps"]), float(a["value"])))
        for w in report.get("worst_case") or []:
            if w["value"] is not None:
                curves["worst case"].append((float(w["eps"]), float(w["value"])))
        if curves:
            figs[_CURVE_FILE[task]] = plot_metric_vs_eps(
                curves,
                report["clean"],
                self.title,
                metric=_METRIC_LABEL[task],
                eps_units=str(report.get("eps_units") or "intensity units"),
            )
        figs.update(
            self._classification_figures(report) if task == CLASSIFICATION else self._segmentation_figures()
        )
        return figs

    def _classification_figures(self, report: Mapping[str, Any]) -> dict[str, Any]:
        from monai_adv.visualize.gallery import plot_attack_gallery
        from monai_adv.visualize.plots import (
            plot_confusion_matrix,
            plot_referral_curve,
            plot_risk,
            plot_roc_curves,
        )

        figs: dict[str, Any] = {}
        details = report["details"]
        if details.get("confusion_matrix"):
            figs["confusion_matrix"] = plot_confusion_matrix(
                details["confusion_matrix"], report.get("class_names"), self.title
            )
        data = {k: torch.cat(v) for k, v in self._data.items()}
        if RobustKeys.SCORE in data:
            scores = {
                a["name"]: (data[RobustKeys.SCORE], data[RobustKeys.adv(RobustKeys.SCORE, a["name"])])
                for a in report["attacks"]
                if RobustKeys.adv(RobustKeys.SCORE, a["name"]) in data
            }
            if scores:
                fpr = (report.get("detector") or {}).get("target_fpr")
                figs["roc"] = plot_roc_curves(scores, self.title, fpr_mark=fpr)
        if details.get("referral_curve"):
            figs["referral"] = plot_referral_curve(
                details["referral_curve"],
                self.title,
                fpr_mark=(report.get("detector") or {}).get("target_fpr"),
            )
        risks = {}
        for a in report["attacks"]:
            r = dict(a.get("risk") or {})
            r["risk_classifier"] = a["risk_classifier"]
            risks[a["name"]] = r
        if risks:
            figs["risk"] = plot_risk(risks, self.title)
        g = self._gallery
        if g.get(RobustKeys.IMAGE):
            clean = g[RobustKeys.IMAGE][0]
            adversarial = {
                k.split("/", 1)[1]: v[0] for k, v in g.items() if k.startswith(RobustKeys.IMAGE + "/")
            }
            spatial_dims = clean.ndim - 1
            if adversarial and spatial_dims in (2, 3):
                lo = min(float(clean.min()), *(float(v.min()) for v in adversarial.values()))
                hi = max(float(clean.max()), *(float(v.max()) for v in adversarial.values()))
                figs["attack_gallery"] = plot_attack_gallery(
                    clean,
                    adversarial,
                    value_range=(lo, hi if hi > lo else lo + 1.0),
                    spatial_dims=spatial_dims,
                    title=self.title,
                )
        return figs

    def _segmentation_figures(self) -> dict[str, Any]:
        from monai_adv.visualize.segmentation import plot_segmentation_gallery

        g = self._gallery
        if not g.get(RobustKeys.IMAGE):
            return {}
        n = len(g[RobustKeys.IMAGE])
        preds = {"clean": g["clean"]}
        adv_images = {}
        for key, masks in g.items():
            if key.startswith(RobustKeys.PRED + "/") and len(masks) == n:
                name = key.split("/", 1)[1]
                preds[name] = masks
                image_key = RobustKeys.adv(RobustKeys.IMAGE, name)
                if len(g.get(image_key, [])) == n:
                    adv_images[name] = g[image_key]
        return {
            "segmentation_gallery": plot_segmentation_gallery(
                g[RobustKeys.IMAGE],
                g[RobustKeys.LABEL],
                preds,
                class_names=self.class_names,
                adversarial_images=adv_images,
                title=self.title,
            )
        }

    # writing ------------------------------------------------------------------------------------------
    def _scalars(self, report: Mapping[str, Any]) -> dict[str, float]:
        """The TensorBoard scalars: the headline metric clean and per attack, and the task's other numbers."""
        out: dict[str, float] = {}
        if report["task"] == CLASSIFICATION:
            out["robustness/clean_accuracy"] = report["clean"]
            for a in report["attacks"]:
                for key in (
                    "accuracy",
                    "auroc",
                    "tpr",
                    "undetected_error",
                    "risk_classifier",
                    "risk_detector",
                    "risk_system",
                ):
                    out[f"robustness/{key}/{a['name']}"] = a.get(key)
            for w in report.get("worst_case") or []:
                out[f"robustness/accuracy/worst_eps{w['eps']:g}"] = w["value"]
        else:
            hd = (report.get("metrics") or {}).get("hausdorff")
            keys = ("mean_dice",) + ((f"mean_{hd}",) if hd else ())
            for name, a in [("clean", report["details"])] + [(a["name"], a) for a in report["attacks"]]:
                for key in keys:
                    out[f"segmentation/{key}/{name}"] = a.get(key)
            for w in report.get("worst_case") or []:
                out[f"segmentation/mean_dice/worst_eps{w['eps']:g}"] = w["value"]
        return {
            k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    def _write(self, engine: Engine) -> None:
        import matplotlib.pyplot as plt

        from monai_adv.visualize.plots import save_figure

        report = self.compute(engine)
        self.report = report
        engine.state.robustness_report = report
        if report["task"] == SEGMENTATION:
            engine.state.segmentation_report = report  # the name SegmentationRobustnessReport used
        if report.get("degenerate"):
            self.logger.warning(self._degenerate_warning(report).replace("**", ""))
        if not is_main_process():
            return
        # the set (figures, gallery, items.pt, report.md, report.json) is built in a fresh folder and moved into
        # place when complete: a kill while plotting never leaves a new report.json beside the old plots
        out = OutputSet(self.output_dir)
        epoch = report["epoch"] or 0
        prefix = "robustness" if report["task"] == CLASSIFICATION else "segmentation"
        if self.summary_writer is not None:
            for tag, value in self._scalars(report).items():
                self.summary_writer.add_scalar(tag, value, epoch)
        if self.plots or self.summary_writer is not None:
            for fig_name, fig in self._figures(report).items():
                if self.plots:
                    save_figure(fig, out.path(f"{fig_name}.png"))
                if self.summary_writer is not None:
                    self.summary_writer.add_figure(f"{prefix}/{fig_name}", fig, epoch)
                plt.close(fig)
        if self.save_items and report["task"] == CLASSIFICATION:
            items = {k: torch.cat(v) for k, v in self._data.items()}
            atomic_torch_save(items, out.path("items.pt"), durable=False)
        atomic_write_text(out.path("report.md"), self.markdown(report))
        atomic_write_json(out.path("report.json"), report)
        out.commit()
        self.logger.info(f"robustness report written to {self.output_dir}")
