"""Output-space scores: how sure the classifier is, read from its logits alone.

An attack stopped at a small eps leaves the input just across the decision boundary, where the
classifier is unsure: a small logit margin, a low maximum softmax (Hendrycks & Gimpel, ICLR 2017) or a
high free energy (Liu et al., NeurIPS 2020). Fitted on nothing but clean data's calibration, these see
the small-eps regime that feature outlier scores miss; a large-eps attack overshoots into
over-confidence, which a two-sided test in :class:`~monai_adv.detectors.CombinedDetector` also flags.
Margin-based rejection on an adversarially trained network is the classical robust-rejection
baseline (Stutz et al., ICML 2020; Pang et al., CVPR 2022).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from monai_adv.detectors.base import AdversarialDetector
from monai_adv.detectors.features import OUTPUT

__all__ = ["OutputDetector", "OUTPUT_SCORES", "output_score"]

#: the output scores :class:`OutputDetector` computes
OUTPUT_SCORES = ("margin", "max_softmax", "energy")


def output_score(logits: torch.Tensor, statistic: str = "margin", temperature: float = 1.0) -> torch.Tensor:
    """An uncertainty score per item from class logits ``(B, K)``; higher means less sure.

    - ``"margin"``: ``-(z_(1) - z_(2))``, the gap between the two largest logits, negated.
    - ``"max_softmax"``: ``-max_k softmax(z / T)_k``.
    - ``"energy"``: ``-T logsumexp(z / T)`` (the free energy).

    Differentiable (the margin through the two selected logits).

    Raises:
        ValueError: for an unknown statistic, a temperature <= 0, or logits that are not ``(B, K)`` with
            ``K >= 2``.
    """
    if statistic not in OUTPUT_SCORES:
        raise ValueError(f"statistic must be one of {OUTPUT_SCORES}, got {statistic!r}.")
    if not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}.")
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(
            f"output scores need class logits (B, K) with K >= 2, got shape {tuple(logits.shape)}."
        )
    if statistic == "margin":
        top2 = logits.topk(2, dim=1).values
        return -(top2[:, 0] - top2[:, 1])
    if statistic == "max_softmax":
        return -torch.softmax(logits / temperature, dim=1).max(dim=1).values
    return -temperature * torch.logsumexp(logits / temperature, dim=1)


class OutputDetector(AdversarialDetector):
    """A detector that scores the network's logits: margin, maximum softmax or energy.

    Reads the network's output (the layer ``"output"``) in the prediction's own forward pass; fitting
    records only the number of classes and the network's fingerprint (the score has no parameters), and
    :meth:`calibrate` sets the threshold on clean validation data as for every detector.

    Args:
        network: the classifier.
        layers: must be ``None`` (or ``"output"``): the detector reads the network's output.
        statistic: ``"margin"`` (default), ``"max_softmax"`` or ``"energy"`` (see :func:`output_score`).
        temperature: the softmax temperature of ``"max_softmax"`` and ``"energy"``.
        kwargs: ``output_transform``, ``image_key``, ``label_key``, ``progress``, ``amp``.

    Raises:
        ValueError: for an unknown statistic or a temperature <= 0.

    Example::

        det = OutputDetector(net, statistic="margin").fit(clean_loader)
        det.calibrate(val_loader, fpr=0.05)   # refer the 5% least sure clean images
    """

    _config_keys = ("statistic", "temperature")

    def __init__(
        self,
        network: nn.Module,
        layers: Any = None,
        statistic: str = "margin",
        temperature: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if layers not in (None, OUTPUT, [OUTPUT]):
            raise ValueError(f"an OutputDetector reads the network's output only; got layers={layers!r}.")
        output_score(torch.zeros(1, 2), statistic, temperature)  # validates both
        super().__init__(network, [OUTPUT], **kwargs)
        self.statistic = statistic
        self.temperature = float(temperature)

    def _fit_layer(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> dict[str, torch.Tensor]:
        if features.shape[1] < 2:
            raise ValueError(
                f"the network outputs {features.shape[1]} value per item; output scores need K >= 2 class logits."
            )
        return {}

    def _score_layer(self, state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        return output_score(features, self.statistic, self.temperature)
