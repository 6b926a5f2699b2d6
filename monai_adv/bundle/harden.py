"""Harden any MONAI bundle: its own training config turned into adversarial or semi-supervised adversarial training.

::

    python -m monai_adv.bundle harden BUNDLE_DIR --method madry|trades|rst|ssat|...
        [--unlabeled-dir DIR | --unlabeled-list FILE.json] [--teacher CKPT] [--eps E] [--steps N]
        [--config FILE ...] [--trainer-id ID] [--output OVERLAY.json] [--dry-run] [--KEY VALUE ...]

The bundle keeps everything it has (network, transforms, optimizer, loss, inferer, handlers with their
checkpoint saving and validation, the ``run`` section): only its trainer changes. ``harden`` finds the
trainer in the parsed config, whatever its id (``trainer`` in MONAI's templates, ``train#trainer`` in the
model zoo): an item whose ``_target_`` is MONAI's ``SupervisedTrainer`` or a subclass. It writes an overlay
that sets that item's ``_target_`` to :func:`adversarial_trainer` and its method settings, and runs the
bundle's configs with the overlay stacked last, as ``python -m monai.bundle run --config_file
"['configs/train.json', '<overlay>']"`` would (the command is printed, to rerun it without monai-adv's CLI).
Extra ``--KEY VALUE`` arguments override config ids exactly as ``monai.bundle run`` takes them
(``--train#dataloader#num_workers 0``).

The same is available without the CLI as overlays shipped in the package (:func:`training_overlay_path`,
or ``python -m monai_adv.bundle overlay NAME`` prints the path): ``adversarial_training.json`` for a
trainer with the id ``train#trainer`` (the model zoo's JSON bundles, e.g. spleen_ct_segmentation) and
``adversarial_training_trainer.json`` for one with the id ``trainer`` (MONAI's bundle templates); their
settings are the ids ``harden#method``, ``harden#eps``, ... (see :func:`adversarial_training_overlay`),
set on the command line::

    python -m monai.bundle run --config_file \\
        "['configs/train.json', '$(python -m monai_adv.bundle overlay adversarial_training)']" \\
        --harden#method trades --harden#eps 0.01
    python -m monai.bundle run --config_file \\
        "['configs/train.yaml', '$(python -m monai_adv.bundle overlay adversarial_training_trainer)']" \\
        --harden#method rst --harden#unlabeled_dir /data/unlabeled --harden#teacher_file models/model.pt

For any other trainer id, ``harden --trainer-id ID --dry-run`` writes the overlay for it.

Choices, and why:

- **eps** is in the units of the network's input (after the bundle's preprocessing: for spleen, whose
  ``ScaleIntensityRanged`` maps -57..164 HU to 0..1, eps 0.01 is 2.2 HU); the default is the method's
  (:data:`~monai_adv.engines.TRAINING_METHODS`). The attack's value range is read from the training
  preprocessing (:func:`infer_value_range`: the last intensity transform, when it bounds the values,
  e.g. ``ScaleIntensityd`` or a clipping ``ScaleIntensityRanged``), else unbounded; ``--value-range``
  sets it.
- **Unlabeled data** (``rst``, ``ssat``): a folder of images or a datalist JSON, read with the bundle's
  own *training* preprocessing (:func:`unlabeled_preprocessing`), so that unlabeled items get the
  labeled ones' loading, orientation, spacing, intensity scaling, patch size and augmentation, which
  the semi-supervised trainers need (their unlabeled items must have the labeled items' shape).
  Label-dependent steps are made label-free: a crop guided by the label (``RandCropByPosNegLabeld``,
  ``RandCropByLabelClassesd``, ``RandWeightedCropd`` on the label) becomes a uniformly random crop of the
  same size and number of samples (after padding to that size), a crop to the label's foreground is
  left out, transforms of the image and the label act on the image alone, and transforms of the label
  alone are left out. The validation preprocessing is not used: it usually keeps whole images or
  volumes, whose shape differs from the training patches. ``harden#unlabeled_preprocessing`` (a
  transform, e.g. ``@my_unlabeled_transforms``) replaces the derived one.
- **Teacher** (``rst``, ``ssat_teacher``): a model trained on the labeled data, by default the bundle's
  own weights (``ckpt_path``, ``ckpt_dir/model.pt`` or ``models/model.pt``), else ``--teacher``.
- **Dense outputs** (segmentation) use pseudo-label masks, the argmax of the (softmax) output per voxel.
- Because a bundle's own checkpoint saver may write over ``models/model.pt`` (spleen's does), the CLI
  copies that file to ``models/model_before_harden.pt`` first (once: an existing copy is kept, and is
  then the default teacher).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from monai_adv.bundle.errors import BundleInputError, input_error
from monai_adv.bundle.introspect import (
    engine_ids,
    flatten_transforms,
    intensity_map,
    parse_overrides,
    target_class,
    walk_config,
)
from monai_adv.distributed import unwrap_network
from monai_adv.engines.methods import TRAINING_METHODS, create_trainer, training_method
from monai_adv.engines.rst import load_teacher

__all__ = [
    "HardenError",
    "HardenResult",
    "OVERLAYS",
    "training_overlay_path",
    "adversarial_training_overlay",
    "adversarial_trainer",
    "find_trainer_ids",
    "infer_value_range",
    "infer_spatial_dims",
    "unlabeled_preprocessing",
    "unlabeled_datalist",
    "unlabeled_loader",
    "harden_bundle",
    "add_commands",
]

logger = logging.getLogger("monai_adv.bundle")

#: the overlays shipped in the package, by the id of the trainer they harden
OVERLAYS = {"train#trainer": "adversarial_training.json", "trainer": "adversarial_training_trainer.json"}

#: the overlay's settings section (``--harden#eps 0.01`` sets one)
SECTION = "harden"

#: the settings of :func:`adversarial_trainer` the overlay exposes, with their defaults
SETTINGS: dict[str, Any] = {
    "method": "madry",
    "eps": None,
    "steps": None,
    "value_range": "auto",
    "spatial_dims": "auto",
    "unlabeled_dir": "",
    "unlabeled_list": "",
    "unlabeled_preprocessing": None,
    "unlabeled_cache_rate": 0.0,
    "teacher_file": "",
    "image_key": "image",
    "label_key": "label",
    "seed": 0,
}

#: image files ``--unlabeled-dir`` lists (compound suffixes first)
IMAGE_SUFFIXES = (
    ".nii.gz",
    ".nii",
    ".mha",
    ".mhd",
    ".nrrd",
    ".dcm",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
    ".npy",
)

#: attributes through which a dictionary transform reads the label (a crop guided by it)
_LABEL_SOURCE_ATTRS = ("label_key", "source_key", "w_key")
_INDEX_ATTRS = ("fg_indices_key", "bg_indices_key", "indices_key")


class HardenError(BundleInputError):
    """A bundle that cannot be hardened as asked: the message names the cause and the key or option to set."""


def _fail(message: str) -> HardenError:
    return input_error(HardenError(message))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------
# overlays
# ----------------------------------------------------------------------------------------------------
def training_overlay_path(trainer_id: str = "train#trainer") -> str:
    """The shipped overlay for a trainer with the id ``trainer_id`` (``"train#trainer"`` or ``"trainer"``).

    Raises:
        ValueError: for another id (``harden --trainer-id ID --dry-run`` writes an overlay for any id).
    """
    if trainer_id not in OVERLAYS:
        raise ValueError(
            f"no shipped overlay for the trainer id {trainer_id!r} (shipped: {sorted(OVERLAYS)}); write one with "
            f"`python -m monai_adv.bundle harden BUNDLE_DIR --trainer-id '{trainer_id}' --dry-run` or "
            "adversarial_training_overlay(trainer_id)."
        )
    return str(Path(__file__).resolve().parent / "overlays" / OVERLAYS[trainer_id])


def adversarial_training_overlay(trainer_id: str = "train#trainer", **settings: Any) -> dict[str, Any]:
    """The overlay that hardens the trainer ``trainer_id`` of a bundle (a dict; write it as JSON or YAML).

    It holds a ``harden`` section with the settings (:data:`SETTINGS`, overridden by ``settings``) and
    sets ``<trainer_id>#_target_`` to :func:`adversarial_trainer` and each of its settings to
    ``@harden#<setting>``; every other argument of the bundle's trainer stays as the bundle has it.

    Raises:
        ValueError: for an unknown setting or method.
    """
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown harden settings {unknown}; known: {sorted(SETTINGS)}.")
    values = {**SETTINGS, **settings}
    training_method(values["method"])
    overlay: dict[str, Any] = {SECTION: values}
    overlay[f"{trainer_id}#_target_"] = f"{__name__}.adversarial_trainer"
    for key in SETTINGS:
        overlay[f"{trainer_id}#{key}"] = f"@{SECTION}#{key}"
    return overlay


# ----------------------------------------------------------------------------------------------------
# what the overlay's trainer reads from the bundle
# ----------------------------------------------------------------------------------------------------
def infer_value_range(transform: Any) -> tuple[float, float] | None:
    """The range of the network input's values that a preprocessing chain guarantees, or None (unbounded).

    Read by :func:`~monai_adv.bundle.introspect.intensity_map`: ``ScaleIntensity(d)`` to ``(minv, maxv)``, or a
    clipping ``ScaleIntensityRange(d)`` / ``ScaleIntensityRangePercentiles(d)``, bound the values; any other
    intensity transform after them (noise, normalisation, ...) leaves them unbounded. Spatial, cropping,
    padding and type transforms do not change the range.
    """
    return intensity_map(transform).value_range


def infer_spatial_dims(network: nn.Module) -> int:
    """2 or 3: the dimensions of the network's first convolution (2 when it has none)."""
    for m in unwrap_network(network).modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            return 3
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return 2
    return 2


