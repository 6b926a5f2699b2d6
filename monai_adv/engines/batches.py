"""Batches and loaders of the adversarial training engines: batch parsing, unlabeled images, loader cycling.

The helpers the engines used to keep here have their own homes now: the network's eval mode and the
label checks in :mod:`monai_adv.utils`, the DDP helpers in :mod:`monai_adv.distributed`, the KL losses in
:mod:`monai_adv.transforms.losses`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "prepare_engine_batch",
    "check_logits",
    "unlabeled_images",
    "unlabeled_images_like",
    "check_loader_not_empty",
    "CyclingLoader",
]


def prepare_engine_batch(engine: Any, batchdata: Any) -> tuple[Any, Any, tuple, dict]:
    """Run the engine's ``prepare_batch`` and return ``(inputs, targets, args, kwargs)``, as MONAI's engines do.

    Raises:
        ValueError: when there is no batch.
    """
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
    if len(batch) == 2:
        return batch[0], batch[1], (), {}
    inputs, targets, args, kwargs = batch
    return inputs, targets, args, kwargs


def check_logits(logits: Any, batch: int, dense: bool = False) -> torch.Tensor:
    """Check that a network output is class logits ``(batch, K)``, or dense logits ``(batch, K, *spatial)``.

    Args:
        logits: the network output (after the engine's output transform).
        batch: the batch size it must have.
        dense: expect a segmentation output (the batch's labels are label maps).

    Raises:
        ValueError: for anything else, naming the shape.
    """
    if dense:
        if (
            not isinstance(logits, torch.Tensor)
            or logits.ndim < 3
            or logits.shape[0] != batch
            or logits.shape[1] < 2
        ):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"network output {shape} is not dense logits of shape ({batch}, num_classes, *spatial) for the "
                "batch's label maps; pass network_output_transform=... to pick the logits."
            )
        return logits
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        hint = (
            " (a segmentation output: give the batches label maps, (B, 1, *spatial) indices or one-hot)"
            if isinstance(logits, torch.Tensor) and logits.ndim >= 4 and logits.shape[0] == batch
            else ""
        )
        raise ValueError(
            f"network output {shape} is not class logits of shape ({batch}, num_classes){hint}; pass "
            "network_output_transform=... to pick the logits."
        )
    return logits


def unlabeled_images(batch: Any, image_key: str = "image") -> torch.Tensor:
    """The images of an unlabeled batch: a tensor, a dict's ``image_key``, or a tuple/list's first item.

    Raises:
        ValueError: when a dict has no ``image_key``.
        TypeError: for any other batch type.
    """
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        if image_key not in batch:
            raise ValueError(
                f"unlabeled batch is a dict with keys {sorted(batch)}, without the image key {image_key!r}; "
                "set unlabeled_image_key=..."
            )
        return batch[image_key]
    if isinstance(batch, (tuple, list)) and len(batch) > 0 and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(
        f"unlabeled batch of type {type(batch).__name__} is not a tensor, a dict with {image_key!r}, or a "
        "(images, ...) tuple."
    )


def unlabeled_images_like(
    batch: Any, like: torch.Tensor, image_key: str = "image", non_blocking: bool = False, why: str = ""
) -> torch.Tensor:
    """The images of an unlabeled batch (:func:`unlabeled_images`) as plain tensors on ``like``'s device and dtype,
    checked: not empty, the labeled images' channels and spatial size, floating point and finite.

    Args:
        batch: the unlabeled batch.
        like: the labeled images they are trained beside.
        image_key: the images' key in a dict batch.
        non_blocking: the copy's ``non_blocking`` (the engine's).
        why: what makes the shapes have to agree, ended to the shape error (e.g. "RST concatenates them").

    Raises:
        ValueError: for an empty batch, a shape unlike the labeled images', NaN or Inf.
        TypeError: for integer images.
    """
    from monai_adv.utils import plain_tensor

    x = plain_tensor(unlabeled_images(batch, image_key))
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"unlabeled batch of shape {tuple(x.shape)} is empty.")
    if tuple(x.shape[1:]) != tuple(like.shape[1:]):
        raise ValueError(
            f"unlabeled images of shape {tuple(x.shape[1:])} (batch {tuple(x.shape)}) differ from the labeled "
            f"images' shape {tuple(like.shape[1:])} (batch {tuple(like.shape)}); {why + ', so ' if why else ''}both "
            "loaders must produce the same channels and spatial size."
        )
    if not x.is_floating_point():
        raise TypeError(f"unlabeled images must be floating point, got {x.dtype}.")
    if not torch.isfinite(x).all():
        raise ValueError("the unlabeled batch contains NaN or Inf values.")
    return x.to(device=like.device, dtype=like.dtype, non_blocking=non_blocking)


def check_loader_not_empty(loader: Iterable, name: str) -> None:
    """Raise ``ValueError`` when a sized loader has no batches (e.g. a label fraction of 0)."""
    if loader is None:
        raise ValueError(f"{name} is None; a data loader is required.")
    if isinstance(loader, Sized):
        try:
            n = len(loader)
        except TypeError:
            return
        if n == 0:
            ds = getattr(loader, "dataset", None)
            size = f" (its dataset has {len(ds)} items)" if isinstance(ds, Sized) else ""
            raise ValueError(
                f"{name} is empty{size}: no batches to train on (a label fraction of 0, an empty split, or "
                "drop_last with fewer items than one batch?)."
            )


class CyclingLoader:
    """Cycle a data loader forever, independently of the engine's own loader.

    Each pass creates a fresh iterator (so a shuffling loader reshuffles); a ``DistributedSampler``
    gets ``set_epoch(pass_index)`` first, so every rank shuffles alike and each pass differently.

    Its position can be checkpointed (:meth:`state_dict`: the pass, the batches drawn from it, and the
    random states at the moment the pass's iterator was created); after :meth:`load_state_dict` the
    next batch is the one the interrupted run would have drawn next: the pass's iterator is re-created
    from the saved random states (same shuffle, same worker seeds) and the batches already drawn are
    skipped (read and discarded), after which the random states are put back as they were.

    Args:
        loader: any re-iterable of batches.
        name: used in error messages.

    Raises:
        ValueError: when a pass yields no batch at all.
    """

    def __init__(self, loader: Iterable, name: str = "unlabeled_data_loader") -> None:
        check_loader_not_empty(loader, name)
        self.loader = loader
        self.name = name
        self.passes = 0
        self.position = 0
        self._it: Iterator | None = None
        self._states: Any = None
        self._created_with: dict | None = None
        self._pending: dict | None = None

    def _random_states(self) -> Any:
        if self._states is None:
            from monai_adv.engines.rng import RandomStates, find_randomizables

            self._states = RandomStates(find_randomizables({"loader": self.loader}))
        return self._states

    def _new_iterator(self) -> Iterator:
        sampler = getattr(self.loader, "sampler", None) if isinstance(self.loader, DataLoader) else None
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.passes)
        self._created_with = self._random_states().state_dict()
        self.passes += 1
        self.position = 0
        return iter(self.loader)

    def state_dict(self) -> dict[str, Any]:
        """The position in the cycle: ``{"passes", "position", "created_with"}`` (tensors and numbers)."""
        if self._pending is not None:  # restored but not yet used: keep what was restored
            return dict(self._pending)
        return {
            "passes": int(self.passes),
            "position": int(self.position),
            "created_with": self._created_with if self._it is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a saved position at the next :meth:`next` (see the class notes)."""
        self._it = None
        self._pending = dict(state) if state.get("created_with") is not None else None
        if self._pending is None:
            self.passes, self.position = int(state.get("passes", 0)), 0

    def _replay(self) -> None:
        state, self._pending = self._pending, None
        states = self._random_states()
        now = states.state_dict()
        states.load_state_dict(state["created_with"])
        self.passes = int(state["passes"]) - 1
        self._it = self._new_iterator()
        for _ in range(int(state["position"])):
            try:
                next(self._it)
            except StopIteration:
                break
            self.position += 1
        states.load_state_dict(now)

    def next(self) -> Any:
        """The next batch, starting a new pass when the current one is exhausted."""
        if self._pending is not None:
            self._replay()
        if self._it is None:
            self._it = self._new_iterator()
        try:
            batch = next(self._it)
        except StopIteration:
            self._it = self._new_iterator()
            try:
                batch = next(self._it)
            except StopIteration:
                raise ValueError(f"{self.name} yielded no batches; it must not be empty.") from None
        self.position += 1
        return batch
