"""Speed of the synthetic OCT generator, in images per second per core, beside generator v2.

Measures, in one run:

1. ``SyntheticOCTGenerator.generate`` in one process at several output sizes, for this generator
   and for generator v2 (the per-pixel renderer of commit 053f542, loaded from git history with
   ``git show``), interleaved repeat by repeat so that both see the same machine load; the speed-up
   is the ratio of their median CPU time per image;
2. ``write_synthetic_oct_dataset`` (render + JPEG + manifest) with 1 and with 2 worker processes.

Images per second per core are computed from CPU time (``time.process_time`` of the rendering
process, or the wall time times the number of workers for the writer), so they hold on a busy machine;
wall-clock rates are printed beside them. The last line estimates how long ``make demo``'s data set
takes.

Usage::

    python benchmarks/synthetic_speed.py [--n 15] [--repeats 3] [--sizes 64 128 224]
    python benchmarks/synthetic_speed.py --legacy-commit none     # this generator only
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from monai_adv.apps.oct import GENERATOR_VERSION, SyntheticOCTGenerator, write_synthetic_oct_dataset

__all__ = ["LEGACY_COMMIT", "load_legacy_generator", "main"]

#: The last commit of generator v2 (the renderer that drew every pixel of every noise field).
LEGACY_COMMIT = "053f542"
_REPO = Path(__file__).resolve().parents[1]


def load_legacy_generator(commit: str = LEGACY_COMMIT, tmp: str | os.PathLike | None = None) -> ModuleType:
    """Import ``monai_adv/apps/oct/synthetic.py`` as it was at ``commit``, as a module of its own.

    It imports only ``monai_adv.apps.oct.utils`` (unchanged since), so it runs beside the current package.

    Raises:
        RuntimeError: when git or the commit is not available (e.g. a source archive without history).
    """
    try:
        src = subprocess.run(
            ["git", "-C", str(_REPO), "show", f"{commit}:monai_adv/apps/oct/synthetic.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"cannot read the generator of commit {commit} from git: {e}") from e
    folder = Path(tmp or tempfile.mkdtemp(prefix="synthetic_legacy_"))
    path = folder / f"synthetic_oct_{commit}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"synthetic_oct_{commit}", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # ProcessPoolExecutor and dataclasses look modules up by name
    spec.loader.exec_module(mod)
    return mod


def _time_generate(cls: type, size: int, n: int, seed: int) -> tuple[float, float, int]:
    gen = cls(image_size=size, seed=seed)
    gen.generate(1)  # warm-up: imports, work arrays
    t0, c0 = time.perf_counter(), time.process_time()
    x, _ = gen.generate(n)
    return time.perf_counter() - t0, time.process_time() - c0, len(x)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=15, help="images per class for each measurement")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (the median is reported)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--legacy-commit",
        default=LEGACY_COMMIT,
        help="commit of the generator to compare with ('none': skip)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res: dict[str, Any] = {"cores_visible": os.cpu_count(), "generator_version": GENERATOR_VERSION}
    legacy = None
    if args.legacy_commit.lower() != "none":
        try:
            legacy = load_legacy_generator(args.legacy_commit).SyntheticOCTGenerator
        except RuntimeError as e:
            print(f"warning: {e}; measuring this generator only.")
    print(
        f"cores visible: {os.cpu_count()}; {4 * args.n} images per measurement, {args.repeats} interleaved "
        f"repeats, median CPU time; this generator is v{GENERATOR_VERSION}"
        + (f", the old one v2 (commit {args.legacy_commit})" if legacy else "")
        + "\n"
    )
    gens = {"new": SyntheticOCTGenerator} | ({"old": legacy} if legacy else {})
    runs: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
    for rep in range(args.repeats):
        for size in args.sizes:
            for name, cls in reversed(gens.items()) if rep % 2 else gens.items():  # alternate the order
                runs.setdefault((name, size), []).append(_time_generate(cls, size, args.n, args.seed + rep))

    print(
        "| generate(), 1 process | images | wall s | CPU s | images/s (wall) | images/s/core (CPU) | speed-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        for name in ("old", "new"):
            if (name, size) not in runs:
                continue
            r = runs[(name, size)]
            wall, cpu = statistics.median(t[0] for t in r), statistics.median(t[1] for t in r)
            n = r[0][2]
            res[f"generate_{name}_{size}"] = {"images": n, "wall_s": wall, "cpu_s": cpu, "per_core": n / cpu}
            ratio = ""
            if name == "new" and ("old", size) in runs:
                ratio = f"**{res[f'generate_old_{size}']['cpu_s'] / cpu:.2f}x**"
                res[f"speedup_{size}"] = res[f"generate_old_{size}"]["cpu_s"] / cpu
            label = f"v{GENERATOR_VERSION} (this)" if name == "new" else "v2 (old)"
            print(
                f"| {label}, {size} px | {n} | {wall:.1f} | {cpu:.2f} | {n / wall:.1f} | {n / cpu:.1f} | {ratio} |"
            )
    if any(k.startswith("speedup_") for k in res):
        ups = [v for k, v in res.items() if k.startswith("speedup_")]
        print(f"\nspeed-up per core, v{GENERATOR_VERSION} over v2: {min(ups):.2f}x to {max(ups):.2f}x")

    print("\n| writer (new generator) | images | wall s | images/s (wall) | images/s/core |")
    print("|---|---:|---:|---:|---:|")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = write_synthetic_oct_dataset(
                tmp,
                image_size=128,
                seed=args.seed,
                splits={"train": args.n},
                num_workers=workers,
                progress=False,
            )
            wall = time.perf_counter() - t0
            n = sum(m["counts"].values())
            # a second call reuses the data set: the cost of the idempotence check
            t1 = time.perf_counter()
            write_synthetic_oct_dataset(
                tmp,
                image_size=128,
                seed=args.seed,
                splits={"train": args.n},
                num_workers=workers,
                progress=False,
            )
            reuse = time.perf_counter() - t1
        res[f"write_{workers}"] = {
            "images": n,
            "wall_s": wall,
            "per_core": n / (wall * workers),
            "reuse_s": reuse,
        }
        print(
            f"| write_synthetic_oct_dataset 128 px JPEG, {workers} worker(s) | {n} | {wall:.1f} | "
            f"{n / wall:.1f} | {n / (wall * workers):.1f} (wall x workers) |"
        )
        print(f"| second call (reuse + SHA-1 check), {workers} worker(s) | {n} | {reuse:.2f} | - | - |")
    size = 64 if 64 in args.sizes else args.sizes[0]
    rate = res[f"generate_new_{size}"]["per_core"]
    demo = 4 * (200 + 25 + 50)  # the bundle's default splits (monai_adv.bundle.data.prepare_oct_dataset)
    print(
        f"\n`make demo` data set ({demo} images at 64 px): about {demo / rate:.0f} s of CPU, "
        f"{demo / rate / 2:.0f} s on 2 free cores with 2 workers."
    )
    return res


if __name__ == "__main__":
    main()
