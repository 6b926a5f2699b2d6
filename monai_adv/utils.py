"""The bottom layer: small helpers every package of monai-adv uses, written once.

- tensors: :func:`plain_tensor` (a MONAI ``MetaTensor`` or numpy array to a plain ``torch.Tensor``);
- networks: :func:`eval_mode` (eval mode for a block, each submodule's own mode restored after),
  :func:`network_device`, :func:`default_output_transform` (the logits out of a network's output);
- labels: :func:`class_indices` (checked integer class indices), :func:`check_label_range`,
  :func:`predicted_classes` (logits or indices to class indices);
- engine outputs: :func:`first_output` and :func:`gather_output` (a dict of batched values or MONAI's
  decollated list of per-item dicts).

Nothing here imports from the rest of the package, so transforms, detectors, engines, metrics and
handlers can all build on it without importing each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    "plain_tensor",
    "network_device",
    "eval_mode",
    "default_output_transform",
    "LOGIT_KEYS",
    "class_indices",
    "check_label_range",
    "predicted_classes",
    "first_output",
    "gather_output",
    "LOW_PRECISION_DTYPES",
    "full_precision",
    "parse_amp_dtype",
    "read_state_dict",
]

#: the dict keys :func:`default_output_transform` looks for, in order
LOGIT_KEYS = ("logits", "logit", "pred", "out", "output")


#: the autocast dtypes: what mixed precision computes in
LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


# ------------------------------------------------------------------------------------------------
# tensors
# ------------------------------------------------------------------------------------------------
def full_precision(t: Any) -> Any:
    """``t`` as float32 when it is a float16/bfloat16 tensor (an autocast output), else ``t`` unchanged."""
    return t.float() if isinstance(t, torch.Tensor) and t.dtype in LOW_PRECISION_DTYPES else t


def parse_amp_dtype(value: Any, what: str = "amp_dtype") -> torch.dtype | None:
    """An autocast dtype from a dtype, its name (``"bfloat16"``, ``"torch.float16"``, as configs spell it) or None.

    Raises:
        ValueError: for anything but float16, bfloat16 or None.
    """
    if isinstance(value, str):
        value = getattr(torch, value.replace("torch.", ""), value)
    if value is not None and value not in LOW_PRECISION_DTYPES:
        raise ValueError(f"{what} must be torch.bfloat16, torch.float16 or None, got {value!r}.")
    return value


def plain_tensor(x: Any) -> torch.Tensor:
    """``x`` as a plain ``torch.Tensor``: a MONAI ``MetaTensor`` without its metadata, an array converted.

    A plain tensor is returned as it is (no copy); numbers, numpy arrays and sequences go through
    ``torch.as_tensor``.

    Args:
        x: a tensor, ``MetaTensor``, numpy array, number or sequence of numbers.
    """
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    return torch.as_tensor(x)


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------
def network_device(network: Any, fallback: torch.device | str = "cpu") -> torch.device:
    """The device of a network's first parameter (or buffer); ``fallback`` for a callable or an empty module.

    Args:
        network: an ``nn.Module`` or any callable.
        fallback: the device to return when the network has no tensors.
    """
    if isinstance(network, nn.Module):
        for p in network.parameters():
            return p.device
        for b in network.buffers():
            return b.device
    return torch.device(fallback)


@contextlib.contextmanager
def eval_mode(*networks: Any) -> Iterator[None]:
    """Put networks in eval mode for the block; afterwards every submodule gets back its own mode.

    Restoring module by module (not ``network.train(mode)``) keeps a partly frozen network as it was,
    e.g. batch norm held in eval mode while the rest fine-tunes. Arguments that are not ``nn.Module``
    (plain callables) are left alone.

    Args:
        networks: the modules to put in eval mode.
    """
    modes = [(sub, sub.training) for n in networks if isinstance(n, nn.Module) for sub in n.modules()]
    try:
        for n in networks:
            if isinstance(n, nn.Module):
                n.eval()
        yield
    finally:
        for sub, was_training in modes:
            sub.training = was_training


def default_output_transform(output: Any) -> torch.Tensor:
    """Pick the class logits out of a network's output.

    A tensor is taken as it is; a tuple or list gives its first element; a dict gives the value of
    the first of ``logits``, ``logit``, ``pred``, ``out``, ``output`` that it holds.

    Args:
        output: what the network returned.

    Raises:
        ValueError: when a dict holds none of those keys.
        TypeError: when the output is of any other type.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and len(output) > 0:
        return default_output_transform(output[0])
    if isinstance(output, Mapping):
        for key in LOGIT_KEYS:
            if key in output:
                return output[key]
        raise ValueError(
            f"network returned a dict with keys {sorted(output)}, none of which is one of {LOGIT_KEYS}; "
            "pass output_transform=... to pick the class logits."
        )
    raise TypeError(
        f"network returned {type(output).__name__}, not class logits; pass output_transform=... to pick them."
    )


