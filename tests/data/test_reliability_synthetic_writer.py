"""The synthetic writer touches only its own files (docs/reliability.md, part 2 item 1)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from monai_adv.apps.oct import MANIFEST_NAME, write_synthetic_oct_dataset

SPLITS = {"train": 1}


def _write(root, seed=0, **kw):
    return write_synthetic_oct_dataset(
        root, image_size=16, seed=seed, splits=SPLITS, num_workers=1, progress=False, **kw
    )


def test_a_crafted_manifest_cannot_delete_files_outside_or_not_written_by_the_writer(tmp_path):
    root = tmp_path / "syn"
    _write(root)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    inside_user = root / "notes.txt"
    inside_user.write_text("mine")
    sha = hashlib.sha1(b"keep me").hexdigest()
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["files"] += [
        {"path": str(outside), "sha1": sha},  # absolute
        {"path": "../precious.txt", "sha1": sha},  # ../
        {"path": "notes.txt", "sha1": "0" * 40},  # inside, but not the file recorded
    ]
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="did not write"):
        _write(root, seed=1, overwrite=True)
    assert outside.read_text() == "keep me" and inside_user.read_text() == "mine"
    assert json.loads((root / MANIFEST_NAME).read_text())["arguments"]["seed"] == 1


def test_a_non_empty_folder_without_its_manifest_is_refused_and_left_untouched(tmp_path):
    real = tmp_path / "real"
    (real / "train" / "CNV").mkdir(parents=True)
    img = real / "train" / "CNV" / "CNV-100000-1.jpeg"
    img.write_bytes(b"a real image")
    with pytest.raises(FileExistsError, match="not empty and holds no synthetic_oct.json"):
        _write(real, overwrite=True)
    assert img.read_bytes() == b"a real image"
    assert sorted(p.name for p in real.rglob("*")) == ["CNV", "CNV-100000-1.jpeg", "train"]
    # a manifest of another format is not the writer's own either
    (real / MANIFEST_NAME).write_text(json.dumps({"files": [{"path": "train/CNV/CNV-100000-1.jpeg"}]}))
    with pytest.raises(FileExistsError, match="not a manifest of the synthetic OCT writer"):
        _write(real, overwrite=True)
    assert img.read_bytes() == b"a real image"


def test_a_split_folder_linked_out_of_the_root_is_not_followed(tmp_path):
    root = tmp_path / "syn"
    _write(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(root / "train")
    (root / "train").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(FileExistsError, match="leads out of the data set folder"):
        _write(root)
    assert list(elsewhere.iterdir()) == []


def test_a_run_killed_while_rendering_is_resumed_not_refused(tmp_path):
    root = tmp_path / "syn"
    m = _write(root)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    for f in manifest["files"]:  # as the manifest written before rendering: no checksums yet
        f.pop("sha1")
    manifest["complete"] = False
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    (root / m["files"][0]["path"]).unlink()
    m2 = _write(root)
    assert m2["complete"] is True and all(f["sha1"] for f in m2["files"])
    assert json.loads((root / MANIFEST_NAME).read_text())["complete"] is True
