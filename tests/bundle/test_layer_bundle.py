"""The OCT layer segmentation bundle, run as its README says: train and inference through the CLI with
configs/quick.json from a copy of the bundle folder; evaluation, the baselines, the properties, the
network's shapes and the TorchScript export through MONAI's bundle API in this process (the same code
the CLI runs, without a new Python per call). Threads are limited to one per process."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.bundle.bundle_runs import QUICK, causes, run_cli, workflow

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "oct_layer_segmentation"
CLASSES = [
    "vitreous", "RNFL", "GCL+IPL", "INL", "OPL", "ONL", "IS/OS", "RPE", "choroid", "SRF", "PED", "IRF", "padding",
]  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A copy of the bundle folder (no generated files), trained with SSAT at quick size through the CLI."""
    dst = tmp_path_factory.mktemp("bundle") / "oct_layer_segmentation"
    shutil.copytree(
        BUNDLE, dst, ignore=shutil.ignore_patterns("data", "runs", "eval", "quick", "__pycache__", "*.pt")
    )
    run_cli(["run", "--config_file", f"['configs/train.json','{QUICK}']"], dst)
    return dst


def test_layout_and_metadata():
    for rel in (
        "LICENSE",
        "docs/README.md",
        "docs/data_license.txt",
        "configs/logging.conf",
        "models/.gitkeep",
    ):
        assert (BUNDLE / rel).is_file(), rel
    for name in ("metadata", "train", "train_supervised", "train_madry", "evaluate", "inference", "quick"):
        assert (BUNDLE / "configs" / f"{name}.json").is_file(), name
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "task", "description", "authors",
                "copyright", "intended_use", "references", "network_data_format", "required_packages_version"):  # fmt: skip
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    assert "not for clinical use" in meta["intended_use"].lower()
    assert any("SegPGD" in r for r in meta["references"]) and any("CosPGD" in r for r in meta["references"])
    out = meta["network_data_format"]["outputs"]["pred"]
    assert out["num_channels"] == 13 and list(out["channel_def"].values()) == CLASSES
    from monai_adv import __version__
    from monai_adv.apps.oct import OCT_LAYER_CLASSES

    assert list(OCT_LAYER_CLASSES) == CLASSES
    assert meta["required_packages_version"]["monai-adv"] == __version__
    for name in ("train", "inference"):
        cfg = json.loads((BUNDLE / "configs" / f"{name}.json").read_text())
        assert cfg["class_names"] == CLASSES and cfg["num_classes"] == 13
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert (
        train["network_def"] == json.loads((BUNDLE / "configs" / "inference.json").read_text())["network_def"]
    )
    grid = json.loads((BUNDLE / "configs" / "evaluate.json").read_text())["attack_grid"]
    assert {g["attack"] for g in grid} == {"FGSM", "PGD", "SegPGD", "CosPGD"}


def test_train_cli_writes_the_model_runs_and_the_layer_set(trained: Path):
    saved = torch.load(trained / "quick" / "models" / "model.pt", weights_only=True)
    assert any(k.endswith("weight") for k in saved["model"])
    assert saved["metadata"]["image_size"] == 32 and saved["metadata"]["class_names"] == CLASSES
    runs = trained / "quick" / "runs" / "ssat"
    assert list((runs / "checkpoints").glob("checkpoint_*.pt")) and list(runs.glob("events.out.tfevents.*"))
    data = trained / "data" / "synthetic_oct_layers_quick"
    manifest = json.loads((data / "synthetic_oct.json").read_text())
    assert manifest["arguments"]["layers"] is True and manifest["layer_classes"] == CLASSES
    images = sorted((data / "train" / "images").iterdir())
    assert images and [p.name for p in images] == sorted(
        p.name for p in (data / "train" / "labels").iterdir()
    )


