"""The adversarial-example gallery draws what it is given and refuses what does not fit."""

import matplotlib.pyplot as plt
import pytest
import torch

from monai_adv.visualize.gallery import plot_attack_gallery


def test_gallery_panels_and_amplification():
    clean = torch.full((1, 8, 8), 0.5)
    adv = clean.clone()
    adv[0, 2, 3] += 0.01
    fig = plot_attack_gallery(clean, {"FGSM": adv, "C&W": clean.clone()}, {"clean": "CNV", "FGSM": "DME"})
    axes = fig.axes
    assert len(axes) == 6
    titles = [ax.get_title() for ax in axes]
    assert titles[0] == "clean: CNV" and titles[2] == "FGSM: DME"
    assert titles[1] == "FGSM: perturbation x50"  # 0.01 fills half the unit grey range: x50
    assert titles[4] == "C&W: unchanged"
    shown = axes[1].images[0].get_array()
    assert float(shown.max()) == pytest.approx(1.0) and float(shown.min()) == 0.0
    plt.close(fig)


def test_gallery_volume_middle_slice_and_errors():
    vol = torch.rand(1, 4, 6, 6)
    fig = plot_attack_gallery(vol, {"PGD": vol * 0.9}, spatial_dims=3)
    assert fig.axes[0].images[0].get_array().shape == (6, 6)
    plt.close(fig)
    with pytest.raises(ValueError, match="no adversarial"):
        plot_attack_gallery(vol, {}, spatial_dims=3)
    with pytest.raises(ValueError, match="shape"):
        plot_attack_gallery(torch.rand(1, 8, 8), {"x": torch.rand(1, 6, 8)})
