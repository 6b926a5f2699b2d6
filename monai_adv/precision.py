"""The bottom layer: which precision a run computes in, chosen for the machine it runs on.

``amp="auto"`` (the default of the bundles, the demos, the experiments and the benchmarks) means:

- on CUDA (and other accelerators): autocast, float16 with loss scaling unless a dtype is given;
- on a CPU that runs bfloat16 natively (AVX512-BF16 or AMX on x86, the ``bf16`` feature on ARM):
  bfloat16 autocast, about 2.5x cheaper per pass than float32 there;
- on any other CPU: float32. Such CPUs (AVX2-only x86, AMD Zen 2/3, older Intel) *emulate* bfloat16,
  which makes a pass 5-15x slower than float32 (measured in ``benchmarks/RESULTS.md``).

Where the CPU cannot be asked (no flags readable, no torch query), one small convolutional
forward+backward is timed both ways, once per process, and the faster precision is kept.
``amp=True`` / ``amp=False`` still force autocast on / off. ``channels_last="auto"`` turns the
channels-last memory layout on for convolutional work on the CPU (2D and 3D; measured faster in
``benchmarks/attack_speed.py``), and on CUDA under autocast (tensor cores).

The choice is logged once per process with the CPU capability (:func:`log_precision`) and written
into every report and experiment row (:meth:`Precision.record`), so a number can always be traced to
how it was computed.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch

__all__ = [
    "AMP_CHOICES",
    "AmpSetting",
    "Precision",
    "parse_amp",
    "cpu_capability",
    "cpu_has_native_bf16",
    "bf16_is_fast_on_cpu",
    "resolve_precision",
    "log_precision",
    "precision_record",
    "record_of",
    "PRECISION_AMP",
    "add_precision_argument",
    "apply_memory_format",
    "network_memory_format",
]

logger = logging.getLogger("monai_adv.precision")

#: what ``amp`` accepts besides booleans (and the strings configs spell booleans with)
AMP_CHOICES = ("auto", True, False)
#: the type of an ``amp`` argument: ``"auto"``, True or False
AmpSetting = Union[bool, str]

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f", "fp32", "float32", "none"}
_DTYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}


def parse_amp(value: Any, what: str = "amp") -> bool | str:
    """``"auto"``, True or False from a bool, ``"auto"`` or a boolean string (as bundle configs and CLIs spell it).

    Raises:
        ValueError: for anything else (the value is named).
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v == "auto":
            return "auto"
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise ValueError(f"{what} must be 'auto', True or False, got {value!r}.")


@functools.cache
def cpu_capability() -> str:
    """The CPU's vector capability as torch dispatches to it: ``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, ..."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - very old torch
        return "unknown"


def _cpu_flags() -> set[str] | None:
    """The CPU feature flags from ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on ARM); None when unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


