"""Metrics: detection quality (AUROC, TPR at a threshold) and the system adversarial risk."""

from monai_adv.metrics.detection import detection_auroc, detection_roc_curve, tpr_at_fpr, tpr_at_threshold

__all__ = ["detection_auroc", "detection_roc_curve", "tpr_at_fpr", "tpr_at_threshold"]
