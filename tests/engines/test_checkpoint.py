"""Atomic checkpoints, loud failures on bad files, and resume after SIGKILL to the same final epoch."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import SmallCNN, toy_dataset
from ignite.engine import Events

from monai_adv.engines import (
    CheckpointError,
    ResumableCheckpointHandler,
    SemiSupervisedAdversarialTrainer,
    TorchRNGState,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from monai_adv.transforms import FGSM

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("train_worker.py")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"w": torch.ones(3)}, path)
    real_save = torch.save

    def failing_save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"w": torch.zeros(3)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "ckpt.pt.sha256"]  # no temp file left
    assert verify_checkpoint(path)  # the old file and its checksum
    torch.testing.assert_close(torch.load(path, weights_only=True)["w"], torch.ones(3))  # old file intact


def _objects():
    net = SmallCNN(width=4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    return net, opt


def test_round_trip_restores_network_optimizer_and_rng(tmp_path):
    net, opt = _objects()
    net(torch.rand(2, 1, 16, 16)).sum().backward()
    opt.step()
    rng = TorchRNGState()
    path = save_checkpoint(
        {"network": net.state_dict(), "optimizer": opt.state_dict(), "rng": rng.state_dict()},
        tmp_path / "c.pt",
    )
    expected = torch.rand(3)
    net2, opt2 = _objects()
    load_checkpoint(path, {"network": net2, "optimizer": opt2, "rng": rng})
    torch.testing.assert_close(torch.rand(3), expected)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert opt2.state_dict()["state"][0]["step"] == 1


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_or_truncated_checkpoint_is_a_clear_error(tmp_path, damage):
    net, opt = _objects()
    path = save_checkpoint({"network": net.state_dict()}, tmp_path / "checkpoint_000000005.pt")
    data = path.read_bytes()
    path.write_bytes(
        {"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"not a checkpoint" * 10}[damage]
    )
    with pytest.raises(CheckpointError, match=str(path.name)):
        load_checkpoint(path, {"network": net})
    # resuming from a folder whose newest checkpoint is bad fails loudly instead of starting over
    handler = ResumableCheckpointHandler(tmp_path, {"network": net})
    with pytest.raises(CheckpointError, match="checkpoint_000000005.pt"):
        handler.load_latest()


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"network": _Evil()}, f)
    net, _ = _objects()
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path, {"network": net})


def test_missing_entry_and_shape_mismatch_are_errors(tmp_path):
    net, opt = _objects()
    path = save_checkpoint({"network": net.state_dict()}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="lacks \\['optimizer'\\]"):
        load_checkpoint(path, {"network": net, "optimizer": opt})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, {"network": SmallCNN(width=8)})
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", {"network": net})


def test_handler_saves_prunes_and_resumes_in_process(tmp_path):
    x, y = toy_dataset(24, seed=1)
    xu, _ = toy_dataset(16, seed=2)
    labeled = [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in range(0, 24, 8)]

    def build(max_epochs):
        torch.manual_seed(0)
        net = SmallCNN(width=4)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        tr = SemiSupervisedAdversarialTrainer(
            "cpu", max_epochs, labeled, [xu], net, opt, nn.CrossEntropyLoss(), FGSM(net, eps=0.002)
        )
        tr.add_event_handler(Events.EPOCH_COMPLETED, lambda e: sched.step())
        h = ResumableCheckpointHandler(
            tmp_path,
            {"trainer": tr, "network": net, "optimizer": opt, "scheduler": sched},
            save_every_iters=2,
            n_saved=2,
        )
        h.attach(tr)
        return tr, net, sched, h

    tr, net, sched, h = build(2)
    tr.run()
    its = [i for i, _ in list_checkpoints(tmp_path)]
    assert its == [4, 6] and h.resumed_from is None  # every 2 iterations and at epoch ends, newest 2 kept
    tr2, net2, sched2, h2 = build(4)  # continue the same run to 4 epochs
    tr2.run()
    assert h2.resumed_from == h.last_saved and h2.run_id == h.run_id  # the same run continues
    assert h2.resumed_from.name == f"checkpoint_{h.run_id}_000000006.pt"
    assert tr2.state.epoch == 4 and tr2.state.iteration == 12
    assert sched2.last_epoch == 4  # the scheduler carried on from its saved state
    assert latest_checkpoint(tmp_path).name == f"checkpoint_{h.run_id}_000000012.pt"


def test_sigkill_mid_epoch_then_resume_to_the_same_final_epoch(tmp_path):
    """Kill a training process with SIGKILL mid-epoch; a new process resumes from the last checkpoint."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(WORKER), "--ckpt", str(ckpt), "--epochs", "4", "--save-every", "3"]
    # 4 epochs x 5 iterations; checkpoints at 3, 5, 6, 9, 10, ...; killed around iteration 8 (epoch 2)
    proc = subprocess.Popen(
        cmd + ["--out", str(out / "killed"), "--sleep", "0.3"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        for line in proc.stdout:
            if line.strip() == "ITER 8":
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "killed").exists()  # it never finished
    saved = [i for i, _ in list_checkpoints(ckpt)]
    assert saved and 5 <= saved[-1] < 20, saved
    last = saved[-1]

    subprocess.run(
        cmd + ["--out", str(out / "resumed")],
        env=env,
        cwd=tmp_path,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    s = json.loads((out / "resumed" / "summary_rank0.json").read_text())
    assert s["resumed_from"].endswith(f"_{last:09d}.pt")
    assert s["start_iteration"] == last  # carried on from the checkpoint, not from scratch
    assert s["iterations_run"] == 20 - last
    assert s["epoch"] == 4 and s["iteration"] == 20  # the same final epoch count as an uninterrupted run
    assert s["epochs_completed"][-1] == 4 and s["epochs_completed"][0] == last // 5 + 1
