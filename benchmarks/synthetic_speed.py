"""Speed of the synthetic OCT generator, in images per second per core.

Measures, in one run:

1. ``SyntheticOCTGenerator.generate`` in one process at several output sizes (the native 496 x 512
   B-scan is drawn every time, so the size matters little);
2. ``write_synthetic_oct_dataset`` (render + JPEG + manifest) with 1 and with 2 worker processes.

Images per second per core are computed from CPU time (``time.process_time`` of the rendering
process, or the wall time times the number of workers for the writer), so they hold on a busy machine;
wall-clock rates are printed beside them. The last line estimates how long ``make demo``'s data set
(150 + 50 images per class at 64 px) takes.

Usage::

    python benchmarks/synthetic_speed.py [--n 40] [--sizes 64 128 224]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from monai_adv.data import SyntheticOCTGenerator, write_synthetic_oct_dataset


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="images per class for each measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res: dict = {"cores_visible": os.cpu_count()}
    print(f"cores visible: {os.cpu_count()}; {4 * args.n} images per measurement\n")
    print("| measurement | images | wall s | CPU s | images/s (wall) | images/s/core (CPU) |")
    print("|---|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        gen = SyntheticOCTGenerator(image_size=size, seed=args.seed)
        gen.generate(1)  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        x, _ = gen.generate(args.n)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        res[f"generate_{size}"] = {"images": len(x), "wall_s": wall, "cpu_s": cpu, "per_core": len(x) / cpu}
        print(
            f"| generate() {size} px, 1 process | {len(x)} | {wall:.1f} | {cpu:.1f} | {len(x) / wall:.1f} | "
            f"{len(x) / cpu:.1f} |"
        )
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
            f"| write_synthetic_oct_dataset 128 px JPEG, {workers} worker(s) | {n} | {wall:.1f} | - | "
            f"{n / wall:.1f} | {n / (wall * workers):.1f} (wall x workers) |"
        )
        print(f"| second call (reuse + SHA-1 check), {workers} worker(s) | {n} | {reuse:.2f} | - | - | - |")
    rate = (
        res["generate_64"]["per_core"]
        if "generate_64" in res
        else res[f"generate_{args.sizes[0]}"]["per_core"]
    )
    demo = 4 * (200 + 25 + 50)  # the bundle's default splits (monai_adv.bundle.data.prepare_oct_dataset)
    print(
        f"\n`make demo` data set ({demo} images at 64 px): about {demo / rate:.0f} s of CPU, "
        f"{demo / rate / 2:.0f} s on 2 free cores with 2 workers."
    )
    return res


if __name__ == "__main__":
    main()
