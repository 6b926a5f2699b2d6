"""What the classification bundle's inference writes: ``predictions.csv``. (``report.json`` is written by
:class:`~monai_adv.handlers.RobustnessReport`; ``BundleReportWriter`` and ``bundle_report`` are deprecated.)"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_adv.apps.oct.utils import OCT_CLASSES
from monai_adv.distributed import is_main_process
from monai_adv.io import OutputSet, json_safe, named_io_error, output_set

__all__ = ["StreamedOutputWriter", "bundle_report", "BundleReportWriter", "PredictionWriter"]


def bundle_report(report: Mapping[str, Any], eps_of: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Deprecated: :class:`~monai_adv.handlers.RobustnessReport` writes ``report.json`` in the one schema.

    Returns ``report`` as it is (JSON-safe); ``eps_of`` is ignored. Kept for one release.
    """
    warnings.warn(
        "bundle_report is deprecated: RobustnessReport writes report.json in the one report schema itself.",
        DeprecationWarning,
        stacklevel=2,
    )
    return json_safe(dict(report))


class BundleReportWriter:
    """Deprecated, and does nothing: :class:`~monai_adv.handlers.RobustnessReport` writes ``report.json``
    itself, once, in the one report schema (it used to be rewritten by this handler in another layout).

    Kept for one release so that configs naming it still run; drop it from the handler list.
    """

    def __init__(self, output_dir: str | os.PathLike | None = None, *args: Any, **kwargs: Any) -> None:
        warnings.warn(
            "BundleReportWriter is deprecated and does nothing: RobustnessReport writes report.json itself; "
            "remove it from the evaluator's handlers.",
            DeprecationWarning,
            stacklevel=2,
        )
        self.output_dir = None if output_dir is None else os.fspath(output_dir)

    def attach(self, engine: Any) -> None:
        """Nothing to attach."""


class StreamedOutputWriter:
    """The collect-and-write cycle of an inference output set: a CSV of rows (and any files beside it) streamed
    into the run's :class:`~monai_adv.io.OutputSet` as they are made, and moved into place when the epoch
    completes, so ``output_dir`` holds the complete old set or the complete new one and a killed run keeps
    its work so far in its ``.partial-*`` folder.

    Subclasses give the CSV's :meth:`_header`, make the rows in :meth:`_rows` (and may write files with
    ``self._set.path(...)``, prepared in :meth:`_start`), and name what they wrote in :attr:`what`.

    Args:
        output_dir: where the set goes.
        filename: the CSV's file name.
        class_names: the class names in output order.
    """

    #: what the rows are, for the closing log line ("predictions", "masks")
    what = "rows"

    def __init__(self, output_dir: str | os.PathLike, filename: str, class_names: Sequence[str]) -> None:
        self.output_dir = os.fspath(output_dir)
        self.filename = filename
        self.class_names = [str(c) for c in class_names]
        self.rows: list[list[Any]] = []
        self._set: OutputSet | None = None
        self._stream: Any = None

    @property
    def path(self) -> str:
        """The path of the committed CSV."""
        return os.path.join(self.output_dir, self.filename)

    def attach(self, engine: Any) -> None:
        """Register the handler's event callbacks on ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _header(self) -> list[str]:
        raise NotImplementedError

    def _rows(self, engine: Any) -> list[list[Any]]:
        """The rows of one iteration (subclasses)."""
        raise NotImplementedError

    def _start(self) -> None:
        """Prepare the set's other entries at the start of an epoch (main process only)."""

    def _reset(self, engine: Any) -> None:
        self.rows = []
        if is_main_process():
            self._set = output_set(self.output_dir)
            self._start()
            if self._stream is not None:
                self._stream.close()
            self._stream = open(self._set.path(self.filename), "w", newline="")
            csv.writer(self._stream).writerow(self._header())
            self._stream.flush()

    @staticmethod
    def _meta_list(batch: Any, key: str, n: int) -> list:
        """The image metadata ``key`` of a batch's ``n`` items (``""`` where there is none)."""
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
        rows = self._rows(engine)
        self.rows += rows
        if self._stream is not None:  # streamed as made: a killed run keeps them
            try:
                csv.writer(self._stream).writerows(rows)
                self._stream.flush()
            except OSError as e:
                raise named_io_error(e, self._stream.name) from e

    def _write(self, engine: Any) -> None:
        if not is_main_process() or self._set is None:
            return
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._stream = None
        self._set.commit()
        self._set = None
        print(f"{len(self.rows)} {self.what} written to {self._written_to()}", flush=True)

    def _written_to(self) -> str:
        return self.path


class PredictionWriter(StreamedOutputWriter):
    """Writes ``predictions.csv``: one row per image with class probabilities, the predicted class and,
    when a detector scores the predictions, the adversarial score and flag.

    The rows are streamed as they are made into the run's :class:`~monai_adv.io.OutputSet` (a fresh
    ``.partial-*`` folder in ``output_dir``, where :func:`~monai_adv.bundle.readable_datalist` puts
    ``failures.csv`` too), which is moved into place when the epoch completes: ``output_dir`` holds the
    complete old set or the complete new one, never a mix, and a killed run keeps its predictions so far
    in its ``.partial-*`` folder.

    Columns: ``image``, ``frame``, ``prob_<CLASS>`` for each class, ``pred_class``, ``pred_index``,
    ``adversarial_score``, ``adversarial_flag`` (empty without a detector).

    Args:
        output_dir: where the file goes.
        filename: the file name.
        class_names: the class names in output order.
    """

    what = "predictions"

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "predictions.csv",
        class_names: Sequence[str] = OCT_CLASSES,
        score_key: str = "uad_score",
        flag_key: str = "uad_flag",
    ) -> None:
        super().__init__(output_dir, filename, class_names)
        self.score_key = score_key
        self.flag_key = flag_key

    def _header(self) -> list[str]:
        return ["image", "frame", *[f"prob_{c}" for c in self.class_names], "pred_class", "pred_index",
                "adversarial_score", "adversarial_flag"]  # fmt: skip

    def _rows(self, engine: Any) -> list[list[Any]]:
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
        rows = []
        for i in range(n):
            idx = int(probs[i].argmax())
            frame = frames[i]
            row = [names[i], "" if frame is None or frame == "" or int(frame) < 0 else int(frame)]
            row += [f"{float(p):.6f}" for p in probs[i]]
            row += [self.class_names[idx], idx]
            row.append("" if scores is None else f"{float(scores.reshape(-1)[i]):.6g}")
            row.append("" if flags is None else int(bool(flags.reshape(-1)[i])))
            rows.append(row)
        return rows
