"""What SSAT buys at SMALL scale (superseded by ``run.py``): standard, Madry PGD-AT, TRADES, the paper's SSAT and variants.

With a fraction of the training labels, every method trains the same small CNN for the same number of
iterations; each is then evaluated on a held-out test set: clean accuracy, accuracy under FGSM on the
paper's grid (eps up to 0.002, images in [0, 1]), and under PGD-20 and APGD-CE at larger eps. One JSON
line per (data, label fraction, seed, method) goes to ``--results``; ``--report`` turns them into the
markdown tables (mean and standard deviation over seeds) and an accuracy-versus-eps plot.

Data:

- ``--data synthetic``: ``monai_adv.apps.oct.SyntheticOCTGenerator`` images (CNV, DME, DRUSEN, NORMAL),
  rendered once and cached; a training pool and a test set from different generator seeds. The
  labeled part of the pool is a stratified random ``--label-fraction`` (per seed); the rest of the
  pool is the unlabeled set (its labels are never used).
- ``--data kermany --root DIR``: real OCT in the Kermany layout, one split folder (e.g. the 400 images
  of ``../shared/data/kermany-oct-sample``, split ``test``), divided by patient into a test part
  (``--test-fraction``) and a training pool, of which ``--label-fraction`` is labeled (by patient).
  ``--init-from PATH_PATTERN`` starts every method from synthetic-trained weights.

Methods (``--methods``):

- ``standard``: cross-entropy on the labeled part only.
- ``madry``: Madry PGD-AT (PGD-``--train-steps`` at ``--train-eps``) on the labeled part.
- ``trades``: TRADES (beta 6, PGD-``--train-steps`` at ``--train-eps``) on the labeled part.
- ``ssat``: the paper's SSAT exactly (online pseudo-labels, FGSM eps ~ U(0.001, 0.003), CE, weight 3),
  from scratch.
- ``ssat_warm``: the same recipe started from the ``standard`` model of the same seed.
- ``ssat_teacher``: pseudo-labels from the frozen ``standard`` model of the same seed (UAT-FT / RST
  style), started from it.
- ``ssat_kl``: KL consistency (UAT-OT style), started from the ``standard`` model.

Usage (the commands behind experiments/label_scarcity/small_scale.md are listed there)::

    nice python -m experiments.label_scarcity.small_scale --data synthetic --label-fraction 0.1 --seeds 0 1 2
    python -m experiments.label_scarcity.small_scale --report --results experiments/label_scarcity/results/small_scale.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from ignite.contrib.handlers import ProgressBar
from monai.engines import SupervisedTrainer
from monai.handlers import TensorBoardStatsHandler

from monai_adv.engines import create_trainer, training_stats
from monai_adv.io import atomic_open
from monai_adv.precision import precision_record
from monai_adv.transforms import APGD, FGSM, PGD

ALL_METHODS = ["standard", "madry", "trades", "ssat", "ssat_warm", "ssat_teacher", "ssat_kl"]
NEEDS_STANDARD = {"ssat_warm", "ssat_teacher", "ssat_kl"}
CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")


def make_network(num_classes: int = 4, width: int = 16) -> nn.Module:
    """A small CNN for 1-channel 64x64 B-scans (four conv blocks with batch norm, global pooling)."""

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]

    w = width
    return nn.Sequential(
        *block(1, w),
        *block(w, 2 * w),
        *block(2 * w, 4 * w),
        *block(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4 * w, num_classes),
    )


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def generator_version() -> str:
    """A short hash of the synthetic generator's source, every module of it (recorded with every synthetic result)."""
    import hashlib

    import monai_adv.apps.oct.synthetic as synthetic

    h = hashlib.sha1()
    for f in sorted(Path(synthetic.__file__).parent.glob("*.py")):
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def synthetic_data(size: int, n_train: int, n_test: int, cache: Path) -> dict[str, torch.Tensor]:
    """Training pool and test set from the synthetic OCT generator (cached as .npz)."""
    from monai_adv.apps.oct import SyntheticOCTGenerator

    # the cache name records the generator's version, so a changed generator renders afresh
    path = cache / f"synthetic_oct_{size}px_{n_train}_{n_test}_{generator_version()}.npz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        xtr, ytr = SyntheticOCTGenerator(image_size=size, seed=1000).generate(n_train, shuffle=True)
        xte, yte = SyntheticOCTGenerator(image_size=size, seed=2000).generate(n_test, shuffle=True)
        # a temporary file of this process's own: two runs rendering at once must not clash
        with atomic_open(path, "wb") as f:
            np.savez_compressed(f, xtr=xtr, ytr=ytr, xte=xte, yte=yte)
        print(
            f"rendered {len(xtr) + len(xte)} synthetic images in {time.time() - t0:.0f}s -> {path}",
            flush=True,
        )
    d = np.load(path)
    return {
        "x_pool": torch.from_numpy(d["xtr"]).float().unsqueeze(1),
        "y_pool": torch.from_numpy(d["ytr"]).long(),
        "x_test": torch.from_numpy(d["xte"]).float().unsqueeze(1),
        "y_test": torch.from_numpy(d["yte"]).long(),
    }


