"""What a checkpoint needs to be used correctly, recorded beside its weights and checked at load time.

A classifier trained at 128 px and run at 64 px still runs, and changes every prediction. So the
bundles' checkpoints record how their network expects its input (image size, channels, intensity range,
class names, preprocessing) and how it was made (method, data, package versions), under ``"metadata"``
beside the weights under ``"model"``::

    {"model": state_dict, "metadata": {"image_size": [128, 128], "num_channels": 1, ...}}

MONAI's ``CheckpointSaver`` writes that layout when its ``save_dict`` holds the network under
``"model"`` and a :class:`CheckpointMetadata` under ``"metadata"``; MONAI's ``CheckpointLoader`` with
``load_dict={"model": net}`` reads it, and so does :func:`monai_adv.bundle.load_weights`, which compares
the recorded values with the config's (:func:`check_checkpoint_metadata`) and refuses a mismatch with one
line naming both. A plain state dict (a checkpoint without metadata) loads unchecked.

Shipped weights carry a ``<file>.sha256`` beside them (:func:`write_sha256`, :func:`verify_sha256`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_adv.bundle.locate import sha256_of

__all__ = [
    "CheckpointMetadata",
    "CheckpointMismatchError",
    "read_checkpoint_metadata",
    "check_checkpoint_metadata",
    "sha256_of",
    "write_sha256",
    "verify_sha256",
]

#: the recorded entries that must equal the config's for the weights to be used correctly
CHECKED_KEYS = ("image_size", "num_channels", "class_names", "num_classes")


class CheckpointMismatchError(ValueError):
    """A checkpoint recorded for other settings than the config's (image size, channels, classes)."""


