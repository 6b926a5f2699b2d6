"""Does unlabeled data buy robustness? SSAT against labeled-only adversarial training, at a scale where classifiers work.

One resumable command runs the whole experiment (``python -m experiments.label_scarcity.run``, from the repository root): every
finished training run and every finished evaluation appends one JSON line to ``--results``, and a
rerun skips what is already there (model weights are kept in ``--runs``, so an evaluation can run in a
later session than its training). ``--report`` turns the lines into ``experiments/label_scarcity/README.md``'s
tables (mean and standard deviation over seeds) and the plot.

Settings:

- ``synthetic``: a pool of 20,000 ``SyntheticOCTGenerator`` B-scans (5,000 per class, 64 px, generator
  seed 1000), rendered once and cached, and a test set of 250 per class from seed 2000. The labeled
  part is a stratified random 1% or 10% of the pool, drawn per seed (the same for every method); the
  rest is the unlabeled pool, whose labels no method sees. Label fraction 1.0 is the all-labels upper
  bound (standard and Madry).
- ``kermany``: the real B-scans of ``../shared/data/kermany-oct-sample`` and ``kermany-oct-pool``, one
  set of patients split by patient: 25% of the images to the test set (the same for every seed and
  method), and 10% or 25% of the rest labeled (by patient, per seed). Every method starts from the
  synthetic standard model of its seed trained on all synthetic labels (the analogue of the paper's
  ImageNet start); the rows say so.

Methods (the same labeled subset per seed; every run has the same number of iterations):

- ``standard``: cross-entropy on the labeled part.
- ``madry``: Madry PGD-AT on the labeled part (PGD-``--train-steps`` at ``--train-eps``).
- ``trades``: TRADES (beta 6) on the labeled part.
- ``ssat``: the paper's SSAT exactly (online pseudo-labels, FGSM eps ~ U(0.001, 0.003), CE, weight 3),
  from scratch (kermany: from the synthetic start).
- ``ssat_robust``: the demo's stable SSAT variant: started from the ``standard`` model of the same
  seed, pseudo-labels from that frozen model, PGD at ``--train-eps`` on the unlabeled and the labeled
  batch, weight 1.
- ``rst``: Carmon et al. 2019's robust self-training: pseudo-labels for the whole unlabeled pool from
  the ``standard`` model, then TRADES from scratch on batches of half labeled, half pseudo-labeled
  (``monai_adv.engines.RobustSelfTrainingTrainer``, the registry's ``rst``).
- ``madry`` at label fraction 1.0: every label of the pool, the upper bound.

Evaluation (at the training eps and around it): on the whole test set, clean accuracy, per-class
recall, FGSM on the paper's grid (eps 0.0002 i, i = 1..10) and PGD-20 at 1/255, 2/255 and 4/255; on a
fixed, seeded, stratified subset (100 per class; the whole real test set), AutoAttack's standard
suite (APGD-CE, APGD-T, FAB-T, Square 5,000 queries; ``monai_adv.transforms.autoattack(...,
version="standard")``), per-sample worst case, at 1/255 and 2/255 (``--suite-eps`` chooses; the suite on
a robust model costs ~15 CPU-minutes per eps, mostly Square's queries on every image it cannot break).
``--report`` ends with the answer: each semi-supervised method minus Madry and TRADES, paired by seed.

Usage::

    nice python -m experiments.label_scarcity.run --stage train     # every training run + the cheap evaluation
    nice python -m experiments.label_scarcity.run --stage suite     # AutoAttack's standard suite on every trained model
    # copies of either share the plan (pid-file claims in --runs); --follow makes the suite wait for training
    python -m experiments.label_scarcity.run --report --markdown experiments/label_scarcity/README.md \
        --plot experiments/label_scarcity/figures/accuracy_vs_eps_autoattack.png
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from monai.handlers import LrScheduleHandler

from experiments.label_scarcity.small_scale import generator_version, make_network, stratified_labeled_mask  # noqa: E402
from monai_adv.engines import (  # noqa: E402
    AutocastSupervisedTrainer,
    SemiSupervisedAdversarialTrainer,
    create_trainer,
    one_cycle_schedule,
)
from monai_adv.io import atomic_open  # noqa: E402
from monai_adv.metrics.classification import confusion_matrix, per_class_recall  # noqa: E402
from monai_adv.precision import PRECISION_AMP, add_precision_argument, precision_record  # noqa: E402
from monai_adv.transforms import FGSM, PGD  # noqa: E402

METHODS = ["standard", "madry", "trades", "ssat", "ssat_robust", "rst"]
ALL_LABEL_METHODS = ["standard", "madry"]
NEEDS_TEACHER = {"ssat_robust", "rst"}
LABELED_ONLY_AT = ["madry", "trades"]
SEMI_SUPERVISED = ["ssat", "ssat_robust", "rst"]
CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")
FGSM_GRID = [round(0.0002 * i, 4) for i in range(1, 11)]
PGD_EPS = [1 / 255, 2 / 255, 4 / 255]
SUITE_EPS = [1 / 255, 2 / 255]
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TABLES_BEGIN, TABLES_END = "<!-- tables: written by run.py --report -->", "<!-- end of tables -->"


def parse_eps(text: str) -> float:
    """``'2/255'`` or ``'0.008'`` as a float (for the command line)."""
    try:
        num, _, den = text.partition("/")
        eps = float(num) / float(den) if den else float(num)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(
            f"eps must be a number or a fraction like 2/255, got {text!r}"
        ) from None
    if not eps > 0:
        raise argparse.ArgumentTypeError(f"eps must be positive, got {text!r}")
    return eps


def eps_name(eps: float) -> str:
    """``2/255`` for multiples of 1/255, else the number."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


