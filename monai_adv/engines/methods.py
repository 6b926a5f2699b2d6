"""The training methods, registered in one place: the name, the trainer, the attack and what each needs.

>>> trainer = create_trainer("ssat", device, max_epochs, labeled_loader, network, optimizer,
...                          unlabeled_data_loader=unlabeled_loader)
>>> training_method("rst").needs_teacher
True

:data:`TRAINING_METHODS` is the list the rest of monai-adv reads (the bundle CLI's ``--method`` choices,
the ``harden`` command and its overlays, the demo and the bundles), as the detectors are listed in one
place: a method added with :func:`register_training_method` is available everywhere at once.

Every method is a trainer class, keyword arguments for it and an attack factory; any of them can be
overridden when the trainer is built (``attack=...``, ``unlabeled_weight=...``, ``beta=...``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn
from torch.optim import Optimizer

from monai_adv.distributed import unwrap_network
from monai_adv.engines.rst import RobustSelfTrainingTrainer
from monai_adv.engines.trainers import (
    AutocastSupervisedTrainer,
    SemiSupervisedAdversarialTrainer,
    SupervisedAdversarialTrainer,
)
from monai_adv.transforms import FGSM, PGD

__all__ = [
    "TrainingMethod",
    "TRAINING_METHODS",
    "training_method",
    "register_training_method",
    "create_trainer",
    "SSAT_EPS_RANGE",
    "fgsm_attack",
    "pgd_attack",
]

#: the paper's FGSM eps range for SSAT, per batch, images in [0, 1]
SSAT_EPS_RANGE = (0.001, 0.003)


def fgsm_attack(network: nn.Module, eps: Any, steps: int, value_range: Any, spatial_dims: int) -> FGSM:
    """The methods' FGSM (``steps`` is ignored): the attack factory of the SSAT methods."""
    return FGSM(network, eps=eps, value_range=value_range, spatial_dims=spatial_dims)


def pgd_attack(network: nn.Module, eps: Any, steps: int, value_range: Any, spatial_dims: int) -> PGD:
    """The methods' L-inf PGD with a random start and step ``alpha = 2.5 eps / steps`` (Madry et al. 2018)."""
    if int(steps) < 1:
        raise ValueError(f"a PGD training attack needs steps >= 1, got {steps!r}.")
    hi = eps[1] if isinstance(eps, (tuple, list)) else eps
    return PGD(
        network,
        eps=eps,
        alpha=2.5 * float(hi) / int(steps),
        steps=int(steps),
        random_start=True,
        value_range=value_range,
        spatial_dims=spatial_dims,
    )


@dataclass(frozen=True)
class TrainingMethod:
    """A named training method: which trainer, its keyword arguments, its attack, and what it needs.

    Args:
        name: the method's name (the key in :data:`TRAINING_METHODS`).
        trainer: the trainer class.
        make_attack: ``(network, eps, steps, value_range, spatial_dims) -> attack``; None for a method
            without an attack (``supervised``).
        eps: the default attack budget, in the network input's intensity units (a number or a
            ``(low, high)`` range drawn per batch); None without an attack.
        steps: the default number of attack iterations (ignored by FGSM).
        kwargs: keyword arguments for the trainer.
        description: one line for docs, logs and ``--help``.
        needs_unlabeled: the trainer takes ``unlabeled_data_loader`` (semi-supervised methods).
        needs_teacher: the method's pseudo-labels come from a teacher trained on the labeled data
            (``teacher_network``; RST also takes batches already pseudo-labeled).
        reference: the paper the method follows.
    """

    name: str
    trainer: type
    make_attack: Callable[..., Any] | None
    eps: Any = None
    steps: int = 1
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    needs_unlabeled: bool = False
    needs_teacher: bool = False
    reference: str = ""

    @property
    def has_attack(self) -> bool:
        """Whether the method trains against an attack (every method but ``supervised``)."""
        return self.make_attack is not None


_MADRY = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
_TRADES = "Zhang et al., Theoretically Principled Trade-off between Robustness and Accuracy, ICML 2019"
_RST = "Carmon et al., Unlabeled Data Improves Adversarial Robustness, NeurIPS 2019"
_SSAT = "Li, Pan & Zhu, Defending against adversarial attacks on medical imaging AI system, arXiv 2006.13555"
_SSAT_KW = dict(unlabeled_weight=3.0, pseudo_labels="online", consistency="ce", confidence_threshold=0.0)

_METHODS: dict[str, TrainingMethod] = {}


def register_training_method(method: TrainingMethod, replace: bool = False) -> TrainingMethod:
    """Add ``method`` to :data:`TRAINING_METHODS` (so the CLI, the overlays and the bundles offer it).

    Raises:
        ValueError: when a method of that name exists and ``replace`` is False.
        TypeError: when ``method`` is not a :class:`TrainingMethod`.
    """
    if not isinstance(method, TrainingMethod):
        raise TypeError(f"expected a TrainingMethod, got {type(method).__name__}.")
    if method.name in _METHODS and not replace:
        raise ValueError(f"a training method named {method.name!r} exists; pass replace=True to replace it.")
    _METHODS[method.name] = method
    return method


