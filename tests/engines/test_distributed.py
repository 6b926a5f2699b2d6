"""SSAT under torchrun with DDP (2 CPU processes, gloo): ranks stay in step and match one process on the
same global batch; epoch metrics are reduced across ranks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("train_worker.py")

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")


def _run(args: list[str], cwd: Path, timeout: float = 150) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _torchrun_worker(out: Path, *worker_args: str) -> list[str]:
    """The command that runs the training worker in 2 gloo processes under torchrun."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), "--out", str(out), *worker_args,
    ]  # fmt: skip


def test_ddp_two_ranks_match_single_process(tmp_path):
    _run(
        [sys.executable, str(WORKER), "--out", str(tmp_path / "single"), "--epochs", "2", "--batch", "20"],
        tmp_path,
    )
    _run(_torchrun_worker(tmp_path / "ddp", "--epochs", "2", "--batch", "20"), tmp_path)
    single = torch.load(tmp_path / "single" / "params_rank0.pt", weights_only=True)
    r0 = torch.load(tmp_path / "ddp" / "params_rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "params_rank1.pt", weights_only=True)
    moved = False
    for k in single:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0, msg=f"ranks differ in {k}")
        torch.testing.assert_close(
            r0[k], single[k], rtol=1e-4, atol=1e-5, msg=f"DDP != single process in {k}"
        )
    s0 = json.loads((tmp_path / "ddp" / "summary_rank0.json").read_text())
    s1 = json.loads((tmp_path / "ddp" / "summary_rank1.json").read_text())
    ss = json.loads((tmp_path / "single" / "summary_rank0.json").read_text())
    assert s0["world"] == 2 and s0["iteration"] == ss["iteration"] == 4 and s0["epoch"] == 2
    # each rank trains on its own half of every global batch ...
    assert s0["last_output"]["loss_labeled"] != s1["last_output"]["loss_labeled"]
    # ... yet the epoch metrics are all-reduced: equal on both ranks and to the single-process values
    for k, v in ss["metrics"].items():
        assert s0["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-6)
        assert s1["metrics"][k] == s0["metrics"][k]
    first = {k: v for k, v in single.items()}
    spec = importlib.util.spec_from_file_location("train_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    for k, v in worker.tiny_net().state_dict().items():
        moved = moved or not torch.allclose(v, first[k])
    assert moved, "training did not change the parameters"


def test_ddp_ranks_pseudo_label_with_the_same_batch_norm_statistics(tmp_path):
    """Each rank's training forward updates its own running statistics; the next iteration's
    pseudo-labels and attack (eval mode, before DDP's own broadcast) must still use rank 0's."""
    _run(_torchrun_worker(tmp_path / "ddp", "--epochs", "1", "--batch", "10", "--bn"), tmp_path)
    s0 = json.loads((tmp_path / "ddp" / "summary_rank0.json").read_text())
    s1 = json.loads((tmp_path / "ddp" / "summary_rank1.json").read_text())
    assert len(s0["buffer_sums"]) == 4 and s0["buffer_sums"][0]  # 4 iterations, BN buffers recorded
    assert s0["buffer_sums"] == s1["buffer_sums"]
    assert s0["buffer_sums"][1] != s0["buffer_sums"][0]  # the statistics did move between iterations
