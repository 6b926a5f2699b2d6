"""AutoAttack's standard suite: ours against torchattacks' ``AutoAttack``, same model, same images.

Trains (once; cached in ``benchmarks/.cache/``) a small CNN on synthetic OCT (CNV / DME / DRUSEN /
NORMAL from :class:`monai_adv.apps.oct.SyntheticOCTGenerator`, 1,000 images per class) with Madry PGD-5
adversarial training, so that robust accuracy sits well away from 0 (on an undefended model every
suite drives it to 0 and says nothing), then attacks a fixed, stratified test set (50 images per
class) from another generator seed, at each evaluation eps, with:

- ``autoattack(net, eps, version="standard")`` (ours: APGD-CE, APGD-T, FAB-T, Square; 100 iterations
  for the gradient attacks and up to 9 target classes, as AutoAttack's reference implementation);
- ``torchattacks.AutoAttack(net, norm="Linf", eps=eps, version="standard", n_classes=4)`` as it
  ships (note: torchattacks 3.5.1 builds its APGD, APGD-T and FAB with their default ``steps=10``,
  not AutoAttack's 100, and its Square with the rescaled schedule);
- the same four torchattacks attacks with AutoAttack's own budgets (``steps=100``, Square's raw
  schedule, ``resc_schedule=False``) in torchattacks' ``MultiAttack``, the like-for-like run;
- ours again with ``amp="auto"`` (the precision :func:`monai_adv.precision.resolve_precision`
  chooses for this CPU: bf16 autocast only where the CPU runs bf16 natively, else float32 with
  channels-last), on a copy of the network so that the other rows keep its layout.

The header names the CPU's capability (``torch.backends.cpu.get_cpu_capability()``) and the
precision ``amp="auto"`` resolves to here.

It prints robust accuracy (the fraction of test images still classified correctly, judged in
float32 on the returned images), the difference to ours in points, how many images the two agree
on, and the CPU time of each, with the ratio to ours, all measured in one run. Times are this
process's CPU time (``time.process_time``) at the given thread count, so that other jobs on a
shared machine do not swing them.

Usage::

    .venv/bin/pip install --no-deps torchattacks==3.5.1      # as `make bench` does
    python benchmarks/autoattack_parity.py      # 32 px, trained at eps 2/255, evaluated at 2/255 and 4/255
    python benchmarks/autoattack_parity.py --n-test-per-class 10 --epochs 2 --n-train-per-class 100   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_adv.apps.oct import SyntheticOCTGenerator
from monai_adv.precision import resolve_precision
from monai_adv.transforms import PGD, autoattack


class SmallOCTNet(nn.Module):
    """Four conv blocks (16-32-64-64 channels, three stride-2), global average pooling, a linear head."""

    def __init__(self, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
            ]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(chans[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def synthetic(size: int, n_per_class: int, seed: int, workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = SyntheticOCTGenerator(image_size=size, seed=seed).generate(n_per_class, num_workers=workers)
    return torch.from_numpy(x)[:, None].float(), torch.from_numpy(y).long()


def train_madry(
    x: torch.Tensor, y: torch.Tensor, eps: float, epochs: int, seed: int, batch: int = 64
) -> nn.Module:
    """Madry PGD-AT: each batch replaced by PGD-5 examples (step 2.5 eps / 5), Adam with one-cycle."""
    torch.manual_seed(seed)
    net = SmallOCTNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * -(-len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    attack = PGD(net, eps, alpha=2.5 * eps / 5, steps=5).set_random_state(seed)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        correct = 0
        t0 = time.time()
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            x_adv = attack(x[idx], y[idx])  # the attack runs the network in eval mode, then restores train
            opt.zero_grad()
            logits = net(x_adv)
            F.cross_entropy(logits, y[idx]).backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y[idx]).sum())
        print(
            f"#   epoch {epoch + 1}/{epochs}: adversarial train accuracy {correct / len(x):.3f} ({time.time() - t0:.0f} s)"
        )
    return net.eval()


def robust_flags(net: nn.Module, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x_adv).argmax(1) == y


def timed(fn):
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=32, help="image side in pixels")
    ap.add_argument("--eps", type=float, default=2 / 255, help="Linf radius of the adversarial training")
    ap.add_argument(
        "--eval-eps",
        type=float,
        nargs="+",
        default=None,
        help="radii of the evaluation (default: eps and 2 eps for Linf; 0.1 and 0.2 for L2)",
    )
    ap.add_argument("--norm", default="linf", choices=["linf", "l2"], help="the norm of the evaluation")
    ap.add_argument("--n-train-per-class", type=int, default=1000)
    ap.add_argument("--n-test-per-class", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2, help="processes that render the synthetic images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=str(Path(__file__).parent / ".cache"))
    ap.add_argument("--skip-original-budgets", action="store_true", help="skip torchattacks at steps=100")
    ap.add_argument("--skip-shipped", action="store_true", help="skip torchattacks' AutoAttack as shipped")
    ap.add_argument("--skip-amp-auto", action="store_true", help="skip ours with amp='auto'")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import torchattacks  # noqa: PLC0415  (installed by `make bench`, not a dependency)

    cache = Path(a.cache_dir) / (
        f"autoattack_parity_s{a.size}_n{a.n_train_per_class}_e{a.epochs}_eps{a.eps:.5f}_seed{a.seed}.pt"
    )
    x_test, y_test = synthetic(a.size, a.n_test_per_class, a.seed + 1000, a.workers)
    if cache.exists():
        net = SmallOCTNet()
        net.load_state_dict(torch.load(cache, weights_only=True))
        net.eval()
        print(f"# model loaded from {cache}")
    else:
        x_train, y_train = synthetic(a.size, a.n_train_per_class, a.seed, a.workers)
        print(
            f"# training: Madry PGD-5 at eps {a.eps:.5f} on {len(y_train)} synthetic OCT images, {a.epochs} epochs"
        )
        net = train_madry(x_train, y_train, a.eps, a.epochs, a.seed)
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), cache)
    for p in net.parameters():
        p.requires_grad_(False)  # no attack needs parameter gradients
    clean = robust_flags(net, x_test, y_test)
    print(
        f"# SmallOCTNet (Madry PGD-AT), {a.size} px synthetic OCT, {len(y_test)} test images "
        f"({a.n_test_per_class} per class, generator seed {a.seed + 1000}), clean accuracy {clean.float().mean():.3f}; "
        f"trained at eps {a.eps:.5f} (Linf); torch {torch.__version__}, torchattacks {torchattacks.__version__}, "
        f"{a.threads} thread(s), CPU time"
    )
    print(
        f"# CPU capability {torch.backends.cpu.get_cpu_capability()}; amp='auto' resolves to "
        f"{resolve_precision('auto', 'cpu').name} here"
    )

    print(f"# evaluation norm: {a.norm}")
    print(
        "| eps | suite | robust accuracy | difference to ours (points) | same verdict as ours | CPU time (s) | time / ours |"
    )
    print("|---|---|---|---|---|---|---|")
    worst = 0
    notes = []
    for eps in a.eval_eps or ([a.eps, 2 * a.eps] if a.norm == "linf" else [0.1, 0.2]):
        rows = parity_rows(
            net,
            x_test,
            y_test,
            eps,
            a.norm,
            a.seed,
            not a.skip_original_budgets,
            shipped=not a.skip_shipped,
            amp_auto=not a.skip_amp_auto,
        )
        n_ours, t_ours = int(rows[0][1].sum()), rows[0][2]
        for name, flags, seconds, _ in rows:
            same = (flags == rows[0][1]).float().mean().item()
            print(
                f"| {eps:.5f} | {name} | {flags.float().mean().item():.3f} | "
                f"{100 * (int(flags.sum()) - n_ours) / len(flags):+.1f} | {same:.3f} | {seconds:.1f} "
                f"| {seconds / t_ours:.2f} |",
                flush=True,
            )
        worst = max([worst] + [abs(int(r[1].sum()) - n_ours) for r in rows[1:]])  # in images
        notes.append(f"# eps {eps:.5f}: images fooled first by each member of ours: {rows[0][3]}")
    print("\n".join(notes))
    points = 100 * worst / len(y_test)
    within = 100 * worst <= len(y_test)  # in whole images, so that no rounding decides
    print(f"# largest difference to ours: {points:.1f} points ({'within' if within else 'OUTSIDE'} 1 point)")


def parity_rows(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: str,
    seed: int,
    original_budgets: bool,
    shipped: bool = True,
    amp_auto: bool = True,
) -> list[tuple[str, torch.Tensor, float, str]]:
    """(name, per-image robust flags, CPU seconds, note) for ours and torchattacks at one eps."""
    import torchattacks  # noqa: PLC0415

    ta_norm = {"linf": "Linf", "l2": "L2"}[norm]

    def run(attack):
        x_adv, seconds = timed(lambda: attack(x, y))
        delta = (x_adv.detach() - x).flatten(1)  # torchattacks' APGD returns a tensor that requires grad
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-5), float(size.max())
        return robust_flags(net, x_adv, y), seconds

    ours = autoattack(net, eps, norm=norm, version="standard").set_random_state(seed)
    flags, seconds = run(ours)
    rows = [("monai-adv `autoattack(version='standard')`", flags, seconds, str(ours.last_success))]
    if shipped:
        ta = torchattacks.AutoAttack(net, norm=ta_norm, eps=eps, version="standard", n_classes=4, seed=seed)
        rows.append(("torchattacks `AutoAttack(version='standard')` as shipped (steps=10)", *run(ta), ""))
    if original_budgets:
        common = dict(norm=ta_norm, eps=eps, n_restarts=1, seed=seed)
        ta100 = torchattacks.MultiAttack(
            [
                torchattacks.APGD(net, steps=100, loss="ce", **common),
                torchattacks.APGDT(net, steps=100, n_classes=4, **common),
                torchattacks.FAB(net, steps=100, multi_targeted=True, n_classes=4, **common),
                torchattacks.Square(net, n_queries=5000, p_init=0.8, resc_schedule=False, **common),
            ]
        )
        name = "torchattacks APGD, APGDT, FAB-T, Square at AutoAttack's budgets (steps=100) in `MultiAttack`"
        rows.append((name, *run(ta100), ""))
    if amp_auto:
        # last, and on a copy: amp="auto" may convert the network to channels-last in place
        auto = autoattack(copy.deepcopy(net), eps, norm=norm, version="standard", amp="auto")
        auto.set_random_state(seed)
        flags, seconds = run(auto)
        p = auto.attacks[0].precision
        name = f"monai-adv `autoattack(version='standard', amp='auto')`: {p.name}{', channels-last' * p.channels_last}"
        rows.append((name, flags, seconds, str(auto.last_success)))
    return rows


if __name__ == "__main__":
    main()
