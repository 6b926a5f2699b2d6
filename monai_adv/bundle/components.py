"""The components the OCT bundle's configs build from: checkpoints, the detector, the attack grid."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from monai_adv.distributed import is_main_process
from monai_adv.utils import read_state_dict

__all__ = [
    "require_file",
    "load_weights",
    "load_optional_detector",
    "detection_handlers",
    "fit_detector",
    "attack_grid",
    "run_without_meta_tracking",
    "check_config_paths",
]

logger = logging.getLogger(__name__)


def check_config_paths(**paths: Any) -> None:
    """Refuse paths that MONAI's config parser has rewritten: it turns every ``#`` in a config value
    (``--dataset_dir``, ``--work_root``, ...) into ``::``, so a folder named with ``#`` would silently
    become another one. A value holding ``::`` is therefore refused, naming the setting and the folder it
    most likely meant.

    Args:
        paths: ``name=value`` of the path settings to check (``None`` values are skipped).

    Raises:
        BundleInputError: naming the setting, for a value holding ``::``.
    """
    from monai_adv.bundle.errors import BundleInputError, input_error

    for name, value in paths.items():
        if value is None:
            continue
        v = os.fspath(value) if isinstance(value, (str, os.PathLike)) else str(value)
        if "::" in v:
            raise input_error(
                BundleInputError(
                    f"{name} {v!r} holds '::', which is what MONAI's config parser makes of a '#' in a value "
                    f"(did you mean {v.replace('::', '#')!r}?): a path with '#' cannot pass through a bundle "
                    f"config. Rename the folder, or link it under a name without '#', and pass that as --{name}."
                )
            )


def require_file(path: str | os.PathLike, what: str = "file", hint: str = "") -> str:
    """``path`` if it is a file, else a ``FileNotFoundError`` naming it (and ``hint``)."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{what} {p!r} does not exist{'; ' + hint if hint else ''}.")
    return p


def load_weights(
    network: torch.nn.Module,
    ckpt_file: str | os.PathLike,
    key: str | None = None,
    strict: bool = True,
    hint: str = "train the model first (configs/train.json)",
    expected: Mapping[str, Any] | None = None,
) -> torch.nn.Module:
    """Load a model checkpoint (``weights_only``) into ``network`` and return the network.

    Accepts a plain state dict or a dict holding it under ``key`` (or ``"model"``/``"network"``: what
    the bundles' ``CheckpointSaver`` writes to ``models/model.pt``, with the checkpoint's metadata under
    ``"metadata"``). With ``expected``, the recorded metadata is compared with the config's values first
    (:func:`~monai_adv.bundle.checkpoints.check_checkpoint_metadata`): a checkpoint trained at another
    image size, with other channels or classes is refused rather than run. ``hint`` ends the error
    message for a missing file (how to produce it); that message is the last line a failed bundle run
    prints.

    Raises:
        FileNotFoundError: naming the file when it does not exist.
        CheckpointMismatchError: naming each differing setting with both values.
        ValueError: naming the file when it cannot be read or does not fit the network.
    """
    from monai_adv.bundle.checkpoints import check_checkpoint_metadata, read_checkpoint_metadata
    from monai_adv.bundle.errors import input_error

    try:
        path = require_file(ckpt_file, "model checkpoint", hint)
    except FileNotFoundError as e:
        raise input_error(e) from None
    if expected:
        check_checkpoint_metadata(read_checkpoint_metadata(path), f"model checkpoint {path!r}", **expected)
    state = read_state_dict(path, "model checkpoint", key)
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ValueError(f"model checkpoint {path!r} does not fit the network: {e}") from e
    return network


def load_optional_detector(
    path: str | os.PathLike,
    network: torch.nn.Module,
    required: bool = False,
    expected: Mapping[str, Any] | None = None,
) -> Any:
    """The detector saved at ``path`` bound to ``network``, or ``None`` when there is none (and not ``required``).

    With ``expected``, the metadata the detector file records (the classifier checkpoint's, copied by
    :func:`fit_detector`) is compared with the config's values as :func:`load_weights` compares the
    model's.

    Raises:
        FileNotFoundError: when ``required`` and there is no file.
        NetworkMismatchError: when the detector was fitted on another network (weights or layers), naming
            both fingerprints; logged as one ERROR line.
        CheckpointMismatchError: naming each differing setting with both values.
    """
    from monai_adv.detectors import load_detector

    p = os.fspath(path)
    if not os.path.isfile(p):
        if required:
            raise FileNotFoundError(
                f"detector file {p!r} does not exist; fit it first (configs/fit_detector.json)."
            )
        logger.warning(
            f"no detector at {p!r}: predictions carry no adversarial score (run fit_detector.json)."
        )
        return None
    from monai_adv.bundle.errors import input_error
    from monai_adv.detectors import NetworkMismatchError

    try:
        detector = load_detector(p, network, progress=False)
    except NetworkMismatchError as e:
        raise input_error(
            NetworkMismatchError(
                f"{e} The model file is not the one the detector was fitted on (was the model trained again, "
                "e.g. by another run in this bundle folder?)."
            )
        ) from e
    if expected:
        from monai_adv.bundle.checkpoints import check_checkpoint_metadata

        check_checkpoint_metadata(detector.metadata, f"detector file {p!r}", **expected)
    return detector


