"""Detectors by name, for configs and command lines: ``make_detector("combined", network)``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn as nn

from monai_adv.detectors.base import AdversarialDetector
from monai_adv.detectors.combined import CombinedDetector
from monai_adv.detectors.knn import KNNDetector
from monai_adv.detectors.mahalanobis import MahalanobisDetector
from monai_adv.detectors.output import OutputDetector
from monai_adv.detectors.squeezing import FeatureSqueezingDetector

__all__ = ["DETECTOR_NAMES", "make_detector"]

#: what each name builds (the ``layers`` argument goes to the feature detectors)
DETECTOR_NAMES = {
    "mahalanobis": "MahalanobisDetector(layers): class-conditional Gaussians of the features (Lee et al. 2018)",
    "knn": "KNNDetector(layers): distance to the k-th nearest clean feature (Sun et al. 2022)",
    "margin": "OutputDetector('margin'): the gap between the two largest logits",
    "max_softmax": "OutputDetector('max_softmax'): the largest softmax probability (Hendrycks & Gimpel 2017)",
    "energy": "OutputDetector('energy'): the free energy of the logits (Liu et al. 2020)",
    "squeezing": "FeatureSqueezingDetector: the softmax change under bit-depth reduction and median filtering",
    "combined": "CombinedDetector.standard(layers): Mahalanobis + two-sided margin + squeezing, one FPR",
}


def make_detector(
    name: str,
    network: nn.Module,
    layers: str | Sequence[str] | None = None,
    value_range: Sequence[float] | None = None,
    **kwargs: Any,
) -> AdversarialDetector:
    """The detector called ``name`` (one of :data:`DETECTOR_NAMES`) on ``network``, not yet fitted.

    Args:
        name: the detector's name.
        network: the classifier.
        layers: the feature layers of ``"mahalanobis"``, ``"knn"`` and ``"combined"`` (``None``: the
            penultimate features); ignored by the output and squeezing detectors.
        value_range: the input intensity range of ``"squeezing"`` and ``"combined"`` (``None``: read from
            the clean fit data).
        kwargs: options of every detector (``progress``, ``amp``, ``output_transform``, ...).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    key = str(name).lower().replace("-", "_")
    if key == "mahalanobis":
        return MahalanobisDetector(network, layers, **kwargs)
    if key == "knn":
        return KNNDetector(network, layers, **kwargs)
    if key in ("margin", "max_softmax", "energy"):
        return OutputDetector(network, statistic=key, **kwargs)
    if key == "squeezing":
        return FeatureSqueezingDetector(network, value_range=value_range, **kwargs)
    if key == "combined":
        return CombinedDetector.standard(network, feature_layers=layers, value_range=value_range, **kwargs)
    raise ValueError(f"unknown detector {name!r}; the detectors are: {', '.join(DETECTOR_NAMES)}.")
