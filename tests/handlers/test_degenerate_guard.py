"""Per-class recall, the confusion matrix, and the warning for a classifier that calls (nearly) everything one class."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn as nn
from helpers import trained_cnn
from monai.data import DataLoader, Dataset

from monai_adv.bundle.compare import compare_reports
from monai_adv.engines import RobustEvaluator
from monai_adv.handlers import RobustnessReport
from monai_adv.metrics import classification_summary, confusion_matrix, per_class_recall
from monai_adv.transforms import FGSM

NAMES = ["CNV", "DME", "DRUSEN", "NORMAL"]


def test_confusion_matrix_and_recall_match_a_hand_computed_case():
    y = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
    p = [0, 1, 0, 1, 1, 2, 3, 2, 0, 3]
    # rows true, columns predicted, counted by hand
    expected = [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 2, 1], [0, 0, 0, 1]]
    cm = confusion_matrix(torch.tensor(y), torch.tensor(p), 4)
    assert cm.tolist() == expected
    assert per_class_recall(cm) == [2 / 3, 1.0, 0.5, 1.0]
    s = classification_summary(y, p, NAMES)
    assert s["accuracy"] == 0.7
    assert s["per_class_recall"] == {"CNV": 2 / 3, "DME": 1.0, "DRUSEN": 0.5, "NORMAL": 1.0}
    assert s["prediction_share"] == {"CNV": 0.3, "DME": 0.3, "DRUSEN": 0.2, "NORMAL": 0.2}
    assert not s["degenerate"]


def test_a_class_absent_from_the_labels_has_no_recall():
    s = classification_summary([0, 0, 1], [0, 1, 1], num_classes=3)
    assert s["per_class_recall"] == {"0": 0.5, "1": 1.0, "2": None}


def test_degenerate_is_more_than_ninety_percent_one_class():
    y = list(range(4)) * 5
    assert classification_summary(y, [1] * 18 + [0, 2], NAMES)["degenerate"] is False  # exactly 90%
    s = classification_summary(y, [1] * 19 + [0], NAMES)
    assert s["degenerate"] is True and s["majority_class"] == "DME" and s["majority_share"] == 0.95


@pytest.mark.parametrize(
    "labels, preds, k", [([0, 1], [0], None), ([], [], None), ([0, 4], [0, 1], 4), ([-1], [0], None)]
)
def test_bad_input_is_refused(labels, preds, k):
    with pytest.raises(ValueError):
        confusion_matrix(labels, preds, k)


class ConstantNet(nn.Module):
    """Ignores its input: always the same logits (class 2 wins), as a collapsed SSAT model does."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 0.1, 2.0, -0.5]))
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.bias.expand(x.shape[0], 4) + self.scale * x.flatten(1).mean(1, keepdim=True)


def _evaluate(net, x, y, tmp_path, caplog):
    loader = DataLoader(Dataset([{"image": x[i], "label": y[i]} for i in range(len(y))]), batch_size=16)
    report = RobustnessReport(tmp_path, class_names=NAMES, save_items=False)
    ev = RobustEvaluator("cpu", loader, net, attacks={"fgsm": FGSM(net, 0.03)}, decollate=False)
    report.attach(ev)
    with caplog.at_level(logging.WARNING):
        ev.run()
    return report.report


def test_a_constant_network_is_flagged_everywhere(tmp_path, caplog):
    _, x, y = trained_cnn(2)
    rep = _evaluate(ConstantNet().eval(), x, y, tmp_path, caplog)
    assert rep["degenerate"] is True and rep["details"]["degenerate"] is True
    assert rep["details"]["per_class_recall"] == {"CNV": 0.0, "DME": 0.0, "DRUSEN": 1.0, "NORMAL": 0.0}
    cm = torch.tensor(rep["details"]["confusion_matrix"])
    assert cm[:, 2].sum() == len(y) and cm.sum() == len(y)
    assert any("degenerate classifier" in r.getMessage() for r in caplog.records)
    md = (tmp_path / "report.md").read_text()
    assert "WARNING: degenerate classifier" in md and "not meaningful" in md
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["degenerate"] is True and on_disk["details"]["confusion_matrix"] == cm.tolist()
    assert on_disk == rep
    table = compare_reports({"collapsed": on_disk})
    assert "DEGENERATE" in table and "(n/m)" in table


def test_a_good_network_is_not_flagged(tmp_path, caplog):
    net, x, y = trained_cnn(2)
    rep = _evaluate(net, x, y, tmp_path, caplog)
    assert rep["degenerate"] is False
    assert min(rep["details"]["per_class_recall"].values()) >= 0.9
    assert not any("degenerate" in r.getMessage() for r in caplog.records)
    assert "WARNING" not in (tmp_path / "report.md").read_text()
    assert "DEGENERATE" not in compare_reports({"good": rep})


def test_a_report_killed_while_plotting_leaves_the_previous_set_whole(tmp_path, caplog, monkeypatch):
    """The report's files are built in a fresh folder and moved into place when complete: a kill between
    two figures leaves the previous report.json, report.md and plots, never a mix of two runs."""
    _, x, y = trained_cnn(2)
    first = _evaluate(ConstantNet().eval(), x, y, tmp_path, caplog)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert "report.json" in before and any(n.endswith(".png") for n in before)
    saved = []

    def killed_after_one_figure(fig, path, *args, **kwargs):
        if saved:
            raise KeyboardInterrupt("killed while plotting")
        saved.append(path)
        return real(fig, path, *args, **kwargs)

    import monai_adv.visualize.plots as plots

    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", killed_after_one_figure)
    net = ConstantNet().eval()
    with torch.no_grad():
        net.bias.copy_(torch.tensor([2.0, 0.0, 0.0, 0.0]))  # another network: another report
    with pytest.raises(KeyboardInterrupt):
        _evaluate(net, x, y, tmp_path, caplog)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # the old set, byte for byte: the new figure went to the staging folder only
    assert json.loads(after["report.json"])["clean"] == first["clean"]
