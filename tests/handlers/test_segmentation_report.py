"""SegmentationRobustnessReport: the evaluator's per-class numbers in report.json and report.md, the plots,
TensorBoard, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from monai.engines import SupervisedEvaluator

from monai_adv.engines import RobustSegmentationEvaluator
from monai_adv.handlers import SegmentationRobustnessReport
from monai_adv.transforms import FGSM, PGD


class _Threshold(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        with torch.no_grad():  # class 1 above one half, class 2 never predicted
            self.conv.weight[:] = torch.tensor([-10.0, 10.0, 0.0]).view(3, 1, 1, 1)
            self.conv.bias[:] = torch.tensor([5.0, -5.0, -100.0])

    def forward(self, x):
        return self.conv(x)


class _Writer:
    def __init__(self) -> None:
        self.scalars, self.figures = {}, []

    def add_scalar(self, tag, value, step):
        self.scalars[tag] = value

    def add_figure(self, tag, fig, step):
        self.figures.append(tag)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 1, 12, 12, generator=g)
    return [{"image": x[:3], "label": (x[:3] > 0.5).long()}, {"image": x[3:], "label": (x[3:] > 0.5).long()}]


def test_report_files_hold_the_evaluator_numbers(tmp_path):
    net = _Threshold()
    attacks = {f"fgsm_eps{e:g}": FGSM(net, e) for e in (0.05, 0.1)}
    attacks["pgd_eps0.1"] = PGD(net, 0.1, steps=2)
    writer = _Writer()
    report = SegmentationRobustnessReport(
        tmp_path,
        class_names=["vitreous", "retina", "fluid"],
        title="toy",
        gallery_items=4,
        summary_writer=writer,
    )
    ev = RobustSegmentationEvaluator(
        "cpu",
        _data(),
        net,
        num_classes=3,
        attacks=attacks,
        val_handlers=[report],
        keep_adversarial_images=True,
    )
    ev.run()
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep == json.loads(json.dumps(ev.state.segmentation_report))
    assert rep["n"] == 5 and rep["class_names"] == ["vitreous", "retina", "fluid"]
    assert rep["clean"]["mean_dice"] == pytest.approx(ev.state.metrics["dice"]) == pytest.approx(1.0)
    assert rep["clean"]["dice"] == {"vitreous": 1.0, "retina": 1.0, "fluid": None}  # fluid: in neither
    for name, a in rep["attacks"].items():
        assert a["mean_dice"] == pytest.approx(ev.state.metrics[f"dice/{name}"])
        assert a["mean_hd95"] == pytest.approx(ev.state.metrics[f"hd95/{name}"])
        assert a["dice_drop"] == pytest.approx(1.0 - a["mean_dice"])
        assert a["dice_drop"] > 0.05
    assert rep["attacks"]["fgsm_eps0.1"]["type"] == "FGSM" and rep["attacks"]["fgsm_eps0.1"]["eps"] == 0.1
    assert rep["attacks"]["pgd_eps0.1"]["steps"] == 2
    # a larger eps moves more pixels across the threshold
    assert rep["attacks"]["fgsm_eps0.1"]["mean_dice"] < rep["attacks"]["fgsm_eps0.05"]["mean_dice"]
    md = (tmp_path / "report.md").read_text()
    assert "| clean | - | 0 | - | 1.000 | - |" in md and "| fgsm_eps0.05 | FGSM | 0.05 |" in md
    assert "| fluid | - |" in md and "HD95 per class" in md
    for png in ("dice_vs_eps.png", "segmentation_gallery.png"):
        assert (tmp_path / png).stat().st_size > 1000
    # the gallery shows the strongest attack of each type: fgsm_eps0.1 and pgd_eps0.1
    assert set(report._gallery) >= {"pred/fgsm_eps0.1", "pred/pgd_eps0.1", "image/pgd_eps0.1"}
    assert "pred/fgsm_eps0.05" not in report._gallery and len(report._gallery["clean"]) == 4
    assert writer.scalars["segmentation/mean_dice/clean"] == pytest.approx(1.0)
    assert "segmentation/mean_hd95/pgd_eps0.1" in writer.scalars
    assert sorted(writer.figures) == ["segmentation/dice_vs_eps", "segmentation/segmentation_gallery"]


def test_report_errors(tmp_path):
    net = _Threshold()
    with pytest.raises(ValueError, match="gallery_items"):
        SegmentationRobustnessReport(tmp_path, gallery_items=-1)
    ev = RobustSegmentationEvaluator(
        "cpu", _data(), net, 3, val_handlers=[SegmentationRobustnessReport(tmp_path, class_names=["a", "b"])]
    )
    with pytest.raises(ValueError, match="2 class names for a network with 3"):
        ev.run()
    plain = SupervisedEvaluator(
        "cpu", _data(), net, val_handlers=[SegmentationRobustnessReport(tmp_path / "p")]
    )
    with pytest.raises(ValueError, match="reads a RobustSegmentationEvaluator"):
        plain.run()
