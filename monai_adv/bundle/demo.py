"""Run any bundle's demo in one command, from what its ``metadata.json`` says (``make demo``, ``make layers``).

``python -m monai_adv.bundle demo [BUNDLE] [--bundle-dir DIR]`` reads the bundle's description
(:class:`~monai_adv.bundle.description.BundleDescription`: its task, its systems and the demo's steps),
runs every step of every system as ``monai.bundle run`` (one after another in this process, or as
parallel processes), and prints the comparison of the systems' reports with the comparer of the
bundle's task. ``init`` copies a bundle the installation provides to a folder of one's own. Neither
names a bundle: they are found by :func:`~monai_adv.bundle.locate.available_bundles`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_adv.bundle.compare import compare_reports
from monai_adv.bundle.description import BundleDescription, DemoRun
from monai_adv.bundle.locate import (
    available_bundles,
    copy_bundle,
    default_bundle_name,
    find_bundle,
    is_bundle_dir,
    resolve_bundle_dir,
)
from monai_adv.precision import PRECISION_AMP, add_precision_argument

__all__ = [
    "run_demo",
    "run_layer_demo",
    "demo_plan",
    "default_jobs",
    "add_commands",
]

#: the deprecated ``layers`` command and :func:`run_layer_demo` run this bundle's demo
_LEGACY_LAYERS_BUNDLE = "oct_layer_segmentation"


def demo_plan(
    bundle_dir: str | os.PathLike, methods: Sequence[str] | None = None, quick: bool = False
) -> dict[str, list[DemoRun]]:
    """The ``monai.bundle run`` calls a bundle's demo makes, per system in training order.

    Each system's steps (its training, then e.g. ``fit_detector.json`` and ``evaluate.json``) stack
    the step's configs on the system's training configs, as the bundle's ``metadata.json`` says
    (:meth:`~monai_adv.bundle.description.BundleDescription.plan`).

    Args:
        bundle_dir: the bundle folder.
        methods: the systems (default: the demo's, from the metadata).
        quick: append the bundle's quick config to every run.

    Raises:
        ValueError: for a bundle that does not describe its demo, or a system it does not have.
    """
    return BundleDescription.from_bundle(bundle_dir).plan(methods, quick=quick)


def _check_registered(desc: BundleDescription, systems: Sequence[str]) -> None:
    """Raise ValueError for a system whose training method is not registered in ``monai_adv.engines``."""
    try:
        from monai_adv.engines import TRAINING_METHODS
    except ImportError:  # an engines package without the registry: nothing to check against
        return
    unknown = {s: desc.systems[s].method for s in systems if desc.systems[s].method not in TRAINING_METHODS}
    if unknown:
        raise ValueError(
            f"{desc.metadata_file}: the systems {unknown} use training methods that are not registered "
            f"(monai_adv.engines.TRAINING_METHODS: {sorted(TRAINING_METHODS)})."
        )


def run_demo(
    bundle_dir: str | os.PathLike | None = None,
    quick: bool = False,
    methods: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
    name: str | None = None,
    work_dir: str | os.PathLike | None = None,
) -> str:
    """Run a bundle's demo: each system's steps (train, then e.g. fit the detector, evaluate), then compare.

    Runs what the bundle's README commands run, as its ``metadata.json`` lists them (:func:`demo_plan`):
    for each system its training configs, then each further step's configs on top. Then prints the
    comparison of the systems' reports (:func:`~monai_adv.bundle.compare.compare_reports`, for the
    bundle's task), each system's recipe, and where its outputs are. Returns the table.

    Args:
        bundle_dir: the bundle folder; None: a working copy of the bundle ``name`` this installation
            provides, ``./<name>`` (made on the first run, reused after; see
            :func:`~monai_adv.bundle.locate.resolve_bundle_dir`).
        quick: append the bundle's quick config (smoke size; its files go to ``<bundle>/quick/``, so a
            smoke run never replaces the full run's models and reports).
        methods: systems in training order (default: the demo's); one that starts from another
            system's model (``starts_from``) comes after it.
        overrides: extra top-level config overrides (e.g. ``{"max_epochs": 3}``).
        jobs: how many ``monai.bundle run`` processes run at once (:func:`default_jobs` picks one per
            CPU core, up to one per system, on a CPU; 1 on a GPU); 1 runs everything in this process.
        name: the bundle, when ``bundle_dir`` is None (default: the one marked default,
            :func:`~monai_adv.bundle.locate.default_bundle_name`).
        work_dir: where that working copy is made (default: the current folder).

    Raises:
        FileNotFoundError: when ``bundle_dir`` is not a bundle folder, or none is given and the
            installation provides none.
        ValueError: for an unknown bundle name, a bundle that does not describe its demo, or a system
            the bundle has no config for.
    """
    root = resolve_bundle_dir(bundle_dir, work_dir=work_dir, name=name)
    desc = BundleDescription.from_bundle(root)
    plan = desc.plan(methods, quick=quick)
    _check_registered(desc, list(plan))
    work = desc.work_dir(quick)
    if jobs > 1 and len(plan) > 1:
        _run_parallel(root, work, plan, _needs(desc, plan), dict(overrides or {}), jobs)
    else:
        _run_in_process(root, plan, dict(overrides or {}))
    reports = {s: str(desc.report_path(s, quick)) for s in plan}
    table = compare_reports(reports, task=desc.task)
    print(f"\n{desc.title}\n")
    print(table)
    print("Systems:")
    for s in plan:
        print(f"- {s}: {desc.systems[s].recipe or desc.systems[s].method}")
    for s in plan:
        print(f"{s}: {desc.outputs} in {desc.report_path(s, quick).parent}")
    return table


def run_layer_demo(
    bundle_dir: str | os.PathLike | None = None,
    quick: bool = False,
    methods: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    jobs: int = 1,
) -> str:
    """Deprecated: :func:`run_demo` of the OCT layer segmentation bundle (``./oct_layer_segmentation``
    when ``bundle_dir`` is None); ``run_demo`` runs any bundle from its metadata."""
    warnings.warn(
        "run_layer_demo is deprecated: use run_demo(bundle_dir) (or name='oct_layer_segmentation').",
        DeprecationWarning,
        stacklevel=2,
    )
    name = _LEGACY_LAYERS_BUNDLE if bundle_dir is None else None
    return run_demo(bundle_dir, quick=quick, methods=methods, overrides=overrides, jobs=jobs, name=name)


def _needs(desc: BundleDescription, plan: Mapping[str, Any]) -> dict[str, list[str]]:
    """For each planned system, the planned systems whose trained model it starts from.

    The metadata's ``starts_from``, and any other planned system whose ``model.pt`` its configs load
    (:func:`_depends_on`).
    """
    needs = {}
    for s in plan:
        start = desc.systems[s].starts_from
        found = set(_depends_on(desc.root, desc.systems[s].configs, list(plan), s))
        needs[s] = sorted(found | ({start} if start in plan else set()))
    return needs


def _run_in_process(root: Path, plan: Mapping[str, Sequence[DemoRun]], overrides: Mapping[str, Any]) -> None:
    """Run the plan in this process, one run after another, logging to the console."""
    from monai.bundle import run as bundle_run

    logging_file = _logging_file(root)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for runs in plan.values():
            for r in runs:
                print(
                    f"\n=== {r.system}: {' + '.join(os.path.basename(f) for f in r.configs)} ===", flush=True
                )
                kwargs = {"logging_file": logging_file} if logging_file else {}
                bundle_run(
                    config_file=list(r.configs), meta_file="configs/metadata.json", **kwargs, **overrides
                )
    finally:
        os.chdir(cwd)


def _logging_file(root: Path) -> str | None:
    """The bundle's ``configs/logging.conf`` when it has one (the model zoo's bundles do)."""
    return "configs/logging.conf" if (root / "configs" / "logging.conf").is_file() else None


def default_jobs(n_methods: int) -> int:
    """How many bundle runs the demos run at once: one per CPU core up to one per system, on a CPU; 1 with CUDA."""
    import torch

    if torch.cuda.is_available():
        return 1
    return max(1, min(n_methods, _cpu_count()))


def _depends_on(root: Path, files: Sequence[str], methods: Sequence[str], method: str) -> list[str]:
    """The other systems whose trained model (``.../<name>/model.pt``) one of ``files`` loads.

    A check beside the metadata's ``starts_from``: a config that loads another system's model waits
    for that system's training even when the metadata does not say so.
    """
    text = ""
    for f in files:
        if os.path.basename(f) != "train.json":  # the shared base config names no system's model
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
    plan: Mapping[str, Sequence[DemoRun]],
    needs: Mapping[str, Sequence[str]],
    overrides: dict[str, Any],
    jobs: int,
) -> None:
    """Run the systems' chains (train, then each step) as ``monai.bundle run`` processes, ``jobs`` at a time.

    A system that starts from another system's model (``needs``: ``ssat`` fine-tunes ``supervised``)
    waits for that system's first step (its training); the first system's first step runs alone (it
    writes the data set the others read). First steps (trainings) start before the later ones, since
    they are the longest and the others wait on them. A run gets one torch thread per CPU core it can
    have to itself: all of them when nothing else is running or waiting, else one (a multi-threaded
    process that shares a core stalls at every synchronisation, so the cores are never
    oversubscribed). On 2 cores two one-thread processes do nearly twice the work of one two-thread
    process, whose small convolutions and single-threaded data pipeline leave the second thread idle
    much of the time. Each run logs to ``<work>/logs/<system>.<step>.log`` and is reported when it
    starts and ends.

    Raises:
        RuntimeError: when a run fails: the others are stopped, and its log file is named with its
            last lines.
    """
    import subprocess
    import sys
    import time

    methods = list(plan)
    cpus = _cpu_count()
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logging_file = _logging_file(root)
    next_step = {m: 0 for m in methods}  # the index of each system's next step to start
    trained: set[str] = set()
    running: dict[Any, tuple[DemoRun, int, Path, float, int]] = {}  # process -> (run, step, log, t0, threads)
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:5.0f} s] {msg}", flush=True)

    def ready() -> list[tuple[str, int]]:
        busy = {r.system for r, *_ in running.values()}
        out = []
        for m in methods:
            i = next_step[m]
            if i >= len(plan[m]) or m in busy or (i == 0 and not set(needs.get(m, ())) <= trained):
                continue
            if i == 0 and m != methods[0] and methods[0] not in trained:
                continue  # the first training writes the data set: nothing runs beside it
            out.append((m, i))
        return sorted(out, key=lambda t: (t[1] != 0, methods.index(t[0])))  # trainings first

    def start(method: str, i: int, threads: int) -> None:
        run = plan[method][i]
        log = logs / f"{method}.{run.step}.log"
        cmd = [sys.executable, "-m", "monai.bundle", "run",
               "--config_file", "[" + ",".join(f"'{f}'" for f in run.configs) + "]",
               "--meta_file", "configs/metadata.json"]  # fmt: skip
        if logging_file:
            cmd += ["--logging_file", logging_file]
        for k, v in {"num_threads": threads, **overrides, "progress": False}.items():
            cmd += [f"--{k}", _cli_value(v)]
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, cwd=root, stdout=f, stderr=subprocess.STDOUT)
        running[proc] = (run, i, log, time.perf_counter(), threads)
        next_step[method] = i + 1
        say(f"{method}: {run.step} started ({threads} thread{'s' * (threads > 1)}), log {log}")

    try:
        while running or any(next_step[m] < len(plan[m]) for m in methods):
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
                    f"the demo's runs cannot proceed (waiting on {dict(needs)}); nothing is running."
                )
            time.sleep(0.5)
            for proc in [p for p in running if p.poll() is not None]:
                run, i, log, t0, _ = running.pop(proc)
                if proc.returncode != 0:
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                    raise RuntimeError(
                        f"{run.system}: {run.step} failed (exit code {proc.returncode}); the end of its log "
                        f"{log}:\n{tail}"
                    )
                if i == 0:
                    trained.add(run.system)
                say(f"{run.system}: {run.step} done in {time.perf_counter() - t0:.0f} s")
    finally:
        for proc in running:  # a failure or an interrupt stops the other runs too
            proc.terminate()
        for proc in running:
            proc.wait()
    say("all runs done")


JOBS_HELP = (
    "bundle runs at once, each its own process logging to <work>/logs/ (0, the default: one per CPU "
    "core up to one per system on a CPU, 1 with a GPU; 1 runs all in this process, logging to the console)"
)


def _bundle_listing() -> str:
    """The bundles this installation provides, one per line with its task and demo systems."""
    lines = []
    for name, path in available_bundles().items():
        try:
            d = BundleDescription.from_bundle(path)
            lines.append(f"  {name}: {d.task}, demo systems {', '.join(d.demo_systems) or '-'} ({path})")
        except (OSError, ValueError):
            lines.append(f"  {name}: (no monai_adv section in its metadata.json) ({path})")
    return "\n".join(lines) if lines else "  none"


def _add_demo_arguments(p: Any, with_bundle: bool = True) -> None:
    if with_bundle:
        p.add_argument(
            "bundle", nargs="?", default=None,
            help="the bundle's name (see --list; default: the one marked default), or a bundle folder",
        )  # fmt: skip
    p.add_argument("--bundle-dir", default=None, help="run this bundle folder in place (as make demo does)")
    p.add_argument("--quick", action="store_true", help="smoke size (the bundle's quick config)")
    p.add_argument(
        "--systems", "--methods", dest="systems", nargs="+", default=None,
        help="the systems to run, in training order (default: the bundle's demo systems)",
    )  # fmt: skip
    add_precision_argument(p)
    p.add_argument("--seed", type=int, default=0, help="the bundle's seed (default 0)")
    p.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per run (0: shared out by --jobs)"
    )
    p.add_argument("--jobs", type=int, default=0, help=JOBS_HELP)
    p.add_argument("--list", action="store_true", help="list the bundles this installation provides and exit")


def add_commands(sub: Any) -> dict[str, Any]:
    """Register ``init``, ``demo`` and the deprecated ``layers`` on the ``python -m monai_adv.bundle`` sub-parsers."""
    i = sub.add_parser(
        "init", help="copy a bundle this installation provides to a folder, for monai.bundle run"
    )
    i.add_argument("dir", nargs="?", default=None, help="the new bundle folder (default: ./<bundle name>)")
    i.add_argument(
        "--bundle", default=None, help="which bundle (default: the one marked default; see demo --list)"
    )
    d = sub.add_parser(
        "demo",
        help="run a bundle's demo: train, (fit the detector,) evaluate each of its systems, then compare",
        description="Run a bundle's demo as its configs/metadata.json describes it (demo --list: the bundles).",
    )
    _add_demo_arguments(d)
    s = sub.add_parser("layers", help=f"deprecated: demo {_LEGACY_LAYERS_BUNDLE}")
    _add_demo_arguments(s, with_bundle=False)

    def fail(parser: Any, e: Exception) -> None:
        parser.exit(2, f"error: {e}\nbundles:\n{_bundle_listing()}\n")

    def init(args: Any, extra: list[str], parser: Any) -> int:
        try:
            name = args.bundle if args.bundle is not None else default_bundle_name()
            source = find_bundle(name)
            print(f"bundle {name} copied to {copy_bundle(args.dir or name, src=source)}")
        except (FileNotFoundError, FileExistsError, ValueError) as e:
            fail(parser, e)
        return 0

    def demo(args: Any, extra: list[str], parser: Any) -> int:
        if args.list:
            print(_bundle_listing())
            return 0
        bundle = getattr(args, "bundle", None)
        if args.cmd == "layers":
            print(f"note: 'layers' is deprecated; use: demo {_LEGACY_LAYERS_BUNDLE}", flush=True)
            bundle = _LEGACY_LAYERS_BUNDLE
        bundle_dir, name = args.bundle_dir, None
        if bundle is not None and bundle_dir is None:
            # a bundle folder (e.g. the ./<name> working copy an earlier run made) runs in place
            bundle_dir, name = (bundle, None) if is_bundle_dir(bundle) else (None, bundle)
        try:
            root = resolve_bundle_dir(bundle_dir, name=name)
            desc = BundleDescription.from_bundle(root)
            systems = desc.select(args.systems)
        except (FileNotFoundError, ValueError) as e:
            fail(parser, e)
        overrides = {"amp": PRECISION_AMP[args.precision], "seed": args.seed}
        if args.threads > 0:
            overrides["num_threads"] = args.threads
        jobs = args.jobs or default_jobs(len(systems))
        run_demo(root, quick=args.quick, methods=systems, overrides=overrides, jobs=jobs)
        return 0

    return {"init": init, "demo": demo, "layers": demo}
