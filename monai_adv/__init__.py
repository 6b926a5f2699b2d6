"""monai-adv: adversarial attacks, defences, detection and risk for MONAI medical imaging classifiers."""

#: the package version; pyproject.toml reads it from here, and the OCT bundle's metadata.json names it
__version__ = "0.1.0"

__all__ = ["__version__"]