@functools.cache
def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bfloat16 in hardware: True, False, or None when it cannot be told.

    Asks torch first (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``, x86), then
    the kernel's CPU flags (``avx512_bf16``, ``amx_bf16``; ``bf16`` on ARM). The environment variable
    ``MONAI_ADV_NATIVE_BF16=0|1`` overrides both (for a CPU that reports wrongly).
    """
    forced = os.environ.get("MONAI_ADV_NATIVE_BF16", "").strip()
    if forced:
        return forced.lower() in _TRUE
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            try:
                if fn():
                    return True
            except Exception:  # pragma: no cover - a torch build without the query
                pass
    flags = _cpu_flags()
    if flags is None:
        return None
    if flags & {"avx512_bf16", "amx_bf16", "bf16", "sve_bf16", "svebf16"}:
        return True
    # an x86 CPU that lists its flags and none of the bf16 ones emulates bf16; ARM likewise
    return False


def _time_pass(dtype: torch.dtype | None, reps: int = 3) -> float:
    """Median seconds of one small conv net forward+backward to the input, in ``dtype`` autocast (None: fp32)."""
    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1, stride=2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(32, 4),
    )
    x = torch.rand(8, 1, 64, 64, generator=gen, requires_grad=True)
    times = []
    for _ in range(reps + 1):  # the first pass warms the kernels up
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            loss = net(x).float().sum()
        torch.autograd.grad(loss, x)
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return times[len(times) // 2]


@functools.cache
def bf16_is_fast_on_cpu() -> bool:
    """Whether bf16 autocast is the faster choice on this CPU (native bf16; timed once when unknown)."""
    native = cpu_has_native_bf16()
    if native is not None:
        return native
    fast = _time_pass(torch.bfloat16) < _time_pass(None)
    logger.info(
        "bf16 support could not be read from the CPU; timed it: bf16 autocast is %s",
        "faster" if fast else "slower",
    )
    return fast


@dataclass(frozen=True)
class Precision:
    """A resolved precision: whether autocast runs, in which dtype, and the memory layout."""

    #: autocast on
    amp: bool
    #: the autocast dtype (None when ``amp`` is off)
    dtype: torch.dtype | None
    #: channels-last memory layout for 2D/3D convolutional work
    channels_last: bool
    #: ``"cpu"``, ``"cuda"``, ...
    device_type: str
    #: what was asked for (``"auto"``, True or False)
    requested: bool | str = "auto"

    @property
    def name(self) -> str:
        """``"bf16"``, ``"fp16"`` or ``"fp32"``: what the network's passes compute in."""
        return _DTYPE_NAMES[self.dtype if self.amp else None]

    def record(self) -> dict[str, Any]:
        """The fields every report and experiment row carries: ``precision``, ``channels_last``,
        ``amp_requested``, ``device`` and ``cpu_capability``."""
        return {
            "precision": self.name,
            "channels_last": bool(self.channels_last),
            "amp_requested": self.requested,
            "device": self.device_type,
            "cpu_capability": cpu_capability(),
            "cpu_native_bf16": cpu_has_native_bf16(),
        }

    def __str__(self) -> str:
        layout = ", channels_last" if self.channels_last else ""
        return f"{self.name}{layout} on {self.device_type} (amp={self.requested!r}, CPU capability {cpu_capability()})"


def _default_dtype(device_type: str) -> torch.dtype:
    return torch.bfloat16 if device_type == "cpu" else torch.float16


def resolve_precision(
    amp: Any = "auto",
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | str | None = None,
    channels_last: Any = "auto",
) -> Precision:
    """The precision a run on ``device`` computes in, for ``amp`` ``"auto"`` / True / False.

    Args:
        amp: ``"auto"`` (autocast on CUDA; on the CPU bf16 only where it is native, else fp32),
            True (autocast in ``amp_dtype`` or the device's default: bf16 on CPU, fp16 on CUDA), False
            (fp32). Boolean strings are accepted, as configs spell them.
        device: where the network runs.
        amp_dtype: the autocast dtype (``torch.bfloat16``/``torch.float16`` or their names); None: the
            device's default. With ``"auto"`` on the CPU only bf16 is chosen (fp16 is emulated there).
        channels_last: True, False, or ``"auto"``: on for the CPU and, under autocast, for CUDA.

    Raises:
        ValueError: for an ``amp``, ``amp_dtype`` or ``channels_last`` that is none of the above.
    """
    from monai_adv.utils import parse_amp_dtype

    requested = parse_amp(amp)
    dtype = parse_amp_dtype(amp_dtype)
    device_type = torch.device(device).type
    if requested == "auto":
        if device_type == "cpu":
            on = (dtype in (None, torch.bfloat16)) and bf16_is_fast_on_cpu()
        else:
            on = True
    else:
        on = bool(requested)
    resolved_dtype = (dtype or _default_dtype(device_type)) if on else None
    if isinstance(channels_last, str) and channels_last.strip().lower() == "auto":
        layout = device_type == "cpu" or on
    else:
        layout = parse_amp(channels_last, "channels_last")
        if layout == "auto":  # pragma: no cover - handled above
            layout = True
    return Precision(on, resolved_dtype, bool(layout), device_type, requested)


