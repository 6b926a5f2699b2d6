"""Metrics: per-class quality, detection quality (AUROC, TPR at a threshold), the system adversarial risk,
and segmentation quality per class (Dice, Hausdorff distance)."""

from monai_adv.metrics.classification import (
    DEGENERATE_FRACTION,
    classification_summary,
    confusion_matrix,
    per_class_recall,
)
from monai_adv.metrics.detection import detection_auroc, detection_roc_curve, tpr_at_fpr, tpr_at_threshold
from monai_adv.metrics.risk import RISK_KEYS, AdversarialRiskMetric, compute_adversarial_risk, risk_inputs
from monai_adv.metrics.segmentation import (
    SegmentationDiceMetric,
    SegmentationHausdorffMetric,
    SegmentationOutputTransform,
    dense_indices,
    one_hot_masks,
)

__all__ = [
    "AdversarialRiskMetric",
    "RISK_KEYS",
    "compute_adversarial_risk",
    "risk_inputs",
    "detection_auroc",
    "detection_roc_curve",
    "tpr_at_fpr",
    "tpr_at_threshold",
    "classification_summary",
    "confusion_matrix",
    "per_class_recall",
    "DEGENERATE_FRACTION",
    "SegmentationDiceMetric",
    "SegmentationHausdorffMetric",
    "SegmentationOutputTransform",
    "dense_indices",
    "one_hot_masks",
]
