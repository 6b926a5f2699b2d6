"""``make attack-demo``: train a small OCT classifier on the embedded synthetic data, then attack it.

Prints clean accuracy beside the accuracy under each attack (FGSM on the paper's eps grid, PGD,
APGD, the gradient-free Square attack, and Carlini-Wagner's minimal L2 size), all measured in
this run on held-out synthetic B-scans: the attacks alone, in two minutes. ``make demo`` runs the
whole system (training defences, detection, risk) through the OCT bundle.

Usage::

    python -m monai_adv.apps.oct.attack_demo                     # one to two minutes on 2 CPU cores
    python -m monai_adv.apps.oct.attack_demo --n-per-class 400 --epochs 12 --image-size 96
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet10
from monai.utils import set_determinism
from tqdm import tqdm

from monai_adv.apps.oct import SyntheticOCTGenerator
from monai_adv.precision import PRECISION_AMP, add_precision_argument
from monai_adv.transforms import APGD, FGSM, PGD, CarliniWagnerL2, SquareAttack

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def synthetic_split(n_per_class: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = SyntheticOCTGenerator(image_size=image_size, seed=seed)
    # the images do not depend on the number of workers, only on the seed
    images, labels = gen.generate(n_per_class, num_workers=min(2, os.cpu_count() or 1))
    x = torch.as_tensor(np.asarray(images, dtype=np.float32))[:, None]
    return x, torch.as_tensor(np.asarray(labels), dtype=torch.long)


def train(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int) -> None:
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    net.train()
    with tqdm(total=steps, desc="training", unit="step") as bar:
        for _ in range(epochs):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), batch_size):
                idx = perm[i : i + batch_size]
                opt.zero_grad()
                loss = F.cross_entropy(net(x[idx]), y[idx])
                loss.backward()
                opt.step()
                sched.step()
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update()
    net.eval()


@torch.no_grad()
def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64) -> float:
    correct = sum(
        int((net(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return correct / len(x)


def attacked_accuracy(net, attack, x, y, batch_size: int = 50) -> tuple[float, torch.Tensor]:
    adv = torch.cat(
        [attack(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    )
    return accuracy(net, adv, y), adv


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-per-class", type=int, default=100, help="synthetic training B-scans per class")
    parser.add_argument("--n-test-per-class", type=int, default=25)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_precision_argument(parser)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    set_determinism(seed=args.seed)
    t0 = time.perf_counter()

    print(
        f"generating synthetic OCT: {args.n_per_class}/class train, {args.n_test_per_class}/class test, "
        f"{args.image_size}px"
    )
    x_train, y_train = synthetic_split(args.n_per_class, args.image_size, seed=args.seed)
    x_test, y_test = synthetic_split(args.n_test_per_class, args.image_size, seed=args.seed + 10_000)

    # a quarter-width MONAI ResNet-10: trains in seconds on a CPU, and is as easy to fool as its big siblings
    net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=len(CLASSES), widen_factor=0.25)
    train(net, x_train, y_train, args.epochs, args.batch_size)
    clean = accuracy(net, x_test, y_test)

    rows = [("clean", "-", clean, "")]
    # the attacks in the precision this machine runs fastest (bf16 autocast only where it is native)
    kw = dict(amp=PRECISION_AMP[args.precision], channels_last="auto")
    attacks = [
        *[("FGSM (paper grid)", eps, FGSM(net, eps, **kw)) for eps in (0.0005, 0.001, 0.002)],
        ("FGSM", 2 / 255, FGSM(net, 2 / 255, **kw)),
        ("PGD-20", 2 / 255, PGD(net, 2 / 255, steps=20, **kw)),
        ("APGD-CE-20", 2 / 255, APGD(net, 2 / 255, steps=20, **kw)),
        ("Square-200 (no gradients)", 2 / 255, SquareAttack(net, 2 / 255, n_queries=200, **kw)),
    ]
    for name, eps, atk in tqdm(attacks, desc="attacking", unit="attack"):
        atk.set_random_state(args.seed)
        acc, _ = attacked_accuracy(net, atk, x_test, y_test)
        rows.append((name, f"{eps:.4f}", acc, ""))
    n_cw = 20
    cw = CarliniWagnerL2(net, steps=30, binary_search_steps=4)
    acc, adv = attacked_accuracy(net, cw, x_test[:n_cw], y_test[:n_cw], batch_size=n_cw)
    l2 = (adv - x_test[:n_cw]).flatten(1).norm(dim=1)
    fooled = l2 > 0
    median_l2 = (
        f"median L2 {l2[fooled].median():.3f} ({l2[fooled].median() / args.image_size:.4f} per-pixel RMS)"
        if fooled.any()
        else ""
    )
    rows.append((f"C&W-L2 ({n_cw} images)", "minimal", acc, median_l2))

    print(f"\nsynthetic OCT, {len(y_test)} held-out B-scans, MONAI resnet10 (width 1/4), images in [0, 1]")
    print(f"{'attack':<28}{'eps (Linf)':>12}{'accuracy':>10}")
    for name, eps, acc, note in rows:
        print(f"{name:<28}{eps:>12}{acc:>10.3f}  {note}")
    print(f"\n(done in {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
