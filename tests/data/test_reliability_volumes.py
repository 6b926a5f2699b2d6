"""Volumes read safely, once, in their modality's units (docs/reliability.md, part 2 items 5, 7, 12)."""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_adv.apps.oct import LoadOCT, count_bscans
from monai_adv.bundle import image_datalist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import write_oct_dicom  # noqa: E402


def _dicom_bomb(path):
    write_oct_dicom(path, np.zeros((1, 8, 8), np.uint8))
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 2_000_000_000
    ds.save_as(path)
    return path


def _nifti2_bomb(path):
    nib.save(nib.Nifti2Image(np.zeros((8, 8, 2), np.uint8), np.eye(4)), path)
    data = bytearray(Path(path).read_bytes())
    data[16 + 3 * 8 : 16 + 4 * 8] = struct.pack("<q", 2_000_000_000)  # dim[3]: the number of B-scans
    Path(path).write_bytes(bytes(data))
    return path


def test_a_header_claiming_two_billion_bscans_is_refused_at_once(tmp_path):
    folder = tmp_path / "scans"
    folder.mkdir()
    dcm, nii = _dicom_bomb(folder / "bomb.dcm"), _nifti2_bomb(folder / "bomb.nii")
    assert dcm.stat().st_size < 2000 and nii.stat().st_size < 2000
    t0 = time.perf_counter()
    with pytest.raises(OSError, match=r"claims 2000000000 frame\(s\)"):
        count_bscans(dcm)
    with pytest.raises(OSError, match=r"claims a volume of shape \(8, 8, 2000000000\)"):
        count_bscans(nii)
    items = image_datalist(folder)  # listed as one unreadable item each, for inference to report
    assert items == [{"image": str(dcm)}, {"image": str(nii)}]
    for f in (dcm, nii):
        with pytest.raises(OSError, match="claims"):
            LoadOCT()(f, 0)
    assert time.perf_counter() - t0 < 5.0


def test_a_volume_is_decoded_once_for_all_its_bscans(tmp_path, monkeypatch):
    vol = np.random.default_rng(0).integers(0, 255, (16, 16, 8)).astype(np.uint8)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    reads = []
    real = nib.arrayproxy.ArrayProxy.__array__

    def counting(self, *args, **kwargs):
        reads.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(nib.arrayproxy.ArrayProxy, "__array__", counting)
    loader = LoadOCT(scale=None)
    for i in range(8):
        np.testing.assert_array_equal(loader(path, i)[0].numpy(), vol[..., i])
    assert len(reads) == 1
    loader(path, 0)[0].fill_(7)  # a B-scan is a copy: changing it leaves the kept volume alone
    np.testing.assert_array_equal(loader(path, 0)[0].numpy(), vol[..., 0])


def test_dicom_rescale_slope_and_intercept_are_applied(tmp_path):
    stored = np.random.default_rng(1).integers(0, 4096, (2, 8, 8)).astype(np.uint16)
    path = write_oct_dicom(tmp_path / "ct.dcm", stored, bits=12)
    ds = pydicom.dcmread(path)
    ds.RescaleSlope, ds.RescaleIntercept = -1, 4095  # an inverting modality LUT
    ds.save_as(path)
    expected = pydicom.pixels.apply_modality_lut(stored, pydicom.dcmread(path))
    raw = LoadOCT(scale=None)(path, 1)[0].numpy()
    np.testing.assert_allclose(raw, expected[1])
    auto = LoadOCT()(path, 1)[0].numpy()
    np.testing.assert_allclose(auto, (4095 - stored[1]) / 4095.0, atol=1e-6)
