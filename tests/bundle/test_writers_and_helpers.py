"""The bundle's writers and helpers, directly: report layout, predictions CSV, attack grid, bundle location."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from monai_adv.bundle import (
    BundleReportWriter,
    PredictionWriter,
    attack_grid,
    bundle_report,
    copy_bundle,
    require_file,
    resolve_bundle_dir,
)
from monai_adv.bundle.locate import is_bundle_dir

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "oct_robust_classification"


def test_the_former_report_writers_are_deprecated_and_write_nothing(tmp_path):
    # RobustnessReport writes report.json once, in the one schema; the bundle no longer rewrites it
    with pytest.warns(DeprecationWarning, match="does nothing"):
        writer = BundleReportWriter(tmp_path / "eval")
    engine = SimpleNamespace(state=SimpleNamespace(), add_event_handler=lambda *a: pytest.fail("attached"))
    writer.attach(engine)
    assert not (tmp_path / "eval").exists()
    report = {"task": "classification", "clean": float("nan"), "attacks": []}
    with pytest.warns(DeprecationWarning, match="one report schema"):
        assert bundle_report(report) == {"task": "classification", "clean": None, "attacks": []}


def test_prediction_writer(tmp_path):
    from monai.data import MetaTensor

    writer = PredictionWriter(tmp_path, class_names=["A", "B"])
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    image = MetaTensor(
        torch.zeros(2, 1, 4, 4), meta={"filename_or_obj": ["a.png", "b.dcm"], "frame": [-1, 2]}
    )
    engine = SimpleNamespace(
        state=SimpleNamespace(
            output={
                "pred": logits,
                "uad_score": torch.tensor([0.5, 7.0]),
                "uad_flag": torch.tensor([False, True]),
            },
            batch={"image": image},
        )
    )
    writer._reset(engine)
    writer._collect(engine)
    writer._write(engine)
    rows = list(csv.reader(open(writer.path)))
    assert rows[0] == [
        "image", "frame", "prob_A", "prob_B", "pred_class", "pred_index", "adversarial_score", "adversarial_flag",
    ]  # fmt: skip
    assert rows[1][:2] == ["a.png", ""] and rows[1][4:] == ["A", "0", "0.5", "0"]
    assert rows[2][:2] == ["b.dcm", "2"] and rows[2][4:] == ["B", "1", "7", "1"]
    assert float(rows[1][2]) == pytest.approx(torch.softmax(logits[0], 0)[0].item(), abs=1e-6)
    engine.state.output = {"pred": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match="do not match the 2 class names"):
        writer._collect(engine)


def test_require_file(tmp_path):
    f = tmp_path / "x.pt"
    with pytest.raises(FileNotFoundError, match=r"model '.*x.pt' does not exist; train it"):
        require_file(f, "model", "train it")
    f.write_bytes(b"")
    assert require_file(f) == str(f)


def test_attack_grid():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    grid = [
        {"name": "pgd", "attack": "PGD", "eps": [0.002, 0.004], "steps": 2},
        {"name": "ada", "attack": "AdaptiveAttack", "eps": 0.004},
    ]
    attacks = attack_grid(net, grid, value_range=None)  # no detector: the adaptive attack is left out
    assert list(attacks) == ["pgd_eps0.002", "pgd_eps0.004"]
    assert attacks["pgd_eps0.004"].describe()["eps"] == 0.004 and attacks["pgd_eps0.004"].value_range is None
    with pytest.raises(ValueError, match="unknown attack 'Nope'"):
        attack_grid(net, [{"name": "n", "attack": "Nope", "eps": 0.1}])
    with pytest.raises(ValueError, match="has no \\['eps'\\]"):
        attack_grid(net, [{"name": "n", "attack": "PGD"}])
    with pytest.raises(ValueError, match="appears twice"):
        attack_grid(net, [{"name": "p", "attack": "PGD", "eps": [0.1, 0.1]}])
    with pytest.raises(ValueError, match="empty"):
        attack_grid(net, [])


def test_bundle_location(tmp_path, monkeypatch):
    assert is_bundle_dir(BUNDLE) and not is_bundle_dir(tmp_path)
    assert resolve_bundle_dir(BUNDLE) == BUNDLE
    with pytest.raises(FileNotFoundError, match="is not a bundle folder"):
        resolve_bundle_dir(tmp_path)
    # copied without data, models or reports; a non-empty target is refused
    copy = copy_bundle(tmp_path / "b", src=BUNDLE)
    assert is_bundle_dir(copy) and (copy / "models").is_dir() and (copy / "LICENSE").is_file()
    assert not (copy / "data").exists() and not (copy / "eval").exists()
    with pytest.raises(FileExistsError, match="not empty"):
        copy_bundle(copy, src=BUNDLE)
    # no bundle given: a working copy in the folder, made from the packaged bundle, reused after
    import monai_adv.bundle.locate as locate

    monkeypatch.setattr(locate, "bundle_search_roots", lambda: [tmp_path / "no_bundles_here"])
    assert locate.packaged_bundle_dir() is None
    with pytest.raises(FileNotFoundError, match="provides no bundle"):
        resolve_bundle_dir(work_dir=tmp_path / "w")
    with pytest.raises(FileNotFoundError, match="provides no bundle"):
        copy_bundle(tmp_path / "c")
    monkeypatch.setattr(locate, "bundle_search_roots", lambda: [BUNDLE.parent])
    work = resolve_bundle_dir(work_dir=tmp_path / "w")  # the bundle marked default
    assert work == tmp_path / "w" / BUNDLE.name and is_bundle_dir(work)
    (work / "models" / "keep.txt").write_text("x")
    assert resolve_bundle_dir(work_dir=tmp_path / "w") == work and (work / "models" / "keep.txt").exists()


def test_version_is_shared_with_the_bundle():
    import monai_adv

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["required_packages_version"]["monai-adv"] == monai_adv.__version__


def test_run_without_meta_tracking_restores_the_setting_however_the_run_ends():
    from monai.data import get_track_meta

    from monai_adv.bundle import run_without_meta_tracking

    class Engine:
        seen = None

        def run(self):
            self.seen = get_track_meta()

    class Failing:
        def run(self):
            raise RuntimeError("boom")

    assert get_track_meta() is True
    engine = Engine()
    run_without_meta_tracking(engine)
    assert engine.seen is False and get_track_meta() is True
    with pytest.raises(RuntimeError, match="boom"):
        run_without_meta_tracking(Failing())
    assert get_track_meta() is True