# ----------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------
def synthetic_pool(cache: Path, size: int = 64, n_pool: int = 5000, n_test: int = 250) -> dict:
    """The synthetic pool and test set (rendered once, cached as .npz with the generator version)."""
    from monai_adv.apps.oct import SyntheticOCTGenerator

    path = cache / f"synthetic_oct_{size}px_pool{n_pool}_test{n_test}.npz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        version = generator_version()
        xtr, ytr = SyntheticOCTGenerator(image_size=size, seed=1000).generate(
            n_pool, shuffle=True, num_workers=2
        )
        xte, yte = SyntheticOCTGenerator(image_size=size, seed=2000).generate(
            n_test, shuffle=True, num_workers=2
        )
        # a temporary file of this process's own: two runs rendering at once must not clash
        with atomic_open(path, "wb") as f:
            np.savez_compressed(f, xtr=xtr, ytr=ytr, xte=xte, yte=yte, generator=np.array(version))
        print(f"rendered {len(xtr) + len(xte)} images in {time.time() - t0:.0f}s -> {path}", flush=True)
    d = np.load(path)
    return {
        "x_pool": torch.from_numpy(d["xtr"]).float().unsqueeze(1),
        "y_pool": torch.from_numpy(d["ytr"]).long(),
        "x_test": torch.from_numpy(d["xte"]).float().unsqueeze(1),
        "y_test": torch.from_numpy(d["yte"]).long(),
        "generator": str(d["generator"]),
    }


_KERMANY: dict = {}


def kermany_items(roots: list[str], size: int) -> tuple[list[dict], torch.Tensor, torch.Tensor]:
    """Every real B-scan of ``roots`` (Kermany layout, any split folder), loaded once at ``size`` px."""
    key = (tuple(roots), size)
    if key not in _KERMANY:
        from monai_adv.apps.oct import kermany_datalist, oct_eval_transforms

        items = []
        for root in roots:
            for split in sorted(p.name for p in Path(root).iterdir() if p.is_dir()):
                lst, _ = kermany_datalist(root, split=split, label_fraction=1.0, seed=0)
                items += lst
        tf = oct_eval_transforms(image_size=size)
        out = [tf(dict(it)) for it in items]
        x = torch.stack([torch.as_tensor(o["image"]).float() for o in out])
        y = torch.tensor([int(o["label"]) for o in out])
        _KERMANY[key] = (items, x, y)
    return _KERMANY[key]


def setting_data(data: str, fraction: float, seed: int, a: argparse.Namespace) -> dict:
    """Labeled, unlabeled and test tensors of one (data, label fraction, seed)."""
    if data == "synthetic":
        pool = synthetic_pool(Path(a.cache), a.size, a.n_pool, a.n_test)
        m = (
            stratified_labeled_mask(pool["y_pool"], fraction, seed)
            if fraction < 1
            else torch.ones_like(pool["y_pool"], dtype=torch.bool)
        )
        out = {
            "x_l": pool["x_pool"][m],
            "y_l": pool["y_pool"][m],
            "x_u": pool["x_pool"][~m],
            "y_u_hidden": pool["y_pool"][~m],
            "x_test": pool["x_test"],
            "y_test": pool["y_test"],
            "generator": pool["generator"],
        }
        holdout = int(getattr(a, "synthetic_holdout", 0) or 0)
        if holdout:  # clean images no method trains on (a detector's calibration set), drawn per seed
            perm = torch.randperm(len(out["x_u"]), generator=torch.Generator().manual_seed(seed + 17))
            cal, rest = perm[:holdout], perm[holdout:]
            out["x_cal"], out["y_cal"] = out["x_u"][cal], out["y_u_hidden"][cal]
            out["x_u"], out["y_u_hidden"] = out["x_u"][rest], out["y_u_hidden"][rest]
        return out
    from monai_adv.apps.oct import split_by_patient

    items, x, y = kermany_items(a.kermany_roots, a.size)
    for i, it in enumerate(items):
        it["_index"] = i
    test, pool = split_by_patient(items, a.kermany_test_fraction, seed=0)  # one test set for every seed
    if fraction < 1:
        labeled, unlabeled = split_by_patient(pool, fraction, seed=seed + 1)
    else:
        labeled, unlabeled = pool, []
    holdout = float(getattr(a, "kermany_holdout", 0) or 0)
    calibration: list = []
    if holdout and unlabeled:  # patients no method trains on (a detector's calibration set)
        calibration, unlabeled = split_by_patient(unlabeled, holdout, seed=seed + 17)

    def idx(lst):
        return torch.tensor([it["_index"] for it in lst], dtype=torch.long)

    il, iu, it_ = idx(labeled), idx(unlabeled), idx(test)
    out = {
        "x_l": x[il],
        "y_l": y[il],
        "x_u": x[iu],
        "y_u_hidden": y[iu],
        "x_test": x[it_],
        "y_test": y[it_],
        "generator": None,
    }
    if calibration:
        ic = idx(calibration)
        out["x_cal"], out["y_cal"] = x[ic], y[ic]
    return out