def _plain(value: Any) -> Any:
    """``value`` as numbers, strings, lists and dicts only (what ``torch.load(weights_only=True)`` reads)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


class CheckpointMetadata:
    """The metadata a :class:`monai.handlers.CheckpointSaver` writes beside the network's weights.

    Put it in the saver's ``save_dict`` next to the network::

        "save_dict": {"model": "@network_def", "metadata": "@checkpoint_metadata"}
        "checkpoint_metadata": {"_target_": "monai_adv.bundle.CheckpointMetadata",
                                "image_size": "@image_size", "num_channels": 1, "class_names": "@class_names"}

    Args:
        image_size: the spatial size the network was trained at (an int for a square/cubic input, or
            one value per spatial dimension).
        num_channels: input channels.
        class_names: output classes, in order (``num_classes`` is recorded from it when not given).
        num_classes: output channels, when there are no class names.
        intensity_range: ``[low, high]`` of the network's input intensities.
        extra: anything else worth recording (``method``, ``data``, ``preprocessing``, ``output``, ...).
            Numbers, strings, lists and dicts are kept as they are; other values as their ``str``.
    """

    def __init__(
        self,
        image_size: int | Sequence[int] | None = None,
        num_channels: int | None = None,
        class_names: Sequence[str] | None = None,
        num_classes: int | None = None,
        intensity_range: Sequence[float] | None = None,
        **extra: Any,
    ) -> None:
        import monai

        import monai_adv

        if num_classes is None and class_names is not None:
            num_classes = len(class_names)
        self.values: dict[str, Any] = {
            k: _plain(v)
            for k, v in {
                "image_size": image_size,
                "num_channels": num_channels,
                "class_names": None if class_names is None else list(class_names),
                "num_classes": num_classes,
                "intensity_range": intensity_range,
                **extra,
                "monai_adv_version": str(monai_adv.__version__),
                "monai_version": str(monai.__version__),
                "torch_version": str(torch.__version__),
            }.items()
            if v is not None
        }

    def state_dict(self) -> dict[str, Any]:
        """The recorded values (what the checkpoint holds under ``"metadata"``)."""
        return dict(self.values)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take the values of a loaded checkpoint (``CheckpointLoader`` calls this on resume)."""
        self.values = dict(state)

    def __repr__(self) -> str:
        return f"CheckpointMetadata({self.values})"


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``"metadata"`` a checkpoint file records, or ``None`` for a file without (a plain state dict).

    Raises:
        ValueError: naming the file when it cannot be read.
    """
    p = os.fspath(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {p!r}: {e}") from e
    meta = state.get("metadata") if isinstance(state, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else None


def _normalise(key: str, value: Any, like: Any = None) -> Any:
    if key == "image_size":
        if isinstance(value, (int, float)) or (isinstance(value, torch.Tensor) and value.ndim == 0):
            # one size for every axis: spelled out only when the other side gives one per axis
            return [int(value)] * len(like) if isinstance(like, (list, tuple)) else int(value)
        return [int(v) for v in value]
    if key == "class_names":
        return [str(v) for v in value]
    return int(value)


def check_checkpoint_metadata(metadata: Mapping[str, Any] | None, source: str, **expected: Any) -> None:
    """Refuse a checkpoint whose recorded settings differ from the config's.

    Compares ``image_size`` (an int stands for the same size on every axis), ``num_channels``,
    ``class_names`` and ``num_classes``; an entry that either side does not give is not compared, and
    ``metadata=None`` (a checkpoint without metadata) passes.

    Args:
        metadata: what the checkpoint records (:func:`read_checkpoint_metadata`).
        source: what the checkpoint is, for the message (``"model checkpoint 'models/model.pt'"``).
        expected: the config's values, e.g. ``image_size=@image_size, class_names=@class_names``.

    Raises:
        CheckpointMismatchError: one line naming every differing setting with both values and the
            override that fixes it; also printed as the last line when it ends a bundle run.
        ValueError: for an expected key that is not checked (a typo would otherwise check nothing).
    """
    unknown = sorted(set(expected) - set(CHECKED_KEYS))
    if unknown:
        raise ValueError(f"cannot check {unknown} against a checkpoint; checked are {list(CHECKED_KEYS)}.")
    if not metadata:
        return
    diffs = []
    for key, want in expected.items():
        have = metadata.get(key)
        if want is None or have is None:
            continue
        a, b = _normalise(key, have, want), _normalise(key, want, have)
        if a != b:
            diffs.append((key, a, b))
    if diffs:
        from monai_adv.bundle.errors import input_error

        what = "; ".join(f"it was trained with {k} {a} but the config gives {k} {b}" for k, a, b in diffs)
        fix = " ".join(f"--{k} {_cli(a)}" for k, a, _ in diffs)
        raise input_error(
            CheckpointMismatchError(
                f"{source} does not fit this config: {what}. Its predictions would be wrong; run with {fix} "
                "(the checkpoint's settings), or use a checkpoint trained with the config's."
            )
        )


def _cli(value: Any) -> str:
    if isinstance(value, list) and value and all(v == value[0] for v in value) and isinstance(value[0], int):
        return str(value[0])
    return repr(value).replace(" ", "")


def write_sha256(path: str | os.PathLike) -> Path:
    """Write ``<path>.sha256`` (``sha256sum``'s format: ``<hex>  <name>``) and return its path."""
    p = Path(path)
    out = p.with_name(p.name + ".sha256")
    out.write_text(f"{sha256_of(p)}  {p.name}\n")
    return out


def verify_sha256(path: str | os.PathLike) -> bool:
    """Whether ``path`` matches the ``<path>.sha256`` beside it (``sha256sum -c`` would pass).

    Raises:
        FileNotFoundError: when either file is missing.
        ValueError: for a ``.sha256`` file that holds no hash.
    """
    p = Path(path)
    sha = p.with_name(p.name + ".sha256")
    words = sha.read_text().split()
    if not words or len(words[0]) != 64:
        raise ValueError(f"{str(sha)!r} holds no SHA-256.")
    return sha256_of(p) == words[0].lower()
