"""Inference that keeps its work: the files that read are predicted, the ones that do not are listed."""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from monai_adv.bundle.errors import BundleInputError, input_error
from monai_adv.distributed import is_main_process
from monai_adv.io import atomic_write_text, output_set

__all__ = ["readable_datalist", "ON_ERROR"]

logger = logging.getLogger(__name__)

#: what inference does with a file that cannot be read: leave it out (and list it), or stop first
ON_ERROR = ("skip", "raise")


def readable_datalist(
    datalist: Sequence[dict[str, Any]],
    transform: Callable[[dict[str, Any]], Any],
    failures_file: str | os.PathLike | None = None,
    on_error: str = "skip",
) -> list[dict[str, Any]]:
    """The items of ``datalist`` that ``transform`` (the inference preprocessing) can read, checked first.

    Every item is read and preprocessed once, before any prediction (and discarded: memory stays flat).
    With ``on_error="skip"`` the unreadable ones are left out, each logged as one WARNING line, and
    listed with their errors in ``failures_file`` (CSV: ``image, frame, error``; written, header only,
    also when nothing failed, so that an old list never stands for a new run). The list belongs to the
    run's :class:`~monai_adv.io.OutputSet` of its folder: it is written into the set's fresh folder and
    moved into place with the predictions or masks when the run completes
    (:class:`~monai_adv.bundle.PredictionWriter`, :class:`~monai_adv.bundle.MaskWriter`). With
    ``on_error="raise"`` the run stops before any work, naming every unreadable file.

    Args:
        datalist: items ``{"image": path[, "frame": i]}``.
        transform: the preprocessing applied to an item (loading included).
        failures_file: where the failures list goes (rank 0 writes it), or ``None``.
        on_error: ``"skip"`` or ``"raise"``.

    Returns:
        The readable items, in order.

    Raises:
        ValueError: for a bad ``on_error``.
        BundleInputError: with ``on_error="raise"`` and a failure, or when no item is readable.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}.")
    good: list[dict[str, Any]] = []
    failures: list[tuple[str, str, str]] = []
    for item in datalist:
        try:
            transform(dict(item))
        except Exception as e:
            root: BaseException = e  # MONAI wraps it in "applying transform ...": report what it wraps
            while str(root).startswith("applying transform") and (root.__cause__ or root.__context__):
                root = root.__cause__ or root.__context__
            msg = str(root).splitlines()[0] if str(root) else type(root).__name__
            failures.append(
                (str(item.get("image")), "" if item.get("frame") is None else str(item["frame"]), msg)
            )
            continue
        good.append(item)
    if failures and on_error == "raise":
        lines = "\n".join(f"{img}{'#' + fr if fr else ''}: {m}" for img, fr, m in failures)
        raise input_error(
            BundleInputError(
                f"{len(failures)} of {len(datalist)} file(s) cannot be read, nothing was done:\n{lines}"
            )
        )
    if failures_file is not None and is_main_process():
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["image", "frame", "error"])
        w.writerows(failures)
        # part of the run's output set: moved into place with the predictions (or masks) when complete
        folder, name = os.path.split(os.path.abspath(os.fspath(failures_file)))
        atomic_write_text(output_set(folder).path(name), buf.getvalue())
    for img, fr, m in failures:
        logger.warning(f"cannot read {img}{' frame ' + fr if fr else ''}, left out: {m}")
    if failures:
        where = f"; listed in {os.fspath(failures_file)}" if failures_file is not None else ""
        logger.warning(f"{len(failures)} of {len(datalist)} item(s) unreadable and left out{where}")
    if not good:
        raise input_error(
            BundleInputError(f"none of the {len(datalist)} item(s) can be read; see the warnings above.")
        )
    return good
