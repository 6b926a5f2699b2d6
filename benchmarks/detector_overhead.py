"""What a detector adds to inference: plain forward pass against forward pass + hooks + detector score.

The detectors read their features with forward hooks in the prediction's own forward pass, so the
only extra work is the hooks, pooling, the input check and the score itself. This benchmark measures,
side by side in one run (interleaved repeats, medians), ``network(x)`` under ``torch.no_grad`` and
``detector.predict_and_score(x)`` (which returns the same logits plus the scores), and prints the
ratio (target: under 1.10).

Usage::

    python benchmarks/detector_overhead.py                 # MONAI resnet18 2D, batch 16x1x96x96
    python benchmarks/detector_overhead.py --repeats 9 --threads 2 --bank 10000

Times are this process's CPU time (``time.process_time``) by default, so that the ratio holds on a
machine shared with other jobs (``--clock wall`` on a quiet machine). The detectors are fitted on
random images (the cost of scoring does not depend on what they learned); the kNN memory bank is
then replaced by ``--bank`` random unit vectors, the size of a realistic training set.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18

from monai_adv.detectors import KNNDetector, MahalanobisDetector


def timed(fn, iters: int, clock) -> float:
    t0 = clock()
    for _ in range(iters):
        fn()
    return (clock() - t0) / iters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bank", type=int, default=5000, help="kNN memory bank size")
    p.add_argument("--fit", type=int, default=128, help="random images to fit the detectors on")
    p.add_argument("--clock", choices=("process", "wall"), default="process")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "process" else time.perf_counter
    torch.manual_seed(0)
    net = resnet18(spatial_dims=2, n_input_channels=1, num_classes=4).eval()
    x = torch.rand(args.batch, 1, args.size, args.size)
    fit = [torch.rand(32, 1, args.size, args.size) for _ in range(max(1, args.fit // 32))]
    detectors = {
        "mahalanobis-penultimate": MahalanobisDetector(net, progress=False).fit(fit),
        "mahalanobis-5-layers": MahalanobisDetector(
            net, layers=["layer1", "layer2", "layer3", "layer4", "penultimate"], progress=False
        ).fit(fit),
        f"knn-penultimate-bank{args.bank}": KNNDetector(net, k=10, progress=False).fit(fit),
    }
    knn = detectors[f"knn-penultimate-bank{args.bank}"]
    knn.layer_states[0]["bank"] = F.normalize(
        torch.randn(args.bank, knn.layer_states[0]["bank"].shape[1]), dim=1
    )
    knn._cache = None

    def plain():
        with torch.no_grad():
            return net(x)

    # same logits either way
    for det in detectors.values():
        torch.testing.assert_close(det.predict_and_score(x)[0], plain())
    samples: dict[str, list[float]] = {"plain": [], **{k: [] for k in detectors}}
    plain(), [d.predict_and_score(x) for d in detectors.values()]  # warm-up
    for _ in range(args.repeats):
        samples["plain"].append(timed(plain, args.iters, clock))
        for name, det in detectors.items():
            samples[name].append(timed(lambda det=det: det.predict_and_score(x), args.iters, clock))
    base = statistics.median(samples["plain"])
    print(
        f"# detector overhead on inference ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} thread(s), {args.clock} time)"
    )
    print(
        f"# MONAI resnet18 2D, batch {args.batch}x1x{args.size}x{args.size}; median of {args.repeats} x {args.iters}"
    )
    print(f"{'case':36s} {'ms/batch':>10s} {'ratio':>7s}")
    print(f"{'plain inference':36s} {1000 * base:10.2f} {1.0:7.3f}")
    results = {"plain_ms": 1000 * base, "cases": {}}
    for name in detectors:
        t = statistics.median(samples[name])
        print(f"{'+ ' + name:36s} {1000 * t:10.2f} {t / base:7.3f}")
        results["cases"][name] = {"ms": 1000 * t, "ratio": t / base}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), **results}, f, indent=2)


if __name__ == "__main__":
    main()
