"""Plots: accuracy against eps, detection ROC curves, adversarial risk."""

from monai_adv.visualize.plots import (
    plot_accuracy_vs_eps,
    plot_confusion_matrix,
    plot_risk,
    plot_roc_curves,
    save_figure,
)

__all__ = ["plot_accuracy_vs_eps", "plot_roc_curves", "plot_risk", "plot_confusion_matrix", "save_figure"]
