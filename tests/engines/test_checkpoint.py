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
    SemiSupervisedAdversarialTrainer,
    current_run,
    latest_checkpoint,
    list_checkpoints,
    list_runs,
)
from monai_adv.handlers import NonFiniteLossError, ResumableCheckpointHandler, TorchRNGState
from monai_adv.io import CheckpointError, load_checkpoint, save_checkpoint, verify_checkpoint
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


# ------------------------------------------------------------------------ exact resume after SIGKILL
EXACT_WORKER = Path(__file__).with_name("exact_resume_worker.py")


def _run_exact(tmp_path: Path, name: str, *args: str, killed: bool = False) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable,
        str(EXACT_WORKER),
        "--out",
        str(tmp_path / name),
        "--ckpt",
        str(tmp_path / f"{name}_ckpt"),
    ]
    proc = subprocess.run(
        cmd + list(args), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    if killed:
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("exact")
    _run_exact(tmp, "full")
    return tmp / "full"


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill_at, save_every",
    [(7, 1), (9, 1), (12, 5)],
    ids=["mid-epoch", "just-after-an-epoch", "two-iterations-after-the-last-checkpoint"],
)
def test_sigkill_at_any_point_then_resume_is_bit_identical(tmp_path, uninterrupted, kill_at, save_every):
    """3 epochs x 4 iterations with shuffled loaders, augmentation, dropout, a random-eps attack and a
    best-model validator: killed at ``kill_at``, resumed, it ends exactly as the uninterrupted run."""
    every = ["--save-every", str(save_every)]
    _run_exact(tmp_path, "part", *every, "--kill-at", str(kill_at), killed=True)
    _run_exact(tmp_path, "part", *every, "--resume")
    for f in ("final.pt", "best.pt"):
        a = torch.load(uninterrupted / f, weights_only=True)
        b = torch.load(tmp_path / "part" / f, weights_only=True)
        assert a.keys() == b.keys()
        differ = [k for k in a if not torch.equal(a[k], b[k])]
        assert not differ, f"{f}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    full = [json.loads(line) for line in (uninterrupted / "log.jsonl").read_text().splitlines()]
    part = [json.loads(line) for line in (tmp_path / "part" / "log.jsonl").read_text().splitlines()]
    # every logged loss and validation metric (bits, as float hex) is one the uninterrupted run logged
    # (the killed run logged some of them twice: before the kill and again after the resume)
    assert all(rec in full for rec in part), [rec for rec in part if rec not in full]
    assert part[-3:] == full[-3:]  # the last two losses and the last validation
    assert {json.dumps(r, sort_keys=True) for r in part} == {json.dumps(r, sort_keys=True) for r in full}


# ----------------------------------------------------------------------------- runs kept apart
def _toy_trainer(tmp_path: Path, max_epochs: int, seed: int, resume: bool, loss=None, **kw):
    x, y = toy_dataset(24, seed=1)
    xu, _ = toy_dataset(16, seed=2)
    labeled = [{"image": x[i : i + 8], "label": y[i : i + 8]} for i in range(0, 24, 8)]
    torch.manual_seed(seed)
    net = SmallCNN(width=4)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    tr = SemiSupervisedAdversarialTrainer(
        "cpu", max_epochs, labeled, [xu], net, opt, loss or nn.CrossEntropyLoss(), FGSM(net, eps=0.002)
    )
    h = ResumableCheckpointHandler(
        tmp_path, {"trainer": tr, "network": net, "optimizer": opt}, save_every_iters=1, n_saved=2,
        resume=resume, run_info={"seed": seed}, **kw,
    )  # fmt: skip
    h.attach(tr)
    return tr, net, h


