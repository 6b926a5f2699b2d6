"""Images read as they are (bit depth, float, colour, NaN), volumes in class folders, and the data-set check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import write_oct_dicom
from PIL import Image

from monai_adv.apps.oct import LoadOCT, check_dataset, kermany_datalist, read_image_file
from monai_adv.apps.oct.check import main as check_main


def test_16_bit_png_and_tiff_keep_their_depth(tmp_path):
    a = (np.arange(32 * 32).reshape(32, 32) * 40).astype(np.uint16)  # 0 .. 40920 of 65535
    for ext in ("png", "tif"):
        path = tmp_path / f"scan16.{ext}"
        Image.fromarray(a).save(path)
        arr, bits = read_image_file(path)
        assert arr.dtype == np.uint16 and bits == 16 and np.array_equal(arr, a)
        x = LoadOCT()(path)
        torch.testing.assert_close(x[0], torch.as_tensor(a / 65535.0, dtype=torch.float32))
        assert 0.0 < float(x.mean()) < 0.5  # not all 1.0, as an 8-bit conversion gave
        m = LoadOCT(scale="minmax")(path)
        assert float(m.min()) == 0.0 and float(m.max()) == 1.0


def test_float_tiff_is_read_as_is_and_nan_is_refused(tmp_path):
    f = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    torch.testing.assert_close(LoadOCT()(tmp_path / "f.tif")[0], torch.as_tensor(f))  # not all 0.0
    wide = f * 1000.0
    Image.fromarray(wide).save(tmp_path / "wide.tif")
    x = LoadOCT()(tmp_path / "wide.tif")
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0  # outside [0, 1]: per image
    f[3, 4] = np.nan
    Image.fromarray(f).save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match=r"nan\.tif.*NaN"):
        LoadOCT()(tmp_path / "nan.tif")


def test_colour_and_8_bit_images(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 1] = 255  # pure green: luma 0.587
    Image.fromarray(rgb).save(tmp_path / "g.png")
    torch.testing.assert_close(LoadOCT()(tmp_path / "g.png"), torch.full((1, 8, 8), 0.587))
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(gray).save(tmp_path / "l.png")
    torch.testing.assert_close(
        LoadOCT()(tmp_path / "l.png")[0], torch.as_tensor(gray / 255.0, dtype=torch.float32)
    )


def test_dicom_and_nifti_in_class_folders_are_loaded(tmp_path):
    import nibabel as nib

    for cls in ("CNV", "NORMAL"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        Image.fromarray(np.full((16, 16), 100, np.uint8)).save(tmp_path / "train" / cls / f"{cls}-1-1.jpeg")
    write_oct_dicom(str(tmp_path / "train" / "CNV" / "eye7.dcm"), np.zeros((3, 16, 16), np.uint8))
    nib.save(
        nib.Nifti1Image(np.zeros((16, 16, 2), np.float32), np.eye(4)),
        tmp_path / "train" / "NORMAL" / "v.nii.gz",
    )
    (tmp_path / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt"):
        labeled, _ = kermany_datalist(tmp_path, "train")
    vols = [it for it in labeled if "frame" in it]
    assert sorted((it["image"].rsplit("/", 1)[-1], it["frame"], it["label"]) for it in vols) == [
        ("eye7.dcm", 0, 0), ("eye7.dcm", 1, 0), ("eye7.dcm", 2, 0), ("v.nii.gz", 0, 3), ("v.nii.gz", 1, 3),
    ]  # fmt: skip
    assert {it["patient"] for it in vols} == {"eye7", "v"}
    assert len(labeled) == 7


def _layout(root, files):
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            Image.fromarray(np.full((12, 12), 80, np.uint8)).save(p)
        else:
            p.write_bytes(content)
    return root


def test_check_dataset_reports_one_line_per_problem_with_its_path(tmp_path, capsys):
    root = _layout(
        tmp_path / "set",
        {
            "train/cnv/CNV-1-1.jpeg": None,  # lower-case folder: CNV
            "train/DME/DME-2-1.jpeg": None,
            "train/DME/DME-3-1.jpeg": b"garbage",  # unreadable
            "train/DME/CNV-4-1.jpeg": None,  # named as another class
            "train/DME/scan.jpeg": None,  # no patient id
            "train/Cnv2/CNV-5-1.jpeg": None,  # not a class
            "test/NORMAL/readme.txt": b"x",  # an empty split
        },
    )
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(root / "train" / "DME" / "DME-6-1.tif")
    problems = check_dataset(root, label_fraction=1.5)
    errors = {
        (p.path.replace(str(root), ""), p.message.split(":")[0].split(";")[0])
        for p in problems
        if p.severity == "error"
    }
    assert errors == {
        ("label_fraction", "must lie in (0, 1], got 1.5"),
        ("/train/Cnv2", "unknown class folder"),
        ("/train/DME/CNV-4-1.jpeg", "is named as class CNV but lies in the DME folder"),
        (
            "/train/DME/scan.jpeg",
            "name does not follow CLASS-PATIENTID-N.ext (needed to keep patients apart)",
        ),
        ("/train/DME/DME-6-1.tif", "unreadable"),  # NaN
        ("/train/DME/DME-3-1.jpeg", "unreadable"),
        ("/test", "holds no usable image"),
    }, problems
    assert any(p.severity == "warning" and p.path.endswith("readme.txt") for p in problems)
    assert check_main(["check", str(root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith("warning(s)") and all(
        line.startswith(("ERROR ", "WARNING ")) for line in out[:-1]
    )


def test_check_dataset_passes_a_good_set_and_needs_two_classes(tmp_path, capsys):
    good = _layout(tmp_path / "good", {"train/CNV/CNV-1-1.jpeg": None, "train/normal/NORMAL-2-1.jpeg": None})
    assert [p for p in check_dataset(good) if p.severity == "error"] == []
    assert check_main(["check", str(good)]) == 0
    one = _layout(tmp_path / "one", {"train/CNV/CNV-1-1.jpeg": None})
    assert any("training needs more than one" in p.message for p in check_dataset(one))
    assert [p.message for p in check_dataset(tmp_path / "missing")] == ["does not exist"]
    flat = _layout(tmp_path / "flat", {"CNV/CNV-1-1.jpeg": None})
    assert "holds class folders, not split folders" in check_dataset(flat)[0].message
    assert "split folder missing" in check_dataset(good, required_splits=("train", "test"))[0].message
