from __future__ import annotations

import numpy as np
import pytest

from monai_adv.apps.oct import (
    kermany_datalist,
    load_octmnist,
    octmnist_datalist,
    parse_kermany_name,
    split_by_patient,
)

from .conftest import write_jpeg


def test_parse_kermany_name():
    assert parse_kermany_name("x/CNV-1016042-66.jpeg") == ("CNV", "1016042", 66)
    with pytest.raises(ValueError, match="CLASS-PATIENTID-N"):
        parse_kermany_name("scan_001.jpeg")


def test_kermany_full_and_fraction_split_by_patient(kermany_tree):
    labeled, unlabeled = kermany_datalist(kermany_tree, "train")
    assert len(labeled) == 24 and unlabeled == []
    assert {d["label"] for d in labeled} == {0, 1, 2, 3}
    assert all(set(d) == {"image", "label", "patient"} for d in labeled)
    for frac in (0.1, 0.34, 0.5, 0.9):
        lab, unl = kermany_datalist(kermany_tree, "train", label_fraction=frac, seed=1)
        assert len(lab) + len(unl) == 24
        assert {d["patient"] for d in lab}.isdisjoint({d["patient"] for d in unl})
        assert all("label" not in d for d in unl)
        assert {d["label"] for d in lab} == {0, 1, 2, 3}  # stratified: every class keeps labels
    lab_a, _ = kermany_datalist(kermany_tree, "train", label_fraction=0.5, seed=3)
    lab_b, _ = kermany_datalist(kermany_tree, "train", label_fraction=0.5, seed=3)
    assert lab_a == lab_b
    test, _ = kermany_datalist(kermany_tree, "test")
    assert len(test) == 4


def test_split_by_patient_shares_patients_across_classes():
    items = [{"image": f"{i}", "label": i % 2, "patient": str(i // 4)} for i in range(40)]
    a, b = split_by_patient(items, 0.3, seed=0)
    assert {d["patient"] for d in a}.isdisjoint({d["patient"] for d in b})
    assert 8 <= len(a) <= 16
    with pytest.raises(ValueError, match="no 'patient'"):
        split_by_patient([{"image": "x"}], 0.5)


@pytest.mark.parametrize("frac", [0.0, -0.1, 1.5, float("nan")])
def test_bad_label_fraction(kermany_tree, frac):
    with pytest.raises(ValueError, match="label_fraction"):
        kermany_datalist(kermany_tree, "train", label_fraction=frac)


def test_kermany_errors(kermany_tree, tmp_path):
    with pytest.raises(FileNotFoundError, match="splits found"):
        kermany_datalist(kermany_tree, "val")
    with pytest.raises(FileNotFoundError):
        kermany_datalist(tmp_path / "nowhere")
    (kermany_tree / "train" / "GLAUCOMA").mkdir()
    with pytest.raises(ValueError, match="unknown class folder .*GLAUCOMA"):
        kermany_datalist(kermany_tree, "train")
    (kermany_tree / "train" / "GLAUCOMA").rmdir()
    (kermany_tree / "empty" / "CNV").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        kermany_datalist(kermany_tree, "empty")
    write_jpeg(kermany_tree / "train" / "DME" / "CNV-5-1.jpeg")
    with pytest.raises(ValueError, match="named as class CNV"):
        kermany_datalist(kermany_tree, "train")
    (kermany_tree / "train" / "DME" / "CNV-5-1.jpeg").unlink()
    write_jpeg(kermany_tree / "train" / "DME" / "oddname.jpeg")
    with pytest.raises(ValueError, match="oddname.jpeg"):
        kermany_datalist(kermany_tree, "train")
    lab, _ = kermany_datalist(kermany_tree, "train", patient_id_fn=lambda p: p.stem.split("-")[0])
    assert len(lab) == 25
    (kermany_tree / "train" / "DME" / "oddname.jpeg").unlink()
    write_jpeg(kermany_tree / "train" / "loose.jpeg")
    with pytest.raises(ValueError, match="one sub-folder per class"):
        kermany_datalist(kermany_tree, "train")
    with pytest.raises(ValueError, match="on_error"):
        kermany_datalist(kermany_tree, "test", on_error="ignore")


def test_corrupt_file_raise_or_skip(kermany_tree):
    bad = kermany_tree / "train" / "CNV" / "CNV-7777-1.jpeg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lab, _ = kermany_datalist(kermany_tree, "train")  # names only: not opened
    assert len(lab) == 25
    with pytest.raises(OSError, match="CNV-7777-1.jpeg"):
        kermany_datalist(kermany_tree, "train", check_files=True)
    with pytest.warns(UserWarning, match="CNV-7777-1.jpeg"):
        lab, _ = kermany_datalist(kermany_tree, "train", check_files=True, on_error="skip")
    assert len(lab) == 24


def test_hidden_and_non_image_files_are_ignored(kermany_tree):
    (kermany_tree / "train" / ".DS_Store").write_text("x")
    (kermany_tree / "train" / "CNV" / "notes.txt").write_text("x")
    (kermany_tree / "train" / ".cache").mkdir()
    lab, _ = kermany_datalist(kermany_tree, "train")
    assert len(lab) == 24


@pytest.mark.parametrize("size", [28, 64])
def test_octmnist_npz(tmp_path, size):
    rng = np.random.default_rng(0)
    path = tmp_path / f"octmnist_{size}.npz"
    data = {}
    for split, n in (("train", 40), ("val", 8), ("test", 12)):
        data[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        data[f"{split}_labels"] = (np.arange(n) % 4).reshape(n, 1).astype(np.uint8)
    np.savez(path, **data)
    x, y = load_octmnist(path, "val")
    assert x.shape == (8, size, size) and x.dtype == np.uint8 and y.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    lab, unl = octmnist_datalist(path, "train")
    assert len(lab) == 40 and unl == [] and lab[0]["image"].shape == (size, size)
    lab, unl = octmnist_datalist(path, "train", label_fraction=0.3, seed=0)
    assert len(lab) == 12 and len(unl) == 28 and all("label" not in d for d in unl)
    assert {d["label"] for d in lab} == {0, 1, 2, 3}


def test_octmnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_octmnist(tmp_path / "missing.npz")
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(KeyError, match="train_images"):
        load_octmnist(p)
    q = tmp_path / "broken.npz"
    q.write_bytes(b"not a zip")
    with pytest.raises(OSError, match="broken.npz"):
        load_octmnist(q)
    r = tmp_path / "labels.npz"
    np.savez(r, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.array([[0], [7], [1]]))
    with pytest.raises(ValueError, match="outside"):
        load_octmnist(r)
    s = tmp_path / "count.npz"
    np.savez(s, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.array([[0], [1]]))
    with pytest.raises(ValueError, match="one label per image"):
        load_octmnist(s)
    e = tmp_path / "empty.npz"
    np.savez(e, train_images=np.zeros((0, 8, 8), np.uint8), train_labels=np.zeros((0, 1)))
    with pytest.raises(ValueError, match="empty"):
        octmnist_datalist(e)
    with pytest.raises(ValueError, match="label_fraction"):
        octmnist_datalist(r, label_fraction=0)
