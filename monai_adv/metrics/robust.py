"""Metric handlers of the robust evaluators: MONAI's ``IgniteMetricHandler`` with per-call keyword arguments,
and the per-image worst case over several attacks.

The robust evaluators put one MONAI metric per variant (clean, each attack) in ``engine.state.metrics``
(``"accuracy/<attack>"``, ``"dice/<attack>"``, ...), with the per-image values in
``engine.state.metric_details``. :class:`WorstCaseMetricHandler` adds the worst case over the attacks,
chosen per image: the number an attacker who may pick, for each image, the attack that hurts it most
would obtain (the per-image worst case of AutoAttack, Croce & Hein, ICML 2020, and of the
segmentation ensembles of Croce, Singh & Hein, ECCV 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.handlers import IgniteMetricHandler
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["OutputMetricHandler", "WorstCaseMetricHandler", "worst_case_per_image"]


class OutputMetricHandler(IgniteMetricHandler):
    """MONAI's ``IgniteMetricHandler`` whose output transform may also pass keyword arguments, or skip an iteration.

    The output transform returns ``(y_pred, y)`` as for MONAI's handler, ``(y_pred, y, kwargs)`` with
    a dict of keyword arguments for the metric (``{"spacing": [...]}`` for a Hausdorff distance with
    per-image voxel spacing), or None when the iteration has nothing to measure (an unlabeled batch).
    An epoch without any measured image gives ``nan`` (and an empty ``metric_details`` entry) rather
    than an error.

    Args:
        metric_fn: the MONAI ``CumulativeIterationMetric``.
        output_transform: maps ``engine.state.output`` to the tuples above.
        save_details: save the per-image values to ``engine.state.metric_details[name]``.
    """

    def __init__(
        self, metric_fn: Any, output_transform: Any = lambda x: x, save_details: bool = True
    ) -> None:
        super().__init__(metric_fn=metric_fn, output_transform=output_transform, save_details=save_details)

    def update(self, output: Sequence[Any] | None) -> None:  # type: ignore[override]
        """Add one iteration's values: ``(y_pred, y)``, ``(y_pred, y, kwargs)``, or nothing for None."""
        if output is None:
            return
        if len(output) == 3:
            y_pred, y, kwargs = output
            self.metric_fn(y_pred, y, **dict(kwargs or {}))
            return
        super().update(output)

    def compute(self) -> Any:
        """MONAI's value; ``nan`` (and empty details) when no image was measured."""
        buffer = self.metric_fn.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            self._is_reduced = True
            if self.save_details and self._engine is not None and self._name is not None:
                self._engine.state.metric_details[self._name] = torch.zeros(0, 1)
            return float("nan")
        return super().compute()


def worst_case_per_image(values: Sequence[Any], mode: str = "min") -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the variant whose values are worst on that image, and those values.

    Args:
        values: one ``(N, C)`` tensor per variant (attack): per image and class (``nan`` where a class
            does not count), the same images in the same order.
        mode: ``"min"`` (lower is worse: accuracy, Dice) or ``"max"`` (higher is worse: distances).

    Returns:
        ``(selected (N, C), choice (N,))``: the chosen variant's values per image, and its index.
        An image is judged by the mean of its non-nan values; an image with no value in any variant
        takes the first.

    Raises:
        ValueError: for no variants, an unknown mode, or tensors of different shapes.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
    if len(values) == 0:
        raise ValueError("the worst case needs at least one variant.")
    tensors = [torch.as_tensor(v).detach().float().cpu() for v in values]
    tensors = [t.reshape(t.shape[0], -1) if t.ndim != 2 else t for t in tensors]
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(
            f"the variants hold values of different shapes {sorted(shapes)}: not the same images."
        )
    stacked = torch.stack(tensors)  # (V, N, C)
    counts = (~torch.isnan(stacked)).sum(dim=2)
    per_image = torch.nan_to_num(stacked, nan=0.0).sum(dim=2) / counts.clamp_min(1)
    fill = float("inf") if mode == "min" else -float("inf")
    per_image = torch.where(counts > 0, per_image, torch.full_like(per_image, fill))
    choice = per_image.argmin(dim=0) if mode == "min" else per_image.argmax(dim=0)
    selected = stacked[choice, torch.arange(stacked.shape[1])]
    return selected, choice


class WorstCaseMetricHandler(Metric):
    """The per-image worst case over other metric handlers' per-image values, as an ignite metric.

    At epoch end it reads the per-image values that the ``sources`` (MONAI ``IgniteMetricHandler``\\ s
    attached *before* it, with ``save_details=True``) left in ``engine.state.metric_details``, takes
    for each image the source worst on that image (:func:`worst_case_per_image`), saves those values as
    its own details and returns their MONAI reduction (for Dice: the mean over images of the mean over
    the classes that count, as ``DiceMetric`` reports). The index of the chosen source per image is
    kept in :attr:`choice` (and the source names in :attr:`sources`). It does nothing per iteration.

    Args:
        sources: the names of the metrics to take the worst of (e.g. ``["dice/fgsm", "dice/pgd"]``).
        mode: ``"min"`` (accuracy, Dice) or ``"max"`` (Hausdorff distance).
        reduction: MONAI's reduction of the selected values.

    Raises:
        ValueError: for no sources or an unknown mode.
        RuntimeError: (at epoch end) when a source's details are missing: attach the sources first.
    """

    required_output_keys = None

    def __init__(
        self,
        sources: Sequence[str],
        mode: str = "min",
        reduction: MetricReduction | str = MetricReduction.MEAN,
    ) -> None:
        if len(sources) == 0:
            raise ValueError("WorstCaseMetricHandler needs at least one source metric.")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}.")
        self.sources = list(sources)
        self.mode = mode
        self.reduction = reduction
        self.choice: torch.Tensor | None = None
        self._engine: Engine | None = None
        self._name: str | None = None
        super().__init__(output_transform=lambda output: None)

    def reset(self) -> None:
        self.choice = None

    def update(self, output: Any) -> None:
        """Nothing to do per iteration: the sources accumulate the values."""

    def iteration_completed(self, engine: Engine) -> None:
        """Nothing to do per iteration (the engine output is not read)."""

    def compute(self) -> Any:
        engine = self._engine
        details = getattr(getattr(engine, "state", None), "metric_details", None)
        if details is None or any(s not in details for s in self.sources):
            missing = [s for s in self.sources if details is None or s not in details]
            raise RuntimeError(
                f"the worst case {self._name!r} needs the per-image values of {missing}: attach those metric "
                "handlers (with save_details=True) before it."
            )
        values = [torch.as_tensor(details[s]) for s in self.sources]
        if values[0].numel() == 0:
            self.choice = torch.zeros(0, dtype=torch.long)
            details[self._name] = torch.zeros(0, 1)
            return float("nan")
        selected, self.choice = worst_case_per_image(values, self.mode)
        details[self._name] = selected
        f, _ = do_metric_reduction(selected, self.reduction)
        f = f.squeeze()
        return float(f) if f.ndim == 0 else f

    def attach(self, engine: Engine, name: str, usage: Any = None) -> None:  # type: ignore[override]
        """Attach to ``engine`` under ``name`` (after the source metrics)."""
        if usage is None:
            super().attach(engine, name)
        else:
            super().attach(engine, name, usage)
        self._engine = engine
        self._name = name
        if not hasattr(engine.state, "metric_details"):
            engine.state.metric_details = {}  # type: ignore[attr-defined]