class CyclingLoader:
    """Batches of a tensor data set, reshuffled (seeded) at every pass, endlessly, with random left-right flips.

    ``len()`` is one pass; the trainers run ``epoch_length`` iterations regardless, so a short labeled
    set and a long unlabeled pool are both cycled as often as the run needs. A B-scan mirrored
    left-right is still a B-scan of the same class (the flip is the only augmentation).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, batch: int, seed: int, flip: bool = True):
        if len(x) == 0:
            raise ValueError("an empty data set cannot be cycled.")
        self.x, self.y, self.batch, self.flip = x, y, min(batch, len(x)), flip
        self.g = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return max(1, len(self.x) // self.batch)

    def __iter__(self) -> Iterator:
        while True:
            perm = torch.randperm(len(self.x), generator=self.g)
            for i in range(len(self)):
                j = perm[i * self.batch : (i + 1) * self.batch]
                xb = self.x[j]
                if self.flip:
                    f = torch.rand(len(j), generator=self.g) < 0.5
                    xb = torch.where(f.view(-1, 1, 1, 1), xb.flip(-1), xb)
                xb = xb.contiguous(memory_format=torch.channels_last)
                yield xb if self.y is None else {"image": xb, "label": self.y[j]}


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def new_network(a: argparse.Namespace) -> nn.Module:
    """The 4-block CNN (``--network cnn``) or MONAI's full-width 2D ResNet-18 (``--network resnet18``)."""
    if a.network == "resnet18":
        from monai.networks.nets import resnet18

        net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=len(CLASSES))
    else:
        net = make_network(width=a.width)
    return net.to(a.device).to(memory_format=torch.channels_last)


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    net.eval()
    device = next(net.parameters()).device
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch].to(device).contiguous(memory_format=torch.channels_last)
        out.append(net(xb).argmax(1).cpu())
    return torch.cat(out)


def recipe(method: str, d: dict, a: argparse.Namespace) -> tuple[str, int]:
    """Where a method's training starts (Kermany from the all-label synthetic standard model, SSAT-robust
    from its teacher) and how many iterations it runs."""
    start = "synthetic standard (all labels)" if d["data"] == "kermany" else "scratch"
    if method == "ssat_robust":
        start = "standard model of this seed"
    batch = a.batch[d["data"]]
    iters = a.iterations[d["data"]] if not a.epochs else a.epochs * max(1, len(d["x_l"]) // batch)
    return start, iters


def train(
    method: str, d: dict, seed: int, a: argparse.Namespace, teacher: nn.Module | None, init: dict | None
):
    """Train one method; returns the network (eval mode), CPU seconds and a description of the recipe."""
    torch.manual_seed(seed)
    net = new_network(a)
    if init is not None:
        net.load_state_dict(init)
    if method == "ssat_robust":
        net.load_state_dict(teacher.state_dict())
    start, iters = recipe(method, d, a)
    batch = a.batch[d["data"]]
    lab = CyclingLoader(d["x_l"], d["y_l"], batch, seed)
    lr = a.lr * (a.finetune_lr_scale if method == "ssat_robust" else 1.0)
    if a.optimizer == "sgd":  # the paper's optimizer, constant LR
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=a.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    else:
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=a.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, one_cycle_schedule(iters))
    loss = nn.CrossEntropyLoss()
    common = dict(epoch_length=iters, decollate=False, amp=a.amp)
    pgd = dict(eps=a.train_eps, steps=a.train_steps)
    if method == "standard":
        tr = AutocastSupervisedTrainer(a.device, 1, lab, net, opt, loss, **common)
    elif method in ("madry", "trades"):
        tr = create_trainer(method, a.device, 1, lab, net, opt, loss, **pgd, **common)
    elif method == "ssat":
        unl = CyclingLoader(d["x_u"], None, batch, seed + 1)
        tr = create_trainer("ssat", a.device, 1, lab, net, opt, loss, unlabeled_data_loader=unl, **common)
    elif method == "ssat_robust":
        unl = CyclingLoader(d["x_u"], None, batch, seed + 1)
        attack = create_trainer("madry", a.device, 1, lab, net, opt, loss, **pgd).attack
        tr = SemiSupervisedAdversarialTrainer(
            a.device,
            1,
            lab,
            unl,
            net,
            opt,
            loss,
            attack=attack,
            unlabeled_weight=1.0,
            pseudo_labels="teacher",
            teacher_network=copy.deepcopy(teacher).eval(),
            labeled_attack=attack,
            **common,
        )
    elif method == "rst":
        # Carmon et al.: the whole pool labelled once by the teacher, then the engine's RST (TRADES on batches
        # of `batch` labeled and `batch` pseudo-labeled items, the pool cycled on its own)
        pool = CyclingLoader(d["x_u"], predict(teacher, d["x_u"]), batch, seed + 1)
        tr = create_trainer(
            "rst", a.device, 1, lab, net, opt, loss, unlabeled_data_loader=pool, **pgd, **common
        )
    else:
        raise ValueError(f"unknown method {method!r}")
    if hasattr(tr, "attack"):
        tr.attack.set_random_state(seed)
    LrScheduleHandler(sched, print_lr=False, epoch_level=False).attach(tr)
    t0, c0 = time.time(), time.process_time()
    tr.run()
    return net.eval(), time.process_time() - c0, time.time() - t0, start, iters