def _reads_label(t: Any, label_key: str) -> bool:
    if any(getattr(t, a, None) == label_key for a in _LABEL_SOURCE_ATTRS):
        return True
    return any(getattr(t, a, None) is not None for a in _INDEX_ATTRS)


def _label_free_crop(t: Any, image_keys: tuple[str, ...]) -> list:
    """A random crop of the size and number of samples of a label-guided crop ``t``, after padding to that size."""
    from monai.transforms import RandSpatialCropSamplesd, SpatialPadd

    cropper = getattr(t, "cropper", t)
    size = getattr(cropper, "spatial_size", None)
    if size is None:
        return []
    n = int(getattr(cropper, "num_samples", getattr(t, "num_samples", 1)) or 1)
    return [
        SpatialPadd(keys=image_keys, spatial_size=size, allow_missing_keys=True),
        RandSpatialCropSamplesd(
            keys=image_keys, roi_size=size, num_samples=n, random_size=False, allow_missing_keys=True
        ),
    ]


def unlabeled_preprocessing(transform: Any, image_key: str = "image", label_key: str = "label") -> Any:
    """The label-free version of a bundle's training preprocessing, for unlabeled items ``{image_key: path}``.

    - a crop guided by the label (``label_key``/``source_key``/``w_key`` naming it, or label-derived
      indices: ``RandCropByPosNegLabeld``, ``RandCropByLabelClassesd``, ``RandWeightedCropd``) becomes
      ``SpatialPadd`` + ``RandSpatialCropSamplesd`` of the same size and number of samples; one without a
      size (``CropForegroundd(source_key=label)``) is left out;
    - a transform of the label alone is left out;
    - a transform of the image and the label is copied with ``allow_missing_keys=True`` (each key keeps
      its own arguments, e.g. ``Spacingd``'s interpolation modes);
    - everything else is shared as it is.

    Args:
        transform: the training preprocessing (a ``Compose``, a list, or one transform).
        image_key, label_key: the keys of the labeled items.

    Returns:
        a ``monai.transforms.Compose``.
    """
    from monai.transforms import Compose, MapTransform

    out: list = []
    for t in flatten_transforms(transform):
        if not isinstance(t, MapTransform):
            out.append(t)
            continue
        keys = tuple(t.keys)
        image_keys = tuple(k for k in keys if k != label_key) or (image_key,)
        if _reads_label(t, label_key):
            replacement = _label_free_crop(t, image_keys)
            logger.info(
                "harden: unlabeled preprocessing: %s reads the label; %s",
                type(t).__name__,
                "replaced by a random crop of the same size" if replacement else "left out",
            )
            out.extend(replacement)
            continue
        if label_key in keys:
            if not image_keys or keys == (label_key,):
                continue
            t = copy.deepcopy(t)
            t.allow_missing_keys = True
        out.append(t)
    return Compose(out)


