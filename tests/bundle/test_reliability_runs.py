"""Runs that cannot collide (docs/reliability.md, part 2 item 3): derived data named by everything it
depends on, and a lock on a run folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monai_adv.apps.oct import GENERATOR_VERSION, MANIFEST_NAME
from monai_adv.bundle.data import prepare_oct_dataset
from monai_adv.io import FolderLock, FolderLockedError, hold_folder_lock, lock_folders_while_running

ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"train": 1, "val": 1, "test": 1}


def _prepare(folder, seed):
    return prepare_oct_dataset(
        folder, folder, n_per_class=COUNTS, image_size=16, seed=seed, num_workers=1, progress=False
    )


def _snapshot(root):
    return {p: p.read_bytes() for p in Path(root).rglob("*") if p.is_file()}


def test_two_seeds_on_one_data_folder_never_replace_each_others_set(tmp_path):
    syn = str(tmp_path / "data" / "synthetic_oct_16")
    first = _prepare(syn, seed=0)
    before = _snapshot(first)
    second = _prepare(syn, seed=1)  # as a second run started beside the first
    assert second != first
    assert second.endswith(f"@size16-seed1-train1-val1-test1-v{GENERATOR_VERSION}")
    assert _snapshot(first) == before  # the first run's images are untouched
    assert json.loads((Path(second) / MANIFEST_NAME).read_text())["arguments"]["seed"] == 1
    assert json.loads((Path(first) / MANIFEST_NAME).read_text())["arguments"]["seed"] == 0
    assert _prepare(syn, seed=0) == first and _prepare(syn, seed=1) == second  # each finds its own
    assert _snapshot(first) == before


def _holder(folder):
    code = (
        "import sys, time; from monai_adv.io import FolderLock; "
        f"FolderLock({str(folder)!r}).acquire(); print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_in_a_locked_folder_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(
    tmp_path,
):
    run_dir = tmp_path / "runs" / "ssat"
    proc = _holder(run_dir)
    try:
        with pytest.raises(
            FolderLockedError, match=rf"in use by another run \(pid {proc.pid} on .*, started "
        ):
            FolderLock(run_dir, what="run folder").acquire()
        t0 = time.monotonic()
        with pytest.raises(FolderLockedError):
            FolderLock(run_dir, wait_s=0.6).acquire()  # waits, then refuses
        assert time.monotonic() - t0 >= 0.5
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (run_dir / ".lock").is_file()  # the killed holder's lock is left behind ...
    with FolderLock(run_dir) as lock:  # ... and taken over
        assert json.loads((run_dir / ".lock").read_text())["pid"] == os.getpid() and lock.held
    assert not (run_dir / ".lock").exists()
    assert hold_folder_lock(run_dir) == hold_folder_lock(run_dir) == str(run_dir)  # once per process


def test_a_training_holds_its_run_and_model_folders_while_it_runs_and_gives_them_back_however_it_ends(
    tmp_path,
):
    run_dir, models = tmp_path / "runs" / "ssat", tmp_path / "models"

    class Trainer:
        def __init__(self, fail):
            self.fail, self.saw = fail, None

        def run(self):
            for folder in (run_dir, models):  # a second run meanwhile is refused
                with pytest.raises(FolderLockedError, match=rf"pid {os.getpid()}"):
                    FolderLock(folder).acquire()
            self.saw = "refused"
            if self.fail:
                raise RuntimeError("training failed")

    t = lock_folders_while_running(Trainer(fail=True), run_dir, models)
    with pytest.raises(RuntimeError, match="training failed"):
        t.run()
    assert t.saw == "refused" and not (run_dir / ".lock").exists() and not (models / ".lock").exists()
    t = lock_folders_while_running(Trainer(fail=False), run_dir, models, run_dir)
    t.run()
    assert not (run_dir / ".lock").exists() and not (models / ".lock").exists()
    for bundle in ("oct_robust_classification", "oct_layer_segmentation"):
        run = json.loads((ROOT / "bundles" / bundle / "configs" / "train.json").read_text())["run"]
        assert run[0] == "$monai_adv.io.lock_folders_while_running(@train#trainer, @run_dir, @ckpt_dir)"


def test_two_seeds_started_at_once_each_get_their_own_set(tmp_path):
    syn = str(tmp_path / "data" / "synthetic_oct_16")
    code = (
        "import sys; from monai_adv.bundle.data import prepare_oct_dataset; "
        f"print(prepare_oct_dataset({syn!r}, {syn!r}, n_per_class={COUNTS!r}, image_size=16, seed=int(sys.argv[1]), "
        "num_workers=1, progress=False))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(seed)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for seed in (0, 1)
    ]
    paths = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs) and paths[0] != paths[1]
    for seed, path in enumerate(paths):
        manifest = json.loads((Path(path) / MANIFEST_NAME).read_text())
        assert manifest["arguments"]["seed"] == seed and manifest["complete"] is True
        assert all((Path(path) / f["path"]).is_file() for f in manifest["files"])
