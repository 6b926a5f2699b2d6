"""The plots: PNGs are written, what is drawn is what was given, empty or misshapen inputs are refused."""

from __future__ import annotations

import pytest

from monai_adv.visualize import plot_accuracy_vs_eps, plot_risk, plot_roc_curves, save_figure


def test_plots_write_png(tmp_path):
    figs = {
        "acc": plot_accuracy_vs_eps(
            {"PGD": [(0.01, 0.2), (0.005, 0.5)], "FGSM": [(0.01, 0.4)]}, clean_accuracy=0.9
        ),
        "roc": plot_roc_curves({"pgd": ([0.1, 0.2, 0.3], [0.25, 0.5, 0.9])}, fpr_mark=0.05),
        "risk": plot_risk({"pgd": {"risk_classifier": 0.2, "risk_detector": 0.05, "risk_system": 0.1}}),
    }
    for name, fig in figs.items():
        path = save_figure(fig, tmp_path / "sub" / f"{name}.png")
        assert open(path, "rb").read(4) == b"\x89PNG"
    # the accuracy curve starts at the clean accuracy at eps 0
    line = figs["acc"].axes[0].lines[0]
    assert list(line.get_xdata()) == [0.0, 0.005, 0.01] and list(line.get_ydata()) == [0.9, 0.5, 0.2]
    assert not [p for p in (tmp_path / "sub").iterdir() if "tmp" in p.name]


def test_plots_refuse_empty():
    for fn in (plot_accuracy_vs_eps, plot_roc_curves, plot_risk):
        with pytest.raises(ValueError, match="no "):
            fn({})


def test_confusion_matrix_counts_and_shares(tmp_path):
    from monai_adv.visualize import plot_confusion_matrix

    fig = plot_confusion_matrix([[3, 1], [0, 4]], ["CNV", "NORMAL"], title="cm")
    ax = fig.axes[0]
    assert ax.get_title() == "cm"
    assert [t.get_text() for t in ax.texts] == ["3\n(0.75)", "1\n(0.25)", "0\n(0.00)", "4\n(1.00)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CNV", "NORMAL"]
    shares = ax.images[0].get_array()
    assert float(shares[0, 0]) == pytest.approx(0.75) and float(shares[1, 1]) == 1.0
    assert open(save_figure(fig, tmp_path / "cm.png"), "rb").read(4) == b"\x89PNG"
    # an empty row (a class never seen) has shares 0, not NaN
    fig = plot_confusion_matrix([[0, 0], [1, 1]])
    assert [t.get_text() for t in fig.axes[0].texts][:2] == ["0\n(0.00)", "0\n(0.00)"]


def test_confusion_matrix_refuses_bad_shapes():
    from monai_adv.visualize import plot_confusion_matrix

    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix([[1, 2, 3]])
    with pytest.raises(ValueError, match="3 class names for a 2 x 2"):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"])


def test_roc_curve_points_and_auroc_in_legend():
    fig = plot_roc_curves({"pgd": ([0.1, 0.2], [0.8, 0.9])})
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("pgd") and "1.00" in label for label in labels)  # perfectly separated