def unlabeled_datalist(
    unlabeled_dir: str | os.PathLike | None = None,
    unlabeled_list: str | os.PathLike | None = None,
    image_key: str = "image",
    list_key: str | None = None,
) -> list[dict[str, str]]:
    """The unlabeled items ``[{image_key: path}, ...]``: the images of a folder, or a datalist JSON's.

    Args:
        unlabeled_dir: a folder; every image file below it (:data:`IMAGE_SUFFIXES`, recursively, sorted).
        unlabeled_list: a JSON file holding a list of paths or of ``{image_key: path, ...}`` items (labels
            in them are ignored), or a dict holding such a list under ``list_key`` (default: the first
            of ``"unlabeled"``, ``"training"``, ``"validation"``, ``"test"`` it has). Relative paths are
            relative to the file's folder.
        image_key: the key of the image path in the items.
        list_key: see ``unlabeled_list``.

    Raises:
        HardenError: naming the folder or file when it does not exist, cannot be read, or lists no images.
    """
    if bool(unlabeled_dir) == bool(unlabeled_list):
        raise _fail(
            "give exactly one of unlabeled_dir (a folder of images) and unlabeled_list (a datalist JSON)."
        )
    if unlabeled_dir:
        root = Path(unlabeled_dir)
        if not root.is_dir():
            raise _fail(
                f"unlabeled_dir {str(root)!r} is not a folder (set --unlabeled-dir / harden#unlabeled_dir)."
            )
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and any(p.name.lower().endswith(s) for s in IMAGE_SUFFIXES)
        )
        if not files:
            raise _fail(
                f"unlabeled_dir {str(root)!r} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                "set --unlabeled-dir to the folder of unlabeled images."
            )
        return [{image_key: str(p)} for p in files]
    path = Path(unlabeled_list)  # type: ignore[arg-type]
    if not path.is_file():
        raise _fail(
            f"unlabeled_list {str(path)!r} does not exist (set --unlabeled-list / harden#unlabeled_list)."
        )
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise _fail(f"cannot read unlabeled_list {str(path)!r} as JSON: {e}") from e
    if isinstance(content, Mapping):
        keys = (
            [list_key]
            if list_key
            else [k for k in ("unlabeled", "training", "validation", "test") if k in content]
        )
        if not keys or keys[0] not in content:
            raise _fail(
                f"unlabeled_list {str(path)!r} is a dict without a list of items under "
                f"{keys[0] if keys else 'unlabeled/training/validation/test'!r}."
            )
        content = content[keys[0]]
    items = []
    for item in content if isinstance(content, list) else []:
        image = item.get(image_key) if isinstance(item, Mapping) else item
        if isinstance(image, str):
            items.append({image_key: image if os.path.isabs(image) else str(path.parent / image)})
    if not items:
        raise _fail(
            f"unlabeled_list {str(path)!r} lists no images: expected a list of paths or of {{{image_key!r}: path}} items."
        )
    return items


