"""How close the attacks come to their limit, in full and mixed precision, and against torchattacks.

PGD-k needs k forward+backward passes of the network (gradient w.r.t. the input). Everything else
it does (checks, random start, projections, clamps) is overhead. This benchmark measures, side by
side in one run and interleaved (so load on the machine hits all alike):

- PGD-10, PGD-10 (L2), MI-FGSM-10, APGD-10 and FGSM in fp32 against bare fp32 forward+backward
  passes of the same network on the same batch (1.00 is the limit);
- PGD-10 with ``amp="auto", channels_last="auto"`` (what the bundles, demos and experiments run:
  bf16 autocast only where the CPU runs it natively, else fp32, with channels-last; see
  :mod:`monai_adv.precision`) against ten bare passes in the precision and layout it chose, and
  against ten bare fp32 passes;
- PGD-10 forced to ``amp=True, channels_last=True`` (bf16 autocast on the CPU) against ten bare
  passes in bf16 and channels-last: run by default where bf16 is native or on CUDA (fp16 and bf16
  there), with ``--forced-bf16`` on a CPU that emulates it (slow: 5-15x fp32);
- the same PGD-10 against torchattacks' ``PGD`` (fp32, the only precision it has) when torchattacks
  is installed (``pip install --no-deps torchattacks``; ``make bench`` does it).

The header names the CPU (its torch capability, whether bf16 is native) and the precision ``auto``
chose, so that each table can be filed under its kind of CPU in ``benchmarks/RESULTS.md``.

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

from monai_adv.precision import cpu_capability, cpu_has_native_bf16, resolve_precision
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


def time_case(
    case: str, repeats: int, clock=time.process_time, device: str = "cpu", forced_low: bool | None = None
) -> dict[str, float]:
    net, x, y, d = build(case)
    dev = torch.device(device)
    net, x, y = net.to(dev), x.to(dev), y.to(dev)
    # separate copies of the network for the other layouts: an attack converts the network it is
    # given, and the fp32 rows must keep the default layout
    auto = resolve_precision("auto", dev)
    net_auto = copy.deepcopy(net)
    x_auto = _layout(x, d) if auto.channels_last else x
    if auto.channels_last:
        net_auto = _layout(net_auto, d)
    net_cl = _layout(copy.deepcopy(net), d)
    x_cl = _layout(x, d)
    if forced_low is None:  # bf16 emulated on this CPU costs 5-15x fp32: only on request
        forced_low = dev.type != "cpu" or bool(cpu_has_native_bf16())
    low = ([torch.bfloat16] if dev.type == "cpu" else [torch.float16, torch.bfloat16]) if forced_low else []
    runs = {
        "bare x10": lambda: bare_forward_backward(net, x, y, STEPS),
        "bare x1": lambda: bare_forward_backward(net, x, y, 1),
    }
    runs.update({name: (lambda a=a: a(x, y)) for name, a in attacks(net, d).items()})
    runs["bare x10 auto"] = lambda: bare_forward_backward(net_auto, x_auto, y, STEPS, auto.dtype)
    atk_auto = PGD(net_auto, 8 / 255, steps=STEPS, spatial_dims=d, amp="auto", channels_last="auto")
    runs["PGD-10 auto"] = lambda: atk_auto(x, y)
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
    parser.add_argument(
        "--forced-bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time PGD-10 forced to bf16 autocast (default: only where bf16 is native, and on CUDA)",
    )
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        _peak_rss_child(*args.child)
        return
    native = {True: "native", False: "emulated", None: "unknown"}[cpu_has_native_bf16()]
    print(
        f"# attack speed: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"CPU capability {cpu_capability()}, bf16 {native} on this CPU, amp='auto' -> "
        f"{resolve_precision('auto', args.device)}; {args.threads} thread(s), "
        f"{args.clock if args.device == 'cpu' else 'wall'} time, median of {args.repeats} interleaved "
        f"repeats, device {args.device}"
    )
    clock = time.process_time if args.clock == "cpu" and args.device == "cpu" else time.perf_counter
    for case in args.cases:
        t = time_case(case, args.repeats, clock, args.device, args.forced_bf16)
        print(f"\n## {case} {CASES[case]['shape']}")
        print(
            f"one bare forward+backward: {t['bare x1'] * 1000:.1f} ms fp32; ten: {t['bare x10'] * 1000:.1f} ms"
        )
        print("| attack (fp32) | time / its forward+backward limit |")
        print("|---|---|")
        for name in t:
            if name.startswith("bare") or "amp" in name or "auto" in name or name.startswith("torchattacks"):
                continue
            limit = t["bare x1"] if name == "FGSM" else t["bare x10"]
            print(f"| {name} | {t[name] / limit:.3f} |")
        ta = t.get("torchattacks PGD-10 fp32")
        print(
            "\n| precision | ms | / its own limit (ten bare passes, same precision and layout) | / ten fp32 passes "
            "| / torchattacks PGD-10 fp32 |"
        )
        print("|---|---|---|---|---|")
        pgd = t["PGD-10 (linf)"]

        def row(label: str, value: float, limit: float, t: dict = t, ta: float | None = ta) -> None:
            vs_ta = "-" if ta is None else f"{value / ta:.3f}"
            print(
                f"| {label} | {value * 1000:.0f} | {value / limit:.3f} | {value / t['bare x10']:.3f} | {vs_ta} |"
            )

        row("PGD-10 fp32 (ours)", pgd, t["bare x10"])
        auto = resolve_precision("auto", args.device)
        row(
            f"PGD-10 amp='auto' (ours: {auto.name}{'+cl' if auto.channels_last else ''})",
            t["PGD-10 auto"],
            t["bare x10 auto"],
        )
        for name in [n for n in t if n.startswith("PGD-10 amp ")]:
            tag = name.split("amp ", 1)[1]
            row(f"{name} (forced)", t[name], t[f"bare x10 {tag}"])
        if ta is not None:
            row("torchattacks PGD-10 fp32", ta, t["bare x10"])
            print(
                f"\nours / torchattacks: fp32 {pgd / ta:.3f} (aim <= 1.05); amp='auto' {t['PGD-10 auto'] / ta:.3f} "
                f"(aim <= 0.85 on an AVX2-only CPU, <= 0.45 where bf16 is native)"
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
