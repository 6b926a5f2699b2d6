"""Atomic writes: the destination holds the old file or the complete new one, never a partial one."""

import os

import pytest
import torch

from monai_adv.io import atomic_open, atomic_torch_save, atomic_write_json, atomic_write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]


def test_writes_create_folders_and_round_trip(tmp_path):
    text_path = atomic_write_text(tmp_path / "a" / "b.csv", "x,y\r\n1,2\r\n")
    assert open(text_path, newline="").read() == "x,y\r\n1,2\r\n"  # newlines kept as given (CSV)
    pt = atomic_torch_save({"w": torch.arange(3)}, tmp_path / "c" / "m.pt")
    assert torch.equal(torch.load(pt, weights_only=True)["w"], torch.arange(3))
    assert sorted(os.listdir(tmp_path / "c")) == ["m.pt"]


def test_an_interrupted_save_is_cleaned_up(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise KeyboardInterrupt

    path = tmp_path / "model.pt"
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"bad": Unpicklable()}, path)
    assert os.listdir(tmp_path) == []


def test_json_is_strict_nan_and_inf_become_null(tmp_path):
    import json

    path = atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [1.5, float("-inf")], "c": (2,)})
    text = path and open(path).read()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": [2]}