def unlabeled_loader(
    labeled_loader: Any,
    datalist: Sequence[Mapping[str, Any]],
    transform: Any = None,
    image_key: str = "image",
    label_key: str = "label",
    cache_rate: float = 0.0,
) -> Any:
    """A loader of unlabeled items made like the labeled loader: its preprocessing without the label, batch size,
    workers, and a ``DistributedSampler`` when the labeled loader has one (under ``torchrun``).

    Args:
        labeled_loader: the bundle's training loader (its ``dataset.transform`` is the preprocessing).
        datalist: the unlabeled items (:func:`unlabeled_datalist`).
        transform: the unlabeled items' preprocessing; None derives it (:func:`unlabeled_preprocessing`).
        image_key, label_key: the keys of the labeled items.
        cache_rate: > 0 caches that share of the items' deterministic preprocessing (MONAI ``CacheDataset``).

    Raises:
        HardenError: when the labeled loader's preprocessing cannot be found and none is given.
    """
    from monai.data import CacheDataset, DataLoader, Dataset
    from torch.utils.data.distributed import DistributedSampler

    if transform is None:
        base = getattr(getattr(labeled_loader, "dataset", None), "transform", None)
        if base is None:
            raise _fail(
                "cannot read the training loader's preprocessing (train_data_loader.dataset.transform); set "
                "harden#unlabeled_preprocessing to the transform for the unlabeled images."
            )
        transform = unlabeled_preprocessing(base, image_key, label_key)
    items = [dict(i) for i in datalist]
    if float(cache_rate) > 0:
        dataset = CacheDataset(items, transform, cache_rate=float(cache_rate), progress=False)
    else:
        dataset = Dataset(items, transform)
    sampler = getattr(labeled_loader, "sampler", None)
    sampler = DistributedSampler(dataset, shuffle=True) if isinstance(sampler, DistributedSampler) else None
    return DataLoader(
        dataset,
        batch_size=getattr(labeled_loader, "batch_size", None) or 1,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=getattr(labeled_loader, "num_workers", 0) or 0,
    )


def _accepted_arguments(trainer_class: type) -> set[str] | None:
    """The keyword arguments a trainer class takes, through its bases up to MONAI's; None: anything."""
    names: set[str] = set()
    for cls in trainer_class.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names - {"self"}
    return None


def _resolve_value_range(value_range: Any, train_data_loader: Any) -> tuple[float, float] | None:
    if isinstance(value_range, str):
        word = value_range.strip().lower()
        if word == "auto":
            transform = getattr(getattr(train_data_loader, "dataset", None), "transform", None)
            return infer_value_range(transform)
        if word in ("none", "null", "", "unbounded"):
            return None
        raise _fail(
            f"value_range must be 'auto', 'none' or [low, high], got {value_range!r} (harden#value_range)."
        )
    if value_range is None:
        return None
    if isinstance(value_range, Sequence) and len(value_range) == 2:
        return (float(value_range[0]), float(value_range[1]))
    raise _fail(
        f"value_range must be 'auto', 'none' or [low, high], got {value_range!r} (harden#value_range)."
    )


