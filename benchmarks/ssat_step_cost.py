"""What one SSAT step costs against one supervised step, beside the passes each does (the limit).

A supervised step is one forward and one backward pass of the network on the labeled batch. The
paper's SSAT step does, on a labeled and an equally large unlabeled batch: one forward without
gradient (pseudo-labels), one forward+backward to the input (FGSM), two training forwards (labeled,
attacked unlabeled) and one backward through both. The passes are *counted* here, with module hooks
on the network, not assumed; the cost ratio that pure pass-counting predicts is
``(forwards + backwards) / 2`` when a backward costs about as much as a forward, which is the limit a
step can approach (everything else the engine does is overhead). The supervised baselines (Madry
PGD-7 and TRADES with PGD-7) and SSAT variants are measured in the same run for scale.

Each step is also timed in the other precisions asked for (``--precisions``; default ``fp32 auto``:
``auto`` is what the bundles run, bf16 autocast only on a CPU that runs it natively, else fp32 with
channels-last; on CUDA ``fp32 fp16 bf16``), the attack inside the step included, the network in the
channels-last layout for the low-precision rows, interleaved with the fp32 runs; the speed-up fp32
time / that precision's time is printed per method.

Usage::

    python benchmarks/ssat_step_cost.py                       # 64x64 OCT-sized batch of 32, 1 thread
    python benchmarks/ssat_step_cost.py --size 128 --batch 16 --iters 10 --repeats 5
    python benchmarks/ssat_step_cost.py --device cuda --size 224 --batch 64 --precisions fp32 fp16 bf16

Times are CPU time of this process (``time.process_time``), medians over interleaved repeats, so the
ratios hold on a machine shared with other jobs; on CUDA, wall time with synchronisation.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: experiments.*
from experiments.label_scarcity.small_scale import make_network  # noqa: E402
from monai_adv.engines import AutocastSupervisedTrainer, create_trainer  # noqa: E402
from monai_adv.precision import cpu_capability, resolve_precision  # noqa: E402

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
    amp: bool | str = False,
    dtype: torch.dtype | None = None,
):
    device = x.device
    labeled = [{"image": x, "label": y}] * iters
    unlabeled = [xu]
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)
    common = dict(decollate=False, amp=amp, amp_kwargs={"dtype": dtype} if dtype is not None else None)
    if method == "supervised":
        return AutocastSupervisedTrainer(device, 1, labeled, net, opt, nn.CrossEntropyLoss(), **common)
    eps = {"madry": 0.01, "trades": 0.01}.get(method)
    kw = dict(unlabeled_data_loader=unlabeled) if method.startswith("ssat") else {}
    return create_trainer(method, device, 1, labeled, net, opt, eps=eps, **kw, **common)


#: ``--precisions`` choices: (amp, autocast dtype)
PRECISIONS = {
    "fp32": (False, None),
    "auto": ("auto", None),
    "bf16": (True, torch.bfloat16),
    "fp16": (True, torch.float16),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=8, help="iterations per timed run")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISIONS),
        default=None,
        help="precisions timed besides fp32 (default: auto on the CPU; fp16 bf16 on CUDA)",
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    dev = torch.device(a.device)
    others = a.precisions or (["auto"] if dev.type == "cpu" else ["fp16", "bf16"])
    others = [q for q in others if q != "fp32"]
    torch.manual_seed(0)
    net = make_network().to(dev)
    counter = PassCounter(net)
    x = torch.rand(a.batch, 1, a.size, a.size, device=dev)
    y = torch.arange(a.batch, device=dev) % 4
    xu = torch.rand(a.batch, 1, a.size, a.size, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    clock = time.process_time if dev.type == "cpu" else time.perf_counter
    net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
    passes: dict[str, tuple[int, int]] = {}
    times: dict[str, dict[str, list[float]]] = {q: {m: [] for m in a.methods} for q in ["fp32", *others]}
    for m in a.methods:  # warm-up and pass count (one iteration)
        counter.reset()
        build(m, net, x, y, xu, 1).run()
        passes[m] = (counter.forward, counter.backward)
        for q in others:
            build(m, net_cl, x, y, xu, 1, *PRECISIONS[q]).run()
    for _ in range(a.repeats):
        for m in a.methods:
            for q in ["fp32", *others]:
                tr = build(m, net if q == "fp32" else net_cl, x, y, xu, a.iters, *PRECISIONS[q])
                sync()
                t0 = clock()
                tr.run()
                sync()
                times[q][m].append((clock() - t0) / a.iters)

    med = {q: {m: statistics.median(v) for m, v in per.items()} for q, per in times.items()}
    base = med["fp32"].get("supervised")
    bf, bb = passes.get("supervised", (1, 1))
    auto = resolve_precision("auto", dev)
    print(
        f"# SSAT step cost: batch {a.batch} labeled (+{a.batch} unlabeled) x 1 x {a.size} x {a.size}, "
        f"{a.threads} thread(s), {a.repeats} repeats x {a.iters} iterations, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, device {dev}"
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
        + f", CPU capability {cpu_capability()}, amp='auto' -> {auto}"
    )
    head = f"{'method':<12} {'ms/step':>8} {'x supervised':>13} {'fwd':>4} {'bwd':>4} {'passes ratio (limit)':>21}"
    for q in others:
        head += f" {q + ' ms/step':>13} {'fp32 / ' + q:>11}"
    print(head)
    for m in a.methods:
        t = med["fp32"][m]
        f, b = passes[m]
        ratio = f"{t / base:13.2f}" if base else " " * 13
        line = f"{m:<12} {1e3 * t:8.1f} {ratio} {f:4d} {b:4d} {(f + b) / (bf + bb):21.2f}"
        for q in others:
            line += f" {1e3 * med[q][m]:13.1f} {t / med[q][m]:11.2f}"
        print(line)


if __name__ == "__main__":
    main()