# ------------------------------------------------------------------------------------------------
# labels
# ------------------------------------------------------------------------------------------------
def class_indices(label: Any, batch: int, what: str = "labels", *, broadcast: bool = False) -> torch.Tensor:
    """Check labels and return them as integer class indices ``(batch,)`` (``torch.long``).

    Accepts ``(B,)`` or ``(B, 1)`` integer (or integral floating) values; with ``broadcast`` also an
    int or a one-element tensor, repeated over the batch.

    Args:
        label: the labels (tensor, ``MetaTensor``, numpy array, int or sequence).
        batch: the batch size they must fit.
        what: how the labels are named in error messages.
        broadcast: accept one label for the whole batch.

    Raises:
        ValueError: for a wrong shape, one-hot labels, non-integer, NaN or negative values, booleans.
    """
    if isinstance(label, (bool, np.bool_)):
        raise ValueError(f"{what} must be class indices, got {label!r}.")
    y = plain_tensor(label).detach()
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise ValueError(
                f"{what} must be integer class indices, got non-integer values {y.flatten()[:8].tolist()}."
            )
    elif y.dtype == torch.bool or y.is_complex():
        raise ValueError(f"{what} must be integer class indices, got dtype {y.dtype}.")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if broadcast and y.numel() == 1:
        y = y.reshape(1).expand(batch)
    elif y.ndim != 1 or y.shape[0] != batch:
        accepted = "an int, a 1-element tensor, " if broadcast else ""
        raise ValueError(
            f"{what} of shape {tuple(y.shape)} do not fit a batch of {batch}: expected {accepted}({batch},) or "
            f"({batch}, 1) integer class indices (not one-hot)."
        )
    y = y.long()
    if (y < 0).any():
        raise ValueError(f"{what} must be non-negative class indices, got {sorted(set(y.tolist()))}.")
    return y


def check_label_range(y: torch.Tensor, num_classes: int, what: str = "labels") -> None:
    """Check that every class index is a class of a network with ``num_classes`` outputs.

    Args:
        y: integer class indices.
        num_classes: the number of logits the network returns.
        what: how the labels are named in the error message.

    Raises:
        ValueError: naming the labels that are out of range.
    """
    if y.numel() and int(y.max()) >= num_classes:
        bad = sorted({int(v) for v in y.reshape(-1).tolist() if v >= num_classes})
        raise ValueError(
            f"{what} {bad} are out of range for a network with {num_classes} classes "
            f"(0..{num_classes - 1}; it returns {num_classes} logits)."
        )


def predicted_classes(t: Any) -> torch.Tensor:
    """Class indices ``(B,)`` from logits or probabilities ``(B, K)`` (argmax) or from indices ``(B,)``/``(B, 1)``.

    Args:
        t: predictions, one row or one index per item.
    """
    t = plain_tensor(t)
    if t.ndim == 2 and t.shape[1] > 1:
        return t.argmax(dim=1)
    return t.reshape(t.shape[0] if t.ndim else 1).round().long()


# ------------------------------------------------------------------------------------------------
# engine outputs
# ------------------------------------------------------------------------------------------------
def first_output(output: Any) -> Mapping | None:
    """The output dict of an engine, also when MONAI's decollation turned it into a list of per-item dicts.

    Args:
        output: ``engine.state.output``.

    Returns:
        the dict itself, the first item's dict, or None for anything else.
    """
    if isinstance(output, Mapping):
        return output
    if isinstance(output, Sequence) and len(output) > 0 and isinstance(output[0], Mapping):
        return output[0]
    return None


def gather_output(output: Any, key: str, required: bool = True) -> torch.Tensor | None:
    """Read ``key`` from an engine output: a dict of batched values or a decollated list of dicts.

    Args:
        output: ``engine.state.output``.
        key: the key to read.
        required: raise when the key is missing (else return None).

    Returns:
        the batch as one tensor ``(B, ...)``, or None when the key is absent and not ``required``.

    Raises:
        KeyError: for a required key that is missing (the message lists the keys there are).
        TypeError: for an output that is neither a dict nor a list of dicts.
    """
    first = first_output(output)
    if first is None:
        raise TypeError(f"engine output must be a dict or a list of dicts, got {type(output).__name__}.")
    if key not in first:
        if required:
            raise KeyError(f"engine output has no key {key!r}; available: {sorted(first)}.")
        return None
    if first is output:
        v = output[key]
        return v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
    return torch.stack([torch.as_tensor(i[key]) for i in output])


# ------------------------------------------------------------------------------------------------
# checkpoints
# ------------------------------------------------------------------------------------------------
def read_state_dict(path: str, what: str = "model checkpoint", key: str | None = None) -> dict:
    """The state dict in a checkpoint file, read with ``torch.load(..., weights_only=True)``.

    The file holds a state dict, or a dict holding it under ``key`` (or ``"model"``/``"network"``: what
    MONAI's ``CheckpointSaver`` and monai-adv's checkpoints write); DDP's ``module.`` prefixes are removed.

    Args:
        path: the checkpoint file (it must exist).
        what: what the file is, for the error messages ("teacher checkpoint", ...).
        key: the entry that holds the state dict, when not ``"model"``/``"network"``.

    Raises:
        ValueError: naming the file when it cannot be read or holds no state dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read {what} {path!r}: {e}") from e
    if not isinstance(state, Mapping):
        raise ValueError(f"{what} {path!r} does not hold a state dict.")
    for k in (key, "model", "network"):
        if k is not None and k in state and isinstance(state[k], Mapping):
            state = state[k]
            break
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}
