"""Every random state a training run draws from, saved and restored as one, for an exact resume.

A run draws random numbers from torch's global generators (CPU and CUDA: shuffling, dropout, random
starts), numpy's and Python's global generators, and the ``RandomState`` of every MONAI
``Randomizable`` (the attacks' eps and random starts, each augmentation transform). :class:`RandomStates`
captures all of them into plain tensors and numbers (loadable with ``torch.load(..., weights_only=True)``)
and puts them back; :func:`find_randomizables` finds the ``Randomizable`` objects in an engine, a data
loader, a dataset or a transform chain.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = ["RandomStates", "find_randomizables", "numpy_state_dict", "load_numpy_state"]


def numpy_state_dict(rs: np.random.RandomState | None = None) -> dict[str, Any]:
    """A numpy ``RandomState`` (default: numpy's global one) as tensors and numbers."""
    name, keys, pos, has_gauss, gauss = rs.get_state() if rs is not None else np.random.get_state()
    if name != "MT19937":
        raise ValueError(f"cannot save a numpy random state of type {name!r}.")
    return {
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def load_numpy_state(state: Mapping[str, Any], rs: np.random.RandomState | None = None) -> None:
    """Put a state from :func:`numpy_state_dict` back (into ``rs``, or numpy's global generator)."""
    keys = torch.as_tensor(state["keys"]).numpy().astype(np.uint32)
    st = ("MT19937", keys, int(state["pos"]), int(state["has_gauss"]), float(state["gauss"]))
    if rs is None:
        np.random.set_state(st)
    else:
        rs.set_state(st)


def _python_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _load_python_state(state: Mapping[str, Any]) -> None:
    internal = tuple(int(v) for v in torch.as_tensor(state["state"]).tolist())
    random.setstate((int(state["version"]), internal, state["gauss"]))


def _has_random_state(obj: Any) -> bool:
    return isinstance(getattr(obj, "R", None), np.random.RandomState)


#: attributes never followed: networks, loggers, dataset items and caches (large, and never random)
_SKIP_ATTRS = frozenset(
    {"R", "network", "_network", "logger", "data", "_cache", "_hash_keys", "_event_handlers"}
)
_SKIP = (nn.Module, torch.Tensor, torch.optim.Optimizer, np.ndarray, str, bytes, int, float, bool)


def find_randomizables(roots: Mapping[str, Any], max_depth: int = 6) -> dict[str, Any]:
    """The objects with a numpy ``RandomState`` ``R`` (MONAI ``Randomizable``) reachable from ``roots``.

    The search follows data loaders (``.dataset``), datasets (``.transform``, ``.data`` when it is a
    dataset), transform chains (``.transforms``), wrappers such as MONAI's ``RandAffined`` (whose inner
    ``RandAffine`` has its own ``RandomState``), attacks and their inner attacks, and lists, tuples and
    dicts of these; it does not enter networks, optimizers, tensors or arrays. Each object is found
    once, under the first path that reaches it.

    Args:
        roots: ``{name: object}`` to search from; the names start the paths of the result.
        max_depth: how many attribute levels to follow.

    Returns:
        ``{path: object}`` in a deterministic order (the paths are stable across runs of one program).
    """
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(obj: Any, path: str, depth: int) -> None:
        if obj is None or isinstance(obj, _SKIP) or id(obj) in seen or depth > max_depth:
            return
        seen.add(id(obj))
        if _has_random_state(obj):
            found[path] = obj
        if isinstance(obj, Mapping):
            for k in obj:
                visit(obj[k], f"{path}[{k!r}]", depth + 1)
            return
        if isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                visit(v, f"{path}[{i}]", depth + 1)
            return
        try:
            attrs = vars(obj)
        except TypeError:
            return
        if type(obj).__module__.startswith(("ignite.", "torch.")) and not isinstance(
            obj, (torch.utils.data.DataLoader, torch.utils.data.Dataset)
        ):
            return
        for k in sorted(attrs):
            if k.startswith("__") or k in _SKIP_ATTRS:
                continue
            v = attrs[k]
            if isinstance(v, (Mapping, list, tuple)) or _interesting(v):
                visit(v, f"{path}.{k}", depth + 1)

    for name, obj in roots.items():
        visit(obj, name, 0)
    return found


def _interesting(v: Any) -> bool:
    """An attribute value the search follows: no engine, network, tensor, number or string."""
    from ignite.engine import Engine

    if isinstance(v, (_SKIP, Engine)) or callable(v) and not hasattr(v, "__dict__"):
        return False
    return hasattr(v, "__dict__")


class RandomStates:
    """The random states of a run, as one object with ``state_dict`` / ``load_state_dict``.

    Holds torch's global CPU generator, every CUDA device's generator (when CUDA is initialised),
    numpy's and Python's global generators, and the ``RandomState`` of each object of ``randomizables``
    (e.g. the result of :func:`find_randomizables`). The state dict holds only tensors, numbers and
    strings, so it goes into a ``weights_only`` checkpoint.

    Args:
        randomizables: ``{name: object with a numpy RandomState R}``.

    Example::

        states = RandomStates(find_randomizables({"attack": attack, "loader": train_loader}))
        snapshot = states.state_dict()
        ...                                  # anything random
        states.load_state_dict(snapshot)     # the same random numbers come again
    """

    def __init__(self, randomizables: Mapping[str, Any] | None = None) -> None:
        self.randomizables = dict(randomizables or {})
        for name, obj in self.randomizables.items():
            if not _has_random_state(obj):
                raise TypeError(f"{name!r} ({type(obj).__name__}) has no numpy RandomState attribute R.")

    def state_dict(self) -> dict[str, Any]:
        """The current states (copies)."""
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": numpy_state_dict(),
            "python": _python_state(),
            "randomizables": {name: numpy_state_dict(obj.R) for name, obj in self.randomizables.items()},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
        return state

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        """Put saved states back.

        Args:
            state: from :meth:`state_dict`.
            strict: raise when a randomizable of this object has no saved state (or the other way round).

        Raises:
            KeyError: for a missing entry, naming it, when ``strict``.
        """
        saved = dict(state.get("randomizables", {}))
        if strict:
            missing = sorted(set(self.randomizables) - set(saved))
            extra = sorted(set(saved) - set(self.randomizables))
            if missing or extra:
                raise KeyError(
                    f"random states do not match this run: not saved {missing}, saved but unknown here {extra} "
                    "(was the data pipeline or the attack changed?)."
                )
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
        load_numpy_state(state["numpy"])
        _load_python_state(state["python"])
        if "cuda" in state and torch.cuda.is_available():
            cuda = list(state["cuda"])
            if len(cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in cuda])
        for name, obj in self.randomizables.items():
            if name in saved:
                load_numpy_state(saved[name], obj.R)

    def __repr__(self) -> str:
        return f"RandomStates(randomizables={list(self.randomizables)})"
