"""Named training recipes: the paper's SSAT, its variants, and the supervised baselines.

>>> trainer = create_trainer("ssat", device, max_epochs, labeled_loader, network, optimizer,
...                          unlabeled_data_loader=unlabeled_loader)

Every preset is a set of keyword arguments for one of the trainers plus an attack factory; any of them
can be overridden by passing it (``attack=...``, ``unlabeled_weight=...``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
from torch.optim import Optimizer

from monai_adv.distributed import unwrap_network
from monai_adv.engines.trainers import SemiSupervisedAdversarialTrainer, SupervisedAdversarialTrainer
from monai_adv.transforms import FGSM, PGD

__all__ = ["TrainingPreset", "PRESETS", "create_trainer", "SSAT_EPS_RANGE"]

#: the paper's FGSM eps range for SSAT, per batch, images in [0, 1]
SSAT_EPS_RANGE = (0.001, 0.003)


@dataclass(frozen=True)
class TrainingPreset:
    """A named recipe: which trainer, its keyword arguments, and how to build its attack.

    Args:
        trainer: the trainer class.
        make_attack: ``(network, eps, steps, value_range, spatial_dims) -> attack``.
        eps: the default eps (a number or a ``(low, high)`` range).
        steps: the default number of attack iterations (ignored by FGSM).
        kwargs: keyword arguments for the trainer.
        description: one line for docs and logs.
    """

    trainer: type
    make_attack: Callable[..., Any]
    eps: Any
    steps: int = 1
    kwargs: dict = field(default_factory=dict)
    description: str = ""


def _fgsm(network, eps, steps, value_range, spatial_dims):
    return FGSM(network, eps=eps, value_range=value_range, spatial_dims=spatial_dims)


def _pgd(network, eps, steps, value_range, spatial_dims):
    hi = eps[1] if isinstance(eps, (tuple, list)) else eps
    return PGD(
        network,
        eps=eps,
        alpha=2.5 * hi / steps,
        steps=steps,
        value_range=value_range,
        spatial_dims=spatial_dims,
    )


PRESETS: dict[str, TrainingPreset] = {
    "ssat": TrainingPreset(
        SemiSupervisedAdversarialTrainer,
        _fgsm,
        eps=SSAT_EPS_RANGE,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="online", consistency="ce", confidence_threshold=0.0),
        description="the paper's SSAT: online pseudo-labels, FGSM eps~U(0.001, 0.003), CE, weight 3",
    ),
    "ssat_pgd": TrainingPreset(
        SemiSupervisedAdversarialTrainer,
        _pgd,
        eps=SSAT_EPS_RANGE,
        steps=5,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="online", consistency="ce"),
        description="SSAT with PGD-5 instead of FGSM on the unlabeled batch",
    ),
    "ssat_kl": TrainingPreset(
        SemiSupervisedAdversarialTrainer,
        _fgsm,
        eps=SSAT_EPS_RANGE,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="online", consistency="kl"),
        description="SSAT with KL consistency between clean and attacked predictions (UAT-OT style)",
    ),
    "ssat_threshold": TrainingPreset(
        SemiSupervisedAdversarialTrainer,
        _fgsm,
        eps=SSAT_EPS_RANGE,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="online", consistency="ce", confidence_threshold=0.9),
        description="SSAT keeping only pseudo-labels with confidence >= 0.9",
    ),
    "ssat_teacher": TrainingPreset(
        SemiSupervisedAdversarialTrainer,
        _fgsm,
        eps=SSAT_EPS_RANGE,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="teacher", consistency="ce"),
        description="pseudo-labels from a frozen teacher trained on the labeled data (UAT-FT / RST style)",
    ),
    "madry": TrainingPreset(
        SupervisedAdversarialTrainer,
        _pgd,
        eps=8 / 255,
        steps=7,
        kwargs=dict(method="madry"),
        description="Madry PGD adversarial training (PGD-7, alpha = 2.5 eps / steps)",
    ),
    "trades": TrainingPreset(
        SupervisedAdversarialTrainer,
        _pgd,
        eps=8 / 255,
        steps=7,
        kwargs=dict(method="trades", beta=6.0),
        description="TRADES (beta 6, PGD-7 on the KL)",
    ),
}


def create_trainer(
    preset: str,
    device: str | torch.device,
    max_epochs: int,
    train_data_loader: Iterable,
    network: nn.Module,
    optimizer: Optimizer,
    loss_function: Callable | None = None,
    *,
    eps: Any = None,
    steps: int | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    spatial_dims: int = 2,
    **kwargs: Any,
) -> SemiSupervisedAdversarialTrainer | SupervisedAdversarialTrainer:
    """Build a trainer from a named preset in :data:`PRESETS`.

    Args:
        preset: ``"ssat"`` (the paper's SSAT), ``"ssat_pgd"``, ``"ssat_kl"``, ``"ssat_threshold"``,
            ``"ssat_teacher"`` (needs ``teacher_network=``), ``"madry"`` or ``"trades"``.
        device, max_epochs, train_data_loader, network, optimizer: as for the trainers.
        loss_function: the supervised loss; default ``torch.nn.CrossEntropyLoss()``.
        eps: overrides the preset's eps (intensity units, or a ``(low, high)`` range).
        steps: overrides the preset's number of attack iterations.
        value_range, spatial_dims: passed to the attack.
        kwargs: override the preset's trainer arguments or add others (``unlabeled_data_loader=`` for
            the SSAT presets, ``attack=`` to replace the attack, handlers, metrics, ...).

    Raises:
        ValueError: for an unknown preset name.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    p = PRESETS[preset]
    args = dict(p.kwargs)
    args.update(kwargs)
    if "attack" not in args:
        args["attack"] = p.make_attack(
            unwrap_network(network),
            p.eps if eps is None else eps,
            p.steps if steps is None else steps,
            value_range,
            spatial_dims,
        )
    return p.trainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_data_loader,
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.CrossEntropyLoss() if loss_function is None else loss_function,
        **args,
    )
