"""How realistic is the embedded synthetic OCT? Synthetic B-scans measured beside the real Kermany sample.

Prints a markdown report (and optionally writes JSON):

1. image statistics, synthetic beside real, both centre-cropped and resized to 128 px as OCTMNIST
   prepares Kermany images: pooled intensity distribution (1-Wasserstein distance, with the distance
   between two halves of the real sample as the floor), per-class mean and standard deviation, retina
   fraction, speckle contrast, vitreous background, registration padding;
2. a logistic regression on 64-bin intensity histograms (5-fold cross-validation) on real and on
   synthetic images: brightness alone should tell the classes apart poorly;
3. a small CNN trained on a few thousand synthetic images: its accuracy on held-out synthetic images
   and, the test that matters, on the 400 real images (accuracy and confusion matrix; chance 25%).

Usage::

    python -m experiments.synthetic_realism.run                       # full run (about 15-25 min on 2 cores)
    python -m experiments.synthetic_realism.run --n-train 100 --epochs 2 --n-test 25   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_adv.apps.oct import (
    OCT_CLASSES,
    SyntheticOCTGenerator,
    image_statistics,
    intensity_histograms,
    kermany_datalist,
    load_octmnist_style,
    wasserstein_1d,
)

DEFAULT_REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "kermany-oct-sample"


# ----------------------------------------------------------------------------------- logistic regression
def _folds(y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(idx.size) % k
    return [np.flatnonzero(fold == i) for i in range(k)]


def _fit_logreg(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    xt = torch.as_tensor(x, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.long)
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xt @ w + b, yt) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def logistic_regression_cv(
    x: np.ndarray, y: np.ndarray, k: int = 5, l2: float = 1e-3, seed: int = 0
) -> float:
    """Mean k-fold accuracy of an L2-regularised multinomial logistic regression (torch, L-BFGS)."""
    accs = []
    for test_idx in _folds(y, k, seed):
        train_idx = np.setdiff1d(np.arange(len(y)), test_idx)
        mu, sd = x[train_idx].mean(0), x[train_idx].std(0) + 1e-8
        w, b = _fit_logreg((x[train_idx] - mu) / sd, y[train_idx], int(y.max()) + 1, l2)
        xv = torch.as_tensor((x[test_idx] - mu) / sd, dtype=torch.float64)
        pred = (xv @ w + b).argmax(1).numpy()
        accs.append(float((pred == y[test_idx]).mean()))
    return float(np.mean(accs))


# ------------------------------------------------------------------------------------------------- CNN
class SmallOCTNet(nn.Module):
    """A small CNN for 128 px B-scans; the input is standardised per image (gain-invariant)."""

    def __init__(self, n_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        chans = [width, 2 * width, 4 * width, 6 * width, 8 * width]
        layers: list[nn.Module] = [
            nn.Conv2d(1, chans[0], 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(chans[0]),
            nn.ReLU(inplace=True),
        ]
        for i in range(len(chans) - 1):  # 64 -> 32 (strided) -> 16 -> 8 -> 4 px
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
            if i > 0:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(chans[-1], n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=(1, 2, 3), keepdim=True)
        sd = x.std(dim=(1, 2, 3), keepdim=True) + 1e-4
        f = self.features((x - mu) / sd)
        return self.head(torch.amax(f, dim=(2, 3)) * 0.5 + f.mean(dim=(2, 3)) * 0.5)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips, small shifts and zoom, gamma, blur and noise: a batch ``(B, 1, H, W)`` in [0, 1]."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    scale = 1.0 + (torch.rand(b, generator=gen) - 0.5) * 0.2
    ang = (torch.rand(b, generator=gen) - 0.5) * np.deg2rad(10.0)
    tx, ty = (torch.rand(2, b, generator=gen) - 0.5) * 0.16
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.5)
    x = x.clamp(0, 1) ** gamma
    return x.clamp(0, 1)


def train_cnn(
    x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int, seed: int, log: bool = True
) -> SmallOCTNet:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = SmallOCTNet()
    xt = torch.as_tensor(x[:, None], dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    steps = epochs * -(-len(xt) // batch_size)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(xt), generator=gen)
        tot, correct, t0 = 0.0, 0, time.perf_counter()
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            xb = augment(xt[idx], gen)
            out = net(xb)
            loss = F.cross_entropy(out, yt[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        if log:
            print(
                f"  epoch {ep + 1}/{epochs}: loss {tot / len(xt):.3f}, train acc {correct / len(xt):.3f}, "
                f"{time.perf_counter() - t0:.0f}s",
                file=sys.stderr,
            )
    net.eval()
    return net


@torch.no_grad()
def predict(net: nn.Module, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    xt = torch.as_tensor(x[:, None], dtype=torch.float32)
    return torch.cat([net(xt[i : i + batch_size]).argmax(1) for i in range(0, len(xt), batch_size)]).numpy()


def confusion(y: np.ndarray, p: np.ndarray, n: int = 4) -> np.ndarray:
    m = np.zeros((n, n), dtype=int)
    for a, b in zip(y, p):
        m[a, b] += 1
    return m


def confusion_md(m: np.ndarray) -> str:
    head = (
        "| true \\ predicted | "
        + " | ".join(OCT_CLASSES)
        + " | recall |\n|---|"
        + "---:|" * (len(OCT_CLASSES) + 1)
    )
    rows = [
        f"| {OCT_CLASSES[i]} | "
        + " | ".join(str(v) for v in m[i])
        + f" | {m[i, i] / max(1, m[i].sum()):.2f} |"
        for i in range(len(m))
    ]
    return "\n".join([head, *rows])


# --------------------------------------------------------------------------------------------- gallery
def write_gallery(path: Path, real_root: Path | None, n: int = 4, size: int = 160, seed: int = 0) -> None:
    """A PNG with ``n`` synthetic B-scans per class and, beside them, ``n`` real ones when available."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = SyntheticOCTGenerator(image_size=size, seed=seed)
    syn = [[gen(c) for _ in range(n)] for c in range(len(OCT_CLASSES))]
    real: list[list[np.ndarray]] | None = None
    if real_root is not None and (real_root / "test").is_dir():
        items, _ = kermany_datalist(real_root, "test")
        rng = np.random.default_rng(seed)
        real = []
        for c in range(len(OCT_CLASSES)):
            cls_items = [it for it in items if it["label"] == c]
            pick = rng.choice(len(cls_items), n, replace=False)
            real.append([load_octmnist_style(cls_items[i]["image"], size) for i in sorted(pick)])
    cols = n * (2 if real else 1)
    fig, axes = plt.subplots(len(OCT_CLASSES), cols, figsize=(1.6 * cols + 0.6, 1.6 * len(OCT_CLASSES) + 0.5))
    for c, name in enumerate(OCT_CLASSES):
        row = syn[c] + (real[c] if real else [])
        for j, img in enumerate(row):
            ax = axes[c, j]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=11)
            if c == 0 and j in (0, n):
                ax.set_title("synthetic" if j == 0 else "real (Kermany sample)", loc="left", fontsize=11)
    fig.suptitle(
        f"monai-adv synthetic OCT (left, seed {seed}) beside real Kermany B-scans (right), {size} px",
        fontsize=11,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--real", type=Path, default=DEFAULT_REAL, help="Kermany-layout folder with the real sample"
    )
    ap.add_argument("--real-split", default="test")
    ap.add_argument("--n-train", type=int, default=750, help="synthetic training images per class")
    ap.add_argument("--n-test", type=int, default=125, help="synthetic test images per class")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="processes for generating the synthetic images")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the CNN")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--gallery", type=Path, default=None, help="write a gallery PNG (synthetic beside real)")
    ap.add_argument("--gallery-only", action="store_true", help="only write the gallery")
    args = ap.parse_args(argv)
    if args.gallery is not None:
        write_gallery(args.gallery, args.real, seed=args.seed)
        print(f"gallery written to {args.gallery}", file=sys.stderr)
        if args.gallery_only:
            return {}
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    res: dict = {"args": {k: str(v) for k, v in vars(args).items()}}

    # real images
    if not (args.real / args.real_split).is_dir():
        raise SystemExit(f"real sample not found: {args.real / args.real_split}")
    items, _ = kermany_datalist(args.real, args.real_split)
    xr = np.stack([load_octmnist_style(it["image"], args.size) for it in items])
    yr = np.array([it["label"] for it in items])

    # synthetic images
    t0 = time.perf_counter()
    x_tr, y_tr = SyntheticOCTGenerator(image_size=args.size, seed=args.seed).generate(
        args.n_train, shuffle=True, num_workers=args.workers, progress=True
    )
    x_te, y_te = SyntheticOCTGenerator(image_size=args.size, seed=args.seed + 1).generate(
        args.n_test, shuffle=True, num_workers=args.workers, progress=True
    )
    res["generation_s"] = time.perf_counter() - t0

    # 1. statistics (synthetic: the first 100 per class of the training set, the size of the real sample)
    n_stat = min(100, args.n_train)
    sel = np.concatenate([np.flatnonzero(y_tr == c)[:n_stat] for c in range(4)])
    xs, ys = x_tr[sel], y_tr[sel]
    sr, ss = image_statistics(xr, yr), image_statistics(xs, ys)
    rng = np.random.default_rng(0)
    half = rng.permutation(len(xr))
    w_real = wasserstein_1d(xr[half[: len(xr) // 2]], xr[half[len(xr) // 2 :]])
    w_syn = wasserstein_1d(xs, xr)
    res["stats"] = {"real": sr, "synthetic": ss, "w1_synthetic_real": w_syn, "w1_real_half_half": w_real}

    # 2. histogram logistic regression
    hr, hs = intensity_histograms(xr, 64), intensity_histograms(xs, 64)
    hs_all = intensity_histograms(np.concatenate([x_tr, x_te]), 64)
    res["histogram_logreg"] = {
        "real_400": logistic_regression_cv(hr, yr),
        f"synthetic_{len(xs)}": logistic_regression_cv(hs, ys),
        f"synthetic_{len(hs_all)}": logistic_regression_cv(hs_all, np.concatenate([y_tr, y_te])),
    }

    # 3. CNN trained on synthetic images only
    t0 = time.perf_counter()
    net = train_cnn(x_tr, y_tr, args.epochs, args.batch_size, args.seed)
    res["cnn_train_s"] = time.perf_counter() - t0
    p_te, p_r = predict(net, x_te), predict(net, xr)
    cm_syn, cm_real = confusion(y_te, p_te), confusion(yr, p_r)
    res["cnn"] = {
        "synthetic_test_acc": float((p_te == y_te).mean()),
        "real_acc": float((p_r == yr).mean()),
        "synthetic_confusion": cm_syn.tolist(),
        "real_confusion": cm_real.tolist(),
        "n_train": int(len(y_tr)),
        "n_synthetic_test": int(len(y_te)),
        "n_real": int(len(yr)),
    }
    res["total_s"] = time.perf_counter() - t_start

    # report
    def f3(v: float) -> str:
        return f"{v:.3f}"

    lines = [
        f"### Image statistics at {args.size} px (real: {len(xr)} Kermany B-scans; synthetic: {len(xs)}, seed {args.seed})",
        "",
        "| statistic | real | synthetic |",
        "|---|---:|---:|",
        f"| pooled mean | {f3(sr['mean'])} | {f3(ss['mean'])} |",
        f"| pooled std | {f3(sr['std'])} | {f3(ss['std'])} |",
    ]
    for c, name in enumerate(OCT_CLASSES):
        lines.append(
            f"| {name} mean / std | {f3(sr['class_mean'][c])} / {f3(sr['class_std'][c])} | "
            f"{f3(ss['class_mean'][c])} / {f3(ss['class_std'][c])} |"
        )
    lines += [
        f"| retina fraction (smoothed > 0.3) | {f3(sr['retina_fraction'])} | {f3(ss['retina_fraction'])} |",
        f"| speckle contrast (median 8x8 std/mean) | {f3(sr['speckle_contrast'])} | {f3(ss['speckle_contrast'])} |",
        f"| vitreous background mean / std (top 15%) | {f3(sr['background_mean'])} / {f3(sr['background_std'])} | "
        f"{f3(ss['background_mean'])} / {f3(ss['background_std'])} |",
        f"| registration padding fraction | {f3(sr['padding_fraction'])} | {f3(ss['padding_fraction'])} |",
        "| quantiles 1/5/25/50/75/95/99% | "
        + " ".join(f"{v:.2f}" for v in sr["quantiles"])
        + " | "
        + " ".join(f"{v:.2f}" for v in ss["quantiles"])
        + " |",
        "",
        f"1-Wasserstein distance of pooled intensities, synthetic vs real: **{w_syn:.4f}** "
        f"(two random halves of the real sample: {w_real:.4f}).",
        "",
        "### Logistic regression on 64-bin intensity histograms (5-fold CV, chance 0.25)",
        "",
        "| data | accuracy |",
        "|---|---:|",
        *[f"| {k} | {v:.3f} |" for k, v in res["histogram_logreg"].items()],
        "",
        f"### Small CNN trained on {len(y_tr)} synthetic images only ({args.epochs} epochs, {res['cnn_train_s']:.0f}s)",
        "",
        f"- synthetic test accuracy ({len(y_te)} images): **{res['cnn']['synthetic_test_acc']:.3f}**",
        f"- real Kermany accuracy ({len(yr)} images, chance 0.25): **{res['cnn']['real_acc']:.3f}**",
        "",
        "Synthetic test confusion:",
        "",
        confusion_md(cm_syn),
        "",
        "Real (sim-to-real) confusion:",
        "",
        confusion_md(cm_real),
        "",
        f"(synthetic generation {res['generation_s']:.0f}s with {args.workers} processes; total {res['total_s']:.0f}s)",
    ]
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
