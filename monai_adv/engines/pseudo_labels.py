"""The parts of semi-supervised adversarial training around its step: who labels, how much the unlabeled term
counts, and how good the pseudo-labels are.

:class:`~monai_adv.engines.SemiSupervisedAdversarialTrainer` reads like the SSAT step (pseudo-label, attack,
train); what varies between the recipes is a small object it is given:

- a :class:`PseudoLabeller` (:class:`OnlinePseudoLabeller`: the network being trained, the paper's SSAT;
  :class:`TeacherPseudoLabeller`: a frozen teacher, UAT-FT / RST style; :class:`MeanTeacherPseudoLabeller`:
  an exponential moving average of the network's weights, Tarvainen & Valpola 2017);
- an :class:`UnlabeledWeightSchedule` (warm-up with the labeled loss only, then the ramp-up of Laine &
  Aila 2017);
- :class:`PseudoLabelAccuracy`, a handler that measures the pseudo-labels against labels hidden from the
  trainer (monitoring of experiments on data whose labels are known).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from monai_adv.keys import AdvTrainingKeys
from monai_adv.metrics.segmentation import dense_indices
from monai_adv.utils import plain_tensor

__all__ = [
    "PseudoLabeller",
    "OnlinePseudoLabeller",
    "TeacherPseudoLabeller",
    "MeanTeacherPseudoLabeller",
    "make_pseudo_labeller",
    "UnlabeledWeightSchedule",
    "PseudoLabelAccuracy",
]


class PseudoLabeller:
    """Which network labels the unlabeled batch (in eval mode, without gradient), and what follows a step."""

    #: the clean side of a KL consistency term comes from the labeller itself (not the trained network)
    labels_with_own_logits: bool = False

    def network(self, trained: nn.Module) -> nn.Module:
        """The network whose argmax gives the pseudo-labels, given the network being trained."""
        raise NotImplementedError

    def after_step(self, trained: nn.Module) -> None:
        """Called after each optimizer step (a mean teacher follows the weights here)."""


class OnlinePseudoLabeller(PseudoLabeller):
    """The network being trained labels its own unlabeled batch (the paper's SSAT)."""

    def network(self, trained: nn.Module) -> nn.Module:
        return trained


class TeacherPseudoLabeller(PseudoLabeller):
    """A frozen teacher labels the unlabeled batch (UAT-FT / RST style).

    Args:
        teacher: a network trained on the labeled data.
    """

    labels_with_own_logits = True

    def __init__(self, teacher: nn.Module) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"the teacher must be a torch module, got {type(teacher).__name__}.")
        self.teacher = teacher

    def network(self, trained: nn.Module) -> nn.Module:
        return self.teacher


class MeanTeacherPseudoLabeller(PseudoLabeller):
    """An exponential moving average of the trained network's weights labels the batch (mean teacher).

    After each step ``w_ema <- decay * w_ema + (1 - decay) * w`` (buffers are copied). :attr:`ema_network`
    is a module: add it to a checkpoint's ``save_dict`` to resume it.

    Args:
        trained: the network being trained (copied once, at construction).
        decay: in [0, 1).

    Raises:
        ValueError: for a decay outside [0, 1).
    """

    labels_with_own_logits = True

    def __init__(self, trained: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {decay!r}.")
        self.decay = float(decay)
        self.ema_network = copy.deepcopy(trained).eval()
        for p in self.ema_network.parameters():
            p.requires_grad_(False)

    def network(self, trained: nn.Module) -> nn.Module:
        return self.ema_network

    @torch.no_grad()
    def after_step(self, trained: nn.Module) -> None:
        for p_ema, p in zip(self.ema_network.parameters(), trained.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - self.decay)
        for b_ema, b in zip(self.ema_network.buffers(), trained.buffers()):
            b_ema.copy_(b)


def make_pseudo_labeller(
    kind: str, trained: nn.Module, teacher_network: nn.Module | None = None, ema_decay: float = 0.999
) -> PseudoLabeller:
    """The labeller named ``kind`` (``"online"``, ``"teacher"`` or ``"ema"``).

    Raises:
        ValueError: for an unknown kind, a teacher missing for ``"teacher"`` or given for another kind, or a
            decay outside [0, 1).
    """
    if kind not in ("online", "teacher", "ema"):
        raise ValueError(f"pseudo_labels must be 'online', 'teacher' or 'ema', got {kind!r}.")
    if not 0.0 <= float(ema_decay) < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}.")
    if kind == "teacher" and teacher_network is None:
        raise ValueError(
            "pseudo_labels='teacher' needs teacher_network (a network trained on the labeled data)."
        )
    if kind != "teacher" and teacher_network is not None:
        raise ValueError(f"teacher_network is given but pseudo_labels={kind!r}; set pseudo_labels='teacher'.")
    if kind == "teacher":
        return TeacherPseudoLabeller(teacher_network)
    if kind == "ema":
        return MeanTeacherPseudoLabeller(trained, ema_decay)
    return OnlinePseudoLabeller()