# ----------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------
def accuracy_and_predictions(net, x, y, attack=None, batch: int = 250) -> tuple[float, torch.Tensor]:
    preds = []
    device = next(net.parameters()).device
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch].to(device), y[i : i + batch].to(device)
        xa = xb if attack is None else attack(xb, yb)
        preds.append(predict(net, xa))
    p = torch.cat(preds)
    return float((p == y).float().mean()), p


def recalls(y: torch.Tensor, p: torch.Tensor) -> list:
    return [
        None if r is None else round(float(r), 4)
        for r in per_class_recall(confusion_matrix(y, p, len(CLASSES)))
    ]


def cheap_evaluation(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, a: argparse.Namespace
) -> dict:
    clean, p = accuracy_and_predictions(net, x, y)
    res = {"clean": clean, "recall_clean": recalls(y, p), "pred_classes": int(p.unique().numel())}
    for eps in FGSM_GRID:
        res[f"fgsm@{eps:g}"] = accuracy_and_predictions(net, x, y, FGSM(net, eps=eps, amp=a.amp))[0]
    for eps in PGD_EPS:
        atk = PGD(net, eps=eps, alpha=2.5 * eps / 20, steps=20, amp=a.amp)
        atk.set_random_state(seed)
        res[f"pgd20@{eps_name(eps)}"] = accuracy_and_predictions(net, x, y, atk)[0]
    return res


def suite_subset(y: torch.Tensor, per_class: int) -> torch.Tensor:
    """A fixed (seed 0), stratified subset of ``per_class`` test items per class (all of a smaller class)."""
    g = torch.Generator().manual_seed(0)
    keep = []
    for c in range(len(CLASSES)):
        idx = (y == c).nonzero().flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(keep).sort().values


def suite_evaluation(net: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, a) -> dict:
    from monai_adv.transforms import autoattack

    suite = autoattack(
        net, eps, version="standard", steps=a.suite_steps, n_queries=a.suite_queries, amp=a.amp
    )
    suite.set_random_state(seed)
    clean = accuracy_and_predictions(net, x, y)[0]
    t0 = time.time()
    acc, p = accuracy_and_predictions(net, x, y, suite, batch=a.suite_batch)
    return {
        "clean_subset": clean,
        "robust": acc,
        "recall_robust": recalls(y, p),
        "suite_s": round(time.time() - t0, 1),
        "last_success": dict(getattr(suite, "last_success", {}) or {}),
    }


# ----------------------------------------------------------------------------------------------
# the plan
# ----------------------------------------------------------------------------------------------
def plan(a: argparse.Namespace) -> list[tuple[str, float, int, str]]:
    """Every (data, label fraction, seed, method), in the order that answers the question soonest."""
    jobs = []
    for seed in a.seeds:
        for data in a.data:
            fracs = a.synthetic_fractions if data == "synthetic" else a.kermany_fractions
            for frac in fracs:
                jobs += [(data, frac, seed, m) for m in a.methods]
            jobs += [(data, 1.0, seed, m) for m in ALL_LABEL_METHODS if m in a.methods or m == "standard"]
    # the synthetic all-labels standard model is the start of every real-data run of its seed
    first = []
    for seed in a.seeds:
        if "kermany" in a.data:
            first.append(("synthetic", 1.0, seed, "standard"))
    return list(dict.fromkeys(first + jobs))


def run_key(data: str, frac: float, seed: int, method: str) -> str:
    return f"{data}_{frac:g}_seed{seed}_{method}"


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def weights_path(a, key: str) -> Path:
    return Path(getattr(a, "weights", None) or a.runs) / f"{key}.pt"


def network_id(path: Path) -> str:
    """The identity of a trained network: the first 16 hex digits of its weights file's SHA-256.

    Train rows record it (``weights_sha256``), so that rows measured on one network are never mixed with rows
    of a network trained again (on another machine the same recipe gives other weights)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def recorded_networks(results: Path) -> dict[str, str | None]:
    """Each key's network as its latest train row records it (None: a row written before ``weights_sha256``)."""
    return {r["key"]: r.get("weights_sha256") for r in load_results(results) if r.get("kind") == "train"}


class JobLock:
    """An exclusive claim on one job (a file holding the owner's pid), so that several copies of the
    command can share the plan: each skips what another is doing. A claim whose process is gone is
    taken over."""

    def __init__(self, path: Path):
        self.path = path

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    os.kill(int(self.path.read_text() or 0), 0)
                    return False  # its owner is alive
                except (ProcessLookupError, ValueError, FileNotFoundError):
                    self.path.unlink(missing_ok=True)  # a stale claim: take it over
                    continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return True
        return False

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def finished_keys(results: Path, kind: str) -> set:
    """What the results file holds now (other processes may have added rows since this one started)."""
    return {
        (r["key"], r["eps"]) if kind == "suite" else r["key"]
        for r in load_results(results)
        if r.get("kind") == kind
    }


