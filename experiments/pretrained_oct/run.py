"""Train, evaluate and install the pretrained weights of ``bundles/oct_robust_classification``.

The shipped classifier is the bundle's own network (MONAI's 2D ResNet-10, width 1/4) trained on
**real** Kermany OCT B-scans at 128 px, started from synthetic-OCT pretraining (the analogue of the
paper's ImageNet start), then adversarially trained with every label of its training patients. One
resumable command runs every stage; each finished stage appends one JSON line to ``--results``
(a rerun skips it; the weights stay in ``--runs``, not committed):

1. ``pretrain``: standard training on ``--synthetic-per-class`` synthetic B-scans per class
   (``SyntheticOCTGenerator`` seed 1000 + seed), ``--pretrain-iterations`` iterations.
2. ``train``: the real B-scans of ``../shared/data/kermany-oct-sample`` and ``kermany-oct-pool`` as one
   set of patients, split by patient (``split_by_patient``, stratified by class) with the seed: 25% to
   the test set, then 15% of the rest to the validation set (detector calibration), the rest to training.
   ``--method`` (Madry PGD-AT by default; TRADES) at eps ``--train-eps`` with PGD-``--train-steps``,
   class-balanced batches (DME and DRUSEN are each under 15% of the pool), flips, shifts and a mild
   gamma. Then the cheap evaluation on the test set: clean accuracy, confusion matrix, per-class recall,
   PGD-20 at 1/255 and 2/255.
3. ``detector``: each of ``--detectors`` (``make_detector`` names; Mahalanobis on the penultimate
   features, the logit margin, feature squeezing, the combined detector) fitted on the clean training
   images, calibrated on the clean validation images at ``--detector-fpr``; on the test set its clean
   flag rate, and against PGD-20 at 1/255 and 2/255 (the same adversarial images for every detector) its
   TPR and AUROC over the successful attacks, AUROC over all attacked images, undetected error and
   system risk. ``--install`` ships ``--install-detector`` (the margin: it measured best at 1/255 on
   both seeds and keeps its false-positive rate).
4. ``suite``: AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square 5,000 queries; per-sample
   worst case) on the whole test set at each ``--suite-eps``, with per-class robust recall and which
   member fooled how many images. ``--suite-members apgd`` runs only the suite's gradient members
   (APGD-CE, then APGD-T towards each other class; rows ``suite_apgd``): an upper bound on the suite's
   robust accuracy, for a CPU budget: on a 2-core AVX2 CPU one forward pass over the ~260 images the
   gradient members leave takes 1.8 CPU-s at 128 px, so Square's 5,000 queries alone would take about
   2.5 CPU-hours per seed and eps. ``--suite-chunk N`` attacks N test images at a time and appends one
   ``suite_part`` row per chunk (its predictions), so a stopped run resumes at the first unfinished chunk;
   the ``suite`` row follows when every chunk is done.

``--install SEED`` writes that seed's classifier and detector into the bundle's ``models/`` (with
the metadata the bundle checks at load time and a ``.sha256`` beside each file); ``--write-card SEED``
puts the measured numbers into the bundle's ``metadata.json`` (``eval_metrics``: the shipped seed;
``eval_metrics_over_seeds``: mean and sd); ``--report`` prints the model card's table.

Usage::

    nice python -m experiments.pretrained_oct.run --seeds 0 --threads 1 &   # one copy per core
    nice python -m experiments.pretrained_oct.run --seeds 1 --threads 1 &
    python -m experiments.pretrained_oct.run --install 0
    python -m experiments.pretrained_oct.run --write-card 0
    python -m experiments.pretrained_oct.run --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.handlers import LrScheduleHandler

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
from experiments.label_scarcity.run import eps_name, kermany_items, parse_eps, recalls  # noqa: E402
from experiments.stats import mean_sd as _mean_sd  # noqa: E402
from monai_adv.engines import AutocastSupervisedTrainer, create_trainer, one_cycle_schedule  # noqa: E402
from monai_adv.metrics.classification import confusion_matrix  # noqa: E402
from monai_adv.transforms import PGD  # noqa: E402

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
BUNDLE = ROOT / "bundles" / "oct_robust_classification"
KERMANY = [str(ROOT.parent / "shared" / "data" / d) for d in ("kermany-oct-sample", "kermany-oct-pool")]
STAGES = ("pretrain", "train", "detector", "suite")


def new_network() -> nn.Module:
    """The bundle's ``network_def``: MONAI's 2D ResNet-10 at width 1/4, one input channel, 4 classes."""
    from monai.networks.nets import resnet10

    return resnet10(spatial_dims=2, n_input_channels=1, num_classes=len(CLASSES), widen_factor=0.25)


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def real_split(seed: int, a: argparse.Namespace) -> dict:
    """Train / validation / test tensors of one seed, split by patient across both shared folders."""
    from monai_adv.apps.oct import split_by_patient

    items, x, y = kermany_items(a.kermany_roots, a.size)
    for i, it in enumerate(items):
        it["_index"] = i
    test, rest = split_by_patient(items, a.test_fraction, seed=seed)
    val, train = split_by_patient(rest, a.val_fraction, seed=seed + 100, min_second=1)
    out = {}
    for name, part in (("train", train), ("val", val), ("test", test)):
        idx = torch.tensor([it["_index"] for it in part], dtype=torch.long)
        out[f"x_{name}"], out[f"y_{name}"] = x[idx], y[idx]
        out[f"patients_{name}"] = sorted({str(it["patient"]) for it in part})
        out[f"files_{name}"] = [os.path.basename(str(it["image"])) for it in part]
    patients = [set(out[f"patients_{n}"]) for n in ("train", "val", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    return out


def split_summary(d: dict) -> dict:
    """Images and patients per class of every part (for the model card)."""
    res = {}
    for name in ("train", "val", "test"):
        y = d[f"y_{name}"]
        res[name] = {
            "images": int(len(y)),
            "patients": len(d[f"patients_{name}"]),
            "images_per_class": {c: int((y == k).sum()) for k, c in enumerate(CLASSES)},
        }
    return res


def synthetic_set(seed: int, a: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """``--synthetic-per-class`` synthetic B-scans per class at ``--size`` (rendered once, cached)."""
    from monai_adv.apps.oct import SyntheticOCTGenerator

    path = Path(a.cache) / f"pretrained_synthetic_{a.size}px_{a.synthetic_per_class}_seed{1000 + seed}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        x, y = SyntheticOCTGenerator(image_size=a.size, seed=1000 + seed).generate(
            a.synthetic_per_class, shuffle=True, num_workers=1
        )
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, x=x, y=y)
        os.replace(tmp, path)
    d = np.load(path)
    return torch.from_numpy(d["x"]).float().unsqueeze(1), torch.from_numpy(d["y"]).long()


class BalancedAugmentedLoader:
    """Endless class-balanced batches (each class drawn equally often) with B-scan augmentation.

    Augmentation keeps intensities in [0, 1] and the class: a left-right flip (left and right eyes),
    a shift of up to ``shift`` pixels in each direction (zero border, as outside the scan) and a
    gamma in [0.8, 1.25].
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int, balanced: bool = True, shift: int = 8
    ):
        self.x, self.y, self.batch, self.shift = x, y, batch, shift
        self.g = torch.Generator().manual_seed(seed)
        counts = torch.bincount(y, minlength=len(CLASSES)).double()
        w = (1.0 / counts.clamp_min(1))[y] if balanced else torch.ones(len(y), dtype=torch.double)
        self.weights = w / w.sum()

    def __len__(self) -> int:
        return max(1, len(self.x) // self.batch)

    def __iter__(self):
        while True:
            j = torch.multinomial(self.weights, self.batch, replacement=True, generator=self.g)
            xb = self.x[j].clone()
            n, _, h, w = xb.shape
            flip = torch.rand(n, generator=self.g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(-1), xb)
            if self.shift:
                s = self.shift
                pad = F.pad(xb, (s, s, s, s))
                dx = torch.randint(0, 2 * s + 1, (n,), generator=self.g)
                dy = torch.randint(0, 2 * s + 1, (n,), generator=self.g)
                xb = torch.stack([pad[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
            gamma = torch.exp(torch.empty(n).uniform_(np.log(0.8), np.log(1.25), generator=self.g))
            xb = xb.clamp(0, 1).pow(gamma.view(-1, 1, 1, 1))
            yield {"image": xb.contiguous(memory_format=torch.channels_last), "label": self.y[j]}


# ----------------------------------------------------------------------------------------------
# training and evaluation
# ----------------------------------------------------------------------------------------------
def fit(net, loader, iterations: int, lr: float, method: str, a, seed: int) -> float:
    """Train ``net`` for ``iterations`` iterations; returns CPU seconds."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=a.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle_schedule(iterations))
    loss = nn.CrossEntropyLoss()
    common = dict(epoch_length=iterations, decollate=False, amp=a.amp)
    if method == "standard":
        tr = AutocastSupervisedTrainer(a.device, 1, loader, net, opt, loss, **common)
    else:
        tr = create_trainer(
            method, a.device, 1, loader, net, opt, loss, eps=a.train_eps, steps=a.train_steps, **common
        )
        tr.attack.set_random_state(seed)
    LrScheduleHandler(sched, print_lr=False, epoch_level=False).attach(tr)
    if a.progress:
        from ignite.engine import Events

        @tr.on(Events.ITERATION_COMPLETED(every=50))
        def _log(engine):
            print(f"  [{method} seed {seed}] iteration {engine.state.iteration}/{iterations}", flush=True)

    c0 = time.process_time()
    tr.run()
    return time.process_time() - c0


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch: int = 128) -> torch.Tensor:
    net.eval()
    return torch.cat(
        [
            net(x[i : i + batch].contiguous(memory_format=torch.channels_last)).argmax(1)
            for i in range(0, len(x), batch)
        ]
    )


def attacked(net: nn.Module, x: torch.Tensor, y: torch.Tensor, attack, batch: int = 128) -> torch.Tensor:
    return torch.cat([attack(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)])


def evaluate(net: nn.Module, d: dict, seed: int, a) -> dict:
    """Clean accuracy, confusion matrix and recall on val and test; PGD-20 on test."""
    res = {}
    for part in ("val", "test"):
        x, y = d[f"x_{part}"], d[f"y_{part}"]
        p = predict(net, x)
        res[f"{part}_clean"] = round(float((p == y).float().mean()), 4)
        res[f"{part}_recall"] = recalls(y, p)
    x, y = d["x_test"], d["y_test"]
    res["test_confusion"] = confusion_matrix(y, predict(net, x), len(CLASSES)).int().tolist()
    for eps in (1 / 255, 2 / 255):
        atk = PGD(net, eps=eps, alpha=2.5 * eps / 20, steps=20, amp=a.amp)
        atk.set_random_state(seed)
        p = predict(net, attacked(net, x, y, atk))
        res[f"pgd20@{eps_name(eps)}"] = round(float((p == y).float().mean()), 4)
        res[f"pgd20@{eps_name(eps)}_recall"] = recalls(y, p)
    return res


def checkpoint_metadata(a, seed: int, summary: dict, method: str) -> dict:
    """What the bundle needs to use the weights correctly, recorded in the checkpoint."""
    import monai

    import monai_adv

    return {
        "format": "monai-adv checkpoint 1",
        "network": "monai.networks.nets.resnet10(spatial_dims=2, n_input_channels=1, num_classes=4, widen_factor=0.25)",
        "image_size": [a.size, a.size],
        "num_channels": 1,
        "intensity_range": [0.0, 1.0],
        "class_names": list(CLASSES),
        "output": "logits",
        "preprocessing": f"monai_adv.apps.oct.oct_eval_transforms({a.size}): load (grey; RGB averaged), scale to [0, 1], centre square crop, area resize to {a.size}x{a.size}",
        "method": method,
        "train_eps": a.train_eps,
        "train_steps": a.train_steps,
        "data": "Kermany et al. 2018 OCT (CC BY 4.0): ../shared/data/kermany-oct-sample + kermany-oct-pool, split by patient; synthetic-OCT pretraining",
        "split": summary,
        "seed": seed,
        "monai_adv_version": str(monai_adv.__version__),
        "monai_version": str(monai.__version__),
        "torch_version": str(torch.__version__),
    }


# ----------------------------------------------------------------------------------------------
# the stages
# ----------------------------------------------------------------------------------------------
def load_rows(path: Path) -> list[dict]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


_ADVERSARIAL: dict = {}


def pgd20_test_images(net: nn.Module, d: dict, seed: int, eps: float, a) -> torch.Tensor:
    """PGD-20 on the test images at ``eps`` (computed once per process, seed and eps: every detector sees the same)."""
    key = (seed, eps)
    if key not in _ADVERSARIAL:
        atk = PGD(net, eps=eps, alpha=2.5 * eps / 20, steps=20, amp=a.amp)
        atk.set_random_state(seed)
        _ADVERSARIAL[key] = attacked(net, d["x_test"], d["y_test"], atk)
    return _ADVERSARIAL[key]


def detector_stage(net: nn.Module, d: dict, seed: int, a, name: str, path: Path) -> dict:
    """Fit detector ``name`` on the clean training images, calibrate it on the validation images, save it,
    and measure it on the test images against PGD-20 at 1/255 and 2/255 (:func:`detection_summary`)."""
    from monai_adv.detectors import make_detector
    from monai_adv.metrics import detection_summary

    det = make_detector(name, net, layers=a.detector_layers, progress=False)
    det.fit(
        [
            {"image": d["x_train"][i : i + 128], "label": d["y_train"][i : i + 128]}
            for i in range(0, len(d["y_train"]), 128)
        ]
    )
    det.calibrate([d["x_val"][i : i + 128] for i in range(0, len(d["y_val"]), 128)], fpr=a.detector_fpr)
    det.save(path)
    x, y = d["x_test"], d["y_test"]
    clean_scores = torch.cat([det.score(x[i : i + 128]) for i in range(0, len(x), 128)])
    correct = predict(net, x) == y
    res = {
        "detector": name,
        "layers": a.detector_layers,
        "fpr_target": a.detector_fpr,
        "threshold": det.threshold,
        "test_clean_flag_rate": round(float(det.flags(clean_scores).float().mean()), 4),
    }
    for eps in (1 / 255, 2 / 255):
        xa = pgd20_test_images(net, d, seed, eps, a)
        adv_scores = torch.cat([det.score(xa[i : i + 128]) for i in range(0, len(xa), 128)])
        s = detection_summary(
            clean_scores, adv_scores, correct, predict(net, xa) == y, threshold=det.threshold
        )
        e = eps_name(eps)
        # tpr/auroc keep their first meaning here: over the successful attacks (clean right, attacked wrong)
        res[f"tpr@{e}"] = None if s["tpr_at_fpr"] is None else round(s["tpr_at_fpr"], 4)
        res[f"auroc@{e}"] = None if s["auroc_success"] is None else round(s["auroc_success"], 4)
        res[f"auroc_all@{e}"] = round(s["auroc_all"], 4)
        res[f"undetected_error@{e}"] = round(s["undetected_error"], 4)
        res[f"n_fooled@{e}"] = s["n_success"]
        res[f"risk@{e}"] = {k: round(v, 4) for k, v in s["risk"].items()}
    return res


def run_seed(seed: int, a) -> None:
    results = Path(a.results)
    runs = Path(a.runs) / f"seed{seed}"
    runs.mkdir(parents=True, exist_ok=True)
    rows = [r for r in load_rows(results) if r.get("tag") == a.tag]
    done = {(r["stage"], r["seed"], r.get("eps")) for r in rows}
    done_detectors = {(r.get("detector"), r["seed"]) for r in rows if r["stage"] == "detector"}
    key = dict(tag=a.tag, seed=seed, size=a.size, method=a.method)
    pre_path, model_path, det_path = runs / "pretrained.pt", runs / "model.pt", runs / "detector.pt"

    if ("pretrain", seed, None) not in done or not pre_path.exists():
        torch.manual_seed(seed)
        xs, ys = synthetic_set(seed, a)
        net = new_network().to(memory_format=torch.channels_last)
        cpu = fit(
            net,
            BalancedAugmentedLoader(xs, ys, a.batch, seed),
            a.pretrain_iterations,
            a.lr,
            "standard",
            a,
            seed,
        )
        torch.save(net.state_dict(), pre_path)
        append(
            results,
            {
                **key,
                "stage": "pretrain",
                "synthetic_images": len(ys),
                "iterations": a.pretrain_iterations,
                "cpu_s": round(cpu, 1),
                **machine(),
            },
        )
        print(f"seed {seed}: pretrained on {len(ys)} synthetic images ({cpu:.0f} CPU-s)", flush=True)

    d = real_split(seed, a)
    summary = split_summary(d)
    if ("train", seed, None) not in done or not model_path.exists():
        torch.manual_seed(seed)
        net = new_network().to(memory_format=torch.channels_last)
        net.load_state_dict(torch.load(pre_path, weights_only=True))
        loader = BalancedAugmentedLoader(d["x_train"], d["y_train"], a.batch, seed, balanced=not a.no_balance)
        cpu = fit(net, loader, a.iterations, a.lr, a.method, a, seed)
        meta = checkpoint_metadata(a, seed, summary, a.method)
        torch.save({"model": net.state_dict(), "metadata": meta}, model_path)
        res = evaluate(net, d, seed, a)
        append(
            results,
            {
                **key,
                "stage": "train",
                "iterations": a.iterations,
                "batch": a.batch,
                "lr": a.lr,
                "train_eps": a.train_eps,
                "train_steps": a.train_steps,
                "balanced": not a.no_balance,
                "cpu_s": round(cpu, 1),
                "split": summary,
                **res,
                **machine(),
            },
        )
        print(f"seed {seed}: trained {a.method} ({cpu:.0f} CPU-s): {res}", flush=True)

    net = new_network().to(memory_format=torch.channels_last)
    net.load_state_dict(torch.load(model_path, weights_only=True)["model"])
    net.eval()

    for name in a.detectors:
        path = det_path if name == "mahalanobis" else runs / f"detector_{name}.pt"
        if (name, seed) not in done_detectors or not path.exists():
            res = detector_stage(net, d, seed, a, name, path)
            append(results, {**key, "stage": "detector", **res, **machine()})
            print(f"seed {seed}: detector {res}", flush=True)

    if a.skip_suite:
        return
    from monai_adv.transforms import WorstCaseEnsemble, autoattack

    stage = "suite" if a.suite_members == "standard" else f"suite_{a.suite_members}"
    x, y = d["x_test"], d["y_test"]
    chunk = a.suite_chunk or len(y)
    starts = list(range(0, len(y), chunk))
    for eps in a.suite_eps:
        if (stage, seed, eps_name(eps)) in done:
            continue
        # one row per chunk of test images: the per-sample worst case is per image, so the chunks' union is
        # the whole set's result, and a run stopped mid-way resumes at its first unfinished chunk
        parts = {
            r["start"]: r
            for r in load_rows(results)
            if r.get("tag") == a.tag
            and r["seed"] == seed
            and r["stage"] == f"{stage}_part"
            and r.get("eps") == eps_name(eps)
            and r.get("chunk") == chunk
        }
        for start in starts:
            if start in parts:
                continue
            suite = autoattack(net, eps, version="standard", amp=a.amp)
            if a.suite_members == "apgd":  # the standard suite's gradient members only: APGD-CE, then APGD-T
                suite = WorstCaseEnsemble(net, suite.attacks[:2], amp=a.amp)
            suite.set_random_state(seed * 100_003 + start)
            xs, ys = x[start : start + chunk], y[start : start + chunk]
            c0, t0 = time.process_time(), time.time()
            p = predict(net, attacked(net, xs, ys, suite, batch=len(xs)))
            parts[start] = {
                **key,
                "stage": f"{stage}_part",
                "eps": eps_name(eps),
                "chunk": chunk,
                "start": start,
                "pred": p.tolist(),
                "last_success": dict(getattr(suite, "last_success", {}) or {}),
                "cpu_s": round(time.process_time() - c0, 1),
                "wall_s": round(time.time() - t0, 1),
                **machine(),
            }
            append(results, parts[start])
            print(
                f"seed {seed}: suite @ {eps_name(eps)}, images {start}..{start + len(ys) - 1}: "
                f"{int((p == ys).sum())}/{len(ys)} robust ({parts[start]['cpu_s']:.0f} CPU-s)",
                flush=True,
            )
        p = torch.tensor([q for s in starts for q in parts[s]["pred"]])
        success: dict[str, int] = {}
        for s in starts:
            for k, v in parts[s]["last_success"].items():
                success[k] = success.get(k, 0) + v
        row = {
            **key,
            "stage": stage,
            "eps": eps_name(eps),
            "n": len(y),
            "chunk": chunk,
            "robust": round(float((p == y).float().mean()), 4),
            "recall_robust": recalls(y, p),
            "last_success": success,
            "cpu_s": round(sum(parts[s]["cpu_s"] for s in starts), 1),
            "wall_s": round(sum(parts[s]["wall_s"] for s in starts), 1),
            **machine(),
        }
        append(results, row)
        print(f"seed {seed}: suite {row}", flush=True)


# ----------------------------------------------------------------------------------------------
# install and report
# ----------------------------------------------------------------------------------------------
def install(seed: int, a) -> None:
    """Write one seed's classifier and detector into the bundle's models/, with metadata and a .sha256 each.

    The checkpoint's metadata is written afresh from this code (with the held-out test patients, so that
    anyone can evaluate on exactly the card's test set); the detector file records the same metadata.
    """
    from monai_adv.bundle import write_sha256
    from monai_adv.detectors import load_detector
    from monai_adv.io import atomic_torch_save

    runs = Path(a.runs) / f"seed{seed}"
    det_file = "detector.pt" if a.install_detector == "mahalanobis" else f"detector_{a.install_detector}.pt"
    for name in ("model.pt", det_file):
        if not (runs / name).exists():
            raise FileNotFoundError(
                f"{runs / name} does not exist; run the seed first: python -m experiments.pretrained_oct.run --seeds {seed}"
            )
    d = real_split(seed, a)
    ckpt = torch.load(runs / "model.pt", map_location="cpu", weights_only=True)
    old = ckpt["metadata"]
    a.train_eps, a.train_steps, a.size = old["train_eps"], old["train_steps"], old["image_size"][0]
    meta = checkpoint_metadata(a, seed, split_summary(d), old["method"])
    meta["split"]["test_patients"] = d["patients_test"]
    net = new_network()
    net.load_state_dict(ckpt["model"])
    out = BUNDLE / "models"
    atomic_torch_save({"model": net.state_dict(), "metadata": meta}, out / "model.pt")
    det_file = "detector.pt" if a.install_detector == "mahalanobis" else f"detector_{a.install_detector}.pt"
    det = load_detector(runs / det_file, net.eval())
    det.metadata = meta
    det.save(out / "detector.pt")
    for name in ("model.pt", "detector.pt"):
        write_sha256(out / name)
        print(f"installed {out / name} ({(out / name).stat().st_size / 1e6:.2f} MB)")


def mean_sd(v: list) -> str:
    return _mean_sd(v, scale=100, digits=1)


def detector_row(rows: list[dict], seed: int, name: str, tag: str | None = None) -> dict:
    """The latest ``detector`` row of ``name`` for ``seed`` (rows before the name was recorded: mahalanobis)."""
    found = {}
    for r in rows:
        if r["stage"] == "detector" and r["seed"] == seed and (tag is None or r.get("tag") == tag):
            if r.get("detector", "mahalanobis") == name:
                found = r
    return found


def report(a) -> str:
    rows = [r for r in load_rows(Path(a.results)) if r.get("tag") == a.tag]
    by = {}
    for r in rows:
        by[(r["stage"], r["seed"], r.get("eps"))] = r
    detectors = sorted({r.get("detector", "mahalanobis") for r in rows if r["stage"] == "detector"})
    seeds = sorted({r["seed"] for r in rows if r["stage"] == "train"})
    lines = [f"seeds {seeds}", "", "| metric | mean ± sd over seeds | per seed |", "|---|---|---|"]

    def line(name, get):
        vals = [get(s) for s in seeds]
        lines.append(
            f"| {name} | {mean_sd(vals)} | {', '.join('-' if v is None else f'{100 * v:.1f}' for v in vals)} |"
        )

    tr = lambda s: by.get(("train", s, None), {})  # noqa: E731
    line("clean accuracy (test)", lambda s: tr(s).get("test_clean"))
    for k, c in enumerate(CLASSES):
        line(f"clean recall {c}", lambda s, k=k: (tr(s).get("test_recall") or [None] * 4)[k])
    for e in ("1/255", "2/255"):
        line(f"PGD-20 @ {e}", lambda s, e=e: tr(s).get(f"pgd20@{e}"))
        for k, c in enumerate(CLASSES):
            line(
                f"  PGD-20 recall {c} @ {e}",
                lambda s, e=e, k=k: (tr(s).get(f"pgd20@{e}_recall") or [None] * 4)[k],
            )
        for stage, name in (
            ("suite", "AutoAttack standard"),
            ("suite_apgd", "APGD-CE + APGD-T (the suite's gradient members)"),
        ):
            su = lambda s, e=e, stage=stage: by.get((stage, s, e), {})  # noqa: E731
            if not any(su(s) for s in seeds):
                continue
            line(f"{name} @ {e}", lambda s, su=su: su(s).get("robust"))
            for k, c in enumerate(CLASSES):
                line(
                    f"  robust recall {c} @ {e}",
                    lambda s, su=su, k=k: (su(s).get("recall_robust") or [None] * 4)[k],
                )
    for name in detectors:
        det = lambda s, name=name: detector_row(rows, s, name)  # noqa: E731
        line(
            f"{name} detector: clean flag rate (test)", lambda s, det=det: det(s).get("test_clean_flag_rate")
        )
        for e in ("1/255", "2/255"):
            line(f"  TPR on successful PGD-20 @ {e}", lambda s, e=e, det=det: det(s).get(f"tpr@{e}"))
            line(f"  AUROC on successful PGD-20 @ {e}", lambda s, e=e, det=det: det(s).get(f"auroc@{e}"))
            line(
                f"  undetected error, PGD-20 @ {e}",
                lambda s, e=e, det=det: det(s).get(f"undetected_error@{e}"),
            )
    return "\n".join(lines)


def card_metrics(a, seed: int) -> dict:
    """The model card's numbers of one seed (fractions), keyed as metadata.json's ``eval_metrics``."""
    by = {
        (r["stage"], r.get("eps")): r
        for r in load_rows(Path(a.results))
        if r.get("tag") == a.tag and r["seed"] == seed
    }
    tr = by.get(("train", None), {})
    det = detector_row(load_rows(Path(a.results)), seed, a.install_detector, a.tag)
    m = {"clean_accuracy": tr.get("test_clean")}
    for k, c in enumerate(CLASSES):
        m[f"clean_recall_{c}"] = (tr.get("test_recall") or [None] * 4)[k]
    for e in ("1/255", "2/255"):
        tag = e.replace("/", "_")
        for stage, name in (("suite", "autoattack_standard"), ("suite_apgd", "autoattack_apgd_ce_apgd_t")):
            su = by.get((stage, e), {})
            m[f"{name}_accuracy_eps_{tag}"] = su.get("robust")
            for k, c in enumerate(CLASSES):
                m[f"{name}_recall_{c}_eps_{tag}"] = (su.get("recall_robust") or [None] * 4)[k]
        m[f"pgd20_accuracy_eps_{tag}"] = tr.get(f"pgd20@{e}")
        for k, c in enumerate(CLASSES):
            m[f"pgd20_recall_{c}_eps_{tag}"] = (tr.get(f"pgd20@{e}_recall") or [None] * 4)[k]
    m["detector_target_fpr"] = det.get("fpr_target")
    m["detector_clean_flag_rate"] = det.get("test_clean_flag_rate")
    for e in ("1/255", "2/255"):
        m[f"detector_undetected_error_pgd20_eps_{e.replace('/', '_')}"] = det.get(f"undetected_error@{e}")
        m[f"detector_tpr_pgd20_eps_{e.replace('/', '_')}"] = det.get(f"tpr@{e}")
        m[f"detector_auroc_pgd20_eps_{e.replace('/', '_')}"] = det.get(f"auroc@{e}")
    return m


def write_card(a, shipped_seed: int) -> None:
    """Put the measured numbers into the bundle's metadata.json: the shipped seed's, and mean/sd over seeds."""
    path = BUNDLE / "configs" / "metadata.json"
    meta = json.loads(path.read_text())
    seeds = sorted(
        {r["seed"] for r in load_rows(Path(a.results)) if r.get("tag") == a.tag and r["stage"] == "train"}
    )
    per_seed = {s: card_metrics(a, s) for s in seeds}
    meta["eval_metrics"] = {k: v for k, v in per_seed[shipped_seed].items() if v is not None}
    over = {}
    for k in per_seed[shipped_seed]:
        vals = [per_seed[s][k] for s in seeds if per_seed[s][k] is not None]
        if vals:
            over[k] = {
                "mean": round(statistics.mean(vals), 4),
                "sd": round(statistics.stdev(vals), 4) if len(vals) > 1 else None,
                "seeds": [s for s in seeds if per_seed[s][k] is not None],
            }
    meta["eval_metrics_over_seeds"] = over
    path.write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")
    print(f"wrote eval_metrics of seed {shipped_seed} and over seeds {seeds} to {path}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--tag", default="r10w025_128", help="rows of one recipe share a tag")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--method", choices=["madry", "trades"], default="madry")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--pretrain-iterations", type=int, default=400)
    p.add_argument("--synthetic-per-class", type=int, default=1000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--train-eps", type=parse_eps, default=1 / 255)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--no-balance", action="store_true")
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--val-fraction", type=float, default=0.15)
    p.add_argument("--detector-fpr", type=float, default=0.05)
    p.add_argument(
        "--detectors",
        nargs="+",
        default=["mahalanobis", "margin", "squeezing", "combined"],
        help="detectors (monai_adv.detectors.DETECTOR_NAMES) fitted and measured, one row each",
    )
    p.add_argument("--detector-layers", nargs="+", default=None, help="feature layers (default: penultimate)")
    p.add_argument(
        "--install-detector",
        default="margin",
        help="the detector --install ships and --write-card reports (margin: it measured best on both seeds)",
    )
    p.add_argument("--suite-eps", type=parse_eps, nargs="+", default=[1 / 255, 2 / 255])
    p.add_argument("--skip-suite", action="store_true")
    p.add_argument(
        "--suite-chunk",
        type=int,
        default=0,
        help="attack the test set in chunks of this many images, one resumable row each (0: all at once)",
    )
    p.add_argument(
        "--suite-members",
        choices=["standard", "apgd"],
        default="standard",
        help="standard: the whole suite (rows 'suite'); apgd: its gradient members APGD-CE and APGD-T only "
        "(rows 'suite_apgd'; a CPU budget: Square's 5,000 queries cost ~2.5 CPU-hours per seed and eps at 128 px)",
    )
    p.add_argument("--amp", default=False, help="autocast: False (fp32, the default on every CPU) or bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--kermany-roots", nargs="+", default=KERMANY)
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache"), help="rendered data sets (shared)")
    p.add_argument("--runs", default=str(HERE / "runs"))
    p.add_argument("--results", default=str(HERE / "results" / "results.jsonl"))
    p.add_argument("--install", type=int, default=None, metavar="SEED")
    p.add_argument("--report", action="store_true")
    p.add_argument(
        "--write-card",
        type=int,
        default=None,
        metavar="SEED",
        help="the shipped seed's numbers into metadata.json",
    )
    a = p.parse_args(argv)
    a.amp = False if a.amp in (False, "False", "false", "0", "fp32") else a.amp
    torch.set_num_threads(a.threads)
    if a.report:
        print(report(a))
        return
    if a.install is not None:
        install(a.install, a)
        return
    if a.write_card is not None:
        write_card(a, a.write_card)
        return
    for seed in a.seeds:
        run_seed(seed, a)


if __name__ == "__main__":
    main()
