"""Checkpoint metadata: recorded by MONAI's CheckpointSaver, read by MONAI's CheckpointLoader, checked at load time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from monai_adv.bundle import (
    CheckpointMetadata,
    CheckpointMismatchError,
    check_checkpoint_metadata,
    load_optional_detector,
    load_weights,
    read_checkpoint_metadata,
    verify_sha256,
    write_sha256,
)
from monai_adv.bundle.locate import shipped_bundle_files, shipped_weights

CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]


def tiny_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 4),
    )


def saved_by_monai(tmp_path: Path, net: torch.nn.Module, meta: CheckpointMetadata) -> Path:
    """What a bundle's CheckpointSaver writes with ``save_dict={"model": net, "metadata": meta}``."""
    from monai.handlers import CheckpointSaver

    engine = Engine(lambda e, b: None)
    CheckpointSaver(
        str(tmp_path), {"model": net, "metadata": meta}, save_final=True, final_filename="model.pt"
    ).attach(engine)
    engine.run([0], max_epochs=1)
    return tmp_path / "model.pt"


def test_the_saver_records_the_metadata_beside_the_weights_and_monai_loads_them(tmp_path: Path):
    from monai.handlers import CheckpointLoader

    net = tiny_net()
    meta = CheckpointMetadata(
        image_size=128, num_channels=1, class_names=CLASSES, method="madry", intensity_range=(0, 1)
    )
    path = saved_by_monai(tmp_path, net, meta)
    state = torch.load(path, weights_only=True)
    assert sorted(state) == ["metadata", "model"]
    recorded = read_checkpoint_metadata(path)
    assert (
        recorded["image_size"] == 128 and recorded["class_names"] == CLASSES and recorded["num_classes"] == 4
    )
    assert (
        recorded["intensity_range"] == [0, 1]
        and recorded["method"] == "madry"
        and "monai_adv_version" in recorded
    )
    # MONAI's own loader and ours both read the weights of this layout
    other = tiny_net()
    for p in other.parameters():
        torch.nn.init.zeros_(p)
    engine = Engine(lambda e, b: None)
    CheckpointLoader(str(path), {"model": other}).attach(engine)
    engine.run([0], max_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), net.state_dict().values()))
    fresh = other
    for p in fresh.parameters():
        torch.nn.init.zeros_(p)
    load_weights(fresh, path, expected={"image_size": 128, "class_names": CLASSES})
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), net.state_dict().values()))


def test_a_mismatch_is_refused_naming_both_values_and_the_fix(tmp_path: Path):
    path = saved_by_monai(
        tmp_path, tiny_net(), CheckpointMetadata(image_size=[128, 128], num_channels=1, class_names=CLASSES)
    )
    with pytest.raises(CheckpointMismatchError) as e:
        load_weights(tiny_net(), path, expected={"image_size": 64, "num_channels": 1, "class_names": CLASSES})
    msg = str(e.value)
    assert "image_size [128, 128]" in msg and "image_size [64, 64]" in msg and "--image_size 128" in msg
    assert "\n" not in msg
    with pytest.raises(CheckpointMismatchError, match="class_names"):
        load_weights(tiny_net(), path, expected={"class_names": ["A", "B", "C", "D"]})
    with pytest.raises(CheckpointMismatchError, match="num_channels 1 but the config gives num_channels 3"):
        load_weights(tiny_net(), path, expected={"num_channels": 3})
    # both mismatches in one line
    with pytest.raises(CheckpointMismatchError) as e:
        load_weights(tiny_net(), path, expected={"image_size": 32, "num_channels": 3})
    assert "--image_size 128 --num_channels 1" in str(e.value)


def test_equal_settings_in_other_spellings_pass_and_unknown_keys_are_refused():
    meta = {"image_size": [96, 96, 96], "num_channels": 1, "class_names": CLASSES, "num_classes": 4}
    check_checkpoint_metadata(
        meta, "x", image_size=96, num_channels=1, class_names=tuple(CLASSES), num_classes=4
    )
    check_checkpoint_metadata(meta, "x", image_size=torch.tensor(96))
    check_checkpoint_metadata(None, "x", image_size=32)  # a plain state dict records nothing to compare
    check_checkpoint_metadata({"image_size": 64}, "x", class_names=CLASSES)  # nothing recorded for that key
    with pytest.raises(CheckpointMismatchError):
        check_checkpoint_metadata(meta, "x", image_size=[96, 96, 64])
    with pytest.raises(ValueError, match="image_sise"):
        check_checkpoint_metadata(meta, "x", image_sise=96)


def test_a_plain_state_dict_loads_unchecked(tmp_path: Path):
    net = tiny_net()
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    assert read_checkpoint_metadata(tmp_path / "plain.pt") is None
    load_weights(tiny_net(), tmp_path / "plain.pt", expected={"image_size": 64})


def test_the_detector_file_records_the_metadata_and_is_checked(tmp_path: Path):
    from monai_adv.bundle import fit_detector
    from monai_adv.detectors import MahalanobisDetector

    net = tiny_net().eval()
    x = torch.rand(40, 1, 8, 8)
    meta = CheckpointMetadata(image_size=8, num_channels=1, class_names=CLASSES).state_dict()
    fit_detector(
        MahalanobisDetector(net),
        [x[:30]],
        [x[30:]],
        fpr=0.1,
        save_path=tmp_path / "d.pt",
        use_labels=False,
        metadata=meta,
    )
    det = load_optional_detector(tmp_path / "d.pt", net, expected={"image_size": 8, "class_names": CLASSES})
    assert det.metadata["image_size"] == 8
    with pytest.raises(
        CheckpointMismatchError, match=r"detector file .*image_size 8 but the config gives image_size 16"
    ):
        load_optional_detector(tmp_path / "d.pt", net, expected={"image_size": 16})


def test_sha256_files_vouch_for_shipped_weights(tmp_path: Path):
    bundle = tmp_path / "b"
    (bundle / "models" / "run").mkdir(parents=True)
    (bundle / "configs").mkdir()
    (bundle / "configs" / "metadata.json").write_text("{}")
    (bundle / "models" / "model.pt").write_bytes(b"weights")
    (bundle / "models" / "run" / "model.pt").write_bytes(b"a training run's")
    sha = write_sha256(bundle / "models" / "model.pt")
    assert sha.read_text().split() == [
        hashlib.sha256(b"weights").hexdigest(),
        "model.pt",
    ]  # sha256sum's format
    assert verify_sha256(bundle / "models" / "model.pt")
    assert shipped_weights(bundle) == [Path("models/model.pt"), Path("models/model.pt.sha256")]
    assert Path("models/run/model.pt") not in shipped_bundle_files(bundle)
    (bundle / "models" / "model.pt").write_bytes(b"retrained")
    assert not verify_sha256(bundle / "models" / "model.pt")
    with pytest.raises(ValueError, match="does not match"):
        shipped_bundle_files(bundle)  # a build never ships weights its checksum does not vouch for
    with pytest.warns(UserWarning, match="not copied"):
        assert shipped_weights(bundle, strict=False) == []
