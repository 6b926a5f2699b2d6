"""Ignite handlers: unsupervised adversarial detection, the adversarial-risk metric, the robustness report."""

from monai_adv.handlers.keys import RobustKeys
from monai_adv.handlers.risk import AdversarialRisk, gather_output, risk_output_transform

__all__ = ["RobustKeys", "AdversarialRisk", "gather_output", "risk_output_transform"]
