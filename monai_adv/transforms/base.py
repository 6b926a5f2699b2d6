"""The mechanics every attack shares, written once.

An attack is a MONAI transform ``atk(img, label, mask=None) -> adversarial img``. The base class
:class:`AdversarialAttack` does everything that is not the attack's own algorithm: input checks,
batching of one item, dtype and device handling, eps drawing, the network's eval mode, gradients
that leave the parameters alone and work under ``torch.no_grad()``, targeting, the loss, the
projection onto the eps-ball, the region-of-interest mask and the value range. A subclass writes
only :meth:`AdversarialAttack._attack`, which reads like the paper's algorithm.

Dense outputs (segmentation) are handled here too, once: labels with spatial axes switch an attack
to dense mode, the network output must then be ``(B, K, *spatial)`` logits, the default loss is the
mean voxel cross-entropy, and success is judged by the prediction's agreement with the label (see
:class:`AdversarialAttack`). An optional MONAI ``Inferer`` computes the network output.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn as nn
from monai.transforms import Randomizable, Transform
from monai.utils import convert_to_dst_type

from monai_adv.precision import log_precision, network_memory_format, parse_amp, resolve_precision
from monai_adv.transforms.inputs import AttackInputs
from monai_adv.transforms.losses import (
    is_multilabel_loss,
    margin,
    multilabel_agreement,
    multilabel_margin,
    per_sample_cross_entropy,
    per_sample_dice,
    resolve_attack_loss,
)
from monai_adv.utils import (
    default_output_transform,
    eval_mode,
    network_device,
    parse_amp_dtype,
)

__all__ = [
    "AdversarialAttack",
    "NormBoundedAttack",
    "default_output_transform",
    "EpsType",
    "ValueRange",
    "LABEL_TYPES",
    "per_sample_view",
    "check_steps",
    "check_step_size",
    "default_amp_dtype",
    "network_memory_format",
    "describe_attack",
    "DENSE_SUCCESS",
]

EpsType = Union[float, tuple[float, float]]
ValueRange = Union[tuple[float, float], None]
LABEL_TYPES = (int, np.integer, torch.Tensor, np.ndarray, Sequence)
#: how success is judged for dense outputs: per-sample Dice, or the fraction of voxels predicted as the label
DENSE_SUCCESS = ("dice", "voxels")


def default_amp_dtype(device: torch.device | str) -> torch.dtype:
    """The autocast dtype used when none is given: bfloat16 on CPU, float16 on CUDA (and others)."""
    return torch.bfloat16 if torch.device(device).type == "cpu" else torch.float16


def per_sample_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Reshape a per-sample vector ``(B,)`` to ``(B, 1, ..., 1)`` with ``ndim`` dimensions."""
    return t.reshape(t.shape[0], *([1] * (ndim - 1)))


