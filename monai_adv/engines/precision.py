"""Mixed precision for the engines on any device: bf16 autocast on CPU, fp16 (with a grad scaler) or bf16 on CUDA.

MONAI's trainers and evaluators hard-wire ``torch.autocast("cuda")`` and ``torch.cuda.amp.GradScaler``, so
``amp=True`` does nothing on a CPU. The engines of this package read the same ``amp`` / ``amp_kwargs``
arguments and go through these helpers instead, so that the same config runs in mixed precision on a
CPU with bfloat16 (no loss scale needed: bfloat16 has float32's exponent range) and on a GPU with
float16 (loss-scaled) or bfloat16. ``amp="auto"`` is resolved for the engine's device by
:func:`~monai_adv.precision.resolve_precision` (bf16 on a CPU only where it is native) before MONAI's
constructor sees it (:func:`resolve_engine_precision`); the engine keeps the result as ``engine.precision``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch

from monai_adv.precision import Precision, log_precision, resolve_precision
from monai_adv.transforms.base import AdversarialAttack, default_amp_dtype
from monai_adv.utils import parse_amp_dtype

__all__ = [
    "resolve_amp_kwargs",
    "engine_autocast",
    "configure_engine_amp",
    "attack_in_engine_precision",
    "resolve_engine_precision",
]


def resolve_engine_precision(
    device: torch.device | str, kwargs: dict[str, Any], what: str = "engine"
) -> Precision:
    """Resolve ``kwargs["amp"]`` (``"auto"``, True, False) for ``device`` and put the boolean back for MONAI.

    Args:
        device: the engine's device.
        kwargs: the engine's keyword arguments (changed in place: ``amp`` becomes a bool).
        what: the engine's name, for the one log line that says the choice.

    Raises:
        ValueError: for an ``amp`` that is not ``"auto"``, True or False.
    """
    amp_kwargs = kwargs.get("amp_kwargs") or {}
    precision = resolve_precision(
        kwargs.get("amp", False), device, amp_kwargs.get("dtype"), channels_last=False
    )
    kwargs["amp"] = precision.amp
    log_precision(precision, what)
    return precision


def resolve_amp_kwargs(device: torch.device | str, amp_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """``amp_kwargs`` with an explicit ``dtype``: the given one (a dtype or its name) or the device's default.

    Raises:
        ValueError: for a dtype other than bfloat16 or float16.
    """
    kwargs = dict(amp_kwargs or {})
    dtype = parse_amp_dtype(kwargs.get("dtype"), "amp_kwargs['dtype']")
    kwargs["dtype"] = default_amp_dtype(device) if dtype is None else dtype
    return kwargs


def _device_of(engine: Any) -> torch.device:
    device = getattr(engine.state, "device", None) or getattr(engine, "device", None) or "cpu"
    return torch.device(device)


def configure_engine_amp(engine: Any) -> None:
    """Fix an engine's ``amp_kwargs`` dtype for its device and give it the grad scaler that dtype needs.

    Call after ``SupervisedTrainer.__init__`` / ``SupervisedEvaluator.__init__``. float16 gets a
    ``torch.amp.GradScaler`` for the device; bfloat16 needs none (``engine.scaler = None``).
    """
    if not engine.amp:
        return
    device = _device_of(engine)
    engine.amp_kwargs = resolve_amp_kwargs(device, engine.amp_kwargs)
    if hasattr(engine, "scaler"):
        if engine.amp_kwargs["dtype"] == torch.float16:
            engine.scaler = torch.amp.GradScaler(device.type)
        else:
            engine.scaler = None


def engine_autocast(engine: Any) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on the engine's device with its ``amp_kwargs`` when ``engine.amp``, else a no-op."""
    if not engine.amp:
        return contextlib.nullcontext()
    return torch.autocast(_device_of(engine).type, **engine.amp_kwargs)


def attack_in_engine_precision(attack: Any, engine: Any, attack_amp: bool | None) -> Any:
    """The attack to run inside ``engine``'s step, in the step's precision.

    Args:
        attack: an attack; anything that is not a :class:`~monai_adv.transforms.AdversarialAttack`
            is returned unchanged.
        engine: the trainer or evaluator (its ``amp`` and resolved ``amp_kwargs``).
        attack_amp: None: follow the engine (the attack runs under autocast exactly when the engine
            does, with its dtype); True/False: force the attack's precision.
    """
    if not isinstance(attack, AdversarialAttack):
        return attack
    if attack_amp is None and not engine.amp:
        return attack  # full-precision engine: the attack keeps its own setting
    if attack_amp is False:
        return attack.with_precision(False)
    return attack.with_precision(True, engine.amp_kwargs["dtype"] if engine.amp else attack.amp_dtype)
