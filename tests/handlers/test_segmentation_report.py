"""RobustnessReport on a segmentation evaluator: the evaluator's per-class numbers in report.json (the one
schema) and report.md, the per-image worst case, the plots, TensorBoard, and clear errors; the deprecated
SegmentationRobustnessReport alias."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from monai.engines import SupervisedEvaluator

from monai_adv.engines import RobustSegmentationEvaluator
from monai_adv.handlers import RobustnessReport, SegmentationRobustnessReport
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
    report = RobustnessReport(
        tmp_path,
        class_names=["vitreous", "retina", "fluid"],
        title="toy",
        gallery_items=4,
        summary_writer=writer,
        info={"eps_units": "network input"},
        attack_info={"pgd_eps0.1": {"eps_original": 25.5, "original_units": "grey levels"}},
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
    assert rep == json.loads(json.dumps(ev.state.robustness_report))
    assert (rep["task"], rep["metric"], rep["label_free"]) == ("segmentation", "mean_dice", False)
    assert rep["n"] == 5 and rep["class_names"] == ["vitreous", "retina", "fluid"]
    assert rep["clean"] == pytest.approx(ev.state.metrics["dice"]) == pytest.approx(1.0)
    assert rep["details"]["dice"] == {"vitreous": 1.0, "retina": 1.0, "fluid": None}  # fluid: in neither
    assert rep["details"]["distance_units"] == getattr(ev, "distance_units", "pixels")
    assert rep["eps_units"] == "network input"
    by_name = {a["name"]: a for a in rep["attacks"]}
    assert list(by_name) == list(attacks)
    for name, a in by_name.items():
        assert a["value"] == a["mean_dice"] == pytest.approx(ev.state.metrics[f"dice/{name}"])
        assert a["mean_hd95"] == pytest.approx(ev.state.metrics[f"hd95/{name}"])
        assert a["dice_drop"] == pytest.approx(1.0 - a["mean_dice"])
        assert a["dice_drop"] > 0.05
    assert by_name["fgsm_eps0.1"]["attack"] == "FGSM" and by_name["fgsm_eps0.1"]["eps"] == 0.1
    assert by_name["pgd_eps0.1"]["steps"] == 2 and by_name["pgd_eps0.1"]["eps_original"] == 25.5
    # a larger eps moves more pixels across the threshold
    assert by_name["fgsm_eps0.1"]["mean_dice"] < by_name["fgsm_eps0.05"]["mean_dice"]
    # the worst case at eps 0.1: per image the attack with the lower Dice, from the per-image values
    (worst,) = rep["worst_case"]
    assert worst["eps"] == 0.1 and worst["attacks"] == ["fgsm_eps0.1", "pgd_eps0.1"]
    per_image = torch.stack(
        [
            torch.nanmean(torch.as_tensor(ev.state.metric_details[f"dice/{a}"]).float(), dim=1)
            for a in worst["attacks"]
        ]
    )
    assert worst["value"] == pytest.approx(float(per_image.amin(dim=0).mean()))
    assert worst["value"] <= min(by_name[a]["value"] for a in worst["attacks"]) + 1e-6
    assert sum(worst["chosen"].values()) == 5
    md = (tmp_path / "report.md").read_text()
    assert "| clean | - | 0 | - | 1.000 | - |" in md and "| fgsm_eps0.05 | FGSM | 0.05 |" in md
    assert (
        "| fluid | - |" in md and "HD95 per class" in md and "| pgd_eps0.1 | 0.1 | 25.5 grey levels |" in md
    )
    for png in ("dice_vs_eps.png", "segmentation_gallery.png"):
        assert (tmp_path / png).stat().st_size > 1000
    # the gallery shows the strongest attack of each type: fgsm_eps0.1 and pgd_eps0.1
    assert set(report._gallery) >= {"pred/fgsm_eps0.1", "pred/pgd_eps0.1", "image/pgd_eps0.1"}
    assert "pred/fgsm_eps0.05" not in report._gallery and len(report._gallery["clean"]) == 4
    assert writer.scalars["segmentation/mean_dice/clean"] == pytest.approx(1.0)
    assert "segmentation/mean_hd95/pgd_eps0.1" in writer.scalars
    assert writer.scalars["segmentation/mean_dice/worst_eps0.1"] == pytest.approx(worst["value"])
    assert sorted(writer.figures) == ["segmentation/dice_vs_eps", "segmentation/segmentation_gallery"]


def test_the_deprecated_alias_writes_the_same_report(tmp_path):
    net = _Threshold()
    with pytest.warns(DeprecationWarning, match="RobustnessReport"):
        old = SegmentationRobustnessReport(tmp_path / "old", ["a", "b", "c"], plots=False)
    new = RobustnessReport(tmp_path / "new", class_names=["a", "b", "c"], plots=False)
    ev = RobustSegmentationEvaluator(
        "cpu", _data(), net, 3, attacks={"fgsm": FGSM(net, 0.1)}, val_handlers=[old, new], hausdorff=False
    )
    ev.run()
    a, b = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("old", "new"))
    assert a == b and a["task"] == "segmentation" and ev.state.segmentation_report == b


def test_report_errors(tmp_path):
    net = _Threshold()
    with pytest.raises(ValueError, match="gallery_items"):
        RobustnessReport(tmp_path, gallery_items=-1)
    with pytest.raises(ValueError, match=r"info keys \['clean', 'task'\] are report.json's own"):
        RobustnessReport(tmp_path, info={"task": "x", "clean": 1.0, "bundle": "b"})
    with pytest.raises(ValueError, match=r"attack_info\['pgd'\] keys \['value'\]"):
        RobustnessReport(tmp_path, attack_info={"pgd": {"value": 1.0}})
    ev = RobustSegmentationEvaluator(
        "cpu", _data(), net, 3, val_handlers=[RobustnessReport(tmp_path, class_names=["a", "b"])]
    )
    with pytest.raises(ValueError, match="2 class names for a network with 3"):
        ev.run()
    with pytest.warns(DeprecationWarning):
        alias = SegmentationRobustnessReport(tmp_path / "p")
    plain = SupervisedEvaluator("cpu", _data(), net, val_handlers=[alias])
    with pytest.raises(ValueError, match="reads a RobustSegmentationEvaluator"):
        plain.run()


def test_dense_logits_on_a_classification_evaluator_are_refused(tmp_path):
    net = _Threshold()
    plain = SupervisedEvaluator("cpu", _data(), net, val_handlers=[RobustnessReport(tmp_path)])
    with pytest.raises(ValueError, match="dense .*RobustSegmentationEvaluator"):
        plain.run()
    assert not (tmp_path / "report.json").exists()
