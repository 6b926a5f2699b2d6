"""Summary statistics the experiments' reports share."""

from __future__ import annotations

import statistics
from collections.abc import Iterable

__all__ = ["mean_sd"]


def mean_sd(values: Iterable[float | None], scale: float = 1.0, digits: int = 3) -> str:
    """``"mean ± sd"`` of the values that are not None, each times ``scale``; one value alone, ``"-"`` for none."""
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{scale * v[0]:.{digits}f}"
    return f"{scale * statistics.mean(v):.{digits}f} ± {scale * statistics.stdev(v):.{digits}f}"