def test_a_fresh_run_beside_an_old_one_keeps_its_own_checkpoints_and_resumes_itself(tmp_path):
    old_tr, _, old = _toy_trainer(tmp_path, 4, seed=1, resume=False)
    old_tr.run()  # a finished run: checkpoints at iterations 11 and 12
    old_files = sorted(p.name for p in tmp_path.iterdir())
    new_tr, _, new = _toy_trainer(tmp_path, 4, seed=0, resume=False)
    new_tr.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.terminate())  # "killed" at 4
    new_tr.run()
    assert new.run_id != old.run_id
    assert [i for i, _ in list_checkpoints(tmp_path, run_id=new.run_id)] == [
        3,
        4,
    ]  # not pruned by the old files
    assert all(
        (tmp_path / n).exists() for n in old_files if n != "checkpoint_run.json"
    )  # the old run untouched
    assert current_run(tmp_path)["run_id"] == new.run_id
    assert set(list_runs(tmp_path)) == {old.run_id, new.run_id}
    # resuming continues the new run (seed 0) from iteration 4, not the old one's finished checkpoint
    tr, _, h = _toy_trainer(tmp_path, 4, seed=0, resume=True)
    tr.run()
    assert h.run_id == new.run_id and h.resumed_from.name == f"checkpoint_{new.run_id}_000000004.pt"
    assert tr.state.iteration == 12
    # a resume with other settings is refused, naming both
    tr, _, h = _toy_trainer(tmp_path, 4, seed=5, resume=True)
    with pytest.raises(CheckpointError, match=r"seed: 0 there, 5 here"):
        tr.run()


def test_files_from_an_older_version_without_run_id_still_resume(tmp_path):
    tr, net, h = _toy_trainer(tmp_path, 1, seed=0, resume=False)
    tr.run()
    (tmp_path / "checkpoint_run.json").unlink()
    for p in tmp_path.glob("checkpoint_*"):
        p.rename(p.with_name(p.name.replace(f"_{h.run_id}", "")))
    tr, _, h2 = _toy_trainer(tmp_path, 2, seed=0, resume=True)
    tr.run()
    assert h2.resumed_from.name == "checkpoint_000000003.pt" and tr.state.iteration == 6


# ------------------------------------------------------------------------------- non-finite values
class _NaNAfter(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, pred, target):
        self.calls += 1
        loss = nn.functional.cross_entropy(pred, target)
        return loss * float("nan") if self.calls > self.n else loss


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    tr, net, h = _toy_trainer(tmp_path, 3, seed=0, resume=False, loss=_NaNAfter(4))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at iteration 5 .*checkpoint_.*_000000004\.pt"):
        tr.run()
    assert [i for i, _ in list_checkpoints(tmp_path)] == [3, 4]  # nothing saved from the NaN on
    state = torch.load(latest_checkpoint(tmp_path), weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["network"].values())


def test_nan_weights_or_an_altered_file_are_refused_on_resume(tmp_path):
    tr, net, h = _toy_trainer(tmp_path, 1, seed=0, resume=False)
    tr.run()
    path = latest_checkpoint(tmp_path)
    state = torch.load(path, weights_only=True)
    state["network"]["head.weight"][0, 0] = float("nan")
    save_checkpoint(state, path)  # a NaN written with a valid checksum
    tr, _, _ = _toy_trainer(tmp_path, 2, seed=0, resume=True)
    with pytest.raises(CheckpointError, match=r"NaN or infinite values in \['network.head.weight'\]"):
        tr.run()
    state["network"]["head.weight"][0, 0] = 0.5
    torch.save(state, path)  # changed behind the checksum's back
    tr, _, _ = _toy_trainer(tmp_path, 2, seed=0, resume=True)
    with pytest.raises(CheckpointError, match=r"does not match its checksum"):
        tr.run()
    assert (tmp_path / (path.name + ".sha256")).is_file()


def test_the_old_checkpoint_names_still_resolve_with_a_warning():
    import importlib
    import sys

    import monai_adv.engines as engines
    import monai_adv.handlers as handlers
    import monai_adv.io as io

    with pytest.warns(DeprecationWarning, match="monai_adv.handlers.checkpoint"):
        assert engines.ResumableCheckpointHandler is handlers.ResumableCheckpointHandler
    with pytest.warns(DeprecationWarning, match="monai_adv.io"):
        assert engines.save_checkpoint is io.save_checkpoint
    sys.modules.pop("monai_adv.engines.checkpoint", None)
    with pytest.warns(DeprecationWarning, match="split"):
        old = importlib.import_module("monai_adv.engines.checkpoint")
    assert old.load_checkpoint is io.load_checkpoint and old.TorchRNGState is handlers.TorchRNGState