def load_trained(a, key: str, expected: str | None = None) -> nn.Module:
    """The network of ``key`` from its weights file.

    Raises:
        ValueError: when ``expected`` (the network its train row records) is given and the file is
            another network: rows measured on one would be credited to the other.
    """
    path = weights_path(a, key)
    if expected is not None and (found := network_id(path)) != expected:
        raise ValueError(
            f"{path} is network {found}, but the train row of {key} records network {expected}: restore "
            f"that file, or move it away to train {key} again"
        )
    net = new_network(a)
    net.load_state_dict(torch.load(path, map_location=a.device, weights_only=True))
    return net.eval()


def ensure_trained(job, a, results: Path, done: set) -> nn.Module | None:
    """The trained network of ``job``: loaded from ``--runs``, or trained (and its row appended).

    When another process is training it, waits for it if ``job`` is needed now (``done`` is refreshed),
    else returns None.
    """
    data, frac, seed, method = job
    key = run_key(*job)
    path = weights_path(a, key)
    lock = JobLock(path.with_suffix(".lock"))
    while True:
        done |= finished_keys(results, "train")
        if path.exists() and key in done:
            return load_trained(a, key, recorded_networks(results).get(key))
        if lock.acquire():
            break
        print(f"--- {key}: another process is training it; waiting", flush=True)
        time.sleep(20)
    try:
        return _train_and_record(job, a, results, done)
    finally:
        lock.release()


def _train_and_record(job, a, results: Path, done: set) -> nn.Module:
    data, frac, seed, method = job
    key = run_key(*job)
    path = weights_path(a, key)
    d = setting_data(data, frac, seed, a)
    d["data"] = data
    if path.exists():
        # weights without their row: a run stopped after training (the weights are renamed into place
        # whole) but before its evaluation wrote the row; keep them (the training time is unknown)
        print(f"--- {key}: weights found without their row (a run stopped while evaluating); recording them")
        net = load_trained(a, key)
        (start, iters), cpu_s, wall_s = recipe(method, d, a), None, None
    else:
        net, cpu_s, wall_s, start, iters = _train(job, d, a, results, done)
    rec = dict(
        kind="train",
        key=key,
        data=data,
        label_fraction=frac,
        seed=seed,
        method=method,
        start=start,
        n_labeled=len(d["x_l"]),
        n_unlabeled=len(d["x_u"]),
        n_test=len(d["x_test"]),
        iterations=iters,
        batch=a.batch[data],
        train_cpu_s=None if cpu_s is None else round(cpu_s, 1),
        train_wall_s=None if wall_s is None else round(wall_s, 1),
        **({"weights_from_stopped_run": True} if cpu_s is None else {}),
        weights_sha256=network_id(path),
        threads=torch.get_num_threads(),
        size=a.size,
        network=a.network,
        width=a.width if a.network == "cnn" else None,
        optimizer=a.optimizer,
        train_eps=a.train_eps,
        train_steps=a.train_steps,
        lr=a.lr,
        **precision_record(a.amp, a.device),
        generator=d["generator"],
        **cheap_evaluation(net, d["x_test"], d["y_test"], seed, a),
    )
    append(results, rec)
    done.add(key)
    return net


def _train(job, d: dict, a, results: Path, done: set):
    """Train ``job`` (its teacher and Kermany's synthetic start first) and write its weights."""
    data, frac, seed, method = job
    key = run_key(*job)
    path = weights_path(a, key)
    teacher = (
        ensure_trained((data, frac, seed, "standard"), a, results, done) if method in NEEDS_TEACHER else None
    )
    init = None
    if data == "kermany":
        ensure_trained(("synthetic", 1.0, seed, "standard"), a, results, done)
        init = torch.load(
            weights_path(a, run_key("synthetic", 1.0, seed, "standard")),
            map_location=a.device,
            weights_only=True,
        )
    print(f"--- training {key}: {len(d['x_l'])} labeled, {len(d['x_u'])} unlabeled", flush=True)
    net, cpu_s, wall_s, start, iters = train(method, d, seed, a, teacher, init)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    os.replace(tmp, path)
    return net, cpu_s, wall_s, start, iters


def suite_pass(a: argparse.Namespace, jobs: list, results: Path) -> int:
    """Run the standard suite on every trained model that lacks it; returns how many evaluations are left."""
    left = 0
    for job in jobs:
        key = run_key(*job)
        data, frac, seed, method = job
        pending = [e for e in a.suite_eps if (key, eps_name(e)) not in finished_keys(results, "suite")]
        if not pending:
            continue
        if key not in finished_keys(results, "train") or not weights_path(a, key).exists():
            left += len(pending)
            continue
        d = setting_data(data, frac, seed, a)
        sub = suite_subset(d["y_test"], a.suite_per_class)
        net = load_trained(a, key, recorded_networks(results).get(key))
        for eps in pending:
            lock = JobLock(weights_path(a, f"{key}_suite{eps * 255:.0f}").with_suffix(".lock"))
            if (key, eps_name(eps)) in finished_keys(results, "suite") or not lock.acquire():
                continue
            try:
                print(
                    f"--- AutoAttack standard on {key} at eps {eps_name(eps)} ({len(sub)} images)", flush=True
                )
                res = suite_evaluation(net, d["x_test"][sub], d["y_test"][sub], eps, seed, a)
                rec = dict(kind="suite", key=key, data=data, label_fraction=frac, seed=seed, method=method)
                rec.update(eps=eps_name(eps), n=len(sub), **precision_record(a.amp, a.device), **res)
                append(results, rec)
            finally:
                lock.release()
    return left


