"""``SegmentationRobustnessReport``: the former segmentation report handler, now
:class:`~monai_adv.handlers.RobustnessReport` (one report schema for both tasks). Kept for one release."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from monai_adv.handlers.report import RobustnessReport

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["SegmentationRobustnessReport"]


class SegmentationRobustnessReport(RobustnessReport):
    """Deprecated: use :class:`~monai_adv.handlers.RobustnessReport`, which reads the task from the engine.

    The same handler with the former argument order (``output_dir, class_names, title, plots,
    gallery_items, gallery_attacks, summary_writer``); it writes the one ``report.json`` schema of
    :class:`~monai_adv.handlers.RobustnessReport` and refuses an engine that is not a segmentation
    evaluator, as it did.

    Raises:
        ValueError: for a negative ``gallery_items``; at run time, for an engine without per-class results.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] | None = None,
        title: str = "",
        plots: bool = True,
        gallery_items: int = 4,
        gallery_attacks: Sequence[str] | None = None,
        summary_writer: Any | None = None,
        **kwargs: Any,
    ) -> None:
        warnings.warn(
            "SegmentationRobustnessReport is deprecated: use monai_adv.handlers.RobustnessReport, which serves "
            "both tasks.",
            DeprecationWarning,
            stacklevel=2,
        )
        super().__init__(
            output_dir,
            class_names=class_names,
            title=title,
            plots=plots,
            gallery_items=gallery_items,
            gallery_attacks=gallery_attacks,
            summary_writer=summary_writer,
            **kwargs,
        )

    def _check_engine(self, engine: Engine) -> None:
        if self.task_of(engine) != "segmentation":
            raise ValueError(
                "SegmentationRobustnessReport reads a RobustSegmentationEvaluator (monai_adv.engines); "
                f"got {type(engine).__name__}."
            )

    def _collect(self, engine: Engine) -> None:
        self._check_engine(engine)
        super()._collect(engine)

    def compute(self, engine: Engine) -> dict[str, Any]:
        """:meth:`RobustnessReport.compute`, for a segmentation evaluator only.

        Raises:
            ValueError: when the engine is not a :class:`~monai_adv.engines.RobustSegmentationEvaluator`.
        """
        self._check_engine(engine)
        return super().compute(engine)
