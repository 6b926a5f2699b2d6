"""The UAD handler: attach an unsupervised adversarial detector to any MONAI evaluator."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import optional_import

from monai_adv.keys import RobustKeys
from monai_adv.metrics.detection import detection_auroc, tpr_at_threshold
from monai_adv.utils import first_output, gather_output

Events, _ = optional_import("ignite.engine", name="Events")
if TYPE_CHECKING:
    from ignite.engine import Engine

    from monai_adv.detectors.base import AdversarialDetector

__all__ = ["AdversarialDetectionHandler"]


def _set_items(output: Any, key: str, values: torch.Tensor) -> None:
    if isinstance(output, dict):
        output[key] = values
    else:
        for item, v in zip(output, values):
            item[key] = v


class AdversarialDetectionHandler:
    """Adds per-item detector scores and flags to an evaluator's output and reports detection quality.

    On any MONAI evaluator (plain inference included) the handler hooks the detector's layers for
    the run and, after each iteration's forward pass, adds ``"uad_score"`` and (when the detector is
    calibrated) ``"uad_flag"`` to ``engine.state.output``: the features come from the prediction's own
    forward pass, so detection costs no extra forward. On a
    :class:`~monai_adv.engines.RobustEvaluator` built with the same detector, the scores are
    already there (clean and per attack) and the handler only reports.

    At epoch end it writes to ``engine.state.metrics``: ``"<name>_flag_rate"`` (flagged clean items,
    the observed FPR) and, for each attack found in the output, ``"<name>_auroc/<attack>"`` (clean
    against attacked scores) and ``"<name>_tpr/<attack>"`` (attacked items flagged at the calibrated
    threshold).

    Args:
        detector: a fitted (and, for flags and TPR, calibrated) detector.
        attacks: the attack names to report; default every ``"uad_score/<attack>"`` in the output.
        name: prefix of the reported metric names.
        summary_writer: optional TensorBoard ``SummaryWriter`` to log the epoch metrics to.
        score_key: output key of the clean scores.
        flag_key: output key of the flags.

    Raises:
        ValueError: at attach time, for an unfitted detector, or a RobustEvaluator that runs attacks
            with another detector (hooks would capture the attacks' forward passes too).
    """

    def __init__(
        self,
        detector: AdversarialDetector,
        attacks: Sequence[str] | None = None,
        name: str = "uad",
        summary_writer: Any | None = None,
        score_key: str = RobustKeys.SCORE,
        flag_key: str = RobustKeys.FLAG,
    ) -> None:
        self.detector = detector
        self.attacks = None if attacks is None else list(attacks)
        self.name = name
        self.summary_writer = summary_writer
        self.score_key = score_key
        self.flag_key = flag_key
        self.logger = logging.getLogger(__name__)
        self._hooks = None
        self._scores: dict[str, list[torch.Tensor]] = {}

    def attach(self, engine: Engine) -> None:
        """Register the handler's event callbacks on ``engine``."""
        if not getattr(self.detector, "is_fitted", False):
            raise ValueError("the detector is not fitted: fit it before attaching the handler.")
        self._scores_itself = getattr(engine, "detector", None) is self.detector
        if not self._scores_itself and getattr(engine, "attacks", None):
            raise ValueError(
                "this engine runs attacks; give the detector to it (RobustEvaluator(..., detector=det)) so that "
                "each input is scored on its own forward pass."
            )
        if not self._scores_itself:
            engine.add_event_handler(Events.EPOCH_STARTED, self._register)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._remove)
            engine.add_event_handler(Events.EXCEPTION_RAISED, self._remove_on_error)
            # score right after the forward pass, before decollation and the metrics
            event = (
                IterationEvents.MODEL_COMPLETED
                if IterationEvents.MODEL_COMPLETED in getattr(engine, "_allowed_events", [])
                else Events.ITERATION_COMPLETED
            )
            engine.add_event_handler(event, self._score)
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._report)

    # hooks on the prediction's forward pass --------------------------------------------------
    def _register(self, engine: Engine) -> None:
        self._hooks = self.detector.hooks().register()

    def _remove(self, engine: Engine) -> None:
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None

    def _remove_on_error(self, engine: Engine, e: Exception) -> None:
        self._remove(engine)
        raise e

    def _score(self, engine: Engine) -> None:
        output = engine.state.output
        if self._hooks is None or not isinstance(output, (dict, list)):
            return
        if isinstance(output, dict) and self.score_key in output:
            return
        n = len(output) if isinstance(output, list) else None
        if n is None:
            pred = output.get(RobustKeys.PRED)
            n = int(pred.shape[0]) if isinstance(pred, torch.Tensor) else None
        scores = self.detector.score_hooks(self._hooks, n)
        self._hooks.clear()
        _set_items(output, self.score_key, scores)
        if self.detector.is_calibrated:
            _set_items(output, self.flag_key, self.detector.flags(scores))

    # epoch statistics ---------------------------------------------------------------------------
    def _reset(self, engine: Engine) -> None:
        self._scores = {}

    def _collect(self, engine: Engine) -> None:
        output = engine.state.output
        first = first_output(output) or {}
        keys = [self.score_key]
        names = self.attacks
        if names is None:
            prefix = self.score_key + "/"
            names = [k[len(prefix) :] for k in first if isinstance(k, str) and k.startswith(prefix)]
        keys += [RobustKeys.adv(self.score_key, a) for a in names]
        for key in keys:
            values = gather_output(output, key, required=False)
            if values is not None:
                self._scores.setdefault(key, []).append(values.detach().reshape(-1).float().cpu())

    def _report(self, engine: Engine) -> None:
        if self.score_key not in self._scores:
            return
        clean = torch.cat(self._scores[self.score_key])
        metrics: dict[str, float] = {}
        if self.detector.is_calibrated:
            metrics[f"{self.name}_flag_rate"] = float((clean > self.detector.threshold).float().mean())
        prefix = self.score_key + "/"
        for key, chunks in self._scores.items():
            if not key.startswith(prefix):
                continue
            attack = key[len(prefix) :]
            adv = torch.cat(chunks)
            metrics[f"{self.name}_auroc/{attack}"] = detection_auroc(clean, adv)
            if self.detector.is_calibrated:
                metrics[f"{self.name}_tpr/{attack}"] = tpr_at_threshold(adv, self.detector.threshold)
        engine.state.metrics.update(metrics)
        epoch = engine.state.epoch
        for k, v in metrics.items():
            self.logger.info(f"epoch {epoch}: {k} = {v:.4f}")
            if self.summary_writer is not None:
                self.summary_writer.add_scalar(k, v, epoch)
