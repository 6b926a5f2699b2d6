"""How close the attacks come to their limit, in full and mixed precision, and against torchattacks.

PGD-k needs k forward+backward passes of the network (gradient w.r.t. the input). Everything else
it does (checks, random start, projections, clamps) is overhead. This benchmark measures, side by
side in one run and interleaved (so load on the machine hits all alike):

- PGD-10, PGD-10 (L2), MI-FGSM-10, APGD-10 and FGSM in fp32 against bare fp32 forward+backward
  passes of the same network on the same batch (1.00 is the limit);
- PGD-10 with ``amp=True, channels_last=True`` against ten bare passes in the same precision and
  layout (bf16 autocast + channels-last on CPU: "the bf16 limit"), and against ten bare fp32 passes;
- the same PGD-10 against torchattacks' ``PGD`` (fp32, the only precision it has) when torchattacks
  is installed (``pip install --no-deps torchattacks``; ``make bench`` does it);

and peak memory: PGD-10's peak resident memory above the idle process against that of one bare
forward+backward.

Usage::

    python benchmarks/attack_speed.py            # MONAI resnet18 2D (16x1x96x96) and 3D (4x1x32x32x32)
    python benchmarks/attack_speed.py --repeats 7 --threads 2

Times are this process's CPU time (``time.process_time``), not wall time, by default: the ratio
then holds on a machine shared with other jobs, whose load would swing wall-clock samples (use
``--clock wall`` on a quiet machine to check). One thread by default, for the same reason. On a CUDA
machine (``--device cuda``) the clock is wall time with synchronisation, and the mixed-precision
rows run fp16 and bf16.
Memory is measured in fresh subprocesses (Linux: /proc/self/clear_refs resets the peak RSS).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from monai.networks.nets import resnet18

from monai_adv.transforms import APGD, FGSM, MIFGSM, PGD

try:  # the reference implementation, compared side by side when installed
    import torchattacks
except ImportError:  # pragma: no cover - optional
    torchattacks = None

CASES = {
    "resnet18-2d": dict(spatial_dims=2, shape=(16, 1, 96, 96)),
    "resnet18-3d": dict(spatial_dims=3, shape=(4, 1, 32, 32, 32)),
}
STEPS = 10


def build(case: str):
    cfg = CASES[case]
    torch.manual_seed(0)
    net = resnet18(spatial_dims=cfg["spatial_dims"], n_input_channels=1, num_classes=4).eval()
    x = torch.rand(cfg["shape"])
    y = torch.arange(cfg["shape"][0]) % 4
    return net, x, y, cfg["spatial_dims"]


def bare_forward_backward(net, x, y, n: int, amp_dtype=None) -> None:
    """The limit: n forward passes and n backward passes to the input, nothing else."""
    for _ in range(n):
        xi = x.detach().requires_grad_(True)
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = net(xi)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        torch.autograd.grad(loss, xi)


def attacks(net, spatial_dims):
    kw = dict(spatial_dims=spatial_dims)
    return {
        "PGD-10 (linf)": PGD(net, 8 / 255, steps=STEPS, **kw),
        "PGD-10 (l2)": PGD(net, 1.0, steps=STEPS, norm="l2", **kw),
        "MIFGSM-10": MIFGSM(net, 8 / 255, steps=STEPS, **kw),
        "APGD-10 (ce)": APGD(net, 8 / 255, steps=STEPS, **kw),
        "FGSM": FGSM(net, 8 / 255, **kw),
    }


def _layout(t: torch.Tensor | torch.nn.Module, spatial_dims: int):
    fmt = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    return t.to(memory_format=fmt) if isinstance(t, torch.nn.Module) else t.contiguous(memory_format=fmt)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_case(case: str, repeats: int, clock=time.process_time, device: str = "cpu") -> dict[str, float]:
    net, x, y, d = build(case)
    dev = torch.device(device)
    net, x, y = net.to(dev), x.to(dev), y.to(dev)
    # a second copy of the network in the channels-last layout: the attack converts the network it
    # is given, and the fp32 rows must keep the default layout
    net_cl = _layout(copy.deepcopy(net), d)
    x_cl = _layout(x, d)
    low = [torch.bfloat16] if dev.type == "cpu" else [torch.float16, torch.bfloat16]
    runs = {
        "bare x10": lambda: bare_forward_backward(net, x, y, STEPS),
        "bare x1": lambda: bare_forward_backward(net, x, y, 1),
    }
    runs.update({name: (lambda a=a: a(x, y)) for name, a in attacks(net, d).items()})
    for dt in low:
        tag = str(dt).replace("torch.", "")
        runs[f"bare x10 {tag}+cl"] = lambda dt=dt: bare_forward_backward(net_cl, x_cl, y, STEPS, dt)
        atk = PGD(net_cl, 8 / 255, steps=STEPS, spatial_dims=d, amp=True, amp_dtype=dt, channels_last=True)
        runs[f"PGD-10 amp {tag}+cl"] = lambda a=atk: a(x, y)
    if torchattacks is not None:
        ta = torchattacks.PGD(net, eps=8 / 255, alpha=2 / 255, steps=STEPS, random_start=True)
        runs["torchattacks PGD-10 fp32"] = lambda: ta(x, y)
    for fn in runs.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleaved, so load on the machine hits all alike
        for name, fn in runs.items():
            _sync(dev)
            t0 = clock()
            fn()
            _sync(dev)
            samples[name].append(clock() - t0)
    return {name: statistics.median(v) for name, v in samples.items()}


def _peak_rss_child(case: str, what: str) -> None:
    """Run in a subprocess: print the peak RSS increase (bytes) caused by one call of `what`."""
    net, x, y, d = build(case)
    fn = (
        (lambda: bare_forward_backward(net, x, y, 1))
        if what == "bare"
        else (lambda: PGD(net, 8 / 255, steps=STEPS, spatial_dims=d)(x, y))
    )
    fn()  # warm-up: allocator pools, lazy init
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    with open("/proc/self/status") as f:
        base = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    fn()
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    print(json.dumps({"delta_bytes": (peak - base) * 1024}))


def peak_memory(case: str, threads: int) -> dict[str, float] | None:
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    # large blocks straight from mmap, returned at free: the RSS peak then tracks the tensors' peak
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", MALLOC_ARENA_MAX="1")
    out = {}
    for what in ("bare", "pgd"):
        deltas = []
        for _ in range(3):
            res = subprocess.run(
                [sys.executable, __file__, "--child", case, what, "--threads", str(threads)],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            )
            deltas.append(json.loads(res.stdout.strip().splitlines()[-1])["delta_bytes"])
        out[what] = statistics.median(deltas)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        _peak_rss_child(*args.child)
        return
    print(
        f"# attack speed: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), {args.clock if args.device == 'cpu' else 'wall'} time, median of "
        f"{args.repeats} interleaved repeats, device {args.device}"
    )
    clock = time.process_time if args.clock == "cpu" and args.device == "cpu" else time.perf_counter
    for case in args.cases:
        t = time_case(case, args.repeats, clock, args.device)
        print(f"\n## {case} {CASES[case]['shape']}")
        print(
            f"one bare forward+backward: {t['bare x1'] * 1000:.1f} ms fp32; ten: {t['bare x10'] * 1000:.1f} ms"
        )
        print("| attack (fp32) | time / its forward+backward limit |")
        print("|---|---|")
        for name in t:
            if name.startswith("bare") or "amp" in name or name.startswith("torchattacks"):
                continue
            limit = t["bare x1"] if name == "FGSM" else t["bare x10"]
            print(f"| {name} | {t[name] / limit:.3f} |")
        ta = t.get("torchattacks PGD-10 fp32")
        print(
            "\n| mixed precision | ms | / its own limit (ten bare passes, same precision) | / ten fp32 passes "
            "| / torchattacks PGD-10 fp32 |"
        )
        print("|---|---|---|---|---|")
        pgd = t["PGD-10 (linf)"]
        vs_ta = "-" if ta is None else f"{pgd / ta:.3f}"
        print(
            f"| PGD-10 fp32 (ours) | {pgd * 1000:.0f} | {pgd / t['bare x10']:.3f} | {pgd / t['bare x10']:.3f} | {vs_ta} |"
        )
        for name in [n for n in t if "amp" in n]:
            tag = name.split("amp ", 1)[1]
            limit = t[f"bare x10 {tag}"]
            print(
                f"| {name} | {t[name] * 1000:.0f} | {t[name] / limit:.3f} | {t[name] / t['bare x10']:.3f} | "
                f"{'-' if ta is None else f'{t[name] / ta:.3f}'} |"
            )
        if ta is not None:
            print(
                f"| torchattacks PGD-10 fp32 | {ta * 1000:.0f} | {ta / t['bare x10']:.3f} | {ta / t['bare x10']:.3f} | 1.000 |"
            )
        else:
            print("(torchattacks not installed: pip install --no-deps torchattacks)")
        if args.device != "cpu":
            continue
        mem = peak_memory(case, args.threads)
        if mem:
            print(
                f"peak memory above idle: PGD-10 {mem['pgd'] / 2**20:.0f} MiB, one bare forward+backward "
                f"{mem['bare'] / 2**20:.0f} MiB, ratio {mem['pgd'] / mem['bare']:.3f}"
            )


if __name__ == "__main__":
    main()
