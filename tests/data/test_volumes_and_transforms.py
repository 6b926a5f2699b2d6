from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import write_oct_dicom
from monai.data import DataLoader, Dataset

from monai_adv.apps.oct import (
    LoadOCT,
    LoadOCTd,
    SquareCenterCrop,
    count_bscans,
    kermany_datalist,
    oct_eval_transforms,
    oct_train_transforms,
    octmnist_datalist,
    volume_datalist,
)

from .conftest import write_jpeg


def test_dicom_single_and_multi_frame(tmp_path):
    vol = np.random.default_rng(0).integers(0, 256, (3, 30, 40), dtype=np.uint8)
    multi = write_oct_dicom(tmp_path / "vol.dcm", vol)
    single = write_oct_dicom(tmp_path / "one.dcm", vol[1])
    assert count_bscans(multi) == 3 and count_bscans(single) == 1
    load = LoadOCT()
    f2 = load(multi, 2)
    assert f2.shape == (1, 30, 40) and f2.dtype == torch.float32
    np.testing.assert_allclose(f2[0].numpy(), vol[2] / 255.0, atol=1e-6)
    assert f2.meta["frame"] == 2 and f2.meta["filename_or_obj"].endswith("vol.dcm")
    assert load(multi).shape == (1, 30, 40, 3)  # whole volume, B-scans last
    np.testing.assert_allclose(load(single)[0].numpy(), vol[1] / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        load(multi, 3)
    # 12-bit data scaled by BitsStored, MONOCHROME1 inverted
    v12 = np.full((1, 8, 8), 4095, dtype=np.uint16)
    v12[0, 0, 0] = 0
    p12 = write_oct_dicom(tmp_path / "b12.dcm", v12, bits=12)
    assert float(load(p12, 0).max()) == pytest.approx(1.0)
    inv = write_oct_dicom(tmp_path / "inv.dcm", vol[0], photometric="MONOCHROME1")
    np.testing.assert_allclose(load(inv)[0].numpy(), (255 - vol[0]) / 255.0, atol=1e-6)
    items = volume_datalist([multi, single], labels=["DME", 3])
    assert len(items) == 4 and items[0] == {"image": str(multi), "frame": 0, "label": 1}
    assert volume_datalist([multi], bscans=False) == [{"image": str(multi)}]


def test_nifti_bscans_and_volume(tmp_path):
    vol = np.random.default_rng(1).random((30, 40, 5)).astype(np.float32) * 1000.0
    p = tmp_path / "oct.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), p)
    p2 = tmp_path / "bscan.nii"
    nib.save(nib.Nifti1Image(vol[..., 0], np.eye(4)), p2)
    assert count_bscans(p) == 5 and count_bscans(p2) == 1 and count_bscans(p, slice_axis=0) == 30
    load = LoadOCT()
    s = load(p, 4)
    assert s.shape == (1, 30, 40) and 0.0 <= float(s.min()) and float(s.max()) <= 1.0
    assert float(s.max()) == pytest.approx(1.0)  # float data min-max scaled per image
    assert load(p).shape == (1, 30, 40, 5)
    assert LoadOCT(slice_axis=0)(p, 0).shape == (1, 40, 5)
    assert load(p2).shape == (1, 30, 40)
    raw = LoadOCT(scale=None)(p, 0)
    np.testing.assert_allclose(raw[0].numpy(), vol[..., 0], rtol=1e-6)
    items = volume_datalist([p])
    assert [d["frame"] for d in items] == [0, 1, 2, 3, 4] and "label" not in items[0]


def test_unreadable_files_are_named(tmp_path):
    load = LoadOCT()
    for name in ("bad.jpeg", "bad.dcm", "bad.nii.gz"):
        (tmp_path / name).write_bytes(b"\x00garbage\x01" * 10)
        with pytest.raises(OSError, match=name):
            load(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load(tmp_path / "missing.png")
    (tmp_path / "x.xyz").write_bytes(b"1")
    with pytest.raises(ValueError, match="unsupported"):
        load(tmp_path / "x.xyz")
    with pytest.raises(ValueError, match="NaN"):
        load(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        load(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="scale"):
        LoadOCT(scale="zscore")
    with pytest.raises(ValueError, match="volume file"):
        count_bscans(write_jpeg(tmp_path / "a.png", fmt="PNG"))


def test_png_jpeg_array_orientation(tmp_path):
    p = write_jpeg(tmp_path / "a.png", shape=(20, 30), fmt="PNG")
    x = LoadOCT()(p)
    assert x.shape == (1, 20, 30)  # rows are depth: no transposition
    y = LoadOCT()(np.asarray(x[0] * 255, dtype=np.uint8))
    np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-6)
    assert SquareCenterCrop()(x).shape == (1, 20, 20)


def test_transform_chains_on_every_source(tmp_path, kermany_tree):
    vol = np.random.default_rng(0).integers(0, 256, (2, 50, 70), dtype=np.uint8)
    dcm = write_oct_dicom(tmp_path / "v.dcm", vol)
    nii = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(vol, 0, -1).astype(np.uint8), np.eye(4)), nii)
    npz = tmp_path / "octmnist.npz"
    np.savez(npz, train_images=vol, train_labels=np.array([[0], [2]]))
    labeled, _ = kermany_datalist(kermany_tree, "test")
    data = labeled + volume_datalist([dcm, nii], labels=[1, 2]) + octmnist_datalist(npz)[0]
    for tf in (oct_eval_transforms(32), oct_train_transforms(32)):
        tf.set_random_state(0)
        loader = DataLoader(Dataset(data, transform=tf), batch_size=4, num_workers=0)
        n = 0
        for batch in loader:
            img = batch["image"]
            assert img.shape[1:] == (1, 32, 32) and img.dtype == torch.float32
            assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0 + 1e-6
            assert batch["label"].dtype == torch.int64
            n += len(img)
        assert n == len(data) == 10
    d = LoadOCTd("image")({"image": str(dcm), "frame": 1})
    assert d["image"].meta["frame"] == 1
    # unlabeled items pass through the same chain
    out = oct_eval_transforms(16)({"image": labeled[0]["image"]})
    assert out["image"].shape == (1, 16, 16) and "label" not in out
    with pytest.raises(ValueError):
        oct_eval_transforms(0)
