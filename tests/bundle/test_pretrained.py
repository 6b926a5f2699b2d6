"""The bundles' pretrained weights: shipped with their checksums and metadata, run out of the box, refuse a mismatched config.

Every test runs the bundle as a model-zoo user does, in a copy of the bundle folder with the shipped
``models/`` (``copy_bundle``), through ``python -m monai.bundle run``.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import subprocess_env, write_oct_dicom
from PIL import Image

from monai_adv.bundle import copy_bundle, read_checkpoint_metadata, verify_sha256

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
CLASSIFICATION = BUNDLES / "oct_robust_classification"
SEGMENTATION = BUNDLES / "oct_layer_segmentation"
SHARED = REPO.parent / "shared" / "data"
CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]
#: share of pixels the shipped layer UNet labels right on unseen synthetic B-scans (it measures 0.96-0.98;
#: a network that paints the largest class everywhere gets 0.44-0.59 on these scans)
SEGMENTATION_PIXEL_AGREEMENT = 0.9

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def bundle_run(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=500)
    if ok and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def last_line(proc: subprocess.CompletedProcess) -> str:
    return [line for line in proc.stderr.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("bundle", [CLASSIFICATION, SEGMENTATION], ids=lambda p: p.name)
def test_shipped_weights_are_small_checksummed_and_describe_themselves(bundle: Path):
    files = ["model.pt", "detector.pt"] if bundle == CLASSIFICATION else ["model.pt"]
    for name in files:
        path = bundle / "models" / name
        assert path.is_file(), f"{path} is not shipped"
        assert path.stat().st_size < 10e6
        assert verify_sha256(path), f"{path} does not match its .sha256"
        torch.load(path, map_location="cpu", weights_only=True)  # loads without unpickling code
    meta = read_checkpoint_metadata(bundle / "models" / "model.pt")
    for key in (
        "image_size",
        "num_channels",
        "intensity_range",
        "class_names",
        "method",
        "data",
        "monai_adv_version",
    ):
        assert key in meta, key
    if bundle == CLASSIFICATION:
        assert (
            meta["class_names"] == CLASSES and meta["image_size"] == [128, 128] and meta["num_channels"] == 1
        )
        assert "Kermany" in meta["data"] and meta["output"] == "logits"
        from monai.networks.nets import resnet10

        from monai_adv.bundle import load_weights
        from monai_adv.detectors import OutputDetector, load_detector

        net = load_weights(
            resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=0.25),
            bundle / "models" / "model.pt",
        )
        det = load_detector(bundle / "models" / "detector.pt", net.eval())  # fitted on exactly these weights
        assert isinstance(det, OutputDetector) and det.statistic == "margin" and det.is_calibrated
        assert det.metadata["image_size"] == meta["image_size"]


def kermany_test_images(per_class: int) -> list[Path]:
    """``per_class`` real B-scans per class from the patients the shipped classifier never saw (its seed-0 test split)."""
    from monai_adv.apps.oct import kermany_datalist, split_by_patient

    items = []
    for root in (SHARED / "kermany-oct-sample", SHARED / "kermany-oct-pool"):
        for split in sorted(p.name for p in root.iterdir() if p.is_dir()):
            items += kermany_datalist(str(root), split=split, label_fraction=1.0, seed=0)[0]
    meta = read_checkpoint_metadata(CLASSIFICATION / "models" / "model.pt")
    test_patients = set(meta["split"]["test_patients"])
    test, _ = split_by_patient(items, 0.25, seed=0)
    assert {str(it["patient"]) for it in test} == test_patients  # the split the card's numbers come from
    out = []
    for c in range(len(CLASSES)):
        out += sorted(Path(it["image"]) for it in test if int(it["label"]) == c)[:per_class]
    return out


@pytest.mark.skipif(
    not (SHARED / "kermany-oct-pool").is_dir(), reason="needs ../shared/data (real Kermany B-scans)"
)
def test_classification_inference_runs_out_of_the_box_on_real_b_scans(tmp_path: Path):
    bundle = copy_bundle(tmp_path / "bundle", src=CLASSIFICATION)
    assert (bundle / "models" / "model.pt").is_file() and (bundle / "models" / "detector.pt").is_file()
    images = kermany_test_images(per_class=4)
    data = tmp_path / "scans"
    data.mkdir()
    names = {}
    for i, src in enumerate(images):  # as a user's folder would hold them: grey JPEG, RGB PNG, DICOM
        label = src.name.split("-")[0]
        grey = np.asarray(Image.open(src).convert("L"))
        if i % 3 == 0:
            dst = data / src.name
            dst.write_bytes(src.read_bytes())
        elif i % 3 == 1:
            dst = data / (src.stem + "_rgb.png")
            Image.fromarray(grey).convert("RGB").save(dst)
        else:
            dst = data / (src.stem + ".dcm")
            write_oct_dicom(dst, grey)
        names[dst.name] = label
    out = tmp_path / "pred"
    bundle_run(bundle, "--dataset_dir", str(data), "--output_dir", str(out))
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["image"]).name for r in rows) == sorted(names)
    correct = 0
    for r in rows:
        probs = [float(r[f"prob_{c}"]) for c in CLASSES]
        assert abs(sum(probs) - 1.0) < 1e-4
        assert r["pred_class"] == CLASSES[int(np.argmax(probs))]
        assert r["adversarial_score"] != "" and r["adversarial_flag"] in ("0", "1")
        correct += r["pred_class"] == names[Path(r["image"]).name]
    # a working classifier on patients it never saw (the card reports the whole held-out set)
    assert correct >= 0.6 * len(rows), f"{correct}/{len(rows)} correct"
    assert len({r["pred_class"] for r in rows}) >= 3
    assert sum(r["adversarial_flag"] == "1" for r in rows) <= len(rows) // 3  # clean scans are rarely flagged


def test_segmentation_inference_runs_out_of_the_box(tmp_path: Path):
    from monai_adv.apps.oct import SyntheticOCTGenerator

    bundle = copy_bundle(tmp_path / "bundle", src=SEGMENTATION)
    # B-scans the model never saw (another generator seed), one per class, with their true layer maps
    images, _, layers = SyntheticOCTGenerator(image_size=128, seed=123).generate(1, return_layers=True)
    data = tmp_path / "scans"
    data.mkdir()
    truth = {}
    for i, (img, lay) in enumerate(zip(images, layers)):
        Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(data / f"scan{i}.png")
        truth[f"scan{i}.png"] = lay
    out = tmp_path / "pred"
    bundle_run(bundle, "--dataset_dir", str(data), "--output_dir", str(out))
    with open(out / "masks.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["image"]).name for r in rows) == sorted(truth)
    for r in rows:
        mask = np.asarray(Image.open(out / r["mask"]))
        assert mask.shape == (128, 128) and mask.max() < 13
        agree = float((mask == truth[Path(r["image"]).name]).mean())
        assert agree >= SEGMENTATION_PIXEL_AGREEMENT, (
            f"{r['image']}: {agree:.3f} of the pixels labelled right"
        )


def test_a_config_at_another_image_size_is_refused_naming_both(tmp_path: Path):
    bundle = copy_bundle(tmp_path / "bundle", src=CLASSIFICATION)
    data = tmp_path / "scans"
    data.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80), dtype=np.uint8)).save(data / "a.png")
    proc = bundle_run(
        bundle,
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(tmp_path / "out"),
        "--image_size",
        "64",
        ok=False,
    )
    assert proc.returncode != 0
    line = last_line(proc)
    assert "image_size [128, 128]" in line and "image_size [64, 64]" in line and "--image_size 128" in line, (
        line
    )
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_a_missing_model_is_the_last_line_with_the_command_that_makes_one(tmp_path: Path):
    bundle = copy_bundle(tmp_path / "bundle", src=CLASSIFICATION)
    (bundle / "models" / "model.pt").unlink()
    data = tmp_path / "scans"
    data.mkdir()
    Image.fromarray(np.zeros((40, 40), dtype=np.uint8)).save(data / "a.png")
    proc = bundle_run(bundle, "--dataset_dir", str(data), "--output_dir", str(tmp_path / "out"), ok=False)
    line = last_line(proc)
    assert "model.pt" in line and "does not exist" in line, line
    assert "python -m monai_adv.bundle init" in line and "configs/train.json" in line, line


def test_copy_bundle_copies_the_checksummed_weights_only(tmp_path: Path):
    copy = copy_bundle(tmp_path / "copy", src=CLASSIFICATION)
    assert sorted(p.name for p in (copy / "models").iterdir() if p.is_file() and p.suffix in (".pt", ".sha256")) == [
        "detector.pt", "detector.pt.sha256", "model.pt", "model.pt.sha256",
    ]  # fmt: skip
    # a model trained in place no longer matches the shipped checksum: it is not passed on as the shipped one
    (copy / "models" / "model.pt").write_bytes(b"retrained")
    with pytest.warns(UserWarning, match="does not match"):
        again = copy_bundle(tmp_path / "again", src=copy)
    assert not (again / "models" / "model.pt").exists() and (again / "models" / "detector.pt").is_file()
