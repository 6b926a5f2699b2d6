"""A tiny SSAT training run, launched by the tests as a subprocess (plain or under torchrun).

Prints ``ITER n`` after every iteration (for the SIGKILL test) and writes, per rank, the final
parameters and a JSON summary to ``--out``. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from ignite.engine import Events
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import toy_dataset  # noqa: E402

from monai_adv.engines import (  # noqa: E402
    AdversarialTrainingEvents,
    SemiSupervisedAdversarialTrainer,
    adversarial_training_metrics,
)
from monai_adv.handlers import ResumableCheckpointHandler, TorchRNGState  # noqa: E402
from monai_adv.transforms import FGSM  # noqa: E402


def tiny_net(batch_norm: bool = False) -> nn.Module:
    """Without batch norm (the default), DDP on per-rank halves equals one process on the whole batch."""
    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(4)] if batch_norm else []
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        *norm,
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64, 4),
    )


class _Labeled(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt", default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="global batch size")
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--save-every", type=int, default=3)
    p.add_argument("--bn", action="store_true", help="batch norm; record the buffers the pseudo-labels use")
    a = p.parse_args()
    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0

    x, y = toy_dataset(40, seed=1)
    xu, _ = toy_dataset(48, seed=2)
    labeled_ds, unlabeled_ds = _Labeled(x, y), TensorDataset(xu)
    b = a.batch // world
    if world > 1:
        lab = DataLoader(labeled_ds, b, sampler=DistributedSampler(labeled_ds, shuffle=False))
        unl = DataLoader(unlabeled_ds, b, sampler=DistributedSampler(unlabeled_ds, shuffle=False))
    else:
        lab, unl = DataLoader(labeled_ds, b), DataLoader(unlabeled_ds, b)

    net = tiny_net(a.bn)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    model = nn.parallel.DistributedDataParallel(net) if world > 1 else net
    attack = FGSM(net, eps=(0.001, 0.003))
    attack.set_random_state(11)
    trainer = SemiSupervisedAdversarialTrainer(
        "cpu",
        a.epochs,
        lab,
        unl,
        model,
        opt,
        nn.CrossEntropyLoss(),
        attack,
        key_train_metric=adversarial_training_metrics(),
        decollate=False,
    )
    ckpt = None
    if a.ckpt:
        ckpt = ResumableCheckpointHandler(
            a.ckpt,
            {"trainer": trainer, "network": net, "optimizer": opt, "rng": TorchRNGState()},
            save_every_iters=a.save_every,
        )
        ckpt.attach(trainer)
    run = {"iterations_run": 0, "start_iteration": None, "epochs_completed": [], "buffer_sums": []}

    @trainer.on(AdversarialTrainingEvents.PSEUDO_LABELS_COMPLETED)
    def _buffers(engine):
        run["buffer_sums"].append([float(b.double().sum()) for b in net.buffers()])

    @trainer.on(Events.ITERATION_COMPLETED)
    def _report(engine):
        if run["start_iteration"] is None:
            run["start_iteration"] = engine.state.iteration - 1
        run["iterations_run"] += 1
        if rank == 0:
            print(f"ITER {engine.state.iteration}", flush=True)
        if a.sleep:
            time.sleep(a.sleep)

    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: run["epochs_completed"].append(e.state.epoch))
    trainer.run()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, out / f"params_rank{rank}.pt")
    summary = dict(
        run,
        rank=rank,
        world=world,
        epoch=trainer.state.epoch,
        iteration=trainer.state.iteration,
        epoch_length=trainer.state.epoch_length,
        resumed_from=str(ckpt.resumed_from) if ckpt and ckpt.resumed_from else None,
        metrics={k: float(v) for k, v in trainer.state.metrics.items()},
        last_output={k: v for k, v in trainer.state.output.items() if isinstance(v, float)},
    )
    (out / f"summary_rank{rank}.json").write_text(json.dumps(summary))
    if world > 1:
        # Tear down in order: every rank past its last collective, then the DDP wrapper (whose reducer
        # holds the process group) freed while the interpreter is whole, then the group. Leaving the
        # group to die during interpreter finalisation aborts the process now and then (SIGABRT,
        # "terminate called without an active exception"; pytorch/pytorch#179291).
        dist.barrier()
        del trainer, model, ckpt
        gc.collect()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
