"""Adversarial training engines: semi-supervised (SSAT and variants) and supervised (Madry PGD-AT, TRADES).

Both are MONAI ``SupervisedTrainer`` subclasses: they accept all of its keyword arguments (handlers,
metrics, ``prepare_batch``, ``postprocessing``, ``amp``, ...) and only replace the iteration.

Segmentation: when the labeled batches carry label maps (class indices ``(B, 1, *spatial)`` or one-hot
``(B, K, *spatial)``) the network's output must be dense logits ``(B, K, *spatial)``; the loss function
gets the label maps as they come (e.g. ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)``),
the attacks get them as dense labels, SSAT's pseudo-labels are the argmax masks ``(B, 1, *spatial)``
with a per-voxel confidence, and the per-item values become per-voxel ones (the consistency term is
the mean over the voxels, ``attack_success`` the share of voxels the network gets wrong). The
per-iteration values (labeled loss, unlabeled loss, pseudo-label confidence, attack success, eps) go
into ``engine.state.output`` under :class:`AdvTrainingKeys`, where MONAI's ``StatsHandler`` and
``TensorBoardStatsHandler`` (with :func:`~monai_adv.engines.outputs.training_stats`) and ignite metrics
(:func:`~monai_adv.engines.outputs.adversarial_training_metrics`) pick them up.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import EventEnum
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.utils import CommonKeys as Keys
from monai.utils import ensure_tuple
from torch.optim import Optimizer

from monai_adv.distributed import sync_buffers, unwrap_network
from monai_adv.engines.batches import (
    CyclingLoader,
    check_loader_not_empty,
    check_logits,
    prepare_engine_batch,
    unlabeled_images_like,
)
from monai_adv.engines.precision import (
    attack_in_engine_precision,
    configure_engine_amp,
    engine_autocast,
    resolve_engine_precision,
)
from monai_adv.engines.pseudo_labels import (
    PseudoLabelAccuracy,
    UnlabeledWeightSchedule,
    make_pseudo_labeller,
)
from monai_adv.keys import AdvTrainingKeys
from monai_adv.metrics.segmentation import dense_indices
from monai_adv.transforms.base import AdversarialAttack
from monai_adv.transforms.losses import kl_attack_loss, per_sample_kl
from monai_adv.utils import (
    check_label_range,
    class_indices,
    default_output_transform,
    eval_mode,
    full_precision,
    plain_tensor,
)

__all__ = [
    "AdvTrainingKeys",
    "AutocastSupervisedTrainer",
    "AdversarialTrainingEvents",
    "SemiSupervisedAdversarialTrainer",
    "SupervisedAdversarialTrainer",
    "MadryAdversarialTrainer",
    "TradesAdversarialTrainer",
]


class AdversarialTrainingEvents(EventEnum):
    """Extra iteration events of the adversarial trainers (besides MONAI's ``IterationEvents``)."""

    PSEUDO_LABELS_COMPLETED = "pseudo_labels_completed"
    ATTACK_COMPLETED = "attack_completed"


def _check_attack(attack: Any, name: str) -> AdversarialAttack:
    if not isinstance(attack, AdversarialAttack):
        raise TypeError(
            f"{name} must be an attack from monai_adv.transforms (e.g. FGSM, PGD), got {type(attack).__name__}."
        )
    return attack


def _aim(attack: AdversarialAttack, network: nn.Module) -> AdversarialAttack:
    """The attack aimed at ``network`` (the unwrapped trained module)."""
    return attack if attack.network is network else attack.with_network(network)


def _current_eps(attack: AdversarialAttack) -> float:
    return float(getattr(attack, "current_eps", float("nan")))


def _is_label_map(targets: Any) -> bool:
    """Whether labels are dense label maps (a channel and spatial axes) rather than one class per item."""
    return isinstance(targets, torch.Tensor) and targets.ndim >= 3


def _wrong_share(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """The share of items (or, for dense outputs, voxels) whose argmax is not the label."""
    y = dense_indices(targets, logits.shape[1]) if logits.ndim >= 3 else targets
    return (logits.detach().argmax(1) != y.to(logits.device)).float().mean().item()


def _voxel_mean_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """A per-voxel attack loss ``(B, *spatial)`` made per sample ``(B,)`` by its mean over the voxels."""

    def per_sample(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = loss(logits, y)
        return value.flatten(1).mean(dim=1) if value.ndim > 1 else value

    return per_sample


class _SingleValueTransform:
    """An output transform whose 1-tuple result is unpacked: ``(loss,)`` -> ``loss``.

    MONAI's logging handlers read a trainer's loss with ``from_engine(["loss"], first=True)`` (the
    default of ``--tracking mlflow``, and of the model zoo's ``StatsHandler`` / ``TensorBoardStatsHandler``),
    written for the decollated output, a list of per-item dicts, where it returns the value. On the batch
    dict these trainers return without decollation (``decollate=False``: no per-item copies of the
    images) it returns the 1-tuple ``(loss,)``, which no logger can log (MLflow: "float() argument must
    be ... not 'tuple'"). A 1-tuple is never a loggable value, so unpacking it changes nothing else.
    """

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, output: Any) -> Any:
        value = self.transform(output)
        return value[0] if isinstance(value, tuple) and len(value) == 1 else value


def _logging_handler_types() -> tuple[type, ...]:
    """MONAI's handlers that log a value read from the engine output with their ``output_transform``."""
    from monai.handlers import MLFlowHandler, StatsHandler, TensorBoardStatsHandler

    return (MLFlowHandler, StatsHandler, TensorBoardStatsHandler)


class _AdversarialTrainerBase(SupervisedTrainer):
    """Shared set-up: event registration, checks, forward helpers, mixed precision on any device.

    ``amp=True`` runs the forward passes, the loss and the attack under ``torch.autocast`` on the
    training device: bfloat16 on CPU by default, float16 on CUDA (with a ``torch.amp.GradScaler``),
    or the ``dtype`` given in ``amp_kwargs``. ``amp="auto"`` decides per machine
    (:func:`~monai_adv.precision.resolve_precision`: autocast on CUDA, bf16 on a CPU only where it is
    native, else fp32); the result is ``self.precision``. ``attack_amp`` overrides the attack's
    precision (None: the attack follows the trainer).
    """

    def __init__(
        self,
        *args: Any,
        network_output_transform: Callable[[Any], torch.Tensor] = default_output_transform,
        event_names: list | None = None,
        accumulation_steps: int = 1,
        attack_amp: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if accumulation_steps != 1:
            raise ValueError(f"{type(self).__name__} does not support accumulation_steps != 1.")
        event_names = list(event_names or []) + [AdversarialTrainingEvents]
        device = args[0] if args else kwargs.get("device", "cpu")
        precision = resolve_engine_precision(device, kwargs, type(self).__name__)
        super().__init__(*args, event_names=event_names, **kwargs)
        self.precision = precision
        configure_engine_amp(self)
        self.network_output_transform = network_output_transform
        self.attack_amp = attack_amp

    def _register_handlers(self, handlers: Any) -> None:
        """MONAI's handler registration; the logging handlers read the loss from the batch output (see
        :class:`_SingleValueTransform`), so that ``--tracking mlflow`` and the model zoo's loss loggers
        work with ``decollate=False``."""
        for handler in ensure_tuple(handlers):
            transform = getattr(handler, "output_transform", None)
            if (
                isinstance(handler, _logging_handler_types())
                and callable(transform)
                and not isinstance(transform, _SingleValueTransform)
            ):
                handler.output_transform = _SingleValueTransform(transform)
        super()._register_handlers(handlers)

    def run(self) -> None:  # type: ignore[override]
        """Run the training; MONAI's ``Trainer.run`` is bypassed only for its CUDA-only grad scaler."""
        configure_engine_amp(self)
        Workflow.run(self)

    def _in_precision(self, attack: AdversarialAttack) -> AdversarialAttack:
        return attack_in_engine_precision(attack, self, self.attack_amp)

    #: whether the current iteration's labels are label maps (segmentation), set by ``_split_batch``
    _dense: bool = False

    def _split_batch(self, engine: Any, batchdata: Any) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        inputs, targets, args, kwargs = prepare_engine_batch(engine, batchdata)
        if targets is None:
            raise ValueError("the labeled batch has no labels (prepare_batch returned None for them).")
        if isinstance(inputs, torch.Tensor):
            # a MONAI MetaTensor carries its metadata through every op of the network, which costs
            # about 30% of a small network's training step on a CPU; training reads none of it
            inputs = plain_tensor(inputs)
            if not torch.isfinite(inputs).all():
                raise ValueError("the labeled batch contains NaN or Inf values.")
        self._dense = _is_label_map(plain_tensor(targets))
        if self._dense:  # label maps, as the loss function wants them; checked against the output later
            targets = plain_tensor(targets)
            if targets.shape[0] != inputs.shape[0]:
                raise ValueError(
                    f"label maps of shape {tuple(targets.shape)} do not fit the batch of {inputs.shape[0]} images."
                )
            return inputs, targets.to(inputs.device), args, kwargs
        targets = class_indices(targets, inputs.shape[0], "labels of the labeled batch").to(inputs.device)
        return inputs, targets, args, kwargs

    def _check_logits(self, logits: Any, batch: int) -> torch.Tensor:
        return check_logits(logits, batch, dense=self._dense)

    def _logits(self, engine: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Training forward through the (possibly DDP-wrapped) network, via the inferer."""
        out = engine.inferer(x, engine.network, *args, **kwargs)
        logits = self._check_logits(self.network_output_transform(out), x.shape[0])
        # losses, metrics and handlers see full-precision logits, whatever autocast ran the network in
        return full_precision(logits)

    @staticmethod
    def _check_targets(targets: torch.Tensor, pred: torch.Tensor, what: str) -> None:
        """Labels against the logits: class range, and for label maps the spatial shape and one-hot ``K``."""
        if pred.ndim < 3:
            check_label_range(targets, pred.shape[1], what)
            return
        if targets.ndim != pred.ndim or tuple(targets.shape[2:]) != tuple(pred.shape[2:]):
            raise ValueError(
                f"{what} of shape {tuple(targets.shape)} do not fit the network output {tuple(pred.shape)}: "
                "label maps need its spatial shape, as (B, 1, *spatial) indices or (B, K, *spatial) one-hot."
            )
        dense_indices(targets, pred.shape[1], what)

    def _predict(
        self, engine: Any, x: torch.Tensor, targets: torch.Tensor, args: tuple, kwargs: dict, what: str
    ) -> torch.Tensor:
        """The forward pass whose logits are the iteration's prediction: labels checked against them,
        ``output[PRED]`` set, ``FORWARD_COMPLETED`` fired."""
        pred = self._logits(engine, x, *args, **kwargs)
        self._check_targets(targets, pred, what)
        engine.state.output[Keys.PRED] = pred
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        return pred

    def _autocast(self, engine: Any):
        return engine_autocast(engine)

    def _step(self, engine: Any, loss: torch.Tensor) -> None:
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()


class SemiSupervisedAdversarialTrainer(_AdversarialTrainerBase):
    """Semi-supervised adversarial training (SSAT): a labeled and an unlabeled loader, attacked pseudo-labels.

    Each iteration takes one labeled batch ``(x_l, y_l)`` (from ``train_data_loader``, which defines the
    epoch) and one unlabeled batch ``x_u`` (from ``unlabeled_data_loader``, cycled independently):

    1. pseudo-labels ``y_u = argmax f(x_u)`` (per voxel for a segmentation network: argmax masks
       ``(B, 1, *spatial)``, the label maps the attack and the consistency term take) from the current
       network (``pseudo_labels="online"``), a
       frozen teacher (``"teacher"``) or an exponential moving average of the network's weights
       (``"ema"``, the mean teacher of Tarvainen & Valpola 2017), in eval mode and without gradient;
       their max-softmax is the confidence, and items below ``confidence_threshold`` are left out of
       the unlabeled loss;
    2. ``x_u_adv = attack(x_u, y_u)``, the attack aimed at the trained network;
    3. the loss ``L = loss_function(f(x_l), y_l) + unlabeled_weight * L_u`` with
       ``L_u = mean_i keep_i * CE(f(x_u_adv)_i, y_u_i)`` (``consistency="ce"``) or
       ``mean_i keep_i * KL(softmax f(x_u)_i || softmax f(x_u_adv)_i)`` (``consistency="kl"``, TRADES /
       UAT-OT style, with gradient through both; with a teacher the clean side is the teacher's
       prediction), plus ``labeled_adversarial_weight * loss_function(f(labeled_attack(x_l, y_l)), y_l)``
       when a ``labeled_attack`` is given. The mean is over the whole unlabeled batch (FixMatch's
       convention), so the threshold down-weights rather than re-normalises.

    The step above is this class; what varies between recipes are small objects it holds
    (:mod:`monai_adv.engines.pseudo_labels`): :attr:`labeller` (a :class:`~monai_adv.engines.PseudoLabeller`
    built from ``pseudo_labels``, ``teacher_network`` and ``ema_decay``), :attr:`unlabeled_schedule` (an
    :class:`~monai_adv.engines.UnlabeledWeightSchedule` from ``unlabeled_weight``, ``warmup_epochs`` and
    ``rampup_epochs``), and, with ``hidden_label_key``, an attached
    :class:`~monai_adv.engines.PseudoLabelAccuracy` handler.

    The paper's SSAT (Li, Pan & Zhu, arXiv 2006.13555) is ``attack=FGSM(net, eps=(0.001, 0.003))``,
    ``unlabeled_weight=3``, ``pseudo_labels="online"``, ``consistency="ce"``, no threshold and no labeled
    attack: the preset ``"ssat"`` of :func:`~monai_adv.engines.presets.create_trainer`.

    Stability at low label counts. Trained from scratch on a few hundred labels, the paper's recipe
    can collapse: the untrained network's pseudo-labels are nearly all one class, and the unlabeled
    term (weight 3, three times the labeled one) then teaches that class (see
    ``experiments/ssat_collapse/README.md``). The paper starts from an ImageNet-pretrained network, whose
    pseudo-labels are useful from the first step. The standard remedies of semi-supervised learning
    are options here: ``warmup_epochs`` (labeled loss only at first), ``rampup_epochs`` (the unlabeled
    weight then grows as ``exp(-5 (1 - t)^2)``, Laine & Aila 2017), ``pseudo_labels="ema"`` (a
    mean-teacher labeller that averages out the latest steps) and ``confidence_threshold`` (FixMatch's:
    an unconfident network's pseudo-labels do not count, so the unlabeled term waits until the
    labeled one has taught it something).

    Args:
        device: the device to train on.
        max_epochs: epochs over the labeled loader.
        train_data_loader: the labeled loader (dict batches with ``image``/``label``, or as
            ``prepare_batch`` parses them); its length is the epoch length.
        unlabeled_data_loader: the unlabeled loader; batches are tensors, dicts with
            ``unlabeled_image_key`` (labels, if any, are ignored) or ``(images, ...)`` tuples. Its
            images must have the labeled images' shape (except the batch size).
        network: the classifier, possibly wrapped in ``DistributedDataParallel``.
        optimizer: the network's optimizer.
        loss_function: the supervised loss on labeled logits, e.g. ``torch.nn.CrossEntropyLoss()``.
        attack: an attack from :mod:`monai_adv.transforms`; it is re-aimed at the (unwrapped) trained
            network with ``with_network``.
        unlabeled_weight: weight of the unlabeled term (>= 0).
        pseudo_labels: ``"online"`` (the current network), ``"teacher"`` or ``"ema"``.
        teacher_network: the frozen teacher for ``pseudo_labels="teacher"``.
        ema_decay: for ``pseudo_labels="ema"``: the labeller's weights follow
            ``w_ema <- ema_decay * w_ema + (1 - ema_decay) * w`` after each step (buffers are copied);
            it is :attr:`ema_network` (add it to a checkpoint's ``save_dict`` to resume it).
        warmup_epochs: epochs (may be fractional) of labeled-only training before the unlabeled term
            starts; the attack is skipped meanwhile.
        rampup_epochs: epochs over which the unlabeled weight then rises to ``unlabeled_weight``
            along ``exp(-5 (1 - t)^2)``; 0 starts it at full weight.
        hidden_label_key: monitoring only: the key of true labels (or label maps) in dict unlabeled
            batches (for experiments on data whose labels are hidden from the trainer). They are never
            used in the loss; they give ``pseudo_label_accuracy`` in the output (per voxel for label
            maps).
        consistency: ``"ce"`` (hard pseudo-labels) or ``"kl"``.
        confidence_threshold: in ``[0, 1)``; pseudo-labels with a lower max-softmax are ignored.
        labeled_attack: optional attack on the labeled batch, for an adversarial labeled term.
        labeled_adversarial_weight: weight of that term (>= 0).
        unlabeled_image_key: the image key of dict unlabeled batches.
        network_output_transform: picks the logits out of the network's output.
        kwargs: any other keyword argument of ``monai.engines.SupervisedTrainer``.

    Raises:
        ValueError: for an empty labeled or unlabeled loader, a bad option, or (at run time) an
            unlabeled batch whose image shape differs from the labeled one, or labels outside the
            network's classes.
        TypeError: when an attack is not a ``monai_adv.transforms`` attack.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        unlabeled_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        attack: AdversarialAttack,
        unlabeled_weight: float = 3.0,
        pseudo_labels: str = "online",
        teacher_network: nn.Module | None = None,
        consistency: str = "ce",
        confidence_threshold: float = 0.0,
        labeled_attack: AdversarialAttack | None = None,
        labeled_adversarial_weight: float = 1.0,
        unlabeled_image_key: str = "image",
        ema_decay: float = 0.999,
        warmup_epochs: float = 0.0,
        rampup_epochs: float = 0.0,
        hidden_label_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        check_loader_not_empty(train_data_loader, "train_data_loader (the labeled data)")
        unlabeled = CyclingLoader(unlabeled_data_loader, "unlabeled_data_loader")
        _check_attack(attack, "attack")
        if labeled_attack is not None:
            _check_attack(labeled_attack, "labeled_attack")
        if not float(labeled_adversarial_weight) >= 0:
            raise ValueError(f"labeled_adversarial_weight must be >= 0, got {labeled_adversarial_weight!r}.")
        schedule = UnlabeledWeightSchedule(unlabeled_weight, warmup_epochs, rampup_epochs)
        if consistency not in ("ce", "kl"):
            raise ValueError(f"consistency must be 'ce' or 'kl', got {consistency!r}.")
        if not 0.0 <= float(confidence_threshold) < 1.0:
            raise ValueError(f"confidence_threshold must lie in [0, 1), got {confidence_threshold!r}.")
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function, **kwargs)
        self.unlabeled_data_loader = unlabeled_data_loader
        self.unlabeled = unlabeled
        trained = unwrap_network(network)
        self.attack = self._in_precision(_aim(attack, trained))
        self.labeled_attack = (
            self._in_precision(_aim(labeled_attack, trained)) if labeled_attack is not None else None
        )
        self.pseudo_labels = pseudo_labels
        #: who labels the unlabeled batch (:mod:`monai_adv.engines.pseudo_labels`)
        self.labeller = make_pseudo_labeller(pseudo_labels, trained, teacher_network, ema_decay)
        #: the unlabeled term's weight per iteration (warm-up, ramp-up)
        self.unlabeled_schedule = schedule
        self.teacher_network = teacher_network
        self.consistency = consistency
        self.confidence_threshold = float(confidence_threshold)
        self.labeled_adversarial_weight = float(labeled_adversarial_weight)
        self.unlabeled_image_key = unlabeled_image_key
        self.ema_decay = float(ema_decay)
        self.hidden_label_key = hidden_label_key
        if hidden_label_key is not None:
            PseudoLabelAccuracy(hidden_label_key).attach(self)

    @property
    def unlabeled_weight(self) -> float:
        return self.unlabeled_schedule.weight

    @property
    def warmup_epochs(self) -> float:
        return self.unlabeled_schedule.warmup_epochs

    @property
    def rampup_epochs(self) -> float:
        return self.unlabeled_schedule.rampup_epochs

    @property
    def ema_network(self) -> nn.Module | None:
        """The mean teacher's network with ``pseudo_labels="ema"`` (add it to a checkpoint), else ``None``."""
        return getattr(self.labeller, "ema_network", None)

    def current_unlabeled_weight(self, engine: Any) -> float:
        """The unlabeled term's weight at this iteration: 0 in the warm-up, then the ramp-up, then full."""
        return self.unlabeled_schedule(engine.state.iteration, engine.state.epoch_length)

    def _unlabeled_images(self, engine: Any, batch: Any, like: torch.Tensor) -> torch.Tensor:
        return unlabeled_images_like(batch, like, self.unlabeled_image_key, engine.non_blocking)

    def _iteration(self, engine: SemiSupervisedAdversarialTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        K = AdvTrainingKeys
        inputs, targets, args, kwargs = self._split_batch(engine, batchdata)
        engine.state.unlabeled_batch = self.unlabeled.next()
        x_u = self._unlabeled_images(engine, engine.state.unlabeled_batch, inputs)
        sync_buffers(engine.network)
        trained = unwrap_network(engine.network)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        weight = self.current_unlabeled_weight(engine)
        engine.state.output[K.UNLABELED_WEIGHT] = weight

        # 1. pseudo-labels, without gradient, in eval mode
        source = self.labeller.network(trained)
        with torch.no_grad(), eval_mode(source), self._autocast(engine):
            pseudo_logits = self._check_logits(
                self.network_output_transform(source(x_u)), x_u.shape[0]
            ).float()
        probs = pseudo_logits.softmax(dim=1)
        confidence, y_u = probs.max(dim=1)
        # the attack's labels: one class per item, or the argmax masks (B, 1, *spatial) of a dense output
        y_attack = y_u[:, None] if self._dense else y_u
        keep = (confidence >= self.confidence_threshold).to(probs.dtype)
        engine.state.output[K.PSEUDO_CONFIDENCE] = confidence.mean().item()
        engine.state.output[K.PSEUDO_KEPT] = keep.mean().item()
        engine.state.output[K.PSEUDO_HISTOGRAM] = (
            torch.bincount(y_u.reshape(-1), minlength=probs.shape[1]).float() / y_u.numel()
        ).cpu()
        engine.state.pseudo_labels, engine.state.num_pseudo_classes = y_u, probs.shape[1]
        engine.fire_event(AdversarialTrainingEvents.PSEUDO_LABELS_COMPLETED)  # e.g. PseudoLabelAccuracy

        # 2. the attacks (eval mode inside, parameters' gradients untouched); none in the warm-up
        unlabeled_on = weight > 0
        x_u_adv = self.attack(x_u, y_attack) if unlabeled_on else None
        engine.state.output[K.ATTACK_EPS] = _current_eps(self.attack) if unlabeled_on else 0.0
        x_l_adv = self.labeled_attack(inputs, targets) if self.labeled_attack is not None else None
        engine.fire_event(AdversarialTrainingEvents.ATTACK_COMPLETED)

        # 3. the training step
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with self._autocast(engine):
            pred = self._predict(engine, inputs, targets, args, kwargs, "labels of the labeled batch")
            loss_l = engine.loss_function(pred, targets).mean()
            if unlabeled_on:
                adv_logits = self._logits(engine, x_u_adv)
                if self.consistency == "ce":
                    per_item = F.cross_entropy(adv_logits.float(), y_u, reduction="none")
                else:
                    clean = (
                        pseudo_logits
                        if self.labeller.labels_with_own_logits
                        else self._logits(engine, x_u).float()
                    )
                    per_item = per_sample_kl(clean, adv_logits.float())
                loss_u = (per_item * keep).mean()
                loss = loss_l + weight * loss_u
            else:
                loss_u, loss = torch.zeros((), device=loss_l.device), loss_l
            if x_l_adv is not None:
                loss_la = engine.loss_function(self._logits(engine, x_l_adv, *args, **kwargs), targets).mean()
                loss = loss + self.labeled_adversarial_weight * loss_la
                engine.state.output[K.LOSS_LABELED_ADV] = loss_la.item()
        engine.state.output[Keys.LOSS] = loss
        engine.state.output[K.LOSS_LABELED] = loss_l.item()
        engine.state.output[K.LOSS_UNLABELED] = loss_u.item()
        if unlabeled_on:
            engine.state.output[K.ATTACK_SUCCESS] = _wrong_share(adv_logits, y_attack)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self._step(engine, loss)
        self.labeller.after_step(trained)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class SupervisedAdversarialTrainer(_AdversarialTrainerBase):
    """Supervised adversarial training baselines: Madry PGD-AT and TRADES.

    - ``method="madry"`` (Madry et al., ICLR 2018, :class:`MadryAdversarialTrainer`):
      ``L = loss_function(f(attack(x, y)), y)``; with ``clean_weight=w > 0``,
      ``(1 - w) * L + w * loss_function(f(x), y)``. ``engine.state.output[PRED]`` holds the logits on the
      attacked batch (so a training-accuracy metric measures robust accuracy).
    - ``method="trades"`` (Zhang et al., ICML 2019, :class:`TradesAdversarialTrainer`): the attack
      maximises ``KL(softmax f(x) || softmax f(x'))`` (its loss is replaced per call; it must start from
      a random point, e.g. ``PGD(..., random_start=True)``), and
      ``L = loss_function(f(x), y) + beta * mean_i KL(softmax f(x)_i || softmax f(x_adv)_i)``.

    ``SupervisedAdversarialTrainer(..., method=...)`` builds the class of that method (a subclass of
    this one); the two algorithms share the iteration here and each writes only its attack and loss.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function: as for
            ``monai.engines.SupervisedTrainer``.
        attack: an attack from :mod:`monai_adv.transforms`, re-aimed at the trained network.
        method: ``"madry"`` or ``"trades"``.
        beta: TRADES' weight of the KL term (>= 0).
        clean_weight: Madry: weight in ``[0, 1]`` of a clean term (0: pure PGD-AT).
        network_output_transform: picks the logits out of the network's output.
        kwargs: any other keyword argument of ``monai.engines.SupervisedTrainer``.

    Raises:
        ValueError: for an empty loader, a bad option, TRADES with an attack without random start, or
            (at run time) labels outside the network's classes.
        TypeError: when the attack is not a ``monai_adv.transforms`` attack.
    """

    #: the method this class trains with (set by the subclasses)
    method_name: str = ""

    def __new__(cls, *args: Any, method: str = "madry", **kwargs: Any) -> SupervisedAdversarialTrainer:
        if cls is SupervisedAdversarialTrainer:
            methods = {c.method_name: c for c in (MadryAdversarialTrainer, TradesAdversarialTrainer)}
            if method not in methods:
                raise ValueError(f"method must be 'madry' or 'trades', got {method!r}.")
            cls = methods[method]
        return super().__new__(cls)

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        attack: AdversarialAttack,
        method: str | None = None,
        beta: float = 6.0,
        clean_weight: float = 0.0,
        **kwargs: Any,
    ) -> None:
        check_loader_not_empty(train_data_loader, "train_data_loader")
        _check_attack(attack, "attack")
        if method is not None and method != self.method_name:
            raise ValueError(
                f"{type(self).__name__} trains with method={self.method_name!r}, got {method!r}."
            )
        if not float(beta) >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}.")
        if not 0.0 <= float(clean_weight) <= 1.0:
            raise ValueError(f"clean_weight must lie in [0, 1], got {clean_weight!r}.")
        self._check_attack_fits(attack)
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, loss_function, **kwargs)
        self.attack = self._in_precision(_aim(attack, unwrap_network(network)))
        self.method = self.method_name
        self.beta = float(beta)
        self.clean_weight = float(clean_weight)

    # what a method writes -------------------------------------------------------------------------
    def _check_attack_fits(self, attack: AdversarialAttack) -> None:
        """Raise ``ValueError`` when the method cannot train with this attack."""

    def _iteration_attack(self, engine: Any, trained: nn.Module, inputs: torch.Tensor) -> AdversarialAttack:
        """The attack of this iteration (the configured one unless the method adapts it)."""
        return self.attack

    def _loss(
        self,
        engine: Any,
        inputs: torch.Tensor,
        x_adv: torch.Tensor,
        targets: torch.Tensor,
        args: tuple,
        kwargs: dict,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The training loss and the logits on the attacked batch; fires ``FORWARD_COMPLETED``."""
        raise NotImplementedError

    # the shared iteration ---------------------------------------------------------------------------
    def _iteration(self, engine: SupervisedAdversarialTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        inputs, targets, args, kwargs = self._split_batch(engine, batchdata)
        sync_buffers(engine.network)
        trained = unwrap_network(engine.network)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        attack = self._iteration_attack(engine, trained, inputs)
        x_adv = attack(inputs, targets)
        engine.state.output[AdvTrainingKeys.ATTACK_EPS] = _current_eps(attack)
        engine.fire_event(AdversarialTrainingEvents.ATTACK_COMPLETED)

        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with self._autocast(engine):
            loss, adv_logits = self._loss(engine, inputs, x_adv, targets, args, kwargs)
        engine.state.output[Keys.LOSS] = loss
        engine.state.output[AdvTrainingKeys.ATTACK_SUCCESS] = _wrong_share(adv_logits, targets)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self._step(engine, loss)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class MadryAdversarialTrainer(SupervisedAdversarialTrainer):
    """Madry PGD-AT: ``SupervisedAdversarialTrainer(..., method="madry")`` (see there for the arguments)."""

    method_name = "madry"

    def _loss(self, engine, inputs, x_adv, targets, args, kwargs):
        adv_logits = self._predict(engine, x_adv, targets, args, kwargs, "labels of the labeled batch")
        loss_adv = engine.loss_function(adv_logits, targets).mean()
        loss = loss_adv
        engine.state.output[AdvTrainingKeys.LOSS_LABELED_ADV] = loss_adv.item()
        if self.clean_weight > 0:
            loss_c = engine.loss_function(self._logits(engine, inputs, *args, **kwargs), targets).mean()
            loss = (1 - self.clean_weight) * loss_adv + self.clean_weight * loss_c
            engine.state.output[AdvTrainingKeys.LOSS_LABELED] = loss_c.item()
        return loss, adv_logits


class TradesAdversarialTrainer(SupervisedAdversarialTrainer):
    """TRADES: ``SupervisedAdversarialTrainer(..., method="trades")`` (see there for the arguments)."""

    method_name = "trades"

    def _check_attack_fits(self, attack: AdversarialAttack) -> None:
        if not getattr(attack, "random_start", False):
            raise ValueError(
                f"TRADES' KL attack has zero gradient at the clean input, so it needs a random start; "
                f"{type(attack).__name__} has none (use PGD(..., random_start=True))."
            )

    def _iteration_attack(self, engine, trained, inputs):
        with torch.no_grad(), eval_mode(trained), self._autocast(engine):
            clean_eval = self._check_logits(self.network_output_transform(trained(inputs)), inputs.shape[0])
        attack = copy.copy(self.attack)
        # per sample: for a dense output, the mean of the per-voxel KL
        attack.loss = _voxel_mean_loss(kl_attack_loss(clean_eval.float()))
        return attack

    def _loss(self, engine, inputs, x_adv, targets, args, kwargs):
        pred = self._predict(engine, inputs, targets, args, kwargs, "labels of the labeled batch")
        adv_logits = self._logits(engine, x_adv, *args, **kwargs)
        loss_c = engine.loss_function(pred, targets).mean()
        loss_r = per_sample_kl(pred.float(), adv_logits.float()).mean()
        engine.state.output[AdvTrainingKeys.LOSS_LABELED] = loss_c.item()
        engine.state.output[AdvTrainingKeys.LOSS_ROBUST] = loss_r.item()
        return loss_c + self.beta * loss_r, adv_logits


class AutocastSupervisedTrainer(_AdversarialTrainerBase):
    """MONAI's ``SupervisedTrainer`` (no attack) whose ``amp=True`` works on any device.

    MONAI's trainer autocasts on CUDA only; this one runs the forward pass and the loss under
    bfloat16 autocast on CPU (float16 with a grad scaler, or bfloat16, on CUDA), as the adversarial
    trainers do, so an undefended baseline trains in the same precision as the defended systems it
    is compared with. Everything else is ``SupervisedTrainer``'s: its arguments, events, handlers
    and metrics.

    Raises:
        ValueError: for an empty loader or (at run time) labels outside the network's classes.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        *args: Any,
        **kwargs: Any,
    ):
        check_loader_not_empty(train_data_loader, "train_data_loader")
        super().__init__(device, max_epochs, train_data_loader, *args, **kwargs)

    def _iteration(self, engine: AutocastSupervisedTrainer, batchdata: Any) -> dict:  # type: ignore[override]
        inputs, targets, args, kwargs = self._split_batch(engine, batchdata)
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with self._autocast(engine):
            pred = self._predict(engine, inputs, targets, args, kwargs, "labels of the batch")
            loss = engine.loss_function(pred, targets).mean()
        engine.state.output[Keys.LOSS] = loss
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        self._step(engine, loss)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
