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


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_files_respect_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "predictions.csv", "a,b\n")
        pt = atomic_torch_save({"w": torch.ones(1)}, tmp_path / "checkpoint.pt")
    finally:
        os.umask(old)
    for p in (text, pt):
        assert os.stat(p).st_mode & 0o777 == expected, oct(os.stat(p).st_mode)


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")
    os.chmod(path, 0o640)
    atomic_write_json(path, {"new": 1})
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    import subprocess
    import sys
    import time

    from monai_adv.io import _host_tag, remove_stale_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    host = _host_tag()
    stale = tmp_path / f".model.pt.{dead.pid}@{host}-abc123.tmp"
    live = tmp_path / f".model.pt.{os.getpid()}@{host}-def456.tmp"  # a writer still at work: kept
    legacy_old = tmp_path / ".report.json.k2j4h5g6.tmp"  # an older version's name: removed once old
    legacy_new = tmp_path / ".report.json.a1b2c3d4.tmp"
    for p in (stale, live, legacy_old, legacy_new):
        p.write_bytes(b"partial")
    past = time.time() - 3600
    os.utime(legacy_old, (past, past))
    atomic_torch_save({"w": torch.ones(1)}, tmp_path / "model.pt")  # the next write of model.pt cleans up
    assert not stale.exists() and live.exists()
    assert remove_stale_temp_files(tmp_path) == [str(legacy_old)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, legacy_new.name, "model.pt"])