def check_steps(steps: int, name: str = "steps") -> int:
    """Check an iteration count (an integer >= 1)."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {steps!r}.")
    return int(steps)


def check_step_size(name: str, value: float | None) -> float | None:
    """Check a step size (> 0, or None for an attack's default)."""
    if value is not None and not float(value) > 0:
        raise ValueError(f"{name} must be > 0 (or None for the default), got {value!r}.")
    return None if value is None else float(value)


class AdversarialAttack(AttackInputs, Randomizable, Transform):
    """Base class of every attack transform.

    Call as ``atk(img, label)`` or ``atk(img, label, mask=roi)``. ``img`` is one channel-first item
    ``(C, *spatial)`` or a batch ``(B, C, *spatial)``, as a torch tensor, MONAI ``MetaTensor`` or
    numpy array; the result has its type, shape, dtype and device (and, for a MetaTensor, its
    metadata). The network runs on its own device and in eval mode, restored afterwards.

    **Dense outputs (segmentation).** A network returning logits ``(B, K, *spatial)`` is attacked
    with dense labels: class indices ``(B, 1, *spatial)`` (``(1, *spatial)`` for one item) or one-hot
    ``(B, K, *spatial)`` (``(K, *spatial)``); the mode follows from the labels having spatial axes
    and is checked against the output. The default loss is the per-sample mean voxel cross-entropy;
    ``loss`` gets ``(logits (B, K, *spatial), labels (B, *spatial))`` and returns ``(B,)`` (e.g.
    :func:`~monai_adv.transforms.losses.per_sample_dice_loss`). Targeted, the label is the target
    mask. **Success** is judged on the argmax prediction's *agreement* with the label, per sample:
    its Dice (``dense_success="dice"``, the mean over the classes in prediction or label) or the
    fraction of voxels predicted as the label (``"voxels"``). Untargeted, an attack succeeds when the
    agreement with the label falls *below* ``dense_threshold``; targeted, when the agreement with the
    target *exceeds* it. Attacks that stop early on success (APGD's first adversarial point,
    Square's finished samples, the ensemble's skipped samples) stop there; ``dense_threshold=0``
    makes no sample count as fooled, so every attack spends its whole budget on driving the
    agreement down. Attacks that make no sense for dense outputs (the detector-aware
    :class:`~monai_adv.transforms.AdaptiveAttack`) raise a ``ValueError``.

    **Multi-label (sigmoid) outputs.** With a multi-label loss (``loss="bce"``:
    :func:`~monai_adv.transforms.losses.per_sample_bce`, or any loss marked with
    :func:`~monai_adv.transforms.losses.multilabel_loss`) the labels are multi-hot, of the logits'
    shape: ``(B, K)`` for a multi-label classifier, ``(B, K, *spatial)`` for a segmentation network
    with one sigmoid mask per channel (overlapping regions, e.g. BraTS' TC/WT/ET); one item's labels
    may drop the batch axis. The prediction is ``logits > 0`` (``sigmoid > 0.5``) per label; an
    untargeted attack on a classifier succeeds when any label flips, on dense outputs when the mean
    per-channel Dice with the labels falls below ``dense_threshold`` (targeted: reaches every target
    label, or exceeds the threshold).

    Args:
        network: the classifier under attack; returns logits ``(B, num_classes)`` (or, for
            segmentation, ``(B, num_classes, *spatial)``), or a tuple or dict from which
            ``output_transform`` picks them.
        value_range: ``(low, high)`` that every output intensity lies in, or ``None`` for unbounded
            images (HU, z-scored).
        spatial_dims: 2 for images, 3 for volumes.
        targeted: when True, ``label`` is the class the attack drives the prediction *to*.
        loss: ``loss(logits, labels)`` returning per-sample values ``(B,)`` (or a scalar) that the
            attack increases (untargeted) or decreases (targeted); default cross-entropy. A name of
            :data:`~monai_adv.transforms.ATTACK_LOSSES`: ``"ce"`` (the default) or ``"bce"``
            (multi-label outputs, above).
        output_transform: maps the network's output to logits; default
            :func:`default_output_transform`.
        amp: run the network's forward and backward under ``torch.autocast`` (mixed precision): True,
            False, or ``"auto"`` (resolved on the network's device at each call by
            :func:`~monai_adv.precision.resolve_precision`: autocast on CUDA; on the CPU bf16 only
            where the CPU runs it natively, else full precision). The perturbation, the step, the
            projection and the result stay in the caller's dtype, so every invariant holds exactly as
            in full precision; only the gradient is computed in low precision. With float16, the
            objective is scaled before the backward pass (and the scale halved on overflow) so that
            small gradients do not underflow.
        amp_dtype: the autocast dtype, ``torch.bfloat16`` or ``torch.float16``; None: bfloat16 on
            CPU, float16 on CUDA.
        channels_last: convert the network (in place, as ``module.to(memory_format=...)`` does) and
            the attacked batch to the channels-last layout, which convolutions run faster in on CPU
            and on tensor cores. ``"auto"``: where :func:`~monai_adv.precision.resolve_precision`
            says it is faster (the CPU; CUDA under autocast). A network whose weights are already
            channels-last gets channels-last inputs without asking.
        inferer: optional MONAI ``Inferer`` (e.g. ``SlidingWindowInferer``), or any callable
            ``inferer(inputs, network)``, that computes the network output during the attack, with
            gradients through every window: a volume larger than the training patch is attacked
            exactly as it is evaluated. None: ``network(inputs)``.
        dense_success: how success is judged for dense outputs, ``"dice"`` or ``"voxels"`` (above).
        dense_threshold: the agreement threshold in [0, 1] for dense success (above).

    Raises:
        TypeError: when ``network`` or ``inferer`` is not callable.
        ValueError: for a bad ``spatial_dims``, ``value_range``, ``amp_dtype``, ``dense_success`` or
            ``dense_threshold``.
    """

    #: whether the attack needs gradients of the network (False for score-based black-box attacks)
    uses_gradients: bool = True
    #: whether the attack needs a fitted detector (it attacks the classifier and the detector together)
    needs_detector: bool = False
    #: whether the attack handles dense (segmentation) outputs and labels
    supports_dense: bool = True

    def __init__(
        self,
        network: nn.Module | Callable[[torch.Tensor], Any],
        *,
        value_range: ValueRange = (0.0, 1.0),
        spatial_dims: int = 2,
        targeted: bool = False,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        output_transform: Callable[[Any], torch.Tensor] = default_output_transform,
        amp: bool | str = False,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool | str = False,
        inferer: Callable[..., Any] | None = None,
        dense_success: str = "dice",
        dense_threshold: float = 0.5,
    ) -> None:
        if not callable(network):
            raise TypeError(f"network must be a torch module or callable, got {type(network).__name__}.")
        if inferer is not None and not callable(inferer):
            raise TypeError(f"inferer must be a MONAI Inferer or a callable, got {type(inferer).__name__}.")
        if dense_success not in DENSE_SUCCESS:
            raise ValueError(f"dense_success must be one of {DENSE_SUCCESS}, got {dense_success!r}.")
        if not 0.0 <= float(dense_threshold) <= 1.0:
            raise ValueError(f"dense_threshold must be in [0, 1], got {dense_threshold!r}.")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if value_range is not None:
            if len(value_range) != 2:
                raise ValueError(f"value_range must be (low, high) or None, got {value_range!r}.")
            low, high = float(value_range[0]), float(value_range[1])
            if not (np.isfinite(low) and np.isfinite(high)) or low >= high:
                raise ValueError(
                    f"value_range must be finite with low < high, got {value_range!r} (inverted?)."
                )
            value_range = (low, high)
        amp_dtype = parse_amp_dtype(amp_dtype)
        # MONAI's shared default stream until seeded; see ``R``
        self._random_holder: list[np.random.RandomState] = [Randomizable.R]
        self.network = network
        self.value_range = value_range
        self.spatial_dims = spatial_dims
        self.targeted = bool(targeted)
        self.loss = resolve_attack_loss(loss)
        self.output_transform = output_transform
        #: what was asked for (``"auto"``, True, False); ``amp`` / ``channels_last`` hold the resolution
        self.amp_request = parse_amp(amp)
        self.channels_last_request = parse_amp(channels_last, "channels_last")
        self.amp_dtype = amp_dtype
        self._resolve_precision(network_device(network))
        self.inferer = inferer
        self.dense_success = dense_success
        self.dense_threshold = float(dense_threshold)
        self.num_classes: int | None = None
        self._label_classes: int | None = None  # K of one-hot dense labels in the current call
        self._grad_scale = 2.0**16  # float16 only: lowered on overflow, kept across calls

    # ------------------------------------------------------------------------------------------
    # the public call
    # ------------------------------------------------------------------------------------------
    def __call__(self, img: Any, label: Any, mask: Any | None = None) -> Any:  # type: ignore[override]
        """Return the adversarial version of ``img``.

        Args:
            img: one item ``(C, *spatial)`` or a batch ``(B, C, *spatial)``, floating point.
            label: the true class (untargeted) or the target class (targeted): an int, a
                0-d/1-element tensor (broadcast over a batch), ``(B,)`` or ``(B, 1)``; for a
                segmentation network a dense label map: class indices ``(B, 1, *spatial)`` (one item:
                ``(1, *spatial)``) or one-hot ``(B, K, *spatial)`` (``(K, *spatial)``); one map is
                broadcast over a batch.
            mask: optional region of interest, nonzero where the image may change; shape
                ``spatial``, ``(1 or C, *spatial)`` or ``(B, 1 or C, *spatial)``.

        Raises:
            ValueError: for a wrong number of dimensions, NaN/Inf values, an image outside
                ``value_range``, labels of the wrong shape or out of range, a mask that does not
                fit, a network output that is not class logits (or, for dense labels, not
                ``(B, K, *spatial)`` logits that fit them), or dense labels for an attack without
                dense support.
            TypeError: for a non-floating image.
        """
        # inference-mode tensors cannot enter autograd: work on normal copies (MONAI evaluators may
        # run under torch.inference_mode as well as torch.no_grad)
        with torch.inference_mode(False):
            x, batched = self._as_batch(img)
            device = self._network_device(x.device)
            x_work = x.to(device=device, dtype=self._network_dtype(x.dtype), copy=True)
            y = self._labels(label, x.shape[0], device).clone()
            m = self._mask(mask, x_work)
            m = m.clone() if m is not None else None
            self.randomize(None)
            generator = self._generator(device)
            self._prepare_precision(device, x_work.ndim)
            # eval mode for the attack; every submodule gets its own mode back, so that a partly frozen
            # network (say, batch norm kept in eval while fine-tuning) comes back exactly as it was
            with eval_mode(self.network), torch.enable_grad() if self.uses_gradients else torch.no_grad():
                x_adv = self._attack(x_work, y, m, generator)
            x_adv = self._finalize(x_adv.detach().to(device=x.device, dtype=x.dtype), x.clone(), m)
        if not batched:
            x_adv = x_adv[0]
        out, *_ = convert_to_dst_type(x_adv, img)
        return out

    def _attack(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """The attack's own algorithm on a batch; subclasses implement it.

        Args:
            x: the clean batch ``(B, C, *spatial)`` on the network's device and dtype.
            y: labels ``(B,)``, or dense class indices ``(B, *spatial)`` (targets when ``targeted``).
            mask: ``None`` or a 0/1 tensor broadcastable to ``x``.
            generator: the torch generator to draw all randomness from (seeded by ``self.R``).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _attack.")

    def randomize(self, data: Any = None) -> None:
        """Draw the per-call random factors (the torch seed) from ``self.R``."""
        self._seed = int(self.R.randint(0, 2**31 - 1))

    # ------------------------------------------------------------------------------------------
    # network access
    # ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Any:
        """The network's raw output on ``x``: through ``inferer`` when one is set, in the network's layout."""
        x = self.to_network_layout(x)
        return self.network(x) if self.inferer is None else self.inferer(x, self.network)

    @property
    def multilabel(self) -> bool:
        """Whether the loss is a multi-label one: labels are then multi-hot, of the logits' shape."""
        return is_multilabel_loss(self.loss)

    def is_dense(self, y: torch.Tensor) -> bool:
        """Whether internal labels are dense: class indices ``(B, *spatial)`` rather than ``(B,)``
        (multi-label: ``(B, K, *spatial)`` rather than ``(B, K)``)."""
        return y.ndim > (2 if self.multilabel else 1)

    def logits(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Run the network and return checked logits: ``(B, num_classes)``, or ``(B, num_classes, *spatial)`` for dense labels.

        Args:
            x: the batch to classify.
            y: optional labels ``(B,)`` or dense ``(B, *spatial)``, checked against the output's
                shape and number of classes.

        Raises:
            ValueError: when the output is not a floating ``(B, K)`` tensor with ``K >= 2`` (for dense
                labels: ``(B, K, *spatial)`` with the labels' spatial shape and, for one-hot labels,
                their ``K``), or a label is out of range.
        """
        with self.autocast():
            out = self.output_transform(self.forward(x))
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"network output (after output_transform) is {type(out).__name__}, not a tensor of class logits."
            )
        if y is not None and self.multilabel:
            if not out.is_floating_point() or tuple(out.shape) != tuple(y.shape):
                raise ValueError(
                    f"network output of shape {tuple(out.shape)} and dtype {out.dtype} does not fit multi-hot "
                    f"labels of shape {tuple(y.shape)}: a multi-label loss needs sigmoid logits of the labels' shape."
                )
        elif y is not None and self.is_dense(y):
            self._check_dense_output(out, x, y)
        elif out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] < 2 or not out.is_floating_point():
            dense_hint = (
                "; it looks like a segmentation output: pass dense labels, class indices (B, 1, *spatial) or "
                "one-hot (B, K, *spatial)"
                if out.ndim == x.ndim and out.shape[0] == x.shape[0]
                else "; for a multi-output network, pass output_transform=... to pick the logits"
            )
            raise ValueError(
                f"network output of shape {tuple(out.shape)} and dtype {out.dtype} is not class logits "
                f"(expected floating (B={x.shape[0]}, num_classes>=2)) for class labels{dense_hint}."
            )
        if y is not None and not self.multilabel:
            self._check_label_range(y, out.shape[1])
        # low-precision logits go back to the caller's dtype, so the loss and every comparison the
        # attack makes on them are computed in full precision
        return out.to(x.dtype) if out.dtype != x.dtype and x.is_floating_point() else out

    def loss_per_sample(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The attack loss, per sample ``(B,)`` (or a scalar for a custom loss that reduces).

        Args:
            logits: class logits ``(B, K)`` or dense logits ``(B, K, *spatial)``.
            y: labels ``(B,)`` or dense class indices ``(B, *spatial)``.
            loss: use this loss instead of ``self.loss`` (attacks whose loss changes per step).

        Raises:
            ValueError: when a custom loss returns anything but a scalar or ``(B,)``.
        """
        loss = loss if loss is not None else self.loss
        if loss is None:
            return per_sample_cross_entropy(logits, y)
        value = loss(logits, y)
        if not isinstance(value, torch.Tensor) or value.ndim > 1:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"a custom attack loss must return a scalar or a per-sample (B,) tensor, got {shape}"
                + ("; average a per-voxel loss over the voxels." if self.is_dense(y) else ".")
            )
        return value

    def objective_and_grad(
        self,
        x_adv: torch.Tensor,
        y: torch.Tensor,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient of the objective the attack *ascends*, w.r.t. the input only.

        The objective is the loss (untargeted) or minus the loss (targeted). Parameters' ``.grad``
        are not touched: the gradient is taken with ``torch.autograd.grad`` on the input alone.

        Args:
            x_adv: the current point.
            y: labels (targets when ``targeted``).
            loss: use this loss instead of ``self.loss`` for this step (see :meth:`loss_per_sample`).

        Returns:
            ``(grad, objective per sample (B,) or scalar, logits)``, all detached.
        """
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self.logits(x_adv, y)
        objective = self.loss_per_sample(logits, y, loss)
        if self.targeted:
            objective = -objective
        grad = self.input_grad(objective.sum(), x_adv)
        return grad, objective.detach(), logits.detach()

    # ------------------------------------------------------------------------------------------
    # mixed precision
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def is_adversarial_full_precision(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample success judged by the network in its own precision (autocast off), one forward pass.

        Attacks that keep the first point low-precision logits call adversarial use it to confirm
        their result, since a point just across the decision boundary in bf16 may not be in fp32.
        """
        amp, self.amp = self.amp, False
        try:
            return self.is_adversarial(self.logits(x, y), y)
        finally:
            self.amp = amp

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context the network runs in: ``torch.autocast`` when ``amp`` is on, else a no-op."""
        if not self.amp:
            return contextlib.nullcontext()
        device = getattr(self, "_amp_device", None) or self._network_device(torch.device("cpu"))
        return torch.autocast(device.type, dtype=self.resolved_amp_dtype(device))

    def resolved_amp_dtype(self, device: torch.device | str) -> torch.dtype:
        """``amp_dtype``, or the default for ``device`` when it is None."""
        return self.amp_dtype if self.amp_dtype is not None else default_amp_dtype(device)

    def to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout the network's weights use (channels-last or the default)."""
        fmt = getattr(self, "_memory_format", None)
        return x.contiguous(memory_format=fmt) if fmt is not None and x.ndim in (4, 5) else x

    def input_grad(self, objective: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """``d objective / d inputs``, detached, in the inputs' dtype; parameters' ``.grad`` untouched.

        Under float16 autocast the objective is multiplied by a loss scale before the backward pass,
        so that gradients far below float16's smallest normal number (6e-5) survive, and divided out
        afterwards in the inputs' dtype. On an overflow (Inf/NaN in the gradient) the scale is halved
        and the backward pass repeated, as ``torch.amp.GradScaler`` does for parameters.
        """
        scaled = self.amp and self.resolved_amp_dtype(inputs.device) == torch.float16
        if not scaled:
            (grad,) = torch.autograd.grad(objective, inputs)
            return grad.detach()
        while True:
            scale = self._grad_scale
            (grad,) = torch.autograd.grad(objective * scale, inputs, retain_graph=scale > 1.0)
            if torch.isfinite(grad).all() or scale <= 1.0:
                return (grad / scale).detach()
            self._grad_scale = scale / 2.0

    def _resolve_precision(self, device: torch.device | str) -> None:
        """Set ``amp`` and ``channels_last`` from what was asked for, on ``device`` (``"auto"`` resolved there)."""
        p = resolve_precision(self.amp_request, device, self.amp_dtype, self.channels_last_request)
        self.precision = p
        self.amp = p.amp
        self.channels_last = p.channels_last
        if "auto" in (self.amp_request, self.channels_last_request):
            log_precision(p, f"{type(self).__name__}")

    def _prepare_precision(self, device: torch.device, ndim: int) -> None:
        """Fix the autocast device, the precision (``"auto"`` resolved on ``device``) and the memory layout for this call."""
        self._amp_device = device
        if "auto" in (self.amp_request, self.channels_last_request):
            self._resolve_precision(device)
        if self.channels_last and isinstance(self.network, nn.Module) and ndim in (4, 5):
            fmt = torch.channels_last if ndim == 4 else torch.channels_last_3d
            if network_memory_format(self.network) != fmt:
                self.network.to(memory_format=fmt)
        self._memory_format = network_memory_format(self.network)

    # ------------------------------------------------------------------------------------------
    # success: one definition for every attack
    # ------------------------------------------------------------------------------------------
    def voxel_attack_margin(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The differentiable logit margin, positive while the label still wins (untargeted) or the target does not.

        Untargeted: ``z_y - max_{j != y} z_j``; targeted: the strongest other class's lead over the
        target. One value per sample ``(B,)``, or per voxel ``(B, *spatial)`` for dense outputs.
        """
        m = multilabel_margin(logits, y) if self.multilabel else margin(logits, y)
        return -m if self.label_is_target else m

    def attack_margin(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample margin ``(B,)`` that is positive while the attack has not succeeded.

        Untargeted: ``z_y - max_{j != y} z_j`` (the true class still wins); targeted: the strongest
        other class's lead over the target. Dense outputs: ``agreement - dense_threshold``
        (untargeted) or ``dense_threshold - agreement`` (targeted), with the agreement of
        :meth:`dense_agreement`; it is piecewise constant, so attacks that need a gradient use
        :meth:`voxel_attack_margin` instead.
        """
        if self.is_dense(y):
            agreement = self.dense_agreement(logits, y).to(logits.dtype)
            return (
                self.dense_threshold - agreement if self.label_is_target else agreement - self.dense_threshold
            )
        return self.voxel_attack_margin(logits, y)

    def dense_agreement(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample agreement ``(B,)`` in [0, 1] of the argmax prediction with dense labels ``(B, *spatial)``.

        ``dense_success="dice"``: the Dice of :func:`~monai_adv.transforms.losses.per_sample_dice`
        (mean over the classes in prediction or label); ``"voxels"``: the fraction of voxels predicted
        as the label.
        """
        if self.multilabel:
            if self.dense_success == "voxels":
                return ((logits > 0) == (y > 0.5)).flatten(1).float().mean(dim=1)
            return multilabel_agreement(logits, y)
        pred = logits.argmax(dim=1)
        if self.dense_success == "voxels":
            return (pred == y).flatten(1).float().mean(dim=1)
        return per_sample_dice(pred, y, logits.shape[1])

    @property
    def label_is_target(self) -> bool:
        """Whether ``label`` is the class to reach (a targeted attack) rather than the true class.

        ``targeted`` for every attack except those that choose their own targets (APGD-T and FAB-T
        with ``n_target_classes``): they take the true class and succeed on any misclassification.
        """
        return self.targeted

    @staticmethod
    def succeeded(attack_margin: torch.Tensor, kappa: float = 0.0) -> torch.Tensor:
        """Per-sample success from :meth:`attack_margin`: another class (or the target) wins strictly, by ``kappa``.

        A tie is not a success: ``argmax`` may still pick the true class.

        Args:
            attack_margin: the margins ``(B,)``.
            kappa: the confidence the success must have (the C&W ``kappa``), >= 0.
        """
        return (attack_margin < 0) & (attack_margin <= -kappa)

    def is_adversarial(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample success: misclassified (untargeted) or classified as the target (targeted).

        Dense outputs: the agreement with the label below ``dense_threshold`` (untargeted), or with
        the target above it (targeted).
        """
        return self.succeeded(self.attack_margin(logits, y))

    # ------------------------------------------------------------------------------------------
    # what the attack is, for reports
    # ------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What this attack is, for reports: ``{"name", "type", "eps", "norm", "steps", "needs_detector", ...}``.

        ``name`` is a short label (``"PGD-10"``), ``type`` the class name, ``eps`` a number, a
        ``[low, high]`` range or None (no eps-ball), ``norm`` ``"linf"``/``"l2"`` or None, ``steps`` the
        iterations (or queries) or None, ``needs_detector`` whether it attacks a detector too,
        ``uses_gradients`` whether it needs the network's gradients, ``targeted`` as set.
        """
        steps = self._steps()
        return {
            "name": type(self).__name__ if steps is None or steps == 1 else f"{type(self).__name__}-{steps}",
            "type": type(self).__name__,
            "eps": None,
            "norm": None,
            "steps": steps,
            "needs_detector": bool(self.needs_detector),
            "uses_gradients": bool(self.uses_gradients),
            "targeted": self.targeted,
        }

    def _steps(self) -> int | None:
        """The iteration count reported by :meth:`describe` (None when the attack has none)."""
        steps = vars(self).get("steps")
        return None if steps is None else int(steps)

    # ------------------------------------------------------------------------------------------
    # shared geometry
    # ------------------------------------------------------------------------------------------
    def clip_to_range(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp to ``value_range`` (no-op when it is None)."""
        if self.value_range is None:
            return x
        return x.clamp(self.value_range[0], self.value_range[1])

    def _network_device(self, fallback: torch.device) -> torch.device:
        return network_device(self.network, fallback)

    def _network_dtype(self, fallback: torch.dtype) -> torch.dtype:
        if isinstance(self.network, nn.Module):
            for p in self.network.parameters():
                if p.is_floating_point():
                    return p.dtype
        return fallback

    def _generator(self, device: torch.device) -> torch.Generator:
        g = torch.Generator(device=device)
        g.manual_seed(self._seed)
        return g

    def _finalize(self, x_adv: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Re-apply mask and value range in the caller's dtype (guards against rounding on the way back).

        The mask selects voxels (``torch.where``) rather than scaling the difference: ``x + (x_adv - x)``
        rounds, and would move a voxel that an eps-ball attack inside (an ensemble member, say) put
        exactly on the ball's surface just outside it.
        """
        if mask is not None:
            x_adv = torch.where(mask.to(device=x.device) != 0, x_adv, x)
        return self.clip_to_range(x_adv)

    @property
    def R(self) -> np.random.RandomState:
        """The attack's random state (eps drawn from a range, random starts, Square's squares).

        It lives in a holder that this attack's shallow copies share (:meth:`with_precision`,
        :meth:`with_network`, the copy an engine runs inside a mixed-precision step), so that seeding
        the attack the user holds, as a bundle's ``initialize`` list does after the trainer is built,
        seeds the copy that runs (else training under autocast would not repeat for a seed). A deep copy
        gets a state of its own.
        """
        holder = self.__dict__.get("_random_holder")
        return Randomizable.R if holder is None else holder[0]

    @R.setter
    def R(self, state: np.random.RandomState) -> None:
        holder = self.__dict__.get("_random_holder")
        if holder is None:
            self.__dict__["_random_holder"] = [state]
        else:
            holder[0] = state

    def with_network(self, network: nn.Module | Callable[[torch.Tensor], Any]) -> AdversarialAttack:
        """A shallow copy of this attack aimed at another network (e.g. a surrogate)."""
        clone = copy.copy(self)
        clone.network = network
        clone.num_classes = None
        return clone

    def with_precision(self, amp: bool, amp_dtype: torch.dtype | None = None) -> AdversarialAttack:
        """This attack, or a shallow copy of it, with ``amp`` and ``amp_dtype`` set as given.

        Engines use it to run the attack inside a mixed-precision step in that step's precision.
        """
        if self.amp_request != "auto" and self.amp == bool(amp) and (not amp or self.amp_dtype == amp_dtype):
            return self
        clone = copy.copy(self)
        clone.amp = clone.amp_request = bool(amp)
        clone.amp_dtype = amp_dtype
        clone.precision = resolve_precision(
            clone.amp, clone.precision.device_type, amp_dtype, clone.channels_last
        )
        return clone

    def __repr__(self) -> str:
        skip = {"network", "R", "output_transform", "num_classes", "_seed", "inferer", "precision"}
        args = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if k not in skip and not k.startswith("_")
        )
        return f"{type(self).__name__}({args})"


class NormBoundedAttack(AdversarialAttack):
    """An attack whose perturbation lies in an eps-ball (L-infinity or L2) around the input.

    Args:
        network: the classifier under attack.
        eps: the radius in the image's own intensity units (L-infinity: per voxel; L2: over the
            whole item, or the region of interest when a mask is given). A ``(low, high)`` tuple draws
            eps uniformly once per call.
        norm: ``"linf"`` or ``"l2"``.
        kwargs: see :class:`AdversarialAttack`.

    Raises:
        ValueError: for eps < 0, an inverted eps range, or an unknown norm.
    """

    supported_norms: tuple[str, ...] = ("linf", "l2")

    def __init__(
        self, network: nn.Module | Callable, eps: EpsType, *, norm: str = "linf", **kwargs: Any
    ) -> None:
        super().__init__(network, **kwargs)
        self.eps = self._check_eps(eps)
        norm = str(norm).lower()
        if norm not in self.supported_norms:
            raise ValueError(
                f"norm must be one of {self.supported_norms} for {type(self).__name__}, got {norm!r}."
            )
        self.norm = norm

    @staticmethod
    def _check_eps(eps: EpsType) -> EpsType:
        if isinstance(eps, (tuple, list)):
            if len(eps) != 2:
                raise ValueError(f"eps must be a number or a (low, high) tuple, got {eps!r}.")
            low, high = float(eps[0]), float(eps[1])
            if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high < low:
                raise ValueError(f"eps range must satisfy 0 <= low <= high, got {eps!r}.")
            return (low, high)
        eps_f = float(eps)
        if not np.isfinite(eps_f) or eps_f < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps!r}.")
        return eps_f

    def randomize(self, data: Any = None) -> None:
        super().randomize(data)
        if isinstance(self.eps, tuple):
            self._eps_value = float(self.R.uniform(self.eps[0], self.eps[1]))
        else:
            self._eps_value = float(self.eps)

    def describe(self) -> dict[str, Any]:
        """:meth:`AdversarialAttack.describe` with this attack's ``eps`` and ``norm``."""
        return {
            **super().describe(),
            "eps": list(self.eps) if isinstance(self.eps, tuple) else self.eps,
            "norm": self.norm,
        }

    @property
    def current_eps(self) -> float:
        """The eps of the latest call (drawn from the range when ``eps`` is a tuple)."""
        return getattr(self, "_eps_value", self.eps if not isinstance(self.eps, tuple) else float("nan"))

    # geometry -----------------------------------------------------------------------------------
    def per_sample_norm(self, t: torch.Tensor) -> torch.Tensor:
        """The attack norm of each item, shaped ``(B, 1, ..., 1)``."""
        flat = t.flatten(1)
        n = flat.abs().amax(dim=1) if self.norm == "linf" else flat.norm(p=2, dim=1)
        return per_sample_view(n, t.ndim)

    def steepest_direction(self, grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The unit-norm direction of steepest ascent: ``sign(g)`` (Linf) or ``g / ||g||_2`` (L2).

        The gradient is restricted to the mask first, so an L2 step spends its whole budget inside
        the region of interest.
        """
        if mask is not None:
            grad = grad * mask
        if self.norm == "linf":
            return grad.sign()
        return grad / self.per_sample_norm(grad).clamp_min(1e-12)

    def project(
        self, x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Project onto {the eps-ball around x} and {the mask} and {the value range}."""
        delta = x_adv - x
        if mask is not None:
            delta = delta * mask
        if self.norm == "linf":
            if isinstance(eps, torch.Tensor):  # per-sample radii
                eps_t = eps.to(delta.dtype)
                delta = torch.maximum(torch.minimum(delta, eps_t), -eps_t)
            else:  # a Python float keeps its full precision in the delta's dtype
                delta = delta.clamp(-eps, eps)
        else:
            norm = self.per_sample_norm(delta)
            delta = delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)
        # clamping to the value range moves each voxel towards x, so it can only shrink the perturbation
        return self.clip_to_range(x + delta)

    def sample_in_ball(
        self, x: torch.Tensor, eps: float, mask: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """A uniform random point of the eps-ball (Linf: per voxel; L2: uniform in the ball)."""
        if self.norm == "linf":
            delta = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
        else:
            direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if mask is not None:
                direction = direction * mask
            direction = direction / self.per_sample_norm(direction).clamp_min(1e-12)
            n = (
                mask.flatten(1).sum(1) if mask is not None else torch.full((x.shape[0],), x[0].numel())
            ).clamp_min(1)
            u = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)
            radius = eps * u.pow(1.0 / n.to(x.device, x.dtype))
            delta = direction * per_sample_view(radius, x.ndim)
        return self.project(x + delta, x, eps, mask)

    def _finalize(self, x_adv: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Project once more in the caller's dtype, so the eps-ball holds after the cast back.

        ``x - x_adv`` and ``x + delta`` round to the dtype's grid at the image's magnitude (about
        2.4e-4 at 2,000 HU in float32), which can put a voxel a little outside an Linf ball. The
        grid is much finer near zero than at ``x``, so a voxel ``x_adv`` close to 0 next to a large
        ``x`` can be thousands of representable values outside: each such voxel is moved towards
        ``x`` by its measured overshoot (doubled on each retry, at least one representable value)
        until ``|x_adv - x| <= eps`` holds exactly, measured in float64. Moving towards ``x`` keeps
        the value range and the mask.
        """
        m = mask.to(device=x.device, dtype=x.dtype) if mask is not None else None
        eps = self.current_eps
        x_adv = self.project(x_adv, x, eps, m)
        if self.norm == "linf" and x.dtype in (torch.float32, torch.float64):
            x64 = x.double()
            for k in range(64):
                d = x_adv.double() - x64
                over = d.abs() > eps
                if not over.any():
                    break
                target = (x_adv.double() - d.sign() * (d.abs() - eps) * 2.0**k).to(x.dtype)
                target = torch.where(target == x_adv, torch.nextafter(x_adv, x), target)
                x_adv = torch.where(over, target, x_adv)
            else:  # cannot happen for finite inputs; never return a point outside the ball silently
                raise RuntimeError("could not place the adversarial image inside the eps-ball")
        return x_adv


def describe_attack(attack: Any) -> dict[str, Any]:
    """:meth:`AdversarialAttack.describe` of an attack, also behind a wrapper that sets ``__wrapped__``.

    Any other callable is described by its type alone (``eps``, ``norm`` and ``steps`` None).

    Args:
        attack: an attack, a wrapper around one (a cache, a logger), or any callable.
    """
    inner = getattr(attack, "__wrapped__", attack)
    if isinstance(inner, AdversarialAttack):
        return inner.describe()
    name = type(inner).__name__
    return {
        "name": name,
        "type": name,
        "eps": None,
        "norm": None,
        "steps": None,
        "needs_detector": False,
        "uses_gradients": True,
        "targeted": False,
    }