def run(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    results = Path(a.results)
    jobs = plan(a)
    if a.stage in ("train", "all"):
        trained: set = set()
        for job in jobs:
            # a job that another copy of this command holds is left to it, so parallel copies share the plan
            lock = JobLock(weights_path(a, run_key(*job)).with_suffix(".lock"))
            if run_key(*job) not in finished_keys(results, "train") and lock.path.exists():
                if not lock.acquire():
                    continue
                lock.release()
            ensure_trained(job, a, results, trained)
    if a.stage in ("suite", "all"):
        while True:
            left = suite_pass(a, jobs, results)
            if not (a.follow and left):
                break
            print(
                f"--- {left} suite evaluations wait for their models; checking again in a minute", flush=True
            )
            time.sleep(60)


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def mean_sd(v: list[float]) -> str:
    if not v:
        return ""
    sd = statistics.stdev(v) if len(v) > 1 else 0.0
    return f"{statistics.mean(v):.1f} ± {sd:.1f}"


def min_recall(recalls: list) -> float:
    """The smallest per-class recall in %, over the classes present (a recall of None: no such images)."""
    return 100 * min(x for x in recalls if x is not None)


def suite_cell(suite_rows: dict, runs: list[dict], eps: float, value: Callable, fmt: str = "{}") -> str:
    """``value`` of the runs' suite rows at ``eps``, mean ± sd over seeds (how many, if not every run has one)."""
    v = [value(suite_rows[r["key"]][eps_name(eps)]) for r in runs if eps_name(eps) in suite_rows[r["key"]]]
    return fmt.format(mean_sd(v)) + (f" ({len(v)})" if len(v) != len(runs) else "") if v else ""


def method_cpu_s(train_rows: dict, r: dict) -> float:
    """A run's training CPU seconds; for a method that needs a teacher, the teacher's training is part of it."""
    cpu = r["train_cpu_s"]
    if r["method"] in NEEDS_TEACHER:
        teacher = train_rows.get(run_key(r["data"], r["label_fraction"], r["seed"], "standard"), {})
        cpu = None if cpu is None else cpu + (teacher.get("train_cpu_s", 0) or 0)
    # weights kept from a stopped run have no measured training time
    return float("nan") if cpu is None else cpu


def paired_answer(train_rows: dict, suite_rows: dict, eps: str = "1/255") -> list[str]:
    """The question in one table: each semi-supervised method minus each labeled-only adversarial training,
    paired by seed (same labeled subset), at equal labels. Differences in percentage points."""
    out = [
        "\n### The answer, paired by seed: semi-supervised minus labeled-only adversarial training\n",
        f"Differences in points, mean ± sd over the seeds where both runs have the row (n; for AA, the "
        f"number of pairs with both suite rows in brackets). AA = the standard suite at {eps} (the training "
        f"eps) and 2/255 on the fixed subset. CPU ratio = the method's training CPU time over the baseline's, summed "
        f"over the same seeds (a teacher's training counted in).\n",
        f"| setting | method | minus | n | Δ AA@{eps} | Δ AA@2/255 | Δ PGD-20@{eps} | Δ PGD-20@2/255 | Δ clean "
        "| CPU ratio |",
        "|---" * 10 + "|",
    ]
    settings = sorted(
        {(r["data"], r["label_fraction"]) for r in train_rows.values() if r["label_fraction"] < 1},
        key=lambda k: (k[0] != "synthetic", k[1]),
    )
    for data, frac in settings:
        for method in SEMI_SUPERVISED:
            for base in LABELED_ONLY_AT:
                pairs = [
                    (train_rows[run_key(data, frac, s, method)], train_rows[run_key(data, frac, s, base)])
                    for s in sorted({r["seed"] for r in train_rows.values()})
                    if run_key(data, frac, s, method) in train_rows
                    and run_key(data, frac, s, base) in train_rows
                ]
                if not pairs:
                    continue

                def diff(field: str, pairs: list = pairs) -> list[float]:
                    return [100 * (m[field] - b[field]) for m, b in pairs]

                aa = [
                    [
                        100 * (suite_rows[m["key"]][e]["robust"] - suite_rows[b["key"]][e]["robust"])
                        for m, b in pairs
                        if e in suite_rows.get(m["key"], {}) and e in suite_rows.get(b["key"], {})
                    ]
                    for e in (eps, "2/255")
                ]
                base_cpu = sum(method_cpu_s(train_rows, b) for _, b in pairs)
                ratio = sum(method_cpu_s(train_rows, m) for m, _ in pairs) / base_cpu if base_cpu else None
                out.append(
                    f"| {data} {frac:.0%} | {method} | {base} | {len(pairs)} | "
                    + " | ".join(f"**{mean_sd(v)}** ({len(v)})" if v else "" for v in aa)
                    + f" | {mean_sd(diff(f'pgd20@{eps}'))} | {mean_sd(diff('pgd20@2/255'))} | {mean_sd(diff('clean'))}"
                    + (f" | {ratio:.1f}x |" if ratio is not None else " | |")
                )
    return out


def report(a: argparse.Namespace) -> str:
    rows = load_results(Path(a.results))
    train_rows = {r["key"]: r for r in rows if r.get("kind") == "train"}
    suite_rows: dict = defaultdict(dict)
    for r in rows:
        if r.get("kind") == "suite":
            suite_rows[r["key"]][r["eps"]] = r
    groups: dict = defaultdict(list)
    for r in train_rows.values():
        groups[(r["data"], r["label_fraction"])].append(r)
    cols = ["clean", "min recall", "FGSM@0.002"] + [f"PGD-20@{eps_name(e)}" for e in PGD_EPS]
    cols += [f"**AA@{eps_name(e)}**" for e in SUITE_EPS]
    # robust accuracy can hide a class the attack breaks completely (real data: DME, DRUSEN are small)
    cols += [f"min recall under AA@{eps_name(SUITE_EPS[0])}", "train CPU min"]
    out = []
    for data, frac in sorted(groups, key=lambda k: (k[0] != "synthetic", k[1])):
        rs = groups[(data, frac)]
        r0 = rs[0]
        out.append(
            f"\n### {data}, {frac:.0%} labels: {r0['n_labeled']} labeled, {r0['n_unlabeled']} unlabeled, "
            f"{r0['n_test']} test images; {r0['iterations']} iterations of batch {r0['batch']}\n"
        )
        out.append("| method | start | seeds | " + " | ".join(cols) + " |")
        out.append("|---" * (len(cols) + 3) + "|")
        for method in METHODS:
            mrs = sorted((r for r in rs if r["method"] == method), key=lambda r: r["seed"])
            if not mrs:
                continue
            cells = [mean_sd([100 * r["clean"] for r in mrs])]
            cells.append(mean_sd([min_recall(r["recall_clean"]) for r in mrs]))
            cells.append(mean_sd([100 * r["fgsm@0.002"] for r in mrs]))
            cells += [mean_sd([100 * r[f"pgd20@{eps_name(e)}"] for r in mrs]) for e in PGD_EPS]
            cells += [
                suite_cell(suite_rows, mrs, e, lambda s: 100 * s["robust"], "**{}**") for e in SUITE_EPS
            ]
            cells.append(suite_cell(suite_rows, mrs, SUITE_EPS[0], lambda s: min_recall(s["recall_robust"])))
            cells.append(f"{statistics.mean(method_cpu_s(train_rows, r) for r in mrs) / 60:.1f}")
            out.append(
                f"| {method} | {mrs[0]['start']} | {','.join(str(r['seed']) for r in mrs)} | "
                + " | ".join(cells)
                + " |"
            )
    out += paired_answer(train_rows, suite_rows)
    done = {(r["key"], r["eps"]) for rs in suite_rows.values() for r in rs.values()}
    total = len(plan(a))
    out.insert(
        0,
        f"Rows so far: {len(train_rows)} of {total} training runs and {len(done)} of {total * len(SUITE_EPS)} "
        f"suite evaluations of the default plan. Mean ± standard deviation over the seeds listed; accuracies "
        f"in %; AA = AutoAttack's standard suite (worst case per image) on the fixed subset.",
    )
    text = "\n".join(out)
    print(text)
    if a.markdown:  # the tables go between the two markers of the results page
        md = Path(a.markdown).read_text()
        head, rest = md.split(TABLES_BEGIN, 1)
        md = head + TABLES_BEGIN + "\n" + text + "\n" + TABLES_END + rest.split(TABLES_END, 1)[1]
        Path(a.markdown).write_text(md)
    if a.plot:
        plot(train_rows, suite_rows, a.plot)
    return text


def plot(train_rows: dict, suite_rows: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted(
        {(r["data"], r["label_fraction"]) for r in train_rows.values() if r["label_fraction"] < 1},
        key=lambda k: (k[0] != "synthetic", k[1]),
    )
    fig, axes = plt.subplots(2, len(settings), figsize=(4.2 * len(settings), 7.5), squeeze=False)
    for j, (data, frac) in enumerate(settings):
        for i, method in enumerate(METHODS):
            mrs = [
                r
                for r in train_rows.values()
                if (r["data"], r["label_fraction"], r["method"]) == (data, frac, method)
            ]
            if not mrs:
                continue
            keys = ["clean"] + [f"fgsm@{e:g}" for e in FGSM_GRID]
            xs = [0.0] + FGSM_GRID
            m = [100 * statistics.mean(r[k] for r in mrs) for k in keys]
            axes[0, j].plot(xs, m, marker=".", color=f"C{i}", label=method)
            ys, es = [], []
            for e in SUITE_EPS:
                v = [
                    100 * suite_rows[r["key"]][eps_name(e)]["robust"]
                    for r in mrs
                    if eps_name(e) in suite_rows[r["key"]]
                ]
                ys.append(statistics.mean(v) if v else float("nan"))
                es.append(statistics.stdev(v) if len(v) > 1 else 0.0)
            xc = [0.0] + [e * 255 for e in SUITE_EPS]
            yc = [100 * statistics.mean(r["clean"] for r in mrs)] + ys
            axes[1, j].errorbar(xc, yc, yerr=[0.0] + es, marker="o", capsize=3, color=f"C{i}", label=method)
        axes[0, j].set_title(f"{data}, {frac:.0%} labels")
        axes[0, j].set_xlabel("FGSM eps (paper's grid)")
        axes[1, j].set_xlabel("eps x 255 (AutoAttack standard, worst case)")
        for ax in axes[:, j]:
            ax.axhline(25, color="grey", lw=0.8, ls=":")
            ax.set_ylim(0, 100)
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("test accuracy (%)")
    axes[1, 0].set_ylabel("robust accuracy (%)")
    labels = {}  # every method in some panel, each once (the 1% panel may lack some)
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(lab, h)
    axes[1, 0].legend(labels.values(), labels.keys(), fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The experiment's settings (also for experiments that train with this one's recipes)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["train", "suite", "all"], default="all")
    p.add_argument("--follow", action="store_true", help="suite stage: wait for models still being trained")
    p.add_argument("--data", nargs="+", choices=["synthetic", "kermany"], default=["synthetic", "kermany"])
    p.add_argument("--synthetic-fractions", type=float, nargs="+", default=[0.1, 0.01])
    p.add_argument("--kermany-fractions", type=float, nargs="+", default=[0.1, 0.25])
    p.add_argument(
        "--kermany-roots",
        nargs="+",
        default=[
            str(ROOT.parent / "shared/data/kermany-oct-sample"),
            str(ROOT.parent / "shared/data/kermany-oct-pool"),
        ],
    )
    p.add_argument("--kermany-test-fraction", type=float, default=0.25)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n-pool", type=int, default=5000, help="synthetic training pool images per class")
    p.add_argument("--n-test", type=int, default=250, help="synthetic test images per class")
    p.add_argument("--network", choices=["cnn", "resnet18"], default="cnn")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument(
        "--epochs", type=int, default=0, help="epochs over the labeled part (0: use the iterations)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--paper-scale",
        action="store_true",
        help="the paper's own scale, for a GPU: 224 px, full-width ResNet-18, batch 64 + 64, SGD lr 1e-3, "
        "momentum 0.9, 10 epochs, on cuda (results to results/paper_scale.jsonl)",
    )
    p.add_argument("--width", type=int, default=16, help="width of the 4-block CNN")
    p.add_argument("--synthetic-iterations", type=int, default=1200)
    p.add_argument("--kermany-iterations", type=int, default=500)
    p.add_argument("--synthetic-batch", type=int, default=64)
    p.add_argument("--kermany-batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--finetune-lr-scale", type=float, default=0.3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--train-eps", type=float, default=1 / 255)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument(
        "--suite-eps",
        type=parse_eps,
        nargs="+",
        default=SUITE_EPS,
        help="suite stage: the eps to run the standard suite at ('1/255' or a number; default 1/255 2/255)",
    )
    p.add_argument("--suite-per-class", type=int, default=100)
    p.add_argument("--suite-batch", type=int, default=400)
    p.add_argument(
        "--suite-steps", type=int, default=100, help="AutoAttack's iterations (100: the standard suite)"
    )
    p.add_argument(
        "--suite-queries", type=int, default=5000, help="Square's queries (5000: the standard suite)"
    )
    add_precision_argument(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=str(ROOT / "benchmarks" / ".cache"), help="rendered data sets (shared)")
    p.add_argument("--runs", default=str(HERE / "runs" / "experiment"))
    p.add_argument("--weights", default=None, help="where the trained networks go (default: --runs)")
    p.add_argument("--results", default=str(HERE / "results" / "results.jsonl"))
    p.add_argument("--report", action="store_true")
    p.add_argument("--plot", default=None)
    p.add_argument(
        "--markdown", default=None, help="--report: write the tables into this page, between its markers"
    )
    a = p.parse_args(argv)
    if a.paper_scale:
        a.size, a.network, a.optimizer, a.lr, a.weight_decay, a.epochs = 224, "resnet18", "sgd", 1e-3, 0.0, 10
        a.synthetic_batch = a.kermany_batch = 64
        a.device = "cuda" if a.device == "cpu" else a.device
        # the paper-scale rows go to their own files, unless the command names others
        if a.results == p.get_default("results"):
            a.results = str(HERE / "results" / "paper_scale.jsonl")
        if a.runs == p.get_default("runs"):
            a.runs = str(HERE / "runs" / "paper_scale")
    a.amp = PRECISION_AMP[a.precision]
    a.iterations = {"synthetic": a.synthetic_iterations, "kermany": a.kermany_iterations}
    a.batch = {"synthetic": a.synthetic_batch, "kermany": a.kermany_batch}
    return a


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    if a.report:
        report(a)
        return
    print(f"# {platform.platform()} torch {torch.__version__} {' '.join(sys.argv)}", flush=True)
    run(a)


if __name__ == "__main__":
    main()