def adversarial_trainer(
    method: str,
    device: str | torch.device,
    max_epochs: int,
    train_data_loader: Iterable,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_function: Any = None,
    *,
    eps: Any = None,
    steps: int | None = None,
    value_range: Any = "auto",
    spatial_dims: Any = "auto",
    unlabeled_dir: str | os.PathLike | None = "",
    unlabeled_list: str | os.PathLike | None = "",
    unlabeled_data_loader: Iterable | None = None,
    unlabeled_preprocessing: Any = None,
    unlabeled_cache_rate: float = 0.0,
    teacher_file: str | os.PathLike | None = "",
    teacher_network: nn.Module | None = None,
    image_key: str = "image",
    label_key: str = "label",
    seed: int | None = 0,
    **trainer_kwargs: Any,
) -> Any:
    """The trainer of a registered training method, built from a bundle trainer's arguments (the overlay's ``_target_``).

    It receives everything the bundle gave its own trainer (``device``, ``max_epochs``, the loaders, the
    network, the optimizer, the loss, ``inferer``, ``postprocessing``, ``key_train_metric``,
    ``train_handlers``, ``amp``, ...), adds the method's attack (aimed at the bundle's network, eps in its
    input units), unlabeled loader and teacher, and builds the trainer with
    :func:`~monai_adv.engines.create_trainer`. Arguments of the bundle's trainer that the method's
    trainer does not take (e.g. SSAT's ``unlabeled_weight`` when hardening with Madry) are left out with
    a warning naming them.

    Args:
        method: a name in :data:`~monai_adv.engines.TRAINING_METHODS`.
        device, max_epochs, train_data_loader, network, optimizer, loss_function: the bundle trainer's.
        eps, steps: the attack budget (network-input units) and iterations; None: the method's defaults.
        value_range: the attack's ``(low, high)``, ``"none"`` (unbounded) or ``"auto"``
            (:func:`infer_value_range` of the training preprocessing).
        spatial_dims: 2, 3 or ``"auto"`` (:func:`infer_spatial_dims`).
        unlabeled_dir, unlabeled_list: the unlabeled data of a semi-supervised method
            (:func:`unlabeled_datalist`), read by :func:`unlabeled_loader`.
        unlabeled_data_loader: a ready unlabeled loader instead.
        unlabeled_preprocessing: the unlabeled items' transform; None derives it from the training one.
        unlabeled_cache_rate: MONAI ``CacheDataset``'s cache rate for the unlabeled items (0: no cache).
        teacher_file: a checkpoint of the teacher for ``rst`` / ``ssat_teacher`` (loaded into a frozen copy
            of the network).
        teacher_network: a teacher network instead.
        image_key, label_key: the keys of the bundle's items.
        seed: the training attack's random state (its random start), so that a run repeats exactly (MONAI's
            ``set_determinism`` does not reach it); None leaves it unseeded.
        trainer_kwargs: the bundle trainer's other arguments.

    Raises:
        HardenError: for a method that needs unlabeled data or a teacher without them, or a bad setting.
    """
    try:
        m = training_method(method)
    except ValueError as e:
        raise _fail(f"{e} (set --method / harden#method)") from None
    args = dict(trainer_kwargs)
    replaced = sorted(k for k in ("attack", "labeled_attack") if args.pop(k, None) is not None)
    if replaced:
        logger.info("harden: the bundle trainer's %s replaced by the attack of %s.", replaced, m.name)
    if m.needs_unlabeled:
        if unlabeled_data_loader is None:
            if not unlabeled_dir and not unlabeled_list:
                raise _fail(
                    f"method {m.name!r} needs unlabeled data: set --unlabeled-dir DIR or --unlabeled-list FILE.json "
                    "(in a config: harden#unlabeled_dir or harden#unlabeled_list)."
                )
            datalist = unlabeled_datalist(unlabeled_dir or None, unlabeled_list or None, image_key)
            unlabeled_data_loader = unlabeled_loader(
                train_data_loader,
                datalist,
                unlabeled_preprocessing,
                image_key,
                label_key,
                unlabeled_cache_rate,
            )
        args["unlabeled_data_loader"] = unlabeled_data_loader
    if m.needs_teacher:
        if teacher_network is None:
            if not teacher_file:
                raise _fail(
                    f"method {m.name!r} needs a teacher trained on the labeled data: set --teacher CKPT "
                    "(in a config: harden#teacher_file)."
                )
            if not os.path.isfile(teacher_file):
                raise _fail(
                    f"teacher checkpoint {os.fspath(teacher_file)!r} does not exist (--teacher / harden#teacher_file)."
                )
            teacher_network = load_teacher(network, teacher_file).to(device)
        args["teacher_network"] = teacher_network
    elif teacher_network is not None:
        logger.warning(
            "harden: %s takes no teacher; the bundle trainer's teacher_network is left out.", m.name
        )
    if m.has_attack:
        dims = infer_spatial_dims(network) if spatial_dims in ("auto", None) else int(spatial_dims)
        low_high = _resolve_value_range(value_range, train_data_loader)
        args.update(eps=eps, steps=steps, value_range=low_high, spatial_dims=dims)
        budget = m.eps if eps is None else eps
        logger.info(
            "harden: %s (%s) with eps %s in the network-input units, %s steps, value range %s, %dD",
            m.name,
            m.trainer.__name__,
            budget,
            m.steps if steps is None else steps,
            "unbounded" if low_high is None else list(low_high),
            dims,
        )
    accepted = _accepted_arguments(m.trainer)
    if accepted is not None:
        accepted |= {"eps", "steps", "value_range", "spatial_dims"}
        dropped = sorted(k for k in args if k not in accepted)
        if dropped:
            logger.warning(
                "harden: the bundle trainer's arguments %s do not apply to %s (%s) and are left out.",
                dropped,
                m.name,
                m.trainer.__name__,
            )
            args = {k: v for k, v in args.items() if k in accepted}
    if not m.has_attack:
        for k in ("eps", "steps", "value_range", "spatial_dims"):
            args.pop(k, None)
    trainer = create_trainer(
        m.name, device, max_epochs, train_data_loader, network, optimizer, loss_function, **args
    )
    if seed is not None:
        for name in ("attack", "labeled_attack"):
            atk = getattr(trainer, name, None)
            if hasattr(atk, "set_random_state"):
                atk.set_random_state(int(seed))
    return trainer


