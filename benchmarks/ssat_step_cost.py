"""What one SSAT step costs against one supervised step, beside the passes each does (the limit).

A supervised step is one forward and one backward pass of the network on the labeled batch. The
paper's SSAT step does, on a labeled and an equally large unlabeled batch: one forward without
gradient (pseudo-labels), one forward+backward to the input (FGSM), two training forwards (labeled,
attacked unlabeled) and one backward through both. The passes are *counted* here, with module hooks
on the network, not assumed; the cost ratio that pure pass-counting predicts is
``(forwards + backwards) / 2`` when a backward costs about as much as a forward, which is the limit a
step can approach (everything else the engine does is overhead). The supervised baselines (Madry
PGD-7 and TRADES with PGD-7) and SSAT variants are measured in the same run for scale.

Each step is also timed in mixed precision (``amp=True``: bf16 autocast on CPU, the attack inside the
step included, the network in the channels-last layout), interleaved with the fp32 runs, and the
speed-up fp32 time / amp time is printed per method.

Usage::

    python benchmarks/ssat_step_cost.py                       # 64x64 OCT-sized batch of 32, 1 thread
    python benchmarks/ssat_step_cost.py --size 128 --batch 16 --iters 10 --repeats 5

Times are CPU time of this process (``time.process_time``), medians over interleaved repeats, so the
ratios hold on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ssat_small_scale import make_network  # noqa: E402

from monai_adv.engines import AutocastSupervisedTrainer, create_trainer  # noqa: E402

METHODS = ["supervised", "ssat", "ssat_kl", "ssat_pgd", "madry", "trades"]


class PassCounter:
    """Counts forward passes and backward passes (to the input or to the weights) of a network."""

    def __init__(self, net: nn.Module) -> None:
        self.forward = self.backward = 0
        net.register_forward_pre_hook(self._fwd)
        net.register_full_backward_pre_hook(self._bwd)

    def _fwd(self, *_):
        self.forward += 1

    def _bwd(self, *_):
        self.backward += 1

    def reset(self) -> None:
        self.forward = self.backward = 0


def build(
    method: str,
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    xu: torch.Tensor,
    iters: int,
    amp: bool = False,
):
    labeled = [{"image": x, "label": y}] * iters
    unlabeled = [xu]
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    common = dict(decollate=False, amp=amp)
    if method == "supervised":
        return AutocastSupervisedTrainer("cpu", 1, labeled, net, opt, nn.CrossEntropyLoss(), **common)
    eps = {"madry": 0.01, "trades": 0.01}.get(method)
    kw = dict(unlabeled_data_loader=unlabeled) if method.startswith("ssat") else {}
    return create_trainer(method, "cpu", 1, labeled, net, opt, eps=eps, **kw, **common)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=8, help="iterations per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=METHODS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    torch.manual_seed(0)
    net = make_network()
    counter = PassCounter(net)
    x = torch.rand(a.batch, 1, a.size, a.size)
    y = torch.arange(a.batch) % 4
    xu = torch.rand(a.batch, 1, a.size, a.size)

    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    passes, times, times_amp = {}, {m: [] for m in a.methods}, {m: [] for m in a.methods}
    for m in a.methods:  # warm-up and pass count (one iteration)
        counter.reset()
        build(m, net, x, y, xu, 1).run()
        passes[m] = (counter.forward, counter.backward)
        build(m, net_cl, x, y, xu, 1, amp=True).run()
    for _ in range(a.repeats):
        for m in a.methods:
            for network, amp, store in ((net, False, times), (net_cl, True, times_amp)):
                tr = build(m, network, x, y, xu, a.iters, amp=amp)
                t0 = time.process_time()
                tr.run()
                store[m].append((time.process_time() - t0) / a.iters)

    base = statistics.median(times["supervised"]) if "supervised" in times else None
    bf, bb = passes.get("supervised", (1, 1))
    print(
        f"# SSAT step cost: batch {a.batch} labeled (+{a.batch} unlabeled) x 1 x {a.size} x {a.size}, "
        f"{a.threads} thread(s), {a.repeats} repeats x {a.iters} iterations, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"{'method':<12} {'ms/step':>8} {'x supervised':>13} {'fwd':>4} {'bwd':>4} {'passes ratio (limit)':>21} "
        f"{'amp ms/step':>12} {'fp32 / amp':>11}"
    )
    for m in a.methods:
        t = statistics.median(times[m])
        ta = statistics.median(times_amp[m])
        f, b = passes[m]
        ratio = f"{t / base:13.2f}" if base else " " * 13
        print(
            f"{m:<12} {1e3 * t:8.1f} {ratio} {f:4d} {b:4d} {(f + b) / (bf + bb):21.2f} {1e3 * ta:12.1f} {t / ta:11.2f}"
        )


if __name__ == "__main__":
    main()