def stratified_labeled_mask(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A boolean mask choosing about ``fraction`` of every class (at least one item per class)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction}.")
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique():
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        mask[idx[: max(1, round(fraction * len(idx)))]] = True
    return mask


def kermany_data(root: str, split: str, size: int, test_fraction: float, label_fraction: float, seed: int):
    """Real OCT in the Kermany layout, split by patient into test / labeled / unlabeled."""
    from monai_adv.apps.oct import kermany_datalist, oct_eval_transforms, split_by_patient

    items, _ = kermany_datalist(root, split=split, label_fraction=1.0, seed=seed)
    test, pool = split_by_patient(items, test_fraction, seed=seed)
    labeled, unlabeled = split_by_patient(pool, label_fraction, seed=seed + 1)
    tf = oct_eval_transforms(image_size=size)

    def load(lst):
        out = [tf(dict(it)) for it in lst]
        x = torch.stack([torch.as_tensor(o["image"]).float() for o in out])
        y = torch.tensor([int(o["label"]) for o in out])
        return x, y

    xl, yl = load(labeled)
    xu, yu = load(unlabeled)
    xt, yt = load(test)
    return {"x_l": xl, "y_l": yl, "x_u": xu, "y_u_hidden": yu, "x_test": xt, "y_test": yt}


class _EpochShuffled:
    """A loader whose every pass is a fresh permutation (seeded), of dict or tensor batches."""

    def __init__(self, x, y, batch, seed):
        self.x, self.y, self.batch = x, y, min(batch, len(x))
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.x) // self.batch

    def __iter__(self):
        perm = torch.randperm(len(self.x), generator=self.g)
        for i in range(len(self)):
            idx = perm[i * self.batch : (i + 1) * self.batch]
            yield {"image": self.x[idx], "label": self.y[idx]} if self.y is not None else self.x[idx]


# ----------------------------------------------------------------------------------------------
# training and evaluation
# ----------------------------------------------------------------------------------------------
def train(
    method: str, data: dict, a: argparse.Namespace, seed: int, standard: nn.Module | None, init: dict | None
):
    torch.manual_seed(seed)
    net = make_network()
    if init is not None:
        net.load_state_dict(init)
    if method in NEEDS_STANDARD:
        net.load_state_dict(standard.state_dict())
    lab = _EpochShuffled(data["x_l"], data["y_l"], a.batch, seed)
    unl = _EpochShuffled(data["x_u"], None, a.batch, seed + 1)
    epochs = max(1, math.ceil(a.iterations / len(lab)))
    lr = a.lr if method not in NEEDS_STANDARD else a.lr * a.finetune_lr_scale
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    loss = nn.CrossEntropyLoss()
    common = dict(decollate=False)
    if method == "standard":
        tr = SupervisedTrainer("cpu", epochs, lab, net, opt, loss, **common)
    elif method in ("madry", "trades"):
        tr = create_trainer(
            method, "cpu", epochs, lab, net, opt, loss, eps=a.train_eps, steps=a.train_steps, **common
        )
    else:
        preset = {"ssat": "ssat", "ssat_warm": "ssat", "ssat_teacher": "ssat_teacher", "ssat_kl": "ssat_kl"}[
            method
        ]
        kw = {}
        if method == "ssat_teacher":
            teacher = copy.deepcopy(standard).eval()
            kw["teacher_network"] = teacher
        tr = create_trainer(
            preset, "cpu", epochs, lab, net, opt, loss, unlabeled_data_loader=unl, **kw, **common
        )
        tr.attack.set_random_state(seed)
    if a.progress:
        ProgressBar(persist=False).attach(tr, output_transform=training_stats)
    if a.tensorboard:
        TensorBoardStatsHandler(
            log_dir=f"{a.tensorboard}/{a.data}_{a.label_fraction:g}_{method}_seed{seed}",
            output_transform=training_stats,
        ).attach(tr)
    t0 = time.process_time()
    tr.run()
    return net.eval(), time.process_time() - t0, tr.state.iteration