# ----------------------------------------------------------------------------------------------------
# the bundle's configs
# ----------------------------------------------------------------------------------------------------
def find_trainer_ids(config: Mapping[str, Any]) -> list[str]:
    """The ids of the items whose ``_target_`` is MONAI's ``SupervisedTrainer`` or a subclass (not disabled).

    Args:
        config: the merged, unresolved config (``ConfigParser.get()``).
    """
    from monai.engines import SupervisedTrainer

    found = set(engine_ids(config, SupervisedTrainer))
    # a bundle hardened before: its trainer is our factory function, not a class
    for item_id, item in walk_config(config):
        if "_target_" in item and item.get("_disabled_") not in (True, "true", "True"):
            if target_class(item, item_id) is adversarial_trainer:
                found.add(item_id)
    return [item_id for item_id, _ in walk_config(config) if item_id in found]


def _default_train_configs(bundle: Path) -> list[str]:
    for name in ("train.json", "train.yaml", "train.yml"):
        if (bundle / "configs" / name).is_file():
            return [str(bundle / "configs" / name)]
    raise _fail(
        f"bundle {str(bundle)!r} has no configs/train.json or train.yaml; give the training config with --config."
    )


def _config_files(bundle: Path, configs: Sequence[str] | None) -> list[str]:
    if not configs:
        return _default_train_configs(bundle)
    out = []
    for c in configs:
        p = Path(c)
        for candidate in (p, bundle / p, bundle / "configs" / p):
            if candidate.is_file():
                out.append(str(candidate.resolve()))
                break
        else:
            raise _fail(f"config file {c!r} not found (as given, in {str(bundle)!r} or in its configs/).")
    return out


def _weights_candidates(parser: Any, bundle: Path) -> list[Path]:
    """Where the bundle keeps its trained weights: ``ckpt_path``, ``ckpt_dir/model.pt``, ``models/model.pt``."""
    out: list[Path] = []
    for key, suffix in (("ckpt_path", ""), ("ckpt_dir", "model.pt")):
        if key in parser:
            try:
                value = parser.get_parsed_content(key)
            except Exception:
                continue
            if isinstance(value, (str, os.PathLike)):
                p = Path(value) / suffix if suffix else Path(value)
                out.append(p if p.is_absolute() else bundle / p)
    out.append(bundle / "models" / "model.pt")
    return out


@dataclass
class HardenResult:
    """What :func:`harden_bundle` did."""

    #: the training method
    method: str
    #: the config id of the trainer it replaced
    trainer_id: str
    #: the overlay file written
    overlay: str
    #: the ``python -m monai.bundle run`` command that repeats the run
    command: str
    #: the trainer that ran (None for a dry run)
    trainer: Any = None
    #: MONAI's ``ConfigWorkflow`` of the run (None for a dry run)
    workflow: Any = None
    #: the ``harden`` settings written into the overlay
    settings: dict = field(default_factory=dict)


