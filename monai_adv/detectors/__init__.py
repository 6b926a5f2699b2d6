"""Unsupervised adversarial detectors: fitted on clean data only, scored on the prediction's own forward pass.

Three kinds of score, each a detector: feature outliers (:class:`MahalanobisDetector`, :class:`KNNDetector`),
output uncertainty (:class:`OutputDetector`: margin, maximum softmax, energy) and input consistency
(:class:`FeatureSqueezingDetector`); :class:`CombinedDetector` combines any of them at one false-positive rate.
"""

from monai_adv.detectors.base import (
    DETECTOR_FILE_FORMAT,
    AdversarialDetector,
    NetworkMismatchError,
    load_detector,
    min_variance_weights,
    network_fingerprint,
)
from monai_adv.detectors.combined import COMBINATION_RULES, CombinedDetector
from monai_adv.detectors.features import (
    OUTPUT,
    PENULTIMATE,
    FeatureHooks,
    pool_features,
    resolve_layers,
    split_batch,
)
from monai_adv.detectors.knn import KNNDetector
from monai_adv.detectors.mahalanobis import MahalanobisDetector, ledoit_wolf_shrinkage, shrunk_covariance
from monai_adv.detectors.names import DETECTOR_NAMES, make_detector
from monai_adv.detectors.output import OUTPUT_SCORES, OutputDetector, output_score
from monai_adv.detectors.squeezing import FeatureSqueezingDetector, bit_depth_squeeze, median_squeeze

__all__ = [
    "AdversarialDetector",
    "MahalanobisDetector",
    "KNNDetector",
    "OutputDetector",
    "FeatureSqueezingDetector",
    "CombinedDetector",
    "make_detector",
    "DETECTOR_NAMES",
    "COMBINATION_RULES",
    "OUTPUT_SCORES",
    "output_score",
    "bit_depth_squeeze",
    "median_squeeze",
    "load_detector",
    "network_fingerprint",
    "NetworkMismatchError",
    "DETECTOR_FILE_FORMAT",
    "FeatureHooks",
    "PENULTIMATE",
    "OUTPUT",
    "pool_features",
    "resolve_layers",
    "split_batch",
    "ledoit_wolf_shrinkage",
    "shrunk_covariance",
    "min_variance_weights",
]
