"""Getting the adversarial trainers' per-iteration values into MONAI's stats handlers and ignite metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from ignite.metrics import Average, Metric

from monai_adv.keys import AdvTrainingKeys
from monai_adv.utils import first_output

__all__ = ["training_stats", "adversarial_training_metrics"]


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().reshape(-1)[0]) if value.numel() >= 1 else None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def training_stats(output: Any, keys: Sequence[str] = AdvTrainingKeys.SCALARS) -> dict[str, float]:
    """The scalar per-iteration values of an adversarial trainer's output, as ``{name: float}``.

    Use as the ``output_transform`` of MONAI's ``StatsHandler`` / ``TensorBoardStatsHandler`` (which log
    every entry of a dict) or of ignite's ``ProgressBar``::

        StatsHandler(name="train", output_transform=training_stats, tag_name="train")
        TensorBoardStatsHandler(log_dir, output_transform=training_stats)

    Works on the plain output dict and on MONAI's decollated list of per-item dicts. With the default
    keys, SSAT's pseudo-label class shares are added as ``pseudo_label_histogram/<class index>``.

    Args:
        output: ``engine.state.output``.
        keys: the names to pick (those missing in this iteration are skipped).
    """
    first = first_output(output)
    if first is None:
        return {}
    stats = {}
    for k in keys:
        if k in first:
            v = _scalar(first[k])
            if v is not None:
                stats[k] = v
    hist = first.get(AdvTrainingKeys.PSEUDO_HISTOGRAM)
    if isinstance(hist, torch.Tensor) and keys is AdvTrainingKeys.SCALARS:
        # the pseudo-labels' class shares, one scalar per class: a collapse shows as one share -> 1
        for i, v in enumerate(hist.detach().reshape(-1).tolist()):
            stats[f"{AdvTrainingKeys.PSEUDO_HISTOGRAM}/{i}"] = float(v)
    return stats


class _KeyTransform:
    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, output: Any) -> torch.Tensor:
        first = first_output(output)
        value = float("nan") if first is None else _scalar(first.get(self.key))
        return torch.tensor(float("nan") if value is None else value, dtype=torch.float64)


def adversarial_training_metrics(
    keys: Sequence[str] = (
        AdvTrainingKeys.LOSS_LABELED,
        AdvTrainingKeys.LOSS_UNLABELED,
        AdvTrainingKeys.PSEUDO_CONFIDENCE,
        AdvTrainingKeys.ATTACK_SUCCESS,
    ),
) -> dict[str, Metric]:
    """Epoch averages of the per-iteration values, as ignite metrics (reduced across DDP ranks).

    Pass them as a trainer's ``key_train_metric`` / ``additional_metrics``; each lands in
    ``engine.state.metrics[key]`` at epoch end, where ``StatsHandler`` and ``TensorBoardStatsHandler``
    log it. Under ``torch.distributed`` ignite's ``Average`` all-reduces its sum and count.

    Args:
        keys: names from :class:`~monai_adv.engines.trainers.AdvTrainingKeys` to average.
    """
    return {k: Average(output_transform=_KeyTransform(k)) for k in keys}