def harden_bundle(
    bundle_dir: str | os.PathLike,
    method: str,
    *,
    configs: Sequence[str] | None = None,
    unlabeled_dir: str | os.PathLike | None = None,
    unlabeled_list: str | os.PathLike | None = None,
    teacher: str | os.PathLike | None = None,
    eps: Any = None,
    steps: int | None = None,
    value_range: Any = "auto",
    trainer_id: str | None = None,
    output: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | None = None,
    tracking: str | None = None,
    dry_run: bool = False,
    backup_weights: bool = True,
) -> HardenResult:
    """Train a MONAI bundle's own network with a training method of :data:`~monai_adv.engines.TRAINING_METHODS`.

    Args:
        bundle_dir: the bundle (model-zoo layout: ``configs/``, ``models/``).
        method: ``madry``, ``trades``, ``rst``, ``ssat`` or any other registered method.
        configs: the training config files (as given, or relative to the bundle or its ``configs/``);
            default ``configs/train.json`` (or ``.yaml``). Mixins go here too (e.g. a multi-GPU one).
        unlabeled_dir, unlabeled_list: the unlabeled data of ``rst`` / ``ssat`` (:func:`unlabeled_datalist`).
        teacher: the teacher checkpoint of ``rst`` / ``ssat_teacher``; default ``models/model_before_harden.pt``
            if an earlier run made it, else the bundle's weights (``ckpt_path``, ``ckpt_dir/model.pt``,
            ``models/model.pt``).
        eps, steps: the attack budget in network-input units and iterations (None: the method's).
        value_range: ``"auto"``, ``"none"`` or ``(low, high)`` (see :func:`adversarial_trainer`).
        trainer_id: the trainer's config id; None finds it (:func:`find_trainer_ids`).
        output: the overlay file to write; default ``<bundle>/configs/harden_<method>.json``.
        overrides: config id -> value, as ``monai.bundle run`` takes them (``{"train#dataloader#num_workers": 0}``).
        tracking: MONAI's experiment tracking (``"mlflow"`` or a settings file), as ``monai.bundle run --tracking``.
        dry_run: write the overlay and return without training.
        backup_weights: copy ``models/model.pt`` to ``models/model_before_harden.pt`` before training (once).

    Raises:
        HardenError: naming the cause and the option or key to set: no training config, no trainer or
            several, a method that needs unlabeled data or a teacher without them, a missing file.
    """
    from monai.bundle import ConfigParser

    bundle = Path(bundle_dir).resolve()
    if not (bundle / "configs").is_dir():
        raise _fail(f"{str(bundle_dir)!r} is not a bundle folder (no configs/ in it).")
    try:
        m = training_method(method)
    except ValueError as e:
        raise _fail(f"{e} (--method)") from None
    files = _config_files(bundle, configs)
    overrides = dict(overrides or {})
    overrides.setdefault("bundle_root", str(bundle))

    if (
        str(bundle) not in sys.path
    ):  # a trainer class in the bundle's own scripts/, as monai.bundle run finds it
        sys.path.insert(1, str(bundle))
    parser = ConfigParser()
    parser.read_config(f=files)
    parser.update(pairs=overrides)
    if trainer_id is None:
        ids = find_trainer_ids(parser.get())
        if not ids:
            raise _fail(
                f"no trainer found in {', '.join(os.path.basename(f) for f in files)}: no item whose _target_ is "
                "MONAI's SupervisedTrainer or a subclass; give its id with --trainer-id."
            )
        if len(ids) > 1:
            raise _fail(f"several trainers found ({ids}); choose one with --trainer-id.")
        trainer_id = ids[0]
    elif trainer_id not in parser or not isinstance(parser[trainer_id], Mapping):
        raise _fail(
            f"--trainer-id {trainer_id!r} is not a config item with a _target_ in the bundle's configs."
        )

    settings: dict[str, Any] = {"method": m.name, "eps": eps, "steps": steps, "value_range": value_range}
    if isinstance(value_range, tuple):
        settings["value_range"] = list(value_range)
    if m.needs_unlabeled:
        if not unlabeled_dir and not unlabeled_list:
            raise _fail(
                f"method {m.name!r} trains on unlabeled data too: give --unlabeled-dir DIR (a folder of images) or "
                "--unlabeled-list FILE.json (a datalist)."
            )
        unlabeled_datalist(unlabeled_dir, unlabeled_list)  # checked now, before any work
        settings["unlabeled_dir"] = str(Path(unlabeled_dir).resolve()) if unlabeled_dir else ""
        settings["unlabeled_list"] = str(Path(unlabeled_list).resolve()) if unlabeled_list else ""
    backup = bundle / "models" / "model_before_harden.pt"
    if m.needs_teacher:
        if teacher:
            teacher_path = Path(teacher)
        else:
            found = [p for p in [backup, *_weights_candidates(parser, bundle)] if p.is_file()]
            if not found:
                raise _fail(
                    f"method {m.name!r} needs a teacher trained on the labeled data and the bundle has no weights "
                    "(models/model.pt, ckpt_path or ckpt_dir/model.pt): give --teacher CKPT."
                )
            teacher_path = found[0]
        if not teacher_path.is_file():
            raise _fail(f"teacher checkpoint {str(teacher_path)!r} does not exist (--teacher).")
        settings["teacher_file"] = str(teacher_path.resolve())

    overlay = adversarial_training_overlay(trainer_id, **settings)
    out = Path(output) if output else bundle / "configs" / f"harden_{m.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(overlay, indent=4) + "\n")
    os.replace(tmp, out)
    command = _command(bundle, files + [str(out.resolve())], overrides, tracking)
    result = HardenResult(m.name, trainer_id, str(out), command, settings=overlay[SECTION])
    logger.info("harden: %s, trainer %r; overlay %s", m.name, trainer_id, out)
    if dry_run:
        return result

    weights = bundle / "models" / "model.pt"
    if backup_weights and weights.is_file() and not backup.exists():
        shutil.copy2(weights, backup)
        logger.info(
            "harden: kept the bundle's weights as %s (its checkpoint saver may replace model.pt)", backup
        )

    from monai.bundle import ConfigWorkflow

    config_dir = Path(files[0]).parent
    meta = config_dir / "metadata.json"
    logging_conf = config_dir / "logging.conf"
    workflow = ConfigWorkflow(
        config_file=files + [str(out.resolve())],
        meta_file=str(meta) if meta.is_file() else None,
        logging_file=str(logging_conf) if logging_conf.is_file() else False,
        workflow_type=None,
        tracking=tracking,
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    result.workflow = workflow
    result.trainer = workflow.parser.get_parsed_content(trainer_id)
    return result


def _command(bundle: Path, files: list[str], overrides: Mapping[str, Any], tracking: str | None) -> str:
    def rel(f: str) -> str:
        try:
            return os.path.relpath(f, bundle)
        except ValueError:
            return f

    def value(v: Any) -> str:
        # as `monai.bundle run` parses them: Python literals (True/False/None), lists without spaces
        if isinstance(v, str):
            return shlex.quote(v)
        if isinstance(v, (list, tuple, dict)):
            return shlex.quote(repr(v).replace(" ", ""))
        return repr(v)

    files_arg = "[" + ",".join(repr(rel(f)) for f in files) + "]"
    # MONAI's documented spelling, "['a.json','b.json']", where the paths allow it
    plain = not any(c in files_arg for c in '"$`\\!')
    parts = [
        "python -m monai.bundle run --config_file",
        f'"{files_arg}"' if plain else shlex.quote(files_arg),
    ]
    if tracking:
        parts.append(f"--tracking {shlex.quote(tracking)}")
    parts += [f"--{k} {value(v)}" for k, v in overrides.items() if k != "bundle_root"]
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------------------------------
def _eps_value(text: str) -> Any:
    try:
        if "," in text:
            low, high = (float(v) for v in text.split(","))
            return [low, high]
        num, _, den = text.partition("/")
        return float(num) / float(den) if den else float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"eps must be a number, a fraction like 8/255 or LOW,HIGH; got {text!r}"
        ) from None


