"""Label maps read as drawn, checked against the classes before training (docs/reliability.md, part 2 item 2)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from monai_adv.apps.oct import check_segmentation_dataset, oct_segmentation_transforms, read_label_map
from monai_adv.bundle.errors import BundleInputError
from monai_adv.bundle.segmentation import prepare_oct_layer_dataset


def _labels(h=16, w=16):
    return (np.arange(h * w).reshape(h, w) % 13).astype(np.uint8)


def _save_palette(path, arr):
    im = Image.fromarray(arr, mode="L").convert("P")
    im.putdata(arr.reshape(-1).tolist())
    palette = []
    for i in range(256):  # bright, saturated colours: the luma of none is its index
        palette += [(i * 97) % 256, (i * 53 + 128) % 256, (255 - i * 31) % 256]
    im.putpalette(palette)
    im.save(path)


def _save_image(path, h=16, w=16):
    Image.fromarray((np.random.default_rng(0).random((h, w)) * 255).astype(np.uint8)).save(path)


def _raises(fn, match):
    """The message of the error ``fn`` raises, MONAI's "applying transform" wrappers unwrapped."""
    with pytest.raises(Exception) as info:
        fn()
    e, text = info.value, []
    while e is not None:
        text.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(re.search(match, t) for t in text), text


def test_a_palette_label_map_is_read_as_its_indices(tmp_path):
    lab = _labels()
    _save_palette(tmp_path / "lab.png", lab)
    with Image.open(tmp_path / "lab.png") as im:
        assert im.mode == "P"
    np.testing.assert_array_equal(read_label_map(tmp_path / "lab.png"), lab)
    _save_image(tmp_path / "img.png")
    out = oct_segmentation_transforms(16)(
        {"image": str(tmp_path / "img.png"), "label": str(tmp_path / "lab.png")}
    )
    np.testing.assert_array_equal(out["label"][0].numpy(), lab)


def test_rgb_label_maps_and_values_outside_the_classes_are_refused(tmp_path):
    lab = _labels()
    Image.fromarray(np.stack([lab * 10] * 3, -1)).save(tmp_path / "rgb.png")
    _save_image(tmp_path / "img.png")
    tf = oct_segmentation_transforms(16)
    _raises(
        lambda: tf({"image": str(tmp_path / "img.png"), "label": str(tmp_path / "rgb.png")}),
        "colour image: its colours are not class indices",
    )
    bad = lab.copy()
    bad[0, 0] = 20
    Image.fromarray(bad).save(tmp_path / "big.png")
    _raises(
        lambda: oct_segmentation_transforms(16, num_classes=13)(
            {"image": str(tmp_path / "img.png"), "label": str(tmp_path / "big.png")}
        ),
        r"value\(s\) \[20\] outside the 13 classes",
    )


def test_the_segmentation_bundle_checks_its_data_before_training(tmp_path):
    root = tmp_path / "seg"
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir()
    for i in range(2):
        _save_image(root / "train" / "images" / f"a{i}.png")
        Image.fromarray(_labels()).save(root / "train" / "labels" / f"a{i}.png")
    _save_image(root / "val" / "images" / "v.png")
    Image.fromarray(_labels()).save(root / "val" / "labels" / "v.png")
    good = check_segmentation_dataset(root, 13)
    assert [p for p in good if p.severity == "error"] == []
    # an RGB label map, a value outside the classes, a truncated validation image, a size mismatch
    Image.fromarray(np.stack([_labels()] * 3, -1)).save(root / "train" / "labels" / "a0.png")
    data = (root / "val" / "images" / "v.png").read_bytes()
    (root / "val" / "images" / "v.png").write_bytes(data[: len(data) // 2])
    Image.fromarray(_labels(8, 8)).save(root / "train" / "labels" / "a1.png")
    problems = check_segmentation_dataset(root, 13)
    errors = {p.path: p.message for p in problems if p.severity == "error"}
    assert set(errors) == {
        str(root / "train" / "labels" / "a0.png"),
        str(root / "train" / "labels" / "a1.png"),
        str(root / "val" / "images" / "v.png"),
    }
    assert "colour" in errors[str(root / "train" / "labels" / "a0.png")]
    assert "size (8, 8)" in errors[str(root / "train" / "labels" / "a1.png")]
    with pytest.raises(BundleInputError, match="failed the data-set check with 3 error"):
        prepare_oct_layer_dataset(root, tmp_path / "synthetic", num_classes=13, progress=False)
