"""Compare the bundles' reports, and run the whole comparison (``make demo``; ``layers`` for the segmentation
bundle) in one command."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_adv.bundle.compare import compare_reports, compare_segmentation_reports
from monai_adv.bundle.locate import (
    BUNDLE_NAME,
    BUNDLE_NAMES,
    LAYER_BUNDLE_NAME,
    copy_bundle,
    resolve_bundle_dir,
)
from monai_adv.precision import PRECISION_AMP, add_precision_argument

__all__ = [
    "run_demo",
    "run_layer_demo",
    "method_configs",
    "RECIPES",
    "LAYER_RECIPES",
    "DEMO_METHODS",
    "LAYER_DEMO_METHODS",
    "default_jobs",
    "add_commands",
]


#: what each demo system is: the training recipe, said in the demo's output and in the README
RECIPES: dict[str, str] = {
    "supervised": "undefended baseline: labeled part only, 40 epochs, one-cycle LR",
    "ssat": "the paper's SSAT loss exactly (online pseudo-labels, FGSM eps~U(0.001, 0.003), CE, weight 3), "
    "fine-tuned from the supervised model as the paper fine-tunes a pretrained network (5 epochs, AdamW lr 1e-4)",
    "ssat_robust": "SSAT with frozen-teacher pseudo-labels (the supervised model), PGD-3 at eps 0.004 on the "
    "unlabeled and the labeled batch, weights 1/1, fine-tuned 10 epochs from the teacher",
    "ssat_teacher": "SSAT with frozen-teacher pseudo-labels, the paper's FGSM eps~U(0.001, 0.003), weight 3, "
    "fine-tuned 10 epochs from the teacher",
    "madry": "Madry PGD-AT (PGD-5, eps 0.004) on the labeled part",
    "trades": "TRADES (beta 6, PGD-5, eps 0.004) on the labeled part",
}

#: the demo's systems, in training order (the SSAT systems start from the supervised model)
DEMO_METHODS = ("supervised", "ssat", "ssat_robust")

#: the segmentation bundle's systems (``bundles/oct_layer_segmentation``): the training recipes
LAYER_RECIPES: dict[str, str] = {
    "supervised": "undefended baseline: the labeled part only (DiceCE loss), one-cycle LR",
    "ssat": "SSAT carried over to segmentation: online pseudo-label masks of the unlabeled B-scans, FGSM "
    "eps~U(0.001, 0.003) against them, voxel-wise CE, weight 3 after a labeled-only warm-up and a ramp-up",
    "madry": "Madry PGD-AT on the label maps (PGD-3, eps 0.004) on the labeled part",
}

#: the segmentation demo's systems, in training order
LAYER_DEMO_METHODS = ("supervised", "ssat")


def method_configs(method: str) -> list[str]:
    """The training config files of a method: ``train.json`` plus its override (``finetune.json`` for ``ssat``)."""
    return [
        "configs/train.json",
        "configs/finetune.json" if method == "ssat" else f"configs/train_{method}.json",
    ]


def run_demo(
    bundle_dir: str | os.PathLike | None = None,
    quick: bool = False,
    methods: Sequence[str] = DEMO_METHODS,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
) -> str:
    """Train, fit the detector for, and evaluate each method with the OCT bundle, then compare them.

    Runs, in this process, what the bundle README's commands run: for each method its training
    configs (:func:`method_configs`), then ``fit_detector.json`` and ``evaluate.json``; finally prints
    :func:`compare_reports` of the ``eval/<method>/report.json`` files, each system's recipe, and where
    the plots are. Returns the table.

    Args:
        bundle_dir: the bundle folder; None: a working copy of the bundle shipped with the package,
            ``./oct_robust_classification`` (made on the first run, reused after; see
            :func:`~monai_adv.bundle.locate.resolve_bundle_dir`).
        quick: append ``configs/quick.json`` (smoke size; its files go to ``<bundle>/quick/``, so a
            smoke run never replaces the full run's models and reports).
        methods: systems in training order, from :data:`RECIPES`; ``"ssat"``, ``"ssat_robust"`` and
            ``"ssat_teacher"`` start from the supervised model, so list ``"supervised"`` first.
        overrides: extra top-level config overrides (e.g. ``{"max_epochs": 3}``).
        jobs: how many ``monai.bundle run`` processes run at once (:func:`default_jobs` picks one per
            CPU core, up to one per method, on a CPU; 1 on a GPU); 1 runs everything in this process.

    Raises:
        FileNotFoundError: when ``bundle_dir`` is not the OCT bundle, or none is given and the
            installation ships none (an editable install: pass the checkout's bundle folder).
        ValueError: for a method the bundle has no config for.
    """

    root = resolve_bundle_dir(bundle_dir)
    _check_methods(root, methods)
    steps = ([], ["configs/fit_detector.json"], ["configs/evaluate.json"])
    work, reports = _run_methods(root, methods, method_configs, steps, quick, overrides, jobs)
    table = compare_reports(reports)
    _print_summary(
        "OCT robustness: clean quality, then accuracy, detection AUROC and system risk per attack",
        table, methods, RECIPES, "plots and report.md", work,
    )  # fmt: skip
    return table


def _check_methods(root: Path, methods: Sequence[str]) -> None:
    """Raise ValueError for a method the bundle at ``root`` has no training config for."""
    known = ["ssat"] + sorted(f.stem[len("train_") :] for f in (root / "configs").glob("train_*.json"))
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; the bundle has {known}.")


def _print_summary(
    title: str, table: str, methods: Sequence[str], recipes: Mapping[str, str], outputs: str, work: Path
) -> None:
    """The demo's closing printout: the comparison table, each system's recipe, where its outputs are."""
    print(f"\n{title}\n")
    print(table)
    print("Systems:")
    for m in methods:
        print(f"- {m}: {recipes.get(m, m)}")
    for m in methods:
        print(f"{m}: {outputs} in {work / 'eval' / m}")


def _run_methods(
    root: Path,
    methods: Sequence[str],
    configs_of: Callable[[str], list[str]],
    steps: Sequence[list[str]],
    quick: bool,
    overrides: Mapping[str, Any] | None,
    jobs: int = 1,
) -> tuple[Path, dict[str, str]]:
    """Run, in ``root``, each method's configs followed by each step's (plus ``quick.json``); returns the
    work folder and each method's ``eval/<method>/report.json``.

    ``jobs=1`` runs everything in this process, one run after another, logging to the console.
    ``jobs > 1`` runs up to that many ``monai.bundle run`` processes at once (:func:`_run_parallel`).
    """
    extra = ["configs/quick.json"] if quick else []
    work = root / "quick" if quick else root
    reports = {m: str(work / "eval" / m / "report.json") for m in methods}
    if jobs > 1 and len(methods) > 1:
        _run_parallel(root, work, methods, configs_of, steps, extra, dict(overrides or {}), jobs)
        return work, reports

    from monai.bundle import run as bundle_run

    cwd = os.getcwd()
    os.chdir(root)
    try:
        for method in methods:
            for step in steps:
                files = configs_of(method) + step + extra
                print(f"\n=== {method}: {' + '.join(os.path.basename(f) for f in files)} ===", flush=True)
                bundle_run(
                    config_file=files,
                    meta_file="configs/metadata.json",
                    logging_file="configs/logging.conf",
                    **dict(overrides or {}),
                )
    finally:
        os.chdir(cwd)
    return work, reports


def default_jobs(n_methods: int) -> int:
    """How many bundle runs the demos run at once: one per CPU core up to one per method, on a CPU; 1 with CUDA."""
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, min(n_methods, _cpu_count()))


def _depends_on(root: Path, files: Sequence[str], methods: Sequence[str], method: str) -> list[str]:
    """The other methods whose trained model (``.../<name>/model.pt``) one of ``files`` loads."""
    text = ""
    for f in files:
        if os.path.basename(f) != "train.json":  # the shared base config names no method's model
            text += (root / f).read_text(encoding="utf-8")
    return [m for m in methods if m != method and f"/{m}/model.pt" in text]


def _cli_value(value: Any) -> str:
    """A config override as ``monai.bundle run`` (fire) reads it back: ``True``/``False``, numbers, words."""
    return repr(value) if isinstance(value, bool) else str(value)


def _cpu_count() -> int:
    """The CPU cores this process may use (its affinity where the OS tells it, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _run_parallel(
    root: Path,
    work: Path,
    methods: Sequence[str],
    configs_of: Callable[[str], list[str]],
    steps: Sequence[list[str]],
    extra: list[str],
    overrides: dict[str, Any],
    jobs: int,
) -> None:
    """Run the methods' chains (train, then each step) as ``monai.bundle run`` processes, ``jobs`` at a time.

    A method whose configs load another method's model (``ssat`` fine-tunes ``supervised``) waits for
    that method's training; the first method's training runs alone (it writes the data set the others
    read). Trainings start before detector fits and evaluations, since they are the longest and the
    others wait on them. A run gets one torch thread per CPU core it can have to itself: all of them
    when nothing else is running or waiting, else one (a multi-threaded process that shares a core
    stalls at every synchronisation, so the cores are never oversubscribed). On 2 cores two one-thread
    processes do nearly twice the work of one two-thread process, whose small convolutions and
    single-threaded data pipeline leave the second thread idle much of the time. Each run logs to
    ``<work>/logs/<method>.<step>.log`` and is reported when it starts and ends.

    Raises:
        RuntimeError: when a run fails: the others are stopped, and its log file is named with its
            last lines.
    """
    import subprocess
    import sys
    import time

    cpus = _cpu_count()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    needs = {m: _depends_on(root, configs_of(m), methods, m) for m in methods}
    names = ["train"] + [os.path.splitext(os.path.basename(step[-1]))[0] for step in steps[1:]]
    next_step = {m: 0 for m in methods}  # the index of each method's next step to start
    trained: set[str] = set()
    running: dict[Any, tuple[str, int, Path, float, int]] = {}  # process -> (method, step, log, t0, threads)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:5.0f} s] {msg}", flush=True)

    def ready() -> list[tuple[str, int]]:
        busy = {m for m, *_ in running.values()}
        out = []
        for m in methods:
            i = next_step[m]
            if i >= len(steps) or m in busy or (i == 0 and not set(needs[m]) <= trained):
                continue
            if i == 0 and m != methods[0] and methods[0] not in trained:
                continue  # the first training writes the data set: nothing runs beside it
            out.append((m, i))
        return sorted(out, key=lambda t: (t[1] != 0, methods.index(t[0])))  # trainings first

    def start(method: str, i: int, threads: int) -> None:
        log = logs / f"{method}.{names[i]}.log"
        files = configs_of(method) + steps[i] + extra
        cmd = [sys.executable, "-m", "monai.bundle", "run",
               "--config_file", "[" + ",".join(f"'{f}'" for f in files) + "]",
               "--meta_file", "configs/metadata.json", "--logging_file", "configs/logging.conf"]  # fmt: skip
        for k, v in {"num_threads": threads, **overrides, "progress": False}.items():
            cmd += [f"--{k}", _cli_value(v)]
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, cwd=root, stdout=f, stderr=subprocess.STDOUT)
        running[proc] = (method, i, log, time.perf_counter(), threads)
        next_step[method] = i + 1
        say(f"{method}: {names[i]} started ({threads} thread{'s' * (threads > 1)}), log {log}")

    try:
        while running or any(next_step[m] < len(steps) for m in methods):
            free = cpus - sum(t for *_, t in running.values())
            queue = ready()
            while queue and free >= 1 and len(running) < jobs:
                method, i = queue.pop(0)
                # all the free cores for a run that has them to itself, else one each
                threads = free if not queue and not running else 1
                start(method, i, threads)
                free -= threads
            if not running:
                raise RuntimeError(
                    f"the demo's runs cannot proceed (waiting on {needs}); nothing is running."
                )
            time.sleep(0.5)
            for proc in [p for p in running if p.poll() is not None]:
                method, i, log, t0, _ = running.pop(proc)
                if proc.returncode != 0:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                    raise RuntimeError(
                        f"{method}: {names[i]} failed (exit code {proc.returncode}); the end of its log {log}:\n{tail}"
                    )
                if i == 0:
                    trained.add(method)
                say(f"{method}: {names[i]} done in {time.perf_counter() - t0:.0f} s")
    finally:
        for proc in running:  # a failure or an interrupt stops the other runs too
            proc.terminate()
        for proc in running:
            proc.wait()
    say("all runs done")


def run_layer_demo(
    bundle_dir: str | os.PathLike | None = None,
    quick: bool = False,
    methods: Sequence[str] = LAYER_DEMO_METHODS,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
) -> str:
    """Train and evaluate each method with the OCT layer segmentation bundle, then compare them.

    Runs, in this process, what the segmentation bundle README's commands run: for each method
    ``train.json`` with its override (none for ``ssat``, the default), then ``evaluate.json``; finally
    prints :func:`compare_segmentation_reports` of the ``eval/<method>/report.json`` files and each
    system's recipe. Returns the table.

    Args:
        bundle_dir: the bundle folder; None: a working copy of the packaged bundle,
            ``./oct_layer_segmentation``.
        quick: append ``configs/quick.json`` (smoke size, under ``<bundle>/quick/``).
        methods: systems from :data:`LAYER_RECIPES`, in training order.
        overrides: extra top-level config overrides (e.g. ``{"max_epochs": 3}``).
        jobs: processes at once, as for :func:`run_demo`.

    Raises:
        FileNotFoundError: when there is no bundle folder.
        ValueError: for a method the bundle has no config for.
    """

    root = resolve_bundle_dir(bundle_dir, name=LAYER_BUNDLE_NAME)
    _check_methods(root, methods)

    def train_configs(method: str) -> list[str]:
        return ["configs/train.json"] + ([] if method == "ssat" else [f"configs/train_{method}.json"])

    work, reports = _run_methods(
        root, methods, train_configs, ([], ["configs/evaluate.json"]), quick, overrides, jobs
    )
    table = compare_segmentation_reports(reports)
    _print_summary(
        "OCT layer segmentation: mean Dice (and HD95, pixels) clean and per attack",
        table, methods, LAYER_RECIPES, "per-class tables, plots and the overlay gallery", work,
    )  # fmt: skip
    return table


JOBS_HELP = (
    "bundle runs at once, each its own process logging to <work>/logs/ (0, the default: one per CPU "
    "core up to one per system on a CPU, 1 with a GPU; 1 runs all in this process, logging to the console)"
)


def add_commands(sub: Any) -> dict[str, Any]:
    """Register ``init``, ``demo`` and ``layers`` on the ``python -m monai_adv.bundle`` sub-parsers."""
    i = sub.add_parser(
        "init", help="copy the bundle shipped with the package to a folder, for monai.bundle run"
    )
    i.add_argument("dir", nargs="?", default=None, help="the new bundle folder (default: ./<bundle name>)")
    i.add_argument(
        "--bundle", default=BUNDLE_NAME, choices=BUNDLE_NAMES, help="which bundle (default: %(default)s)"
    )
    d = sub.add_parser(
        "demo", help="train, fit the detector and evaluate the baseline and two SSAT systems, then compare"
    )
    d.add_argument("--quick", action="store_true", help="smoke size (configs/quick.json)")
    d.add_argument("--methods", nargs="+", default=list(DEMO_METHODS))
    add_precision_argument(d)
    d.add_argument(
        "--bundle-dir",
        default=None,
        help="the bundle folder (default: ./oct_robust_classification, copied from the installed package)",
    )
    d.add_argument("--seed", type=int, default=0, help="the bundle's seed (default 0)")
    d.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per run (0: shared out by --jobs)"
    )
    d.add_argument("--jobs", type=int, default=0, help=JOBS_HELP)
    s = sub.add_parser(
        "layers",
        help="the OCT layer segmentation bundle: train and evaluate the baseline and SSAT, then compare",
    )
    s.add_argument("--quick", action="store_true", help="smoke size (configs/quick.json)")
    s.add_argument("--methods", nargs="+", default=list(LAYER_DEMO_METHODS))
    add_precision_argument(s)
    s.add_argument("--bundle-dir", default=None, help="the bundle folder (default: ./oct_layer_segmentation)")
    s.add_argument("--seed", type=int, default=0, help="the bundle's seed (default 0)")
    s.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per run (0: shared out by --jobs)"
    )
    s.add_argument("--jobs", type=int, default=0, help=JOBS_HELP)

    def run(args: Any, extra: list[str], parser: Any) -> int:
        if args.cmd == "init":
            try:
                print(f"OCT bundle copied to {copy_bundle(args.dir or args.bundle, name=args.bundle)}")
            except (FileNotFoundError, FileExistsError) as e:
                parser.exit(2, f"error: {e}\n")
        elif args.cmd == "layers":
            try:
                bundle_dir = resolve_bundle_dir(args.bundle_dir, name=LAYER_BUNDLE_NAME)
            except FileNotFoundError as e:
                parser.exit(2, f"error: {e}\n")
            overrides = {"amp": PRECISION_AMP[args.precision], "seed": args.seed}
            if args.threads > 0:
                overrides["num_threads"] = args.threads
            jobs = args.jobs or default_jobs(len(args.methods))
            run_layer_demo(bundle_dir, quick=args.quick, methods=args.methods, overrides=overrides, jobs=jobs)
        else:
            try:
                bundle_dir = resolve_bundle_dir(args.bundle_dir)
            except FileNotFoundError as e:
                parser.exit(2, f"error: {e}\n")
            overrides = {"amp": PRECISION_AMP[args.precision], "seed": args.seed}
            if args.threads > 0:
                overrides["num_threads"] = args.threads
            jobs = args.jobs or default_jobs(len(args.methods))
            run_demo(bundle_dir, quick=args.quick, methods=args.methods, overrides=overrides, jobs=jobs)
        return 0

    return {"init": run, "demo": run, "layers": run}
