from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from monai_adv.apps.oct import (
    GENERATOR_VERSION,
    MANIFEST_NAME,
    OCT_CLASSES,
    kermany_datalist,
    write_synthetic_oct_dataset,
)
from monai_adv.apps.oct.synthetic import main


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_layout_manifest_and_idempotence(tmp_path):
    root = tmp_path / "syn"
    splits = {"train": 2, "unlabeled": 1, "test": 1}
    m = write_synthetic_oct_dataset(root, image_size=32, seed=5, splits=splits, num_workers=1, progress=False)
    assert m["counts"] == {"train": 8, "unlabeled": 4, "test": 4}
    for c in OCT_CLASSES:
        names = sorted(p.name for p in (root / "train" / c).iterdir())
        assert len(names) == 2 and all(n.startswith(c + "-") and n.endswith(".jpeg") for n in names)
    unl = sorted(p.name for p in (root / "unlabeled").iterdir())
    assert len(unl) == 4 and all(n.startswith("SCAN-") for n in unl)  # the class is not in the name
    with Image.open(root / "test" / "DME" / os.listdir(root / "test" / "DME")[0]) as im:
        assert im.size == (32, 32) and im.mode == "L"
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert len(manifest["files"]) == 16 and all("sha1" in f for f in manifest["files"])
    assert all(
        "hidden_label" in f and "label" not in f for f in manifest["files"] if f["split"] == "unlabeled"
    )

    # second call: nothing is rendered again
    stamp = {p: (root / p).stat().st_mtime_ns for p in _files(root)}
    m2 = write_synthetic_oct_dataset(
        root, image_size=32, seed=5, splits=splits, num_workers=1, progress=False
    )
    assert m2 == m
    assert {p: (root / p).stat().st_mtime_ns for p in _files(root)} == stamp

    # a damaged and a missing file are rendered again, identically
    victim = root / m["files"][0]["path"]
    good = victim.read_bytes()
    victim.write_bytes(b"garbage")
    (root / m["files"][1]["path"]).unlink()
    write_synthetic_oct_dataset(root, image_size=32, seed=5, splits=splits, num_workers=1, progress=False)
    assert victim.read_bytes() == good and (root / m["files"][1]["path"]).is_file()

    # other arguments: refuse unless overwrite
    with pytest.raises(FileExistsError, match="different arguments"):
        write_synthetic_oct_dataset(root, image_size=32, seed=6, splits=splits, progress=False)
    write_synthetic_oct_dataset(
        root, image_size=32, seed=6, splits={"train": 1}, progress=False, overwrite=True
    )
    assert len(_files(root)) == 4 + 1


def test_a_set_from_an_older_generator_is_not_reused(tmp_path):
    kw = dict(image_size=16, seed=3, splits={"train": 1}, num_workers=1, progress=False)
    m = write_synthetic_oct_dataset(tmp_path, **kw)
    assert m["arguments"]["generator_version"] == GENERATOR_VERSION
    old = dict(m, arguments=dict(m["arguments"], generator_version=GENERATOR_VERSION - 1))
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(old))
    with pytest.raises(FileExistsError, match=f"generator version {GENERATOR_VERSION - 1}, this is"):
        write_synthetic_oct_dataset(tmp_path, **kw)
    assert write_synthetic_oct_dataset(tmp_path, overwrite=True, **kw) == m


def test_workers_do_not_change_the_images(tmp_path):
    kw = dict(image_size=24, seed=1, splits={"train": 2}, progress=False, images_per_patient=2)
    a = write_synthetic_oct_dataset(tmp_path / "a", num_workers=1, **kw)
    b = write_synthetic_oct_dataset(tmp_path / "b", num_workers=2, **kw)
    assert [f["sha1"] for f in a["files"]] == [f["sha1"] for f in b["files"]]
    # two images per synthetic patient
    assert len({f["patient"] for f in a["files"]}) == 4


def test_png_and_datalist_roundtrip(tmp_path):
    root = tmp_path / "png"
    write_synthetic_oct_dataset(
        root, 2, image_size=16, splits=("train", "unlabeled"), image_format="png", progress=False
    )
    labeled, unlabeled = kermany_datalist(root, "train")
    assert len(labeled) == 8 and not unlabeled and labeled[0]["image"].endswith(".png")
    assert sorted({d["label"] for d in labeled}) == [0, 1, 2, 3]
    none, unl = kermany_datalist(root, "unlabeled")
    assert none == [] and len(unl) == 8 and all("label" not in d for d in unl)
    arr = np.asarray(Image.open(labeled[0]["image"]))
    assert arr.dtype == np.uint8 and arr.shape == (16, 16)


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"n_per_class": -1}, ValueError),
        ({"image_format": "gif"}, ValueError),
        ({"splits": ("train", "../x")}, ValueError),
        ({"images_per_patient": 0}, ValueError),
        ({"n_per_class": {"train": 1}, "splits": ("train", "test")}, ValueError),
        ({"padding_prob": 2.0}, ValueError),
    ],
)
def test_writer_bad_arguments(tmp_path, kwargs, err):
    kw = {"n_per_class": 1, "image_size": 16, "progress": False, **kwargs}
    with pytest.raises(err):
        write_synthetic_oct_dataset(tmp_path / "bad", **kw)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        [
            "--out",
            str(out),
            "--n-train",
            "1",
            "--n-unlabeled",
            "0",
            "--n-test",
            "1",
            "--size",
            "16",
            "--no-progress",
        ]
    )
    assert rc == 0 and "wrote 8 images" in capsys.readouterr().out
    assert (
        (out / "train" / "CNV").is_dir()
        and (out / "test" / "NORMAL").is_dir()
        and not (out / "unlabeled").exists()
    )
    rc = main(
        [
            "--out",
            str(out),
            "--n-train",
            "2",
            "--n-test",
            "0",
            "--n-unlabeled",
            "0",
            "--size",
            "16",
            "--no-progress",
        ]
    )
    assert rc == 2 and "different arguments" in capsys.readouterr().out
