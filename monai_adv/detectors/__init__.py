"""Unsupervised adversarial detectors: fitted on clean data only, scored on the prediction's own forward pass."""

from monai_adv.detectors.base import (
    DETECTOR_FILE_FORMAT,
    AdversarialDetector,
    NetworkMismatchError,
    load_detector,
    network_fingerprint,
)
from monai_adv.detectors.features import PENULTIMATE, FeatureHooks, pool_features, resolve_layers, split_batch
from monai_adv.detectors.knn import KNNDetector
from monai_adv.detectors.mahalanobis import MahalanobisDetector, ledoit_wolf_shrinkage, shrunk_covariance

__all__ = [
    "AdversarialDetector",
    "MahalanobisDetector",
    "KNNDetector",
    "load_detector",
    "network_fingerprint",
    "NetworkMismatchError",
    "DETECTOR_FILE_FORMAT",
    "FeatureHooks",
    "PENULTIMATE",
    "pool_features",
    "resolve_layers",
    "split_batch",
    "ledoit_wolf_shrinkage",
    "shrunk_covariance",
]