def detection_handlers(detector: Any, **kwargs: Any) -> list:
    """``[AdversarialDetectionHandler(detector)]``, or ``[]`` without a detector."""
    from monai_adv.handlers import AdversarialDetectionHandler

    return [] if detector is None else [AdversarialDetectionHandler(detector, **kwargs)]


def fit_detector(
    detector: Any,
    fit_loader: Any,
    calibration_loader: Any,
    fpr: float = 0.05,
    save_path: str | os.PathLike | None = None,
    use_labels: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """Fit ``detector`` on clean data, calibrate its threshold at ``fpr`` on other clean data, save it.

    ``metadata`` (the classifier checkpoint's, :func:`~monai_adv.bundle.checkpoints.read_checkpoint_metadata`)
    is saved with the detector, so that loading it can check the config's image size and classes too.

    Only rank 0 writes ``save_path`` (atomically, by the detector's ``save``); its folder is checked
    for writing before the fit, so a read-only folder stops the run before the work, not after it.
    Returns the detector.

    Raises:
        OSError: naming the folder, when ``save_path``'s folder cannot be written.
    """
    if save_path is not None and is_main_process():
        from monai_adv.io import check_writable

        check_writable(os.path.dirname(os.path.abspath(os.fspath(save_path))), "detector folder")
    detector.fit(fit_loader, use_labels=use_labels)
    if metadata is not None:
        detector.metadata = dict(metadata)
    threshold = detector.calibrate(calibration_loader, fpr=fpr)
    logger.info(f"{type(detector).__name__} fitted; threshold {threshold:.6g} at a target FPR of {fpr}")
    if save_path is not None and is_main_process():
        os.makedirs(os.path.dirname(os.path.abspath(os.fspath(save_path))), exist_ok=True)
        detector.save(save_path)
        print(f"detector saved to {os.fspath(save_path)}", flush=True)
    return detector


def attack_grid(
    network: torch.nn.Module,
    grid: Sequence[Mapping[str, Any]],
    seed: int | None = 0,
    detector: Any = None,
    **common: Any,
) -> dict[str, Any]:
    """``{name: attack}`` for every attack and eps of ``grid``, for a RobustEvaluator.

    Each entry of ``grid`` is ``{"name": "pgd", "attack": "PGD", "eps": [0.002, 0.004], ...}``: the
    class name in :mod:`monai_adv.transforms`, one eps or a list of them, and any other keyword
    argument of that attack (``steps``, ``n_queries``, ...). The attacks are named
    ``"<name>_eps<eps>"``; ``common`` keyword arguments (e.g. ``value_range``) go to every attack.

    Attacks that take a ``detector`` (the detector-aware :class:`~monai_adv.transforms.AdaptiveAttack`)
    are aimed at ``detector``; without one (no detector fitted yet) they are left out with a warning,
    since there is nothing for them to adapt to.

    Raises:
        ValueError: for an unknown attack class, an entry without ``name``/``attack``/``eps``, or a
            repeated name.
    """
    from monai_adv import transforms

    out: dict[str, Any] = {}
    for i, entry in enumerate(grid):
        entry = dict(entry)
        missing = [k for k in ("name", "attack", "eps") if k not in entry]
        if missing:
            raise ValueError(f"attack grid entry {i} ({entry}) has no {missing}.")
        name, cls_name, eps_list = entry.pop("name"), entry.pop("attack"), entry.pop("eps")
        cls = getattr(transforms, str(cls_name), None)
        if not isinstance(cls, type):
            raise ValueError(f"unknown attack {cls_name!r} in the attack grid; see monai_adv.transforms.")
        if getattr(cls, "needs_detector", False):  # the attack describes itself
            if detector is None:
                logger.warning(
                    f"attack grid entry {name!r} ({cls_name}) needs a detector; none is fitted, so it is skipped."
                )
                continue
            entry["detector"] = detector
        for eps in eps_list if isinstance(eps_list, (list, tuple)) else [eps_list]:
            key = f"{name}_eps{float(eps):g}"
            if key in out:
                raise ValueError(f"attack {key!r} appears twice in the attack grid.")
            atk = cls(network, eps=float(eps), **{**common, **entry})
            if seed is not None and hasattr(atk, "set_random_state"):
                atk.set_random_state(seed)
            out[key] = atk
    if not out:
        raise ValueError("the attack grid is empty.")
    return out


def run_without_meta_tracking(engine: Any) -> None:
    """``engine.run()`` with MONAI's MetaTensor tracking off, restored afterwards (also on an error).

    Training reads no image metadata, and tracking it through every transform and every op costs
    about a fifth of the demo network's training epoch on a CPU. The setting is process-wide in
    MONAI, so it is switched back however the run ends: a later inference in the same process still
    gets the file names it writes out.
    """
    from monai.data import get_track_meta, set_track_meta

    previous = get_track_meta()
    set_track_meta(False)
    try:
        engine.run()
    finally:
        set_track_meta(previous)
