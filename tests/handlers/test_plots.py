"""The plots: PNGs are written, empty inputs are refused."""

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
