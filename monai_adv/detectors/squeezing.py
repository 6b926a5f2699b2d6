"""Input consistency: feature squeezing (Xu, Evans & Qi, NDSS 2018), fitted on clean data only.

A clean image and the same image with its bit depth reduced or median-filtered get nearly the same
prediction; an adversarial perturbation, tuned to one exact input, often does not survive the squeeze.
The score is the largest L1 distance between the softmax of the input and that of a squeezed copy.

Bit-depth reduction is not differentiable (rounding has zero gradient almost everywhere), which is
what made squeezing look robust to gradient attacks. With ``bpda=True`` (the default) its backward
pass is the identity (BPDA, Athalye, Carlini & Wagner, ICML 2018), so an adaptive attack
differentiates the score through it; the median filter keeps its own gradient (it is differentiable
almost everywhere).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_adv.detectors.base import AdversarialDetector
from monai_adv.detectors.features import OUTPUT
from monai_adv.precision import resolve_precision
from monai_adv.utils import eval_mode, full_precision

__all__ = ["FeatureSqueezingDetector", "bit_depth_squeeze", "median_squeeze"]


def _straight_through(x: torch.Tensor, squeezed: torch.Tensor) -> torch.Tensor:
    """``squeezed`` in the forward pass, the identity in the backward pass (BPDA)."""
    return x + (squeezed - x).detach()


def bit_depth_squeeze(
    x: torch.Tensor, bits: int, value_range: tuple[float, float] = (0.0, 1.0), bpda: bool = True
) -> torch.Tensor:
    """Round intensities to ``2**bits`` levels over ``value_range`` (values outside are clipped to it).

    Args:
        x: a batch of any shape.
        bits: the bit depth, 1 to 16.
        value_range: the intensity range that the levels span.
        bpda: identity gradient (otherwise the true gradient, which is zero almost everywhere).

    Raises:
        ValueError: for bits outside [1, 16] or an empty range.
    """
    if not 1 <= int(bits) <= 16:
        raise ValueError(f"bits must lie in [1, 16], got {bits!r}.")
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}.")
    levels = 2 ** int(bits) - 1
    u = ((x - lo) / (hi - lo)).clamp(0, 1)
    q = torch.round(u * levels) / levels * (hi - lo) + lo
    return _straight_through(x, q) if bpda else q


def median_squeeze(x: torch.Tensor, size: int, bpda: bool = True) -> torch.Tensor:
    """Median filter of ``size`` voxels per spatial axis over ``(B, C, *spatial)``, same output shape.

    The border is reflected; an even window (Xu et al.'s 2x2) is padded one more voxel after than before
    and takes the lower middle value. Works for 1D to 3D.

    Args:
        x: a batch ``(B, C, *spatial)``.
        size: the window's side, >= 1.
        bpda: identity gradient (otherwise the gradient of the median, which reaches one voxel per window).

    Raises:
        ValueError: for size < 1 or fewer than one spatial axis.
    """
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size!r}.")
    spatial = x.ndim - 2
    if spatial < 1:
        raise ValueError(f"median_squeeze needs a batch (B, C, *spatial), got shape {tuple(x.shape)}.")
    size = int(size)
    before, after = (size - 1) // 2, size // 2
    if size == 1:
        return x
    mode = "reflect" if all(s > after for s in x.shape[2:]) else "replicate"
    xp = F.pad(x, [before, after] * spatial, mode=mode)
    shape = x.shape[2:]
    windows = []
    for offset in itertools.product(range(size), repeat=spatial):
        index = (slice(None), slice(None)) + tuple(slice(o, o + n) for o, n in zip(offset, shape))
        windows.append(xp[index])
    med = torch.stack(windows, dim=-1).median(dim=-1).values
    return _straight_through(x, med) if bpda else med


class FeatureSqueezingDetector(AdversarialDetector):
    """The largest change of the softmax under bit-depth reduction or median filtering.

    ``score(x) = max_s || softmax(f(x)) - softmax(f(s(x))) ||_1`` over the squeezers ``s``: each
    ``bit_depths`` entry and each ``median_sizes`` window. The softmax of ``x`` comes from the
    prediction's own forward pass; each squeezer costs one more forward pass.

    Args:
        network: the classifier.
        layers: must be ``None``: the detector reads the network's output and input.
        bit_depths: bit depths to squeeze to (Xu et al.: 5 for colour images, 1 for MNIST).
        median_sizes: median filter windows (Xu et al.: 2 and 3).
        value_range: the intensity range of the network's input that bit-depth reduction quantises;
            ``None`` (default) takes the smallest and largest clean intensity seen by :meth:`fit`.
        bpda: identity backward through the bit-depth reduction, for adaptive attacks (see the module
            docstring); ``False`` leaves rounding's zero gradient.
        kwargs: ``output_transform``, ``image_key``, ``label_key``, ``progress``, ``amp``.

    Raises:
        ValueError: without any squeezer, for a bit depth outside [1, 16], a window < 1, or a bad range.

    Example::

        det = FeatureSqueezingDetector(net, bit_depths=[5], median_sizes=[2, 3]).fit(clean_loader)
        det.calibrate(val_loader, fpr=0.05)
    """

    _config_keys = ("bit_depths", "median_sizes", "value_range", "bpda")
    needs_input = True

    def __init__(
        self,
        network: nn.Module,
        layers: Any = None,
        bit_depths: Sequence[int] = (5,),
        median_sizes: Sequence[int] = (2, 3),
        value_range: Sequence[float] | None = None,
        bpda: bool = True,
        **kwargs: Any,
    ) -> None:
        if layers not in (None, OUTPUT, [OUTPUT]):
            raise ValueError(f"a FeatureSqueezingDetector reads the network's output; got layers={layers!r}.")
        self.bit_depths = [int(b) for b in bit_depths]
        self.median_sizes = [int(m) for m in median_sizes]
        if not self.bit_depths and not self.median_sizes:
            raise ValueError("a FeatureSqueezingDetector needs at least one bit depth or median window.")
        for b in self.bit_depths:
            bit_depth_squeeze(torch.zeros(1), b)
        for m in self.median_sizes:
            if m < 1:
                raise ValueError(f"median window sizes must be >= 1, got {m}.")
        if value_range is not None:
            value_range = [float(v) for v in value_range]
            bit_depth_squeeze(torch.zeros(1), 1, tuple(value_range))
        super().__init__(network, [OUTPUT], **kwargs)
        self.value_range = value_range
        self.bpda = bool(bpda)
        self._seen_range: list[float] | None = None

    def squeezers(self) -> list[tuple[str, Any]]:
        """``(name, function)`` of every squeezer, in order."""
        rng = tuple(self.value_range or (0.0, 1.0))
        out = [(f"bits{b}", lambda x, b=b: bit_depth_squeeze(x, b, rng, self.bpda)) for b in self.bit_depths]
        # the median is differentiable almost everywhere (its gradient reaches the middle voxel of each
        # window); measured on a small CNN, an adaptive attack evades squeezing better through it than
        # through the identity, so only the rounding (zero gradient) is crossed by BPDA
        out += [(f"median{m}", lambda x, m=m: median_squeeze(x, m, bpda=False)) for m in self.median_sizes]
        return out

    def _observe_inputs(self, x: torch.Tensor) -> None:
        lo, hi = float(x.min()), float(x.max())
        r = self._seen_range
        self._seen_range = [lo, hi] if r is None else [min(r[0], lo), max(r[1], hi)]

    def fit(self, loader: Any, use_labels: bool = True) -> FeatureSqueezingDetector:
        self._seen_range = None
        super().fit(loader, use_labels=use_labels)
        if self.value_range is None:
            lo, hi = self._seen_range
            if not hi > lo:
                raise ValueError(
                    f"the clean fit images are all {lo}: no intensity range to quantise; pass value_range."
                )
            self.value_range = [lo, hi]
        return self

    def _fit_layer(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> dict[str, torch.Tensor]:
        if features.shape[1] < 2:
            raise ValueError(
                f"the network outputs {features.shape[1]} value per item; feature squeezing compares softmax "
                "outputs of K >= 2 classes."
            )
        return {}

    def _score(self, features: Sequence[torch.Tensor], inputs: torch.Tensor | None) -> torch.Tensor:
        logits = features[0]
        if logits.shape[0] != inputs.shape[0]:
            raise ValueError(f"{logits.shape[0]} outputs for an input batch of {inputs.shape[0]}.")
        p = torch.softmax(logits, dim=1)
        prec = resolve_precision(self.amp, inputs.device, channels_last=False)
        score = None
        with eval_mode(self.network):
            for _, squeeze in self.squeezers():
                autocast = torch.autocast(
                    inputs.device.type, dtype=prec.dtype or torch.bfloat16, enabled=prec.amp
                )
                with autocast:
                    z = self.output_transform(self.network(squeeze(inputs)))
                with torch.autocast(inputs.device.type, enabled=False):
                    d = (torch.softmax(full_precision(z).to(p.dtype), dim=1) - p).abs().sum(1)
                score = d if score is None else torch.maximum(score, d)
        return score
