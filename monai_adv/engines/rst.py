"""Robust self-training (RST): a teacher's pseudo-labels on unlabeled data, then TRADES on mixed batches.

Carmon, Raghunathan, Schmidt, Liang & Duchi, "Unlabeled Data Improves Adversarial Robustness",
NeurIPS 2019 (arXiv 1905.13736): a standard (non-robust) teacher is trained on the labeled data; it
pseudo-labels the unlabeled pool; a student is then trained adversarially (TRADES) on batches of which
half are labeled items and half pseudo-labeled ones.

- :func:`pseudo_label` labels images (a tensor or one pass of a loader) with a teacher's argmax: one
  class per item for a classifier, argmax masks ``(N, 1, *spatial)`` for a segmentation network.
- :class:`PseudoLabeledLoader` wraps a loader of unlabeled batches into one of pseudo-labeled batches.
- :class:`RobustSelfTrainingTrainer` trains with RST: every iteration concatenates the labeled batch
  with as many pseudo-labeled items (labeled on the fly by the frozen teacher, or taken from batches
  already pseudo-labeled) and takes a TRADES step on the mixed batch.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
from monai.utils import CommonKeys as Keys

from monai_adv.distributed import unwrap_network
from monai_adv.engines.batches import CyclingLoader, check_logits, unlabeled_images, unlabeled_images_like
from monai_adv.engines.trainers import AdversarialTrainingEvents, TradesAdversarialTrainer
from monai_adv.keys import AdvTrainingKeys
from monai_adv.metrics.segmentation import dense_indices, one_hot_masks
from monai_adv.transforms.base import AdversarialAttack
from monai_adv.utils import class_indices, default_output_transform, eval_mode, plain_tensor, read_state_dict

__all__ = ["pseudo_label", "PseudoLabeledLoader", "RobustSelfTrainingTrainer", "load_teacher"]


def _device_of(network: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    p = next(iter(network.parameters()), None)
    return p.device if p is not None else torch.device(default)


def _teacher_logits(
    teacher: nn.Module, x: torch.Tensor, output_transform: Callable[[Any], torch.Tensor], dense: bool | None
) -> torch.Tensor:
    """The teacher's logits on ``x`` (on the teacher's device), without gradient and in eval mode."""
    with torch.no_grad(), eval_mode(teacher):
        out = output_transform(teacher(x.to(_device_of(teacher, x.device))))
    if dense is None:
        dense = isinstance(out, torch.Tensor) and out.ndim >= 3
    return check_logits(out, x.shape[0], dense=dense).float()


def _argmax_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class indices ``(B,)`` of class logits, or argmax masks ``(B, 1, *spatial)`` of dense logits."""
    y = logits.argmax(dim=1)
    return y[:, None] if logits.ndim >= 3 else y


