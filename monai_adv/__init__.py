"""monai-adv: adversarial attacks, defences, detection and risk for MONAI medical imaging classifiers."""

__version__ = "0.1.0"