def accuracy_under(net: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, batch: int = 100) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch], y[i : i + batch]
        xa = xb if attack is None else attack(xb, yb)
        with torch.no_grad():
            correct += int((net(xa).argmax(1) == yb).sum())
    return correct / len(x)


def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, a: argparse.Namespace, seed: int) -> dict:
    res = {"clean": accuracy_under(net, x, y, None)}
    for eps in a.fgsm_eps:
        res[f"fgsm@{eps:g}"] = accuracy_under(net, x, y, FGSM(net, eps=eps))
    for eps in a.pgd_eps:
        pgd = PGD(net, eps=eps, alpha=2.5 * eps / 20, steps=20)
        pgd.set_random_state(seed)
        res[f"pgd20@{eps:g}"] = accuracy_under(net, x, y, pgd)
        apgd = APGD(net, eps=eps, steps=a.apgd_steps)
        apgd.set_random_state(seed)
        res[f"apgd@{eps:g}"] = accuracy_under(net, x, y, apgd)
    return res


def run(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    results = Path(a.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if results.exists():
        for line in results.read_text().splitlines():
            r = json.loads(line)
            done.add((r["data"], r["label_fraction"], r["seed"], r["method"], r.get("init", "scratch")))
    init_tag = "scratch" if not a.init_from else "synthetic"
    for seed in a.seeds:
        if a.data == "synthetic":
            pool = synthetic_data(a.size, a.n_train, a.n_test, Path(a.cache))
            m = stratified_labeled_mask(pool["y_pool"], a.label_fraction, seed)
            data = {
                "x_l": pool["x_pool"][m],
                "y_l": pool["y_pool"][m],
                "x_u": pool["x_pool"][~m],
                "x_test": pool["x_test"],
                "y_test": pool["y_test"],
            }
        else:
            data = kermany_data(a.root, a.split, a.size, a.test_fraction, a.label_fraction, seed)
        init = None
        if a.init_from:
            init = torch.load(a.init_from.format(seed=seed), map_location="cpu", weights_only=True)
        pending = [m for m in a.methods if (a.data, a.label_fraction, seed, m, init_tag) not in done]
        if not pending:
            continue
        need_std = any(m in NEEDS_STANDARD for m in pending)
        order = (["standard"] if need_std or "standard" in pending else []) + [
            m for m in pending if m != "standard"
        ]
        standard = None
        for method in order:
            key = (a.data, a.label_fraction, seed, method, init_tag)
            net, cpu_s, iters = train(method, data, a, seed, standard, init)
            if method == "standard":
                standard = net
                if a.save_standard:
                    out = Path(a.save_standard.format(seed=seed))
                    out.parent.mkdir(parents=True, exist_ok=True)
                    torch.save(net.state_dict(), out)
            if key in done:
                continue
            metrics = evaluate(net, data["x_test"], data["y_test"], a, seed)
            rec = dict(
                data=a.data,
                label_fraction=a.label_fraction,
                seed=seed,
                method=method,
                init=init_tag,
                n_labeled=len(data["x_l"]),
                n_unlabeled=len(data["x_u"]),
                n_test=len(data["x_test"]),
                iterations=iters,
                train_cpu_s=round(cpu_s, 1),
                size=a.size,
                train_eps=a.train_eps,
                train_steps=a.train_steps,
                lr=a.lr,
                generator=generator_version() if a.data == "synthetic" or a.init_from else None,
                **precision_record(False),  # this experiment trains and attacks in fp32
                **metrics,
            )
            with open(results, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(json.dumps(rec), flush=True)


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def report(a: argparse.Namespace) -> None:
    rows, seen = [], set()
    for line in Path(a.results).read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            key = (r["data"], r["label_fraction"], r["seed"], r["method"], r.get("init", "scratch"))
            if key not in seen:  # a run repeated by two concurrent invocations counts once
                seen.add(key)
                rows.append(r)
    groups: dict = defaultdict(list)
    for r in rows:
        groups[(r["data"], r.get("init", "scratch"), r["label_fraction"], r["method"])].append(r)
    metric_keys = [k for k in rows[0] if k == "clean" or "@" in k]
    for r in rows:
        for k in r:
            if ("@" in k) and k not in metric_keys:
                metric_keys.append(k)
    lines = []
    for data, init, frac in sorted({k[:3] for k in groups}):
        first = next(r for k, rs in groups.items() if k[:3] == (data, init, frac) for r in rs)
        lines.append(
            f"\n### {data} ({init}), {frac:.0%} labels: {first['n_labeled']} labeled, {first['n_unlabeled']} "
            f"unlabeled, {first['n_test']} test images ({first['size']} px), {first['iterations']} iterations\n"
        )
        lines.append("| method | n seeds | " + " | ".join(metric_keys) + " | train CPU s |")
        lines.append("|---" * (len(metric_keys) + 3) + "|")
        for method in ALL_METHODS:
            rs = groups.get((data, init, frac, method))
            if not rs:
                continue
            cells = []
            for k in metric_keys:
                v = [100 * r[k] for r in rs if k in r]
                if not v:
                    cells.append("")
                    continue
                sd = statistics.stdev(v) if len(v) > 1 else 0.0
                cells.append(f"{statistics.mean(v):.1f} ± {sd:.1f}")
            cpu = statistics.mean(r["train_cpu_s"] for r in rs)
            lines.append(f"| {method} | {len(rs)} | " + " | ".join(cells) + f" | {cpu:.0f} |")
    text = "\n".join(lines)
    print(text)
    if a.plot:
        plot(groups, a.plot)


def plot(groups: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one panel per setting that compares methods (a setting with a single method, e.g. the all-labels
    # standard models the real-data runs start from, has its numbers in the tables only)
    settings = {k[:3] for k in groups}
    panels = sorted(
        (s for s in settings if sum(k[:3] == s for k in groups) > 1),
        key=lambda k: (k[0] != "synthetic", k[1], k[2]),
    )
    cols = math.ceil(math.sqrt(len(panels)))
    rows_ = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(5 * cols, 4 * rows_), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (data, init, frac) in zip(axes.flat, panels):
        for method in ALL_METHODS:
            rs = groups.get((data, init, frac, method))
            if not rs:
                continue
            keys = ["clean"] + sorted((k for k in rs[0] if k.startswith("fgsm@")), key=lambda k: float(k[5:]))
            eps = [0.0] + [float(k[5:]) for k in keys[1:]]
            mean = [100 * statistics.mean(r[k] for r in rs) for k in keys]
            sd = [100 * (statistics.stdev([r[k] for r in rs]) if len(rs) > 1 else 0) for k in keys]
            color = f"C{ALL_METHODS.index(method)}"  # the same colour for a method in every panel
            ax.errorbar(eps, mean, yerr=sd, marker="o", capsize=3, label=method, color=color)
        ax.axhline(25, color="grey", lw=0.8, ls=":", label="chance (4 classes)")
        ax.set_xticks(eps, [f"{e:g}" for e in eps], fontsize=8)
        ax.set_title(f"{data} ({init}), {frac:.0%} labels")
        ax.set_xlabel("FGSM eps (images in [0, 1])")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """The data options shared with ``experiments/detection_small_scale/run.py``: synthetic or Kermany, split and label fraction."""
    p.add_argument("--data", choices=["synthetic", "kermany"], default="synthetic")
    p.add_argument("--root", default="../shared/data/kermany-oct-sample")
    p.add_argument("--split", default="test")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--label-fraction", type=float, default=0.1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_arguments(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--methods", nargs="+", default=["standard", "madry", "trades", "ssat", "ssat_warm", "ssat_teacher"]
    )
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n-train", type=int, default=150, help="synthetic training pool images per class")
    p.add_argument("--n-test", type=int, default=75, help="synthetic test images per class")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--finetune-lr-scale", type=float, default=0.5)
    p.add_argument("--train-eps", type=float, default=0.005, help="Madry / TRADES training eps")
    p.add_argument("--train-steps", type=int, default=5, help="Madry / TRADES PGD steps")
    p.add_argument("--fgsm-eps", type=float, nargs="+", default=[0.0005, 0.001, 0.0015, 0.002])
    p.add_argument("--pgd-eps", type=float, nargs="+", default=[0.005])
    p.add_argument("--apgd-steps", type=int, default=20)
    p.add_argument("--init-from", default=None, help="weights to start from, '{seed}' filled in")
    p.add_argument("--save-standard", default=None, help="save the standard model, '{seed}' filled in")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true", help="ignite progress bar per training run")
    p.add_argument("--tensorboard", default=None, help="TensorBoard log folder for the training values")
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/monai_adv"))
    p.add_argument("--results", default="experiments/label_scarcity/results/small_scale.jsonl")
    p.add_argument("--report", action="store_true")
    p.add_argument("--plot", default=None)
    a = p.parse_args(argv)
    print(f"# {platform.platform()} torch {torch.__version__} {' '.join(sys.argv)}", flush=True)
    report(a) if a.report else run(a)


if __name__ == "__main__":
    main()