def pseudo_label(
    teacher: nn.Module,
    images: torch.Tensor | Iterable,
    *,
    batch_size: int = 64,
    image_key: str = "image",
    output_transform: Callable[[Any], torch.Tensor] = default_output_transform,
    dense: bool | None = None,
) -> torch.Tensor:
    """A teacher's pseudo-labels: the argmax of its output, per item or per voxel.

    Args:
        teacher: the network trained on the labeled data; it runs in eval mode, without gradient (its
            modes are restored afterwards).
        images: a tensor of images ``(N, C, *spatial)`` (labelled ``batch_size`` at a time), or one pass of
            a loader of batches (tensors, dicts with ``image_key``, or ``(images, ...)`` tuples), labelled
            in the order the loader gives them (use one that does not shuffle).
        batch_size: items per teacher forward pass for a tensor of images.
        image_key: the image key of dict batches.
        output_transform: picks the logits out of the teacher's output.
        dense: whether the output is dense (segmentation) logits; None decides from its shape.

    Returns:
        ``(N,)`` class indices for a classifier, ``(N, 1, *spatial)`` argmax masks for dense logits
        (``torch.long``, on the CPU).

    Raises:
        ValueError: for no images, a bad ``batch_size``, or an output that is not logits.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
    if isinstance(images, torch.Tensor):
        x = plain_tensor(images)
        batches: Iterable = (x[i : i + int(batch_size)] for i in range(0, x.shape[0], int(batch_size)))
    else:
        batches = (plain_tensor(unlabeled_images(b, image_key)) for b in images)
    labels = [_argmax_labels(_teacher_logits(teacher, xb, output_transform, dense)).cpu() for xb in batches]
    if not labels:
        raise ValueError("pseudo_label got no images to label.")
    return torch.cat(labels)


class PseudoLabeledLoader:
    """A loader of unlabeled batches made one of pseudo-labeled batches: ``{image_key: x, label_key: y}``.

    ``y`` is the teacher's argmax (:func:`pseudo_label`), computed per batch as it is drawn (so random
    augmentations of the unlabeled loader are labelled as they were drawn); a dict batch keeps its other
    keys. Its length is the wrapped loader's.

    Args:
        loader: the unlabeled loader (tensors, dicts with ``image_key``, or ``(images, ...)`` tuples).
        teacher: the network trained on the labeled data (eval mode, no gradient).
        image_key: the image key of dict batches, and of the batches yielded.
        label_key: the key of the pseudo-labels in the batches yielded.
        output_transform: picks the logits out of the teacher's output.
    """

    def __init__(
        self,
        loader: Iterable,
        teacher: nn.Module,
        image_key: str = "image",
        label_key: str = "label",
        output_transform: Callable[[Any], torch.Tensor] = default_output_transform,
    ) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be a torch module, got {type(teacher).__name__}.")
        self.loader = loader
        self.teacher = teacher
        self.image_key = image_key
        self.label_key = label_key
        self.output_transform = output_transform

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict]:
        for batch in self.loader:
            x = unlabeled_images(batch, self.image_key)
            y = _argmax_labels(_teacher_logits(self.teacher, plain_tensor(x), self.output_transform, None))
            out = dict(batch) if isinstance(batch, Mapping) else {}
            out[self.image_key] = x
            out[self.label_key] = y.to(x.device)
            yield out


def load_teacher(network: nn.Module, checkpoint: str | os.PathLike, key: str | None = None) -> nn.Module:
    """A frozen copy of ``network`` (unwrapped from DDP) with the weights of ``checkpoint`` (``weights_only``).

    The file holds a state dict, or a dict holding it under ``key`` (or ``"model"``/``"network"``: what
    MONAI's ``CheckpointSaver`` and ``monai_adv``'s checkpoints write); DDP's ``module.`` prefixes are
    removed.

    Raises:
        FileNotFoundError: naming the file when it does not exist.
        ValueError: naming the file when it cannot be read or does not fit the network.
    """
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"teacher checkpoint {path!r} does not exist.")
    state = read_state_dict(path, "teacher checkpoint", key)
    teacher = copy.deepcopy(unwrap_network(network))
    try:
        teacher.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"teacher checkpoint {path!r} does not fit the network: {e}") from e
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


class RobustSelfTrainingTrainer(TradesAdversarialTrainer):
    """Robust self-training (RST; Carmon et al., NeurIPS 2019): TRADES on half labeled, half pseudo-labeled batches.

    Each iteration takes the labeled batch ``(x_l, y_l)`` of ``train_data_loader`` (which defines the
    epoch) and as many items ``x_p`` from ``unlabeled_data_loader`` (cycled independently; batches are
    drawn until there are enough, and the surplus of the last one is left out), with pseudo-labels
    ``y_p``:

    - with ``teacher_network``: the frozen teacher's argmax on ``x_p`` as drawn (eval mode, no
      gradient): a class per item, or for a segmentation network the argmax masks ``(B, 1, *spatial)``
      (one-hot when the labeled maps are one-hot);
    - without: the labels the unlabeled batches carry (``pseudo_label_key`` of a dict batch, or the
      second item of a tuple), e.g. a loader over :func:`pseudo_label`'s output, labelled once before
      training as Carmon et al. do.

    The TRADES step (:class:`~monai_adv.engines.trainers.TradesAdversarialTrainer`) is then taken on the
    mixed batch ``x = [x_l; x_p]``, ``y = [y_l; y_p]``: the attack maximises the KL from the clean
    prediction, and ``L = loss_function(f(x), y) + beta * mean_i KL(softmax f(x)_i || softmax f(x_adv)_i)``.
    ``engine.state.output`` holds the mixed batch (so a training metric counts the pseudo-labeled items
    too) and, with a teacher, the pseudo-labels' mean confidence and class histogram; a dict
    ``engine.state.batch`` becomes ``{"image": x, "label": y}`` of the mixed batch, so that MONAI's
    ``postprocessing`` (which pairs the batch's items with the output's) sees every item.

    Args:
        device, max_epochs, train_data_loader, network, optimizer, loss_function: as for
            ``monai.engines.SupervisedTrainer``; ``train_data_loader`` is the labeled data.
        unlabeled_data_loader: batches of unlabeled images (tensors, dicts with ``unlabeled_image_key``,
            or ``(images, ...)`` tuples) with the labeled images' channels and spatial size, or of
            pseudo-labeled ones when there is no teacher.
        attack: an attack from :mod:`monai_adv.transforms` with a random start (e.g. ``PGD``), re-aimed at
            the trained network; its loss is replaced per call by TRADES' KL.
        teacher_network: the teacher (a network trained on the labeled data), or the path of its
            checkpoint, loaded into a frozen copy of ``network``; None when the unlabeled batches carry
            their pseudo-labels.
        beta: TRADES' weight of the KL term (Carmon et al. use 6).
        unlabeled_image_key: the image key of dict unlabeled batches.
        pseudo_label_key: the pseudo-label key of dict unlabeled batches (without a teacher).
        network_output_transform: picks the logits out of the network's (and the teacher's) output.
        kwargs: any other keyword argument of ``monai.engines.SupervisedTrainer``.

    Raises:
        ValueError: for an empty loader, a bad option, an attack without random start, or (at run time)
            unlabeled images whose shape differs from the labeled ones, unlabeled batches without
            pseudo-labels and no teacher, or a ``prepare_batch`` that returns extra network arguments.
        TypeError: when the attack is not a ``monai_adv.transforms`` attack.
    """

    method_name = "rst"

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        unlabeled_data_loader: Iterable,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: Callable,
        attack: AdversarialAttack,
        teacher_network: nn.Module | str | os.PathLike | None = None,
        beta: float = 6.0,
        unlabeled_image_key: str = "image",
        pseudo_label_key: str = "label",
        **kwargs: Any,
    ) -> None:
        unlabeled = CyclingLoader(unlabeled_data_loader, "unlabeled_data_loader")
        if isinstance(teacher_network, (str, os.PathLike)):
            teacher_network = load_teacher(network, teacher_network).to(device)
        elif teacher_network is not None and not isinstance(teacher_network, nn.Module):
            raise TypeError(
                f"teacher_network must be a torch module or a checkpoint path, got {type(teacher_network).__name__}."
            )
        super().__init__(
            device,
            max_epochs,
            train_data_loader,
            network,
            optimizer,
            loss_function,
            attack,
            beta=beta,
            **kwargs,
        )
        self.unlabeled_data_loader = unlabeled_data_loader
        self.unlabeled = unlabeled
        self.teacher_network = teacher_network
        self.unlabeled_image_key = unlabeled_image_key
        self.pseudo_label_key = pseudo_label_key
        self._pseudo_stats: dict[str, Any] = {}

    # the mixed batch ------------------------------------------------------------------------------
    def _split_batch(self, engine: Any, batchdata: Any) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        inputs, targets, args, kwargs = super()._split_batch(engine, batchdata)
        if args or kwargs:
            raise ValueError(
                "RST mixes labeled and pseudo-labeled items in one batch, so prepare_batch must not return "
                "extra network arguments (it returned some)."
            )
        x_p, y_p = self._pseudo_labeled_items(engine, inputs, targets)
        x, y = torch.cat([inputs, x_p]), torch.cat([targets, y_p])
        if isinstance(engine.state.batch, Mapping):
            # MONAI's postprocessing (decollate=True) pairs the batch's items with the output's, one by one:
            # the batch becomes the mixed one, or the pseudo-labeled half would not be post-processed
            engine.state.batch = {Keys.IMAGE: x, Keys.LABEL: y}
        return x, y, args, kwargs

    def _pseudo_labeled_items(
        self, engine: Any, like_x: torch.Tensor, like_y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As many pseudo-labeled items as the labeled batch has, in the labeled batch's label format."""
        n = like_x.shape[0]
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        confidences: list[torch.Tensor] = []
        have = 0
        while have < n:
            batch = self.unlabeled.next()
            x = self._unlabeled_images(engine, batch, like_x)
            if self.teacher_network is not None:
                logits = _teacher_logits(self.teacher_network, x, self.network_output_transform, self._dense)
                probs = logits.softmax(dim=1)
                confidences.append(
                    probs.max(dim=1).values.flatten(1).mean(dim=1) if self._dense else probs.amax(1)
                )
                y = logits.argmax(dim=1).to(like_x.device)  # (B,) or (B, *spatial)
            else:
                y = self._carried_labels(batch, x.shape[0])
            xs.append(x)
            ys.append(y)
            have += x.shape[0]
        x_p, y_p = torch.cat(xs)[:n], torch.cat(ys)[:n]
        self._pseudo_stats = {}
        if confidences:
            k = logits.shape[1]
            self._pseudo_stats[AdvTrainingKeys.PSEUDO_CONFIDENCE] = torch.cat(confidences)[:n].mean().item()
            self._pseudo_stats[AdvTrainingKeys.PSEUDO_HISTOGRAM] = (
                torch.bincount(y_p.reshape(-1).cpu(), minlength=k).float() / y_p.numel()
            )
        return x_p, self._like_targets(y_p, like_y)

    def _unlabeled_images(self, engine: Any, batch: Any, like: torch.Tensor) -> torch.Tensor:
        return unlabeled_images_like(
            batch, like, self.unlabeled_image_key, engine.non_blocking, why="RST concatenates them"
        )

    def _carried_labels(self, batch: Any, n: int) -> torch.Tensor:
        """The pseudo-labels an unlabeled batch carries (no teacher): class indices or index maps."""
        if isinstance(batch, Mapping) and self.pseudo_label_key in batch:
            y = batch[self.pseudo_label_key]
        elif isinstance(batch, (tuple, list)) and len(batch) > 1:
            y = batch[1]
        else:
            raise ValueError(
                f"RST has no teacher_network, so the unlabeled batches must carry their pseudo-labels (key "
                f"{self.pseudo_label_key!r}, or (images, labels) tuples); got a batch without them. Pass "
                "teacher_network=... or label the unlabeled data first (monai_adv.engines.pseudo_label)."
            )
        y = plain_tensor(y)
        if self._dense:
            return dense_indices(y, None, "pseudo-label maps of the unlabeled batch")
        return class_indices(y, n, "pseudo-labels of the unlabeled batch")

    @staticmethod
    def _like_targets(indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Pseudo-labels in the labeled targets' format: ``(B,)`` classes, ``(B, 1, *sp)`` or one-hot maps."""
        if like.ndim < 3:
            return indices.to(device=like.device, dtype=like.dtype)
        if like.shape[1] == 1:
            return indices[:, None].to(device=like.device, dtype=like.dtype)
        return one_hot_masks(indices, like.shape[1]).to(device=like.device, dtype=like.dtype)

    def _iteration_attack(self, engine: Any, trained: nn.Module, inputs: torch.Tensor) -> AdversarialAttack:
        # the output dict exists from here on: record the pseudo-labels' statistics
        engine.state.output.update(self._pseudo_stats)
        engine.fire_event(AdversarialTrainingEvents.PSEUDO_LABELS_COMPLETED)
        return super()._iteration_attack(engine, trained, inputs)