def network_memory_format(network: Any) -> torch.memory_format | None:
    """``torch.channels_last`` / ``channels_last_3d`` when the network's conv weights are stored so, else None.

    A weight that is contiguous in both layouts (1x1 kernels, one channel) says nothing; the first
    4-D or 5-D floating parameter that tells the two apart decides.
    """
    if not isinstance(network, torch.nn.Module):
        return None
    for p in network.parameters():
        if not p.is_floating_point() or p.ndim not in (4, 5):
            continue
        fmt = torch.channels_last if p.ndim == 4 else torch.channels_last_3d
        if p.is_contiguous(memory_format=fmt) and not p.is_contiguous():
            return fmt
        if p.is_contiguous() and not p.is_contiguous(memory_format=fmt):
            return None
    return None


def apply_memory_format(
    network: torch.nn.Module,
    amp: Any = "auto",
    device: torch.device | str | None = None,
    channels_last: Any = "auto",
) -> torch.nn.Module:
    """``network`` converted in place to the channels-last layout where :func:`resolve_precision` says it is faster.

    The layout follows the network's convolutions: ``channels_last`` for 2D kernels, ``channels_last_3d``
    for 3D ones; a network without convolutions is returned unchanged. Bundle configs call it on the
    network they build (``"$monai_adv.precision.apply_memory_format(@network_def.to(@device), @amp)"``).

    Args:
        network: the module.
        amp: the run's ``amp`` (``"auto"``, True, False).
        device: where it runs (default: the device of its first parameter).
        channels_last: True, False or ``"auto"``.
    """
    params = list(network.parameters())
    if device is None:
        device = params[0].device if params else "cpu"
    if not resolve_precision(amp, device, channels_last=channels_last).channels_last:
        return network
    kernels = {p.ndim for p in params if p.is_floating_point() and p.ndim in (4, 5)}
    if len(kernels) == 1:
        network.to(memory_format=torch.channels_last if kernels == {4} else torch.channels_last_3d)
    return network


_LOGGED: set[tuple[str, str, bool]] = set()


def log_precision(precision: Precision, what: str = "monai-adv") -> None:
    """Log a resolved precision once per process (per device, precision and layout), with the CPU capability."""
    key = (precision.device_type, precision.name, precision.channels_last)
    if key in _LOGGED:
        return
    _LOGGED.add(key)
    native = cpu_has_native_bf16()
    logger.info(
        "%s computes in %s (native bf16 on this CPU: %s, %s)",
        what,
        precision,
        {True: "yes", False: "no", None: "unknown"}[native],
        platform.machine() or "unknown machine",
    )


def precision_record(
    amp: Any = "auto", device: torch.device | str = "cpu", amp_dtype: Any = None, channels_last: Any = "auto"
) -> dict[str, Any]:
    """:meth:`Precision.record` of :func:`resolve_precision` with these arguments, for report writers."""
    return resolve_precision(amp, device, amp_dtype, channels_last).record()


def record_of(obj: Any) -> Mapping[str, Any] | None:
    """The precision record of an engine or attack that carries a resolved ``precision``, else None.

    ``channels_last`` says the layout the object's ``network`` is actually stored in, when it has one.
    """
    p = getattr(obj, "precision", None)
    if not isinstance(p, Precision):
        return None
    rec = p.record()
    network = getattr(obj, "network", None)
    if isinstance(network, torch.nn.Module):
        rec["channels_last"] = network_memory_format(network) is not None
    return rec


#: ``--precision`` choices of the command-line tools (demos, experiments, benchmarks) and the ``amp``
#: each sets: ``auto`` decides per machine, ``bf16`` forces autocast (bf16 on the CPU; on CUDA the
#: engines' autocast dtype), ``fp32`` forces full precision
PRECISION_AMP: dict[str, bool | str] = {"auto": "auto", "bf16": True, "fp32": False}


def add_precision_argument(parser: Any) -> None:
    """Add ``--precision auto|bf16|fp32`` (default ``auto``) and its deprecated spelling ``--no-amp`` to an argparse parser.

    Read the choice back as ``PRECISION_AMP[args.precision]``.
    """
    parser.add_argument(
        "--precision",
        choices=list(PRECISION_AMP),
        default="auto",
        help="auto (default): bf16 autocast where the CPU runs it natively (autocast on CUDA), else fp32 "
        "with channels-last; bf16 or fp32 force it",
    )
    parser.add_argument(
        "--no-amp", dest="precision", action="store_const", const="fp32", help="deprecated: --precision fp32"
    )