for _m in (
    TrainingMethod(
        "supervised",
        AutocastSupervisedTrainer,
        None,
        steps=0,
        description="no attack: the loss on the labeled batch (MONAI's SupervisedTrainer, autocast on any device)",
    ),
    TrainingMethod(
        "madry",
        SupervisedAdversarialTrainer,
        pgd_attack,
        eps=8 / 255,
        steps=7,
        kwargs=dict(method="madry"),
        description="Madry PGD adversarial training (PGD-7, alpha = 2.5 eps / steps)",
        reference=_MADRY,
    ),
    TrainingMethod(
        "trades",
        SupervisedAdversarialTrainer,
        pgd_attack,
        eps=8 / 255,
        steps=7,
        kwargs=dict(method="trades", beta=6.0),
        description="TRADES (beta 6, PGD-7 on the KL)",
        reference=_TRADES,
    ),
    TrainingMethod(
        "rst",
        RobustSelfTrainingTrainer,
        pgd_attack,
        eps=8 / 255,
        steps=7,
        kwargs=dict(beta=6.0),
        description="robust self-training: a teacher's pseudo-labels on unlabeled data, then TRADES on "
        "half labeled, half pseudo-labeled batches",
        needs_unlabeled=True,
        needs_teacher=True,
        reference=_RST,
    ),
    TrainingMethod(
        "ssat",
        SemiSupervisedAdversarialTrainer,
        fgsm_attack,
        eps=SSAT_EPS_RANGE,
        kwargs=_SSAT_KW,
        description="the paper's SSAT: online pseudo-labels, FGSM eps~U(0.001, 0.003), CE, weight 3",
        needs_unlabeled=True,
        reference=_SSAT,
    ),
    TrainingMethod(
        "ssat_pgd",
        SemiSupervisedAdversarialTrainer,
        pgd_attack,
        eps=SSAT_EPS_RANGE,
        steps=5,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="online", consistency="ce"),
        description="SSAT with PGD-5 instead of FGSM on the unlabeled batch",
        needs_unlabeled=True,
        reference=_SSAT,
    ),
    TrainingMethod(
        "ssat_kl",
        SemiSupervisedAdversarialTrainer,
        fgsm_attack,
        eps=SSAT_EPS_RANGE,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="online", consistency="kl"),
        description="SSAT with KL consistency between clean and attacked predictions (UAT-OT style)",
        needs_unlabeled=True,
        reference=_SSAT,
    ),
    TrainingMethod(
        "ssat_threshold",
        SemiSupervisedAdversarialTrainer,
        fgsm_attack,
        eps=SSAT_EPS_RANGE,
        kwargs=dict(_SSAT_KW, confidence_threshold=0.9),
        description="SSAT keeping only pseudo-labels with confidence >= 0.9",
        needs_unlabeled=True,
        reference=_SSAT,
    ),
    TrainingMethod(
        "ssat_teacher",
        SemiSupervisedAdversarialTrainer,
        fgsm_attack,
        eps=SSAT_EPS_RANGE,
        kwargs=dict(unlabeled_weight=3.0, pseudo_labels="teacher", consistency="ce"),
        description="pseudo-labels from a frozen teacher trained on the labeled data (UAT-FT / RST style)",
        needs_unlabeled=True,
        needs_teacher=True,
        reference=_SSAT,
    ),
):
    register_training_method(_m)
del _m

#: every training method by name (read-only; add one with :func:`register_training_method`)
TRAINING_METHODS: Mapping[str, TrainingMethod] = MappingProxyType(_METHODS)


def training_method(name: str) -> TrainingMethod:
    """The registered method called ``name``.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in _METHODS:
        raise ValueError(f"unknown preset or training method {name!r}; choose one of {list(_METHODS)}.")
    return _METHODS[name]


def create_trainer(
    method: str,
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
) -> Any:
    """Build the trainer of a registered training method (:data:`TRAINING_METHODS`).

    Args:
        method: a name in :data:`TRAINING_METHODS`: ``"supervised"``, ``"madry"``, ``"trades"``,
            ``"rst"`` (needs ``unlabeled_data_loader=`` and ``teacher_network=``, or pseudo-labeled
            unlabeled batches), ``"ssat"`` (the paper's SSAT; needs ``unlabeled_data_loader=``),
            ``"ssat_pgd"``, ``"ssat_kl"``, ``"ssat_threshold"``, ``"ssat_teacher"`` (needs
            ``teacher_network=``), or one added with :func:`register_training_method`.
        device, max_epochs, train_data_loader, network, optimizer: as for the trainers.
        loss_function: the supervised loss; default ``torch.nn.CrossEntropyLoss()``.
        eps: overrides the method's eps (intensity units of the network input, or a ``(low, high)`` range).
        steps: overrides the method's number of attack iterations.
        value_range, spatial_dims: passed to the attack.
        kwargs: override the method's trainer arguments or add others (``unlabeled_data_loader=``,
            ``teacher_network=``, ``attack=`` to replace the attack, handlers, metrics, ...).

    Raises:
        ValueError: for an unknown method, a semi-supervised method without ``unlabeled_data_loader``,
            or attack settings given to a method without an attack.
    """
    m = training_method(method)
    args = dict(m.kwargs)
    args.update(kwargs)
    if m.needs_unlabeled and args.get("unlabeled_data_loader") is None:
        raise ValueError(
            f"training method {m.name!r} needs unlabeled_data_loader=... (a loader of unlabeled images)."
        )
    if not m.has_attack:
        given = [
            k for k, v in (("eps", eps), ("steps", steps), ("attack", args.get("attack"))) if v is not None
        ]
        if given:
            raise ValueError(f"training method {m.name!r} trains without an attack; {given} do not apply.")
    elif args.get("attack") is None:
        args["attack"] = m.make_attack(
            unwrap_network(network),
            m.eps if eps is None else eps,
            m.steps if steps is None else steps,
            value_range,
            spatial_dims,
        )
    return m.trainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_data_loader,
        network=network,
        optimizer=optimizer,
        loss_function=torch.nn.CrossEntropyLoss() if loss_function is None else loss_function,
        **args,
    )
