"""Ignite handlers: unsupervised adversarial detection, the adversarial-risk metric, the robustness report
(one ``report.json`` schema for classification and segmentation), and the exact, resumable checkpoint handler."""

from monai_adv.handlers.checkpoint import (
    RESUME_KEY,
    NonFiniteLossError,
    ResumableCheckpointHandler,
    TorchRNGState,
)
from monai_adv.handlers.detection import AdversarialDetectionHandler
from monai_adv.handlers.keys import RobustKeys
from monai_adv.handlers.report import RobustnessReport
from monai_adv.handlers.risk import AdversarialRisk, gather_output, risk_output_transform
from monai_adv.handlers.segmentation_report import SegmentationRobustnessReport

__all__ = [
    "RobustKeys",
    "AdversarialDetectionHandler",
    "AdversarialRisk",
    "RobustnessReport",
    "SegmentationRobustnessReport",
    "gather_output",
    "risk_output_transform",
    "ResumableCheckpointHandler",
    "TorchRNGState",
    "NonFiniteLossError",
    "RESUME_KEY",
]
