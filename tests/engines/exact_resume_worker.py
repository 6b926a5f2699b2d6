"""An SSAT run with everything random a real run has, launched by the tests as a subprocess.

Shuffled labeled and unlabeled MONAI loaders (the unlabeled one cycles at its own pace), random
augmentations, dropout, an attack with a random eps, a validator that keeps the best model by its key
metric: the exact-resume test kills it with SIGKILL at a chosen iteration, resumes it, and compares
with a run that was never interrupted. Writes ``final.pt`` (weights), ``log.jsonl`` (every logged
loss and validation metric, exactly, as float hex) and ``best.pt`` (MONAI's CheckpointSaver) to
``--out``. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.nn as nn
from ignite.engine import Events
from ignite.metrics import Accuracy
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.handlers import CheckpointSaver, ValidationHandler, from_engine
from monai.transforms import Compose, RandFlipd, RandGaussianNoised
from monai.utils import set_determinism

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import SmallCNN, toy_dataset  # noqa: E402

from monai_adv.engines import SemiSupervisedAdversarialTrainer  # noqa: E402
from monai_adv.handlers import ResumableCheckpointHandler  # noqa: E402
from monai_adv.transforms import FGSM  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--save-every", type=int, default=1)
    p.add_argument("--kill-at", type=int, default=0, help="SIGKILL itself when this iteration starts")
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(1)
    set_determinism(seed=0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    x, y = toy_dataset(20, seed=1)
    xu, _ = toy_dataset(14, seed=2)
    xv, yv = toy_dataset(12, seed=3)
    aug = Compose(
        [RandFlipd("image", prob=0.5, spatial_axis=1), RandGaussianNoised("image", prob=0.5, std=0.02)]
    )
    labeled = DataLoader(
        Dataset([{"image": x[i], "label": y[i]} for i in range(20)], aug), batch_size=6, shuffle=True
    )
    unlabeled = DataLoader(Dataset([{"image": xu[i]} for i in range(14)], aug), batch_size=4, shuffle=True)
    val = DataLoader(Dataset([{"image": xv[i], "label": yv[i]} for i in range(12)]), batch_size=6)

    net = SmallCNN(width=4)
    opt = torch.optim.AdamW(net.parameters(), lr=0.01)
    evaluator = SupervisedEvaluator(
        "cpu",
        val,
        net,
        key_val_metric={"val_acc": Accuracy(output_transform=from_engine(["pred", "label"]))},
        decollate=False,
        val_handlers=[
            CheckpointSaver(str(out), {"model": net}, save_key_metric=True, key_metric_filename="best.pt")
        ],
    )
    attack = FGSM(net, eps=(0.001, 0.01), value_range=(0.0, 1.5))
    trainer = SemiSupervisedAdversarialTrainer(
        "cpu",
        a.epochs,
        labeled,
        unlabeled,
        net,
        opt,
        nn.CrossEntropyLoss(),
        attack,
        decollate=False,
        train_handlers=[ValidationHandler(validator=evaluator, interval=1, epoch_level=True)],
    )
    attack.set_random_state(seed=0)  # as the bundle does: every start seeds the attack
    ckpt = ResumableCheckpointHandler(
        a.ckpt,
        {"trainer": trainer, "network": net, "optimizer": opt},
        save_every_iters=a.save_every,
        resume=a.resume,
        run_info={"seed": 0},
    )
    ckpt.attach(trainer)
    log = open(out / "log.jsonl", "a")

    @trainer.on(Events.ITERATION_COMPLETED)
    def _log_loss(engine):
        loss = float(engine.state.output["loss"])
        log.write(json.dumps({"it": engine.state.iteration, "loss": loss.hex()}) + "\n")
        log.flush()

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _log_val(engine):
        acc = float(engine.state.metrics["val_acc"])
        rec = {
            "epoch": trainer.state.epoch,
            "val_acc": acc.hex(),
            "best": float(engine.state.best_metric).hex(),
        }
        log.write(json.dumps(rec) + "\n")
        log.flush()

    if a.kill_at:

        @trainer.on(Events.ITERATION_STARTED(once=a.kill_at))
        def _kill(engine):
            log.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.run()
    torch.save(net.state_dict(), out / "final.pt")
    print(json.dumps({"resumed_from": str(ckpt.resumed_from), "iteration": trainer.state.iteration}))


if __name__ == "__main__":
    main()
