"""The segmentation plots: Dice against eps and the overlay gallery."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from monai_adv.visualize import label_colors, plot_dice_vs_eps, plot_segmentation_gallery


def test_label_colors_leave_the_background_transparent():
    c = label_colors(13)
    assert c.shape == (13, 4) and c[0, 3] == 0.0 and (c[1:, 3] == 1.0).all()
    assert len({tuple(v) for v in c[1:]}) == 12
    with pytest.raises(ValueError):
        label_colors(0)


def test_dice_vs_eps_starts_at_the_clean_dice():
    fig = plot_dice_vs_eps({"PGD": [(0.004, 0.5), (0.002, 0.7)], "FGSM": [(0.004, 0.6)]}, clean_dice=0.9)
    lines = fig.axes[0].get_lines()
    assert [list(line.get_xdata()) for line in lines] == [[0.0, 0.002, 0.004], [0.0, 0.004]]
    assert list(lines[0].get_ydata()) == [0.9, 0.7, 0.5]
    assert fig.axes[0].get_ylabel() == "mean Dice"
    plt.close(fig)
    with pytest.raises(ValueError, match="no Dice curves"):
        plot_dice_vs_eps({})


def test_gallery_layout_overlays_and_errors():
    rng = np.random.default_rng(0)
    images = [torch.rand(1, 8, 8), rng.random((8, 8))]
    labels = [torch.zeros(1, 8, 8, dtype=torch.long), np.ones((8, 8), dtype=np.int64) * 2]
    preds = {"clean": labels, "pgd": [torch.ones(8, 8, dtype=torch.long)] * 2}
    fig = plot_segmentation_gallery(
        images,
        labels,
        preds,
        class_names=["bg", "a", "b"],
        adversarial_images={"pgd": [torch.rand(1, 8, 8)] * 2},
    )
    axes = np.array(fig.axes[: 2 * 4]).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["image", "label", "clean", "pgd"]
    # an overlay: the label of row 2 (class 2) in its colour, at half opacity
    overlay = axes[1, 1].get_images()[1].get_array()
    np.testing.assert_allclose(overlay[0, 0], [*label_colors(3)[2][:3], 0.5])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]  # class 0 is not in the legend
    plt.close(fig)
    # a 3D volume shows its middle slice
    vol = torch.zeros(1, 8, 8, 5)
    vol[..., 2] = 1
    fig = plot_segmentation_gallery([vol], [torch.zeros(1, 8, 8, 5)], {"clean": [torch.zeros(1, 8, 8, 5)]})
    assert fig.axes[0].get_images()[0].get_array().min() == 1.0
    plt.close(fig)
    with pytest.raises(ValueError, match="no images"):
        plot_segmentation_gallery([], [], {})
    with pytest.raises(ValueError, match="as many labels"):
        plot_segmentation_gallery(images, labels[:1], preds)
    with pytest.raises(ValueError, match="different shapes"):
        plot_segmentation_gallery(images, [np.zeros((4, 4))] * 2, preds)
