"""Plots: a headline metric (accuracy, Dice) against eps, detection ROC curves, adversarial risk, segmentation
overlay galleries."""

from monai_adv.visualize.plots import (
    plot_accuracy_vs_eps,
    plot_confusion_matrix,
    plot_metric_vs_eps,
    plot_referral_curve,
    plot_risk,
    plot_roc_curves,
    save_figure,
)
from monai_adv.visualize.segmentation import label_colors, plot_dice_vs_eps, plot_segmentation_gallery

__all__ = [
    "plot_metric_vs_eps",
    "plot_accuracy_vs_eps",
    "plot_roc_curves",
    "plot_risk",
    "plot_referral_curve",
    "plot_confusion_matrix",
    "save_figure",
    "plot_dice_vs_eps",
    "plot_segmentation_gallery",
    "label_colors",
]