class UnlabeledWeightSchedule:
    """The unlabeled term's weight per iteration: 0 during the warm-up, then a ramp-up, then ``weight``.

    ``progress`` counts the epochs completed before an iteration. Below ``warmup_epochs`` the weight is 0
    (labeled loss only; the trainer then skips the attack); after it the weight is
    ``weight * exp(-5 (1 - t)^2)`` with ``t = (progress - warmup_epochs) / rampup_epochs`` capped at 1
    (Laine & Aila, ICLR 2017), or ``weight`` at once when ``rampup_epochs`` is 0.

    Args:
        weight: the full weight (>= 0).
        warmup_epochs: epochs (may be fractional) of labeled-only training (>= 0).
        rampup_epochs: epochs of the ramp-up (>= 0).

    Raises:
        ValueError: for a negative argument.
    """

    def __init__(self, weight: float, warmup_epochs: float = 0.0, rampup_epochs: float = 0.0) -> None:
        for name, value in (
            ("unlabeled_weight", weight),
            ("warmup_epochs", warmup_epochs),
            ("rampup_epochs", rampup_epochs),
        ):
            if not float(value) >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}.")
        self.weight = float(weight)
        self.warmup_epochs = float(warmup_epochs)
        self.rampup_epochs = float(rampup_epochs)

    def __call__(self, iteration: int, epoch_length: int | None) -> float:
        progress = (iteration - 1) / (epoch_length or 1)
        if progress < self.warmup_epochs:
            return 0.0
        if self.rampup_epochs <= 0:
            return self.weight
        t = min((progress - self.warmup_epochs) / self.rampup_epochs, 1.0)
        return self.weight * math.exp(-5.0 * (1.0 - t) ** 2)


class PseudoLabelAccuracy:
    """Share of pseudo-labels equal to labels the trainer never sees, in ``engine.state.output``.

    Attached to a :class:`~monai_adv.engines.SemiSupervisedAdversarialTrainer` (its ``hidden_label_key``
    does it), it reads ``hidden_label_key`` of each dict unlabeled batch when the pseudo-labels are made
    and writes ``AdvTrainingKeys.PSEUDO_ACCURACY`` (per voxel for label maps). The hidden labels never
    reach the loss.

    Args:
        hidden_label_key: the key of the true labels (or label maps) in the unlabeled batches.
    """

    def __init__(self, hidden_label_key: str) -> None:
        self.hidden_label_key = hidden_label_key

    def attach(self, engine: Any) -> None:
        from monai_adv.engines.trainers import AdversarialTrainingEvents

        engine.add_event_handler(AdversarialTrainingEvents.PSEUDO_LABELS_COMPLETED, self)

    def __call__(self, engine: Any) -> None:
        batch = getattr(engine.state, "unlabeled_batch", None)
        y_u = getattr(engine.state, "pseudo_labels", None)
        if y_u is None or not isinstance(batch, Mapping) or self.hidden_label_key not in batch:
            return
        num_classes = int(getattr(engine.state, "num_pseudo_classes", 0) or (int(y_u.max()) + 1))
        hidden = plain_tensor(batch[self.hidden_label_key]).to(y_u.device)
        truth = dense_indices(hidden, num_classes, "hidden labels") if y_u.ndim > 1 else hidden
        if truth.numel() != y_u.numel():
            raise ValueError(
                f"hidden labels of shape {tuple(hidden.shape)} do not fit the pseudo-labels {tuple(y_u.shape)}."
            )
        engine.state.output[AdvTrainingKeys.PSEUDO_ACCURACY] = (
            (y_u.reshape(-1) == truth.reshape(-1)).float().mean().item()
        )
