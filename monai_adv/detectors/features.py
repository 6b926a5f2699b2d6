"""Feature capture with forward hooks: the features a detector reads come from the prediction's own pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from monai_adv.utils import plain_tensor

__all__ = ["PENULTIMATE", "OUTPUT", "FeatureHooks", "resolve_layers", "pool_features", "split_batch"]

#: the layer name that means "the input of the network's last ``nn.Linear``" (the penultimate features)
PENULTIMATE = "penultimate"
#: the layer name that means "the network's output" (its class logits, after the detector's ``output_transform``)
OUTPUT = "output"


def _last_linear(network: nn.Module) -> str:
    name = None
    for n, m in network.named_modules():
        if isinstance(m, nn.Linear):
            name = n
    if name is None:
        raise ValueError(
            "the network has no nn.Linear layer, so its penultimate features cannot be found; "
            "pass layers=[...] with module names from network.named_modules()."
        )
    return name


def resolve_layers(network: nn.Module, layers: str | Sequence[str] | None) -> list[str]:
    """Check layer names against ``network.named_modules()``.

    Args:
        network: the classifier.
        layers: ``None`` (the penultimate features), one name, or a sequence of names; the names
            ``"penultimate"`` and ``"output"`` (the network's logits) may appear among them.

    Returns:
        the list of layer names (``"penultimate"`` and ``"output"`` kept as they are).

    Raises:
        TypeError: when ``network`` is not an ``nn.Module``.
        ValueError: for an empty list, a duplicate, or a name that is not a module of the network.
    """
    if not isinstance(network, nn.Module):
        raise TypeError(
            f"network must be a torch nn.Module (hooks are attached to it), got {type(network).__name__}."
        )
    if layers is None:
        layers = [PENULTIMATE]
    elif isinstance(layers, str):
        layers = [layers]
    layers = [str(n) for n in layers]
    if not layers:
        raise ValueError("layers is empty; pass None for the penultimate features.")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers has duplicates: {layers}.")
    names = dict(network.named_modules())
    for n in layers:
        if n == PENULTIMATE:
            _last_linear(network)
        elif n == OUTPUT:
            continue
        elif n not in names or n == "":
            shown = [k for k in names if k][:20]
            raise ValueError(
                f"layer {n!r} does not exist in {type(network).__name__}; available modules include {shown}"
                + (" ..." if len(names) > 21 else "")
            )
    return layers


def pool_features(t: torch.Tensor, layer: str) -> torch.Tensor:
    """Global average pooling of a layer's output to ``(B, channels)``; ``(B, D)`` stays as it is.

    Raises:
        ValueError: when the output is not a floating tensor with a batch dimension.
    """
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim < 2:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"layer {layer!r} produced {shape}, not a floating (B, C, ...) feature tensor.")
    t = plain_tensor(t)
    return t if t.ndim == 2 else t.flatten(2).mean(dim=2)


class FeatureHooks:
    """Forward hooks that record the pooled features of chosen layers on every forward pass.

    Use as a context manager (hooks removed on exit) or with :meth:`register` / :meth:`remove`.
    After a forward pass, :attr:`features` maps each layer name to its ``(B, D)`` features from that
    pass. With ``detach=True`` (the default) the features are detached, so holding them costs no
    autograd graph; an adaptive attack uses ``detach=False`` to differentiate through them.

    Args:
        network: the classifier.
        layers: layer names (see :func:`resolve_layers`); ``"output"`` records the network's output.
        detach: detach the recorded features.
        capture_input: also record the network's input batch in :attr:`inputs` (for detectors that score
            the input itself, e.g. by squeezing it).
        output_transform: picks the class logits out of the network's output for the ``"output"`` layer.
    """

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str] | None,
        detach: bool = True,
        capture_input: bool = False,
        output_transform: Callable[[Any], torch.Tensor] | None = None,
    ) -> None:
        self.network = network
        self.layers = resolve_layers(network, layers)
        self.detach = detach
        self.capture_input = bool(capture_input)
        self.output_transform = output_transform
        self.features: dict[str, torch.Tensor] = {}
        #: the network's latest input batch (with ``capture_input``), else ``None``
        self.inputs: torch.Tensor | None = None
        self._handles: list[Any] = []

    def _hook(self, name: str, pre: bool) -> Callable:
        def record(module: nn.Module, args: Any, output: Any = None) -> None:
            t = args[0] if pre else output
            if name == OUTPUT and self.output_transform is not None:
                t = self.output_transform(t)
            if isinstance(t, (tuple, list)):
                t = t[0]
            t = pool_features(t, name)
            self.features[name] = t.detach() if self.detach else t

        if pre:
            return lambda module, args: record(module, args)
        return lambda module, args, output: record(module, args, output)

    def register(self) -> FeatureHooks:
        """Attach the hooks (idempotent)."""
        if self._handles:
            return self
        modules = dict(self.network.named_modules())
        if self.capture_input:

            def record_input(module: nn.Module, args: Any) -> None:
                t = plain_tensor(args[0])
                self.inputs = t.detach() if self.detach else t

            self._handles.append(self.network.register_forward_pre_hook(record_input))
        for name in self.layers:
            if name == OUTPUT:
                self._handles.append(self.network.register_forward_hook(self._hook(name, pre=False)))
            elif name == PENULTIMATE:
                module = modules[_last_linear(self.network)]
                self._handles.append(module.register_forward_pre_hook(self._hook(name, pre=True)))
            else:
                self._handles.append(modules[name].register_forward_hook(self._hook(name, pre=False)))
        return self

    def remove(self) -> None:
        """Detach the hooks and forget the recorded features."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.features = {}
        self.inputs = None

    @property
    def registered(self) -> bool:
        return bool(self._handles)

    def clear(self) -> None:
        self.features = {}
        self.inputs = None

    def collect(self, batch_size: int | None = None) -> list[torch.Tensor]:
        """The recorded features in layer order.

        Raises:
            RuntimeError: when a layer recorded nothing (it did not run in the forward pass) or its
                batch size differs from ``batch_size``.
        """
        out = []
        for name in self.layers:
            if name not in self.features:
                raise RuntimeError(
                    f"layer {name!r} recorded no features: it did not run in the latest forward pass."
                )
            f = self.features[name]
            if batch_size is not None and f.shape[0] != batch_size:
                raise RuntimeError(
                    f"layer {name!r} recorded a batch of {f.shape[0]}, expected {batch_size}: the latest "
                    "forward pass was not the one being scored."
                )
            out.append(f)
        return out

    def __enter__(self) -> FeatureHooks:
        return self.register()

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def split_batch(
    batch: Any, image_key: str = "image", label_key: str = "label"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Take ``(images, labels or None)`` from a loader's batch.

    A batch may be a dict (MONAI style, ``image_key``/``label_key``), a ``(images, labels, ...)``
    tuple or list, or a tensor of images.

    Raises:
        ValueError: for a dict without ``image_key``.
        TypeError: for any other kind of batch.
    """
    if isinstance(batch, Mapping):
        if image_key not in batch:
            raise ValueError(f"batch dict has keys {sorted(batch)}, but not the image key {image_key!r}.")
        return batch[image_key], batch.get(label_key)
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise TypeError(
        f"cannot read images from a batch of type {type(batch).__name__}; expected a dict, a tensor, or "
        "an (images, labels) tuple."
    )


def iterate_loader(loader: Iterable) -> Iterable:
    """Iterate a loader; a single tensor or an ``(images, labels)`` tuple is one batch."""
    if isinstance(loader, torch.Tensor) or (
        isinstance(loader, tuple) and loader and all(isinstance(t, torch.Tensor) for t in loader)
    ):
        return [loader]
    return loader