def _value_range(text: str) -> Any:
    if text.lower() in ("auto", "none"):
        return text.lower()
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"value range must be auto, none or LOW,HIGH; got {text!r}"
        ) from None
    return (low, high)


def add_commands(sub: Any) -> dict[str, Any]:
    """Register ``harden`` on the ``python -m monai_adv.bundle`` sub-parsers; returns its runner."""
    methods = "; ".join(f"{n}: {m.description}" for n, m in TRAINING_METHODS.items())
    h = sub.add_parser(
        "harden",
        help="train a MONAI bundle's own network adversarially (Madry, TRADES, RST, SSAT, ...)",
        description="Turn a bundle's training config into adversarial or semi-supervised adversarial training, "
        "keeping its network, transforms, optimizer, handlers and validation. Extra --KEY VALUE arguments "
        "override config ids as with `python -m monai.bundle run`.",
    )
    h.add_argument("bundle_dir", help="the bundle folder (model-zoo layout)")
    h.add_argument("--method", required=True, choices=list(TRAINING_METHODS), help=methods)
    data = h.add_mutually_exclusive_group()
    data.add_argument("--unlabeled-dir", help="folder of unlabeled images (rst, ssat)")
    data.add_argument("--unlabeled-list", help="datalist JSON of unlabeled images (rst, ssat)")
    h.add_argument("--teacher", help="teacher checkpoint (rst, ssat_teacher); default: the bundle's weights")
    h.add_argument(
        "--eps", type=_eps_value, help="attack budget in network-input units (default: the method's)"
    )
    h.add_argument("--steps", type=int, help="attack iterations (default: the method's)")
    h.add_argument(
        "--value-range", type=_value_range, default="auto", help="auto (default), none, or LOW,HIGH"
    )
    h.add_argument("--config", nargs="+", help="training config file(s); default configs/train.json or .yaml")
    h.add_argument("--trainer-id", help="the trainer's config id (default: found in the config)")
    h.add_argument("--output", help="overlay file to write (default: configs/harden_<method>.json)")
    h.add_argument(
        "--tracking", help="MONAI experiment tracking, as monai.bundle run --tracking (e.g. mlflow)"
    )
    h.add_argument(
        "--dry-run", action="store_true", help="write the overlay and print the command; do not train"
    )

    def run(args: Any, extra: list[str], parser: Any) -> int:
        try:
            result = harden_bundle(
                args.bundle_dir,
                args.method,
                configs=args.config,
                unlabeled_dir=args.unlabeled_dir,
                unlabeled_list=args.unlabeled_list,
                teacher=args.teacher,
                eps=args.eps,
                steps=args.steps,
                value_range=args.value_range,
                trainer_id=args.trainer_id,
                output=args.output,
                overrides=parse_overrides(extra),
                tracking=args.tracking,
                dry_run=args.dry_run,
            )
        except Exception as e:  # a cause the user can fix is one line; anything else keeps its traceback
            cause = next((c for c in _causes(e) if isinstance(c, BundleInputError)), None)
            if cause is None:
                raise
            print(f"ERROR: {cause}", file=sys.stderr, flush=True)
            return 2
        print(f"overlay: {result.overlay}")
        print(f"the same run: {result.command}")
        if result.trainer is not None:
            state = result.trainer.state
            print(
                f"hardened with {result.method} ({type(result.trainer).__name__}, trainer id {result.trainer_id!r}): "
                f"{state.epoch} epoch(s), {state.iteration} iteration(s)"
            )
        return 0

    return {"harden": run}


def _causes(e: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out
