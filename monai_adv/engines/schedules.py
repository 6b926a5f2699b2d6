"""Learning-rate schedules for the bundles, as ``LambdaLR`` factors that resume and extend cleanly."""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["one_cycle_schedule"]


def one_cycle_schedule(
    total_steps: int, pct_start: float = 0.2, div_factor: float = 25.0, final_div_factor: float = 1e4
) -> Callable[[int], float]:
    """The one-cycle policy (Smith & Topin 2019) as a factor of the base LR, for ``torch.optim.lr_scheduler.LambdaLR``.

    The factor rises along a cosine from ``1 / div_factor`` to 1 over the first ``pct_start`` of the
    steps, then falls along a cosine to ``1 / (div_factor * final_div_factor)``, as
    ``torch.optim.lr_scheduler.OneCycleLR`` does with its defaults. Unlike ``OneCycleLR`` it keeps no
    step count of its own in a checkpoint (``LambdaLR`` saves only its position), so a run resumed
    with more epochs continues instead of failing with "Tried to step N times": past
    ``total_steps`` the factor stays at its final value.

    Args:
        total_steps: steps of the whole schedule (epochs x iterations per epoch), >= 1.
        pct_start: share of the steps spent rising, in (0, 1).
        div_factor: initial LR = base LR / div_factor.
        final_div_factor: final LR = initial LR / final_div_factor.

    Raises:
        ValueError: for total_steps < 1 or pct_start outside (0, 1).
    """
    if int(total_steps) < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}.")
    if not 0.0 < float(pct_start) < 1.0:
        raise ValueError(f"pct_start must lie in (0, 1), got {pct_start!r}.")
    total = int(total_steps)
    up = max(1.0, float(pct_start) * total - 1.0)
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)

    def factor(step: int) -> float:
        def cos(a: float, b: float, t: float) -> float:
            return b + (a - b) * (1.0 + math.cos(math.pi * min(max(t, 0.0), 1.0))) / 2.0

        if step <= up:
            return cos(start, 1.0, step / up)
        return cos(1.0, end, (step - up) / max(total - 1.0 - up, 1.0))

    return factor
