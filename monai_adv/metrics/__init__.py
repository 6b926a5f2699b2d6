"""Metrics: per-class quality and accuracy (softmax or multi-label), detection quality (AUROC, TPR at a
threshold), the system adversarial risk, segmentation quality per class (Dice, Hausdorff distance), and
the metric handlers of the robust evaluators (per-image worst case over attacks)."""

from monai_adv.metrics.classification import (
    ACTIVATIONS,
    DEGENERATE_FRACTION,
    ClassificationAccuracyMetric,
    ClassificationOutputTransform,
    check_activation,
    classification_correctness,
    classification_summary,
    confusion_matrix,
    per_class_recall,
)
from monai_adv.metrics.detection import (
    RISK_PRIORS,
    detection_auroc,
    detection_roc_curve,
    detection_summary,
    referral_curve,
    tpr_at_fpr,
    tpr_at_threshold,
)
from monai_adv.metrics.risk import RISK_KEYS, AdversarialRiskMetric, compute_adversarial_risk, risk_inputs
from monai_adv.metrics.robust import OutputMetricHandler, WorstCaseMetricHandler, worst_case_per_image
from monai_adv.metrics.segmentation import (
    SegmentationDiceMetric,
    SegmentationHausdorffMetric,
    SegmentationOutputTransform,
    SpacingType,
    dense_indices,
    image_spacing,
    multilabel_masks,
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
    "detection_summary",
    "referral_curve",
    "RISK_PRIORS",
    "classification_summary",
    "confusion_matrix",
    "per_class_recall",
    "DEGENERATE_FRACTION",
    "ACTIVATIONS",
    "check_activation",
    "classification_correctness",
    "ClassificationAccuracyMetric",
    "ClassificationOutputTransform",
    "OutputMetricHandler",
    "WorstCaseMetricHandler",
    "worst_case_per_image",
    "SegmentationDiceMetric",
    "SegmentationHausdorffMetric",
    "SegmentationOutputTransform",
    "dense_indices",
    "one_hot_masks",
    "multilabel_masks",
    "image_spacing",
    "SpacingType",
]
