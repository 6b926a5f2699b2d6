"""Why the paper's SSAT collapses at low label counts, and what keeps it stable: measured per epoch.

Trains :class:`~monai_adv.engines.SemiSupervisedAdversarialTrainer` on the synthetic OCT set (the bundle's
network, data split and augmentation), with the unlabeled images' true labels passed to the trainer
under a monitoring-only key (``hidden_label_key``: never used in the loss), and records after every
epoch: the pseudo-labels' accuracy against the hidden labels, their class histogram, the labeled and
unlabeled loss terms, the unlabeled weight in force, and clean accuracy and per-class recall on the
test set. Each recipe is one row of ``--out`` (JSON lines; a finished recipe is skipped on re-run).

Usage::

    python -m experiments.ssat_collapse.run --n-train 200 --epochs 10      # the old demo's scale: 200 labeled
    python -m experiments.ssat_collapse.run --n-train 1000 --epochs 40     # the demo's scale: 1,000 labeled
    python -m experiments.ssat_collapse.run --plot experiments/ssat_collapse/figures/ssat_collapse.png  # draw what the rows hold

Recipes (``--recipes``): ``paper`` (the preset "ssat" exactly, from scratch), ``threshold`` (the same
with ``confidence_threshold=0.9``: FixMatch's rule), ``warmup`` (the paper's plus
``warmup_epochs`` of labeled-only training and a ``rampup_epochs`` sigmoid ramp of the unlabeled
weight), ``ema`` (warm-up and ramp-up plus mean-teacher pseudo-labels), ``supervised`` (labeled data
only, for reference).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict

import torch
import torch.nn as nn
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader
from monai.networks.nets import resnet10
from monai.utils import set_determinism

from monai_adv.apps.oct import oct_eval_transforms, oct_train_transforms, write_synthetic_oct_dataset
from monai_adv.bundle import oct_split_datalists
from monai_adv.engines import AdvTrainingKeys as K
from monai_adv.engines import AutocastSupervisedTrainer, create_trainer
from monai_adv.metrics import classification_summary
from monai_adv.precision import precision_record, resolve_precision

CLASSES = ["CNV", "DME", "DRUSEN", "NORMAL"]


def recipe_kwargs(name: str, epochs: int) -> dict:
    warm = max(1, epochs // 10)
    return {
        "paper": {},
        "threshold": dict(confidence_threshold=0.9),
        "warmup": dict(warmup_epochs=warm, rampup_epochs=max(1, epochs // 4)),
        "ema": dict(
            warmup_epochs=warm, rampup_epochs=max(1, epochs // 4), pseudo_labels="ema", ema_decay=0.99
        ),
    }[name]


def data(args):
    root = os.path.join(args.cache, f"synthetic_oct_{args.image_size}_n{args.n_train}_s{args.seed}")
    write_synthetic_oct_dataset(
        root,
        image_size=args.image_size,
        seed=args.seed,
        splits={"train": args.n_train, "val": max(1, args.n_train // 8), "test": args.n_test},
        num_workers=args.workers,
        progress=False,
    )
    dl = oct_split_datalists(root, label_fraction=args.label_fraction, seed=args.seed, val_fraction=0.1)
    # hidden labels for monitoring: the unlabeled items' true class from their folder name
    labels = {
        str(it["image"]): it["label"]
        for it in oct_split_datalists(root, label_fraction=1.0, seed=args.seed)["labeled"]
    }
    unlabeled = [
        dict(it, hidden_label=labels[str(it["image"])])
        for it in dl["unlabeled"]
        if str(it["image"]) in labels
    ]
    train_t = oct_train_transforms(args.image_size)
    unl_t = oct_train_transforms(args.image_size, label_key="hidden_label")
    return (
        CacheDataset(dl["labeled"], train_t, progress=False),
        CacheDataset(unlabeled, unl_t, progress=False),
        CacheDataset(dl["test"], oct_eval_transforms(args.image_size), progress=False),
    )


def evaluate(net: nn.Module, test) -> dict:
    net.eval()
    x = torch.stack([d["image"].as_tensor() for d in test])
    y = torch.tensor([int(d["label"]) for d in test])
    precision = resolve_precision("auto", "cpu")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.amp):
        pred = net(x).argmax(1)
    return classification_summary(y, pred, CLASSES)


def run(name: str, args, labeled, unlabeled, test) -> dict:
    set_determinism(args.seed)
    net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=args.width)
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    lab = DataLoader(labeled, batch_size=args.batch_size, shuffle=True)
    common = dict(decollate=False, amp="auto")
    if name == "supervised":
        trainer = AutocastSupervisedTrainer(
            "cpu", args.epochs, lab, net, opt, nn.CrossEntropyLoss(), **common
        )
    else:
        unl = DataLoader(unlabeled, batch_size=args.batch_size, shuffle=True)
        trainer = create_trainer(
            "ssat", "cpu", args.epochs, lab, net, opt, unlabeled_data_loader=unl,
            hidden_label_key="hidden_label", **recipe_kwargs(name, args.epochs), **common,
        )  # fmt: skip
        trainer.attack.set_random_state(args.seed)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * len(lab), pct_start=0.2
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sched.step())
    sums: dict[str, list[float]] = defaultdict(list)
    hist: list[torch.Tensor] = []
    epochs: list[dict] = []

    def collect(engine):
        out = engine.state.output
        for key in (
            K.LOSS_LABELED,
            K.LOSS_UNLABELED,
            K.PSEUDO_ACCURACY,
            K.UNLABELED_WEIGHT,
            K.ATTACK_SUCCESS,
        ):
            if key in out:
                sums[key].append(float(out[key]))
        if K.PSEUDO_HISTOGRAM in out:
            hist.append(out[K.PSEUDO_HISTOGRAM])

    def epoch_end(engine):
        row = {k: sum(v) / len(v) for k, v in sums.items() if v}
        if hist:
            row["pseudo_label_histogram"] = dict(zip(CLASSES, torch.stack(hist).mean(0).tolist()))
        s = evaluate(net, test)
        row.update(
            epoch=engine.state.epoch, test_accuracy=s["accuracy"], per_class_recall=s["per_class_recall"]
        )
        epochs.append(row)
        print(
            f"  {name} epoch {engine.state.epoch}: "
            + json.dumps({k: v for k, v in row.items() if k != "per_class_recall"}),
            flush=True,
        )
        sums.clear()
        hist.clear()

    trainer.add_event_handler(Events.ITERATION_COMPLETED, collect)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, epoch_end)
    t0 = time.time()
    trainer.run()
    final = evaluate(net, test)
    return {
        "recipe": name,
        "n_train_per_class": args.n_train,
        "label_fraction": args.label_fraction,
        "labeled": len(labeled),
        "unlabeled": len(unlabeled),
        "epochs_run": args.epochs,
        "seed": args.seed,
        "seconds": time.time() - t0,
        "final": final,
        "per_epoch": epochs,
    }


def plot(rows: list[dict], path: str) -> None:
    import matplotlib.pyplot as plt

    from monai_adv.visualize import save_figure

    groups = sorted({(r["labeled"], r["seed"]) for r in rows})
    fig, axes = plt.subplots(len(groups), 4, figsize=(17, 3.2 * len(groups)), squeeze=False)
    for gi, (n_lab, seed) in enumerate(groups):
        for r in [r for r in rows if (r["labeled"], r["seed"]) == (n_lab, seed)]:
            ep = [e["epoch"] for e in r["per_epoch"]]
            axes[gi, 0].plot(ep, [e["test_accuracy"] for e in r["per_epoch"]], marker=".", label=r["recipe"])
            if r["recipe"] != "supervised":
                axes[gi, 1].plot(
                    ep,
                    [e.get(K.PSEUDO_ACCURACY, float("nan")) for e in r["per_epoch"]],
                    marker=".",
                    label=r["recipe"],
                )
                axes[gi, 2].plot(
                    ep, [max(e.get("pseudo_label_histogram", {"-": float("nan")}).values()) for e in r["per_epoch"]],
                    marker=".", label=r["recipe"],
                )  # fmt: skip
                for key, style in ((K.LOSS_LABELED, "-"), (K.LOSS_UNLABELED, ":")):
                    axes[gi, 3].plot(
                        ep, [e.get(key, float("nan")) for e in r["per_epoch"]], linestyle=style, marker=".",
                        label=f"{r['recipe']}: {key.replace('loss_', '')}",
                    )  # fmt: skip
        axes[gi, 0].set_title(f"{n_lab} labeled (seed {seed}): test accuracy")
        axes[gi, 1].set_title("pseudo-label accuracy (hidden labels)")
        axes[gi, 2].set_title("largest class share among pseudo-labels")
        axes[gi, 3].set_title("loss terms (labeled -, unlabeled :)")
        for j, ax in enumerate(axes[gi]):
            ax.set_xlabel("epoch")
            if j < 3:
                ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def tables(rows: list[dict]) -> str:
    """The README's measured tables from the rows: per epoch for each SSAT run, then each run's end point."""
    out = []
    for r in rows:
        if "pseudo_label_accuracy" not in r["per_epoch"][0]:
            continue
        out += [
            f"### {r['recipe']}: {r['labeled']} labeled, {r['unlabeled']} unlabeled, seed {r['seed']}",
            "",
            "| epoch | test accuracy | pseudo-label accuracy | largest pseudo-label class share | labeled loss "
            "| unlabeled loss | FGSM flips |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in r["per_epoch"]:
            top = max(e["pseudo_label_histogram"].items(), key=lambda kv: kv[1])
            out.append(
                f"| {e['epoch']} | {e['test_accuracy']:.3f} | {e['pseudo_label_accuracy']:.3f} | {top[1]:.2f} ({top[0]}) "
                f"| {e['loss_labeled']:.2f} | {e['loss_unlabeled']:.2f} | {100 * e['attack_success']:.0f}% |"
            )
        out.append("")
    out += [
        "| recipe | labeled | epochs | test accuracy | per-class recall |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        recall = " / ".join(f"{v:.2f}" for v in r["final"]["per_class_recall"].values())
        out.append(
            f"| {r['recipe']} | {r['labeled']} | {r['epochs_run']} | {r['final']['accuracy']:.3f} | {recall} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-train", type=int, default=200, help="synthetic training images per class")
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--label-fraction", type=float, default=0.25)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recipes", nargs="+", default=["supervised", "paper", "threshold", "warmup", "ema"])
    ap.add_argument(
        "--cache", default=os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", ".cache")
    )
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "results.jsonl"))
    ap.add_argument("--plot", default=None, help="draw the rows of --out into this PNG and exit")
    ap.add_argument(
        "--tables", action="store_true", help="print the README's tables from the rows of --out and exit"
    )
    args = ap.parse_args()
    rows = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    if args.tables:
        print(tables(rows))
        return
    if args.plot:
        plot(rows, args.plot)
        print(f"plot written to {args.plot}")
        return
    torch.set_num_threads(args.threads)
    labeled, unlabeled, test = data(args)
    for name in args.recipes:
        key = (name, args.n_train, args.label_fraction, args.epochs, args.seed)
        if any(
            (r["recipe"], r["n_train_per_class"], r["label_fraction"], r["epochs_run"], r["seed"]) == key
            for r in rows
        ):
            print(f"{name}: done, skipped")
            continue
        print(f"{name}: {len(labeled)} labeled, {len(unlabeled)} unlabeled, {args.epochs} epochs", flush=True)
        row = {**run(name, args, labeled, unlabeled, test), **precision_record("auto", "cpu")}
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        print(
            f"{name}: test accuracy {row['final']['accuracy']:.3f}, recall {row['final']['per_class_recall']} ({row['seconds']:.0f}s)"
        )


if __name__ == "__main__":
    main()