def test_evaluate_reports_dice_under_every_attack(trained: Path):
    w = workflow(trained, ["train", "evaluate"], "infer")
    w.initialize()
    assert w.check_properties() == []
    w.run()
    w.finalize()
    out = trained / "quick" / "eval" / "ssat"
    report = json.loads((out / "report.json").read_text())
    assert (report["task"], report["metric"]) == ("segmentation", "mean_dice")
    assert report["class_names"] == CLASSES and report["n"] == 4
    assert 0.0 <= report["clean"] <= 1.0 and report["clean"] == report["details"]["mean_dice"]
    assert set(report["details"]["dice"]) == set(CLASSES)
    attacks = {a["name"]: a for a in report["attacks"]}
    assert {a["attack"] for a in attacks.values()} == {"FGSM", "PGD", "SegPGD", "CosPGD"}
    assert {"fgsm_eps0.016", "pgd10_eps0.008", "segpgd10_eps0.032", "cospgd10_eps0.008"} <= set(attacks)
    for a in attacks.values():
        assert 0.0 <= a["value"] <= 1.0 and a["value"] == a["mean_dice"]
        assert a["mean_hd95"] >= 0.0 and isinstance(a["eps"], float)
        assert a["dice_drop"] == pytest.approx(report["clean"] - a["mean_dice"])
    # PGD, SegPGD and CosPGD share eps 0.008 and 0.032 (FGSM too at 0.032): the per-image worst case
    worst = {w["eps"]: w for w in report["worst_case"]}
    assert set(worst) == {0.008, 0.032} and len(worst[0.032]["attacks"]) == 4
    for eps, w in worst.items():
        assert w["value"] <= min(a["value"] for a in attacks.values() if a["eps"] == eps) + 1e-6
    for f in ("report.md", "dice_vs_eps.png", "segmentation_gallery.png"):
        assert (out / f).is_file(), f
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_inference_cli_writes_a_mask_per_image(trained: Path, tmp_path: Path):
    src = trained / "data" / "synthetic_oct_layers_quick" / "test" / "images"
    data = tmp_path / "scans"
    shutil.copytree(src, data)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "pred"
    run_cli(
        ["run", "--config_file", f"['configs/inference.json','{QUICK}']", "--dataset_dir", str(data),
         "--output_dir", str(out)],
        trained,
    )  # fmt: skip
    with open(out / "masks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    images = sorted(p.name for p in src.iterdir())
    assert sorted(Path(r["image"]).name for r in rows) == images
    for r in rows:
        mask = np.asarray(Image.open(out / r["mask"]))
        assert mask.shape == (32, 32) and mask.dtype == np.uint8 and mask.max() < 13
        fracs = [float(r[f"frac_{c}"]) for c in CLASSES]
        assert sum(fracs) == pytest.approx(1.0, abs=1e-4)
        assert fracs == pytest.approx(np.bincount(mask.ravel(), minlength=13) / mask.size, abs=1e-5)
    with open(out / "failures.csv", newline="") as f:
        assert [Path(r["image"]).name for r in csv.DictReader(f)] == ["broken.png"]


def test_network_shapes_and_torchscript_export(trained: Path):
    from monai.bundle import ConfigParser, ckpt_export, verify_net_in_out

    from monai_adv.bundle import load_weights

    cwd = os.getcwd()
    os.chdir(trained)
    try:
        verify_net_in_out(
            "network_def", meta_file="configs/metadata.json", config_file="configs/inference.json", n=4
        )
        ckpt_export(
            "network_def", filepath="quick/models/model.ts", ckpt_file="quick/models/model.pt",
            key_in_ckpt="model", meta_file="configs/metadata.json", config_file="configs/inference.json",
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    parser = ConfigParser()
    parser.read_config(str(trained / "configs" / "inference.json"))
    net = load_weights(
        parser.get_parsed_content("network_def"), trained / "quick" / "models" / "model.pt"
    ).eval()
    ts = torch.jit.load(str(trained / "quick" / "models" / "model.ts"), map_location="cpu").eval()
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ts(x), net(x), rtol=1e-5, atol=1e-5)
        assert net(x).shape == (2, 13, 64, 64)


@pytest.mark.parametrize("baseline", ["train_supervised", "train_madry"])
def test_baselines_through_config_workflow(trained: Path, baseline: str):
    w = workflow(trained, ["train", baseline], "train")
    w.initialize()
    assert w.check_properties() == []
    w.run()
    w.finalize()
    method = baseline.split("_", 1)[1]
    assert (trained / "quick" / "models" / method / "model.pt").is_file()
    metrics = w.parser.get_parsed_content("train#trainer").state.metrics
    assert 0.0 <= metrics["train_dice"] <= 1.0
    if method == "madry":
        assert 0.0 <= metrics["attack_success"] <= 1.0


def test_inference_properties_and_bad_settings(trained: Path, tmp_path: Path):
    test_images = trained / "data" / "synthetic_oct_layers_quick" / "test" / "images"
    w = workflow(trained, ["inference"], "infer", dataset_dir=str(test_images))
    w.initialize()
    assert w.check_properties() == []
    missing = tmp_path / "no_such_folder"
    w = workflow(trained, ["train"], "train", dataset_dir=str(missing))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "does not exist" in causes(e.value) and str(missing) in causes(e.value)
    kermany = tmp_path / "kermany"
    (kermany / "train" / "CNV").mkdir(parents=True)
    w = workflow(trained, ["train"], "train", dataset_dir=str(kermany))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "has no train/images/ folder" in causes(e.value)
    w = workflow(trained, ["train"], "train", label_fraction=0.0)
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "label_fraction must lie in (0, 1], got 0.0" in causes(e.value)
    w = workflow(trained, ["train", "evaluate"], "infer", ckpt_dir=str(tmp_path / "none"))
    w.initialize()
    with pytest.raises(Exception) as e:
        w.run()
    assert "model checkpoint" in causes(e.value) and "does not exist" in causes(e.value)


# ---------------------------------------------------------------------------------- the helpers alone
def test_layer_datalists_divide_by_patient(tmp_path: Path):
    from monai_adv.apps.oct import write_synthetic_oct_dataset
    from monai_adv.bundle import oct_layer_datalists

    write_synthetic_oct_dataset(
        tmp_path, 4, image_size=16, splits=("train", "unlabeled", "test"), progress=False, num_workers=1,
        layers=True, image_format="png",
    )  # fmt: skip
    d = oct_layer_datalists(tmp_path, label_fraction=0.5, seed=0, val_fraction=0.25)
    assert all("label" in it for k in ("labeled", "val", "test") for it in d[k])
    assert all("label" not in it for it in d["unlabeled"])
    patients = {k: {it["patient"] for it in d[k]} for k in ("labeled", "val")}
    assert not patients["labeled"] & patients["val"]
    assert len(d["labeled"]) + len(d["val"]) + len(d["unlabeled"]) == 16 + 16  # train + unlabeled split
    assert len(d["test"]) == 16
    full = oct_layer_datalists(tmp_path, label_fraction=1.0)
    assert len(full["unlabeled"]) == 16  # the unlabeled split alone
    capped = oct_layer_datalists(tmp_path, max_items=3)
    assert all(len(v) <= 3 for v in capped.values()) and len(capped["labeled"]) == len(capped["test"]) == 3


def test_mask_writer_names_and_checks(tmp_path: Path):
    from types import SimpleNamespace

    from monai.data import MetaTensor

    from monai_adv.bundle import MaskWriter

    writer = MaskWriter(tmp_path, class_names=["a", "b", "c"])
    logits = torch.zeros(3, 3, 4, 4)
    logits[:, 2] = 1.0
    image = MetaTensor(
        torch.zeros(3, 1, 4, 4),
        meta={"filename_or_obj": ["x/s.png", "y/s.png", "v.nii.gz"], "frame": [-1, -1, 2]},
    )
    engine = SimpleNamespace(state=SimpleNamespace(output={"pred": logits}, batch={"image": image}))
    writer._reset(engine)
    writer._collect(engine)
    writer._write(engine)
    assert [r[2] for r in writer.rows] == [
        os.path.join("masks", n) for n in ("s.png", "s_2.png", "v_frame2.png")
    ]
    assert (np.asarray(Image.open(tmp_path / "masks" / "s_2.png")) == 2).all()
    engine.state.output = {"pred": torch.zeros(3, 2, 4, 4)}
    with pytest.raises(ValueError, match="not 2D masks of the 3 classes"):
        writer._collect(engine)


def test_layer_demo_compares_the_systems(trained: Path, capsys):
    from monai_adv.bundle import main, run_demo, run_layer_demo

    with pytest.raises(ValueError, match="unknown method"):
        run_demo(trained, quick=True, methods=["supervised", "trades"])
    with pytest.warns(DeprecationWarning, match="run_layer_demo is deprecated"), pytest.raises(ValueError):
        run_layer_demo(trained, quick=True, methods=["trades"])
    table = run_demo(trained, quick=True, methods=["supervised"], overrides={"seed": 1})
    report = json.loads((trained / "quick" / "eval" / "supervised" / "report.json").read_text())
    clean = f"| clean | 0.0 | {report['clean']:.3f} | {report['details']['mean_hd95']:.2f} |"
    assert clean in table and "segpgd10_eps0.032" in table
    out = capsys.readouterr().out
    assert "| attack | eps | supervised: mean Dice | supervised: mean HD95 |" in out
    assert "undefended baseline" in out
    # compare: the segmentation table for segmentation reports, named after their folders
    ssat = trained / "quick" / "eval" / "ssat" / "report.json"
    if ssat.is_file():
        assert (
            main(["compare", str(ssat), f"sup={trained / 'quick' / 'eval' / 'supervised' / 'report.json'}"])
            == 0
        )
        assert "ssat: mean Dice | ssat: mean HD95 | sup: mean Dice" in capsys.readouterr().out


def test_compare_segmentation_reports_and_init(tmp_path: Path, monkeypatch):
    from monai_adv.bundle import compare_segmentation_reports, locate, main

    def report(clean, hd, attacks):
        return {
            "task": "segmentation",
            "metric": "mean_dice",
            "clean": clean,
            "metrics": {"hausdorff": "hd95"},
            "details": {"mean_dice": clean, "mean_hd95": hd, "distance_units": "voxels"},
            "attacks": attacks,
        }

    a = report(
        0.9, 2.0, [{"name": "pgd_eps0.004", "eps": 0.004, "value": 0.4, "mean_dice": 0.4, "mean_hd95": 20.0}]
    )
    b = report(0.8, 3.0, [])
    table = compare_segmentation_reports({"a": a, "b": b})
    assert (
        "| system | clean mean Dice | clean mean HD95 | notes |" in table
        and "| a | 0.900 | 2.00 voxels | |" in table
    )
    assert "| clean | 0.0 | 0.900 | 2.00 | 0.800 | 3.00 |" in table
    assert "| pgd_eps0.004 | 0.004 | 0.400 | 20.00 | - | - |" in table
    (tmp_path / "x.json").write_text(
        json.dumps({"task": "classification", "metric": "accuracy", "clean": 0.5, "attacks": []})
    )
    with pytest.raises(ValueError, match="not a segmentation report"):
        compare_segmentation_reports({"x": tmp_path / "x.json"})
    (tmp_path / "old.json").write_text(json.dumps({"clean": {"mean_dice": 0.5}, "attacks": {}}))
    with pytest.raises(ValueError, match="old layout .*former segmentation report layout"):
        compare_segmentation_reports({"x": tmp_path / "old.json"})
    # init: the layer bundle, from the package (an editable install: the checkout's bundles/)
    monkeypatch.chdir(tmp_path)
    assert main(["init", "--bundle", "oct_layer_segmentation"]) == 0
    assert (tmp_path / "oct_layer_segmentation" / "configs" / "evaluate.json").is_file()
    with pytest.raises(ValueError, match="unknown bundle 'nope'; available: .*oct_layer_segmentation"):
        locate.copy_bundle(tmp_path / "y", name="nope")
    monkeypatch.setattr(locate, "bundle_search_roots", lambda: [])  # an installation with no bundle
    with pytest.raises(SystemExit) as e:
        main(["init", str(tmp_path / "none"), "--bundle", "oct_layer_segmentation"])
    assert e.value.code == 2 and not (tmp_path / "none").exists()
