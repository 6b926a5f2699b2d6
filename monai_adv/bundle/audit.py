"""Audit any MONAI bundle under attack: ``python -m monai_adv.bundle audit BUNDLE_DIR``, or the shipped overlay
``robustness.json`` stacked on the bundle's own configs.

The audit takes the bundle's own evaluator (found by type in its configs: ``evaluator``, ``validate#evaluator``,
...), keeps its network and weights, data loader and preprocessing, ``prepare_batch`` and inferer (sliding
window included), decides the task from what the network outputs (class logits ``(B, K)`` or dense logits
``(B, K, *spatial)``, softmax or sigmoid from the bundle's postprocessing), and evaluates clean and attacked
inputs in one pass with :class:`~monai_adv.engines.RobustEvaluator` or
:class:`~monai_adv.engines.RobustSegmentationEvaluator`. It writes ``report.json`` (one schema for both tasks:
``task``, ``clean``, ``attacks`` with ``name``/``eps``/``value``, the per-image worst case), ``report.md``, the
metric-vs-eps plot and a gallery into the output folder, all at the end, so a failed run leaves no report.

eps is in the network-input units; where the preprocessing holds an invertible intensity map (a fixed
``ScaleIntensityRanged`` window, ``NormalizeIntensityd`` with fixed statistics, ``ScaleIntensityd`` with a
factor), it may be given in the image's original units (HU for CT) and the report gives both.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_adv.bundle.errors import BundleInputError
from monai_adv.bundle.introspect import (
    IntensityMap,
    bundle_metadata,
    class_names_from_metadata,
    default_config_files,
    engine_ids,
    engine_postprocessing,
    first_batch,
    intensity_map,
    load_bundle_config,
    load_evaluator_weights,
    network_output,
    output_activation,
    parse_overrides,
    run_target_id,
)

__all__ = [
    "AUDIT_ATTACKS",
    "DEFAULT_ATTACKS",
    "SIGMOID_ATTACKS",
    "AttackBudget",
    "BundleAudit",
    "build_attacks",
    "audit_bundle",
    "find_evaluator",
    "add_commands",
]

logger = logging.getLogger(__name__)

#: the attacks the audit knows, by the name ``--attacks`` takes, and the tasks they apply to
AUDIT_ATTACKS: dict[str, tuple[str, ...]] = {
    "fgsm": ("classification", "segmentation"),
    "pgd": ("classification", "segmentation"),
    "apgd-ce": ("classification", "segmentation"),
    "apgd-t": ("classification",),
    "fab-t": ("classification",),
    "square": ("classification",),
    "cw": ("classification",),
    "autoattack": ("classification",),
    "segpgd": ("segmentation",),
    "cospgd": ("segmentation",),
    "sea": ("segmentation",),
}

#: what the audit runs when ``--attacks`` is not given: AutoAttack's standard suite (classification), and
#: PGD, SegPGD, CosPGD and the APGD loss ensemble of Croce, Singh & Hein (segmentation), with FGSM as a floor
DEFAULT_ATTACKS: dict[str, tuple[str, ...]] = {
    "classification": ("fgsm", "pgd", "autoattack"),
    "segmentation": ("fgsm", "pgd", "segpgd", "cospgd", "sea"),
}


#: the attacks that take independent sigmoid outputs (multi-label): binary cross-entropy, or SEA's binary losses
SIGMOID_ATTACKS = ("fgsm", "pgd", "sea")


class AttackBudget:
    """Iterations and queries of the audit's attacks: the full budget, or ``quick`` (a smoke run).

    The full budget is the published one for AutoAttack's standard suite (100 APGD iterations, 5,000 Square
    queries), 20 steps for PGD, SegPGD and CosPGD, and 100 iterations per loss for SEA (the paper: 300, a
    third of the cost on a CPU); quick divides them by about ten, which finds most but not all adversarial
    examples and is recorded in the report (``budget``).
    """

    def __init__(self, quick: bool = False) -> None:
        self.quick = bool(quick)
        self.steps = 5 if quick else 20
        self.apgd_steps = 10 if quick else 100
        self.queries = 100 if quick else 5000
        self.cw_steps = 20 if quick else 100
        # SEA: the paper runs 300 iterations per loss (3 losses); 100 keeps a 3D audit within CPU hours
        self.sea_steps = 12 if quick else 100

    def record(self) -> dict[str, Any]:
        return {
            "quick": self.quick,
            "pgd_steps": self.steps,
            "apgd_steps": self.apgd_steps,
            "square_queries": self.queries,
            "sea_steps_per_loss": self.sea_steps,
        }


def _eps_name(eps: float) -> str:
    return f"{eps:.4g}"


def build_attacks(
    network: torch.nn.Module,
    names: Sequence[str],
    eps_values: Sequence[float],
    task: str,
    *,
    activation: str = "softmax",
    value_range: tuple[float, float] | None = None,
    spatial_dims: int = 2,
    inferer: Any = None,
    budget: AttackBudget | None = None,
    num_classes: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"<attack>_<eps>": attack}`` for every attack name and eps.

    Args:
        network: the network under attack.
        names: attack names from :data:`AUDIT_ATTACKS`.
        eps_values: Linf radii in network-input units.
        task: ``"classification"`` or ``"segmentation"``.
        activation: ``"softmax"`` or ``"sigmoid"`` (multi-label outputs are attacked with binary cross-entropy).
        value_range: the network input's bounds, or None (unbounded).
        spatial_dims: 2 or 3.
        inferer: the bundle's inferer (e.g. sliding window), used by the attacks to compute the output.
        budget: iterations and queries (default: the full budget).
        num_classes: the number of output channels (AutoAttack's targeted attacks use up to 9 targets).
        seed: the attacks' random state.

    Raises:
        BundleInputError: for an unknown attack, or one that does not apply to the task or activation.
    """
    import monai_adv.transforms as T

    budget = budget or AttackBudget()
    common: dict[str, Any] = dict(value_range=value_range, spatial_dims=spatial_dims, amp="auto")
    if inferer is not None:
        common["inferer"] = inferer
    if activation == "sigmoid":
        common["loss"] = "bce"
    targets = max(
        1, min(9, num_classes - 1)
    )  # AutoAttack's targeted attacks: the 9 most likely other classes
    attacks: dict[str, Any] = {}
    for name in names:
        if name not in AUDIT_ATTACKS:
            raise BundleInputError(f"unknown attack {name!r}; choose from {', '.join(AUDIT_ATTACKS)}.")
        if task not in AUDIT_ATTACKS[name]:
            raise BundleInputError(f"the attack {name!r} does not apply to {task}.")
        if activation == "sigmoid" and name not in SIGMOID_ATTACKS:
            raise BundleInputError(
                f"the attack {name!r} assumes exclusive classes (softmax); this bundle's outputs are "
                f"independent sigmoid channels: use --attacks {','.join(SIGMOID_ATTACKS)}."
            )
        for eps in eps_values:
            alpha = 2.5 * eps / budget.steps
            if name == "fgsm":
                atk = T.FGSM(network, eps=eps, **common)
            elif name == "pgd":
                atk = T.PGD(network, eps=eps, alpha=alpha, steps=budget.steps, **common)
            elif name == "apgd-ce":
                atk = T.APGD(network, eps=eps, steps=budget.apgd_steps, loss="ce", **common)
            elif name == "apgd-t":
                atk = T.APGD(
                    network,
                    eps=eps,
                    steps=budget.apgd_steps,
                    loss="dlr",
                    targeted=True,
                    n_target_classes=targets,
                    **common,
                )
            elif name == "fab-t":
                atk = T.FAB(
                    network,
                    eps=eps,
                    steps=budget.apgd_steps,
                    targeted=True,
                    n_target_classes=targets,
                    **common,
                )
            elif name == "square":
                atk = T.SquareAttack(network, eps=eps, n_queries=budget.queries, **common)
            elif name == "cw":
                atk = T.CarliniWagnerL2(network, steps=budget.cw_steps, **common)
            elif name == "autoattack":
                atk = T.autoattack(
                    network,
                    eps=eps,
                    steps=budget.apgd_steps,
                    n_queries=budget.queries,
                    version="standard",
                    n_target_classes=targets,
                    **common,
                )
            elif name == "segpgd":
                atk = T.SegPGD(network, eps=eps, alpha=alpha, steps=budget.steps, **common)
            elif name == "cospgd":
                atk = T.CosPGD(network, eps=eps, alpha=alpha, steps=budget.steps, **common)
            else:  # sea: its own losses (binary forms for sigmoid outputs)
                sea_args = {k: v for k, v in common.items() if k != "loss"}
                atk = T.SEA(network, eps=eps, steps=budget.sea_steps, activation=activation, **sea_args)
            if hasattr(atk, "set_random_state"):
                atk.set_random_state(seed)
            attacks[f"{name}_{_eps_name(eps)}"] = atk
            if name == "cw":
                break  # C&W is unbounded: one run, whatever the eps grid
    return attacks


def find_evaluator(parser: Any, config_files: Sequence[str | os.PathLike] = ()) -> str:
    """The id of the evaluator to audit in a parsed bundle config.

    The evaluator its ``run`` runs when there is one (``$@validate#evaluator.run()``), else the only
    ``Evaluator`` item, else the one named ``evaluator`` or ending in ``#evaluator``.

    Raises:
        BundleInputError: when there is none, or several and none is run.
    """
    from monai.engines import Evaluator

    ids = engine_ids(parser, Evaluator)
    if not ids:
        raise BundleInputError(
            f"no evaluator (a MONAI Evaluator _target_) in the configs {[str(f) for f in config_files]}: pass an "
            "evaluation config with --config (e.g. configs/evaluate.json stacked on configs/train.json)."
        )
    chosen = run_target_id(parser, ids)
    if chosen is None and len(ids) == 1:
        chosen = ids[0]
    if chosen is None:
        named = [i for i in ids if i == "evaluator" or i.endswith("#evaluator")]
        chosen = named[0] if len(named) == 1 else None
    if chosen is None:
        raise BundleInputError(
            f"several evaluators in the configs ({', '.join(ids)}) and none is run: choose one with --evaluator ID."
        )
    return chosen


class BundleAudit:
    """Evaluate a bundle's own evaluator under attack and write the robustness report.

    Args:
        evaluator: the bundle's MONAI evaluator, instantiated (its network, data loader, ``prepare_batch``,
            inferer and postprocessing are reused; its handlers are not run, except the ``CheckpointLoader``
            that loads the weights).
        bundle_root: the bundle folder (its ``metadata.json`` gives class names and the modality); the default
            output folder is ``<bundle_root>/eval/robustness``.
        attacks: attack names (:data:`AUDIT_ATTACKS`, a comma-separated string or a list); default
            :data:`DEFAULT_ATTACKS` of the task.
        eps: Linf radii in network-input units.
        eps_original: Linf radii in the image's original units (converted through the preprocessing's
            intensity map); not with ``eps``.
        label_free: use the network's clean prediction as the label (for data without labels); the report
            then measures stability (prediction flips, Dice to the clean prediction).
        quick: a smoke-size budget (:class:`AttackBudget`).
        num_images: evaluate only the first ``num_images`` images (default: all).
        output_dir: where the report goes (default ``<bundle_root>/eval/robustness``).
        weights: a checkpoint to load instead of the bundle's own (``load_evaluator_weights``).
        parser: the bundle's ``ConfigParser`` (to find weights loaded by ``initialize``).
        weights_loaded: a description of weights the caller has already loaded (skips the search).
        info: extra entries for ``report.json`` (the configs used, the overrides).
        seed: the attacks' random state.
        amp: the precision of the evaluation and the attacks (``"auto"``, True, False).
        tracking_uri: also log the clean and robust metrics to MLflow (MONAI's ``MLFlowHandler``) at this
            tracking URI (``"default"``: an SQLite store ``mlflow.db`` in the output folder).
        detector: a detector file (:meth:`~monai_adv.detectors.AdversarialDetector.save`) fitted on this
            bundle's network: every input is scored on its own forward pass, and the report adds detection
            AUROC (over all attacked inputs and over successful attacks), TPR at its calibrated FPR,
            undetected error, the referral curve and the system risk (classification only).
    """

    def __init__(
        self,
        evaluator: Any,
        bundle_root: str | os.PathLike | None = None,
        attacks: str | Sequence[str] | None = None,
        eps: Sequence[float] | float | None = None,
        eps_original: Sequence[float] | float | None = None,
        label_free: bool = False,
        quick: bool = False,
        num_images: int | None = None,
        output_dir: str | os.PathLike | None = None,
        weights: str | None = None,
        parser: Any = None,
        weights_loaded: str | None = None,
        info: Mapping[str, Any] | None = None,
        seed: int = 0,
        amp: bool | str = "auto",
        tracking_uri: str | None = None,
        detector: str | os.PathLike | None = None,
    ) -> None:
        if eps is not None and eps_original is not None:
            raise BundleInputError(
                "give eps in network-input units (--eps) or in original units (--eps-original), not both."
            )
        self.source = evaluator
        self.bundle_root = Path(bundle_root) if bundle_root is not None else Path(".")
        self.attack_names = _names(attacks)
        self.eps = _floats(eps, "eps")
        self.eps_original = _floats(eps_original, "eps-original")
        self.label_free = bool(label_free)
        self.budget = AttackBudget(quick)
        if num_images is not None and int(num_images) < 1:
            raise BundleInputError(f"num_images must be >= 1, got {num_images!r}.")
        self.num_images = None if num_images is None else int(num_images)
        self.output_dir = Path(output_dir) if output_dir else self.bundle_root / "eval" / "robustness"
        self.weights = weights
        self.parser = parser
        self.weights_loaded = weights_loaded
        self.info = dict(info or {})
        self.seed = int(seed)
        self.amp = amp
        self.tracking_uri = tracking_uri
        self.detector_file = None if detector is None else Path(detector)

    def _detector(self, task: str) -> Any:
        """The detector of ``--detector`` bound to the bundle's network, or ``None``."""
        if self.detector_file is None:
            return None
        if task != "classification":
            raise BundleInputError(
                f"--detector {self.detector_file}: the detectors read a classifier's features; this bundle's task "
                f"is {task}."
            )
        if not self.detector_file.is_file():
            raise BundleInputError(f"--detector {self.detector_file}: no such file.")
        from monai_adv.detectors import NetworkMismatchError, load_detector

        try:
            return load_detector(self.detector_file, self.source.network, progress=False)
        except (ValueError, NetworkMismatchError) as e:
            raise BundleInputError(f"--detector: {e}") from e

    # -- what the bundle is ------------------------------------------------------------------------------
    def _inspect(self) -> dict[str, Any]:
        src = self.source
        batch = first_batch(src.data_loader)
        device = src.state.device
        prepared = src.prepare_batch(batch, device, src.non_blocking)
        inputs, labels = prepared[0], prepared[1]
        if not isinstance(inputs, torch.Tensor) or inputs.ndim not in (4, 5):
            raise BundleInputError(
                f"the network input is {getattr(inputs, 'shape', type(inputs).__name__)}: the audit takes 2D "
                "(B, C, H, W) or 3D (B, C, H, W, D) images."
            )
        spatial_dims = inputs.ndim - 2
        logits = network_output(src, inputs.to(device))
        if logits.ndim == 2:
            task = "classification"
        elif logits.ndim == inputs.ndim and tuple(logits.shape[2:]) == tuple(inputs.shape[2:]):
            task = "segmentation"
        else:
            raise BundleInputError(
                f"the network output {tuple(logits.shape)} for input {tuple(inputs.shape)} is neither class logits "
                "(B, K) nor dense logits (B, K, *spatial of the input): the audit cannot attack it."
            )
        num_classes = int(logits.shape[1])
        postprocessing = engine_postprocessing(src, self.parser, self.info.get("evaluator_id"))
        activation = output_activation(postprocessing, num_classes)
        if labels is None and not self.label_free:
            raise BundleInputError(
                "the evaluation data has no labels: pass --label-free to audit the stability of the predictions, "
                "or choose a labelled evaluation config with --config."
            )
        if labels is not None and not self.label_free and task == "segmentation":
            if tuple(labels.shape[2:]) != tuple(logits.shape[2:]):
                raise BundleInputError(
                    f"the label maps {tuple(labels.shape)} do not match the network output {tuple(logits.shape)}: the "
                    "audit compares at the network's resolution; use the evaluation preprocessing on the labels."
                )
        return dict(
            task=task,
            num_classes=num_classes,
            activation=activation,
            spatial_dims=spatial_dims,
            input_shape=list(inputs.shape[1:]),
            first_inputs=inputs,
        )

    def _intensity(self, metadata: Mapping[str, Any]) -> IntensityMap:
        fmt = (metadata.get("network_data_format") or {}).get("inputs") or {}
        spec = next(iter(fmt.values()), {}) if isinstance(fmt, Mapping) and fmt else {}
        modality = spec.get("modality") if isinstance(spec, Mapping) else None
        dataset = getattr(self.source.data_loader, "dataset", None)
        return intensity_map(getattr(dataset, "transform", None), modality=modality)

    def _eps_grid(
        self, imap: IntensityMap, value_range: tuple[float, float] | None, inputs: torch.Tensor
    ) -> list[float]:
        if self.eps:
            return self.eps
        if self.eps_original:
            return [imap.to_network(e) for e in self.eps_original]
        # default: 1/255 and 4/255 of the input's range (the guaranteed one, else the first batch's)
        if value_range is not None:
            width = value_range[1] - value_range[0]
        else:
            width = float(inputs.max() - inputs.min())
        if not math.isfinite(width) or width <= 0:
            raise BundleInputError("the first batch is constant: give --eps in network-input units.")
        return [width / 255.0, 4.0 * width / 255.0]

    def _tracking(self, title: str) -> list:
        """MONAI's MLflow handler on the audit's metrics (``engine.state.metrics``), when asked for."""
        if self.tracking_uri is None:
            return []
        from monai.handlers import MLFlowHandler
        from monai.utils import path_to_sqlite_uri

        uri = self.tracking_uri
        if uri == "default":
            self.output_dir.mkdir(parents=True, exist_ok=True)
            uri = path_to_sqlite_uri(str(self.output_dir / "mlflow.db"))
        return [
            MLFlowHandler(
                tracking_uri=uri,
                iteration_log=False,
                experiment_name="monai_adv_audit",
                run_name=title,
                close_on_complete=True,
            )
        ]

    # -- the run -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Load the weights, run the robust evaluation and write the report; returns ``report.json``'s content.

        Raises:
            BundleInputError: for a bundle that cannot be audited (the message names the cause and the key).
        """
        from monai_adv.engines import RobustEvaluator, RobustSegmentationEvaluator
        from monai_adv.handlers import RobustnessReport

        t0 = time.time()
        src = self.source
        weights = self.weights_loaded or load_evaluator_weights(
            src, self.parser, self.weights, self.info.get("evaluator_id")
        )
        src.network.eval()
        found = self._inspect()
        task, num_classes = found["task"], found["num_classes"]
        detector = self._detector(task)
        metadata = bundle_metadata(self.bundle_root)
        class_names = class_names_from_metadata(metadata, num_classes)
        imap = self._intensity(metadata)
        value_range = imap.value_range
        eps_values = self._eps_grid(imap, value_range, found["first_inputs"])
        names = self.attack_names or list(DEFAULT_ATTACKS[task])
        if found["activation"] == "sigmoid" and not self.attack_names:
            names = [n for n in names if n in SIGMOID_ATTACKS]
        attacks = build_attacks(
            src.network,
            names,
            eps_values,
            task,
            activation=found["activation"],
            value_range=value_range,
            spatial_dims=found["spatial_dims"],
            inferer=src.inferer if task == "segmentation" else None,
            budget=self.budget,
            num_classes=num_classes,
            seed=self.seed,
        )
        attack_info = {}
        for name, atk in attacks.items():
            eps = float(getattr(atk, "eps", float("nan")) or 0.0)
            entry: dict[str, Any] = {"eps_units": "network input"}
            original = imap.to_original(eps)
            if original is not None:
                entry.update(eps_original=original, original_units=imap.original_units)
            attack_info[name] = entry
        info = {
            "bundle": str(self.bundle_root.resolve()),
            "bundle_name": metadata.get("name"),
            "weights": weights,
            "activation": found["activation"],
            "spatial_dims": found["spatial_dims"],
            "input_shape": found["input_shape"],
            "eps_units": "network input",
            "intensity_map": imap.description,
            "original_units": imap.original_units if imap.scale is not None else None,
            "value_range": list(value_range) if value_range is not None else None,
            "budget": self.budget.record(),
            "num_images": self.num_images,
            "detector_file": None if detector is None else str(self.detector_file),
            **self.info,
        }
        title = f"{metadata.get('name') or self.bundle_root.name}: robustness audit" + (
            " (label-free: stability of the clean predictions)" if self.label_free else ""
        )
        staging = self.output_dir.parent / f".{self.output_dir.name}.incomplete-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True, exist_ok=False)
        try:
            report_handler = RobustnessReport(
                str(staging), class_names=class_names, title=title, info=info, attack_info=attack_info
            )
            batch_size = getattr(src.data_loader, "batch_size", None) or 1
            epoch_length = None
            if self.num_images is not None:
                epoch_length = max(1, min(len(src.data_loader), math.ceil(self.num_images / batch_size)))
            common: dict[str, Any] = dict(
                device=src.state.device,
                val_data_loader=src.data_loader,
                network=src.network,
                attacks=attacks,
                prepare_batch=src.prepare_batch,
                inferer=src.inferer,
                label_free=self.label_free,
                activation=found["activation"],
                epoch_length=epoch_length,
                val_handlers=[
                    report_handler,
                    _progress(task),
                    *_metric_handlers(staging),
                    *self._tracking(title),
                ],
                decollate=False,
                amp=self.amp,
            )
            if task == "segmentation":
                evaluator = RobustSegmentationEvaluator(
                    num_classes=num_classes,
                    include_background=found["activation"] == "sigmoid" or num_classes == 1,
                    keep_adversarial_images=True,
                    **common,
                )
            else:
                evaluator = RobustEvaluator(keep_adversarial_images=True, detector=detector, **common)
            evaluator.run()
            report = getattr(report_handler, "report", None) or _read_report(staging)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            # report.json moves last: a reader never sees a new report beside the old plots
            files = sorted(staging.iterdir(), key=lambda p: p.name == "report.json")
            for path in files:
                target = self.output_dir / path.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(path, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.evaluator = evaluator
        logger.info(
            f"robustness audit of {self.bundle_root} done in {time.time() - t0:.1f} s: {self.output_dir}"
        )
        return report


def _metric_handlers(folder: Path) -> list:
    """MONAI's own writers of ``engine.state.metrics``: ``metrics.csv`` and TensorBoard scalars in the report folder."""
    from monai.handlers import MetricsSaver, TensorBoardStatsHandler

    return [
        MetricsSaver(save_dir=str(folder), metrics="*", save_rank=0),
        TensorBoardStatsHandler(
            log_dir=str(folder / "tensorboard"), iteration_log=False, output_transform=lambda x: None
        ),
    ]


def _progress(task: str) -> Any:
    from ignite.handlers import ProgressBar

    return ProgressBar(persist=True, desc=f"robustness audit ({task})")


def _read_report(folder: Path) -> dict:
    import json

    with open(folder / "report.json") as f:
        return json.load(f)


def _names(attacks: str | Sequence[str] | None) -> list[str]:
    if attacks is None:
        return []
    items = attacks.split(",") if isinstance(attacks, str) else list(attacks)
    names = [a.strip().lower() for a in items if a.strip()]
    unknown = [a for a in names if a not in AUDIT_ATTACKS]
    if unknown:
        raise BundleInputError(f"unknown attacks {unknown}; choose from {', '.join(AUDIT_ATTACKS)}.")
    return names


def _floats(values: Sequence[float] | float | str | None, what: str) -> list[float]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    elif isinstance(values, (int, float)):
        values = [values]
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise BundleInputError(f"--{what} takes numbers, got {v!r}.") from None
        if not math.isfinite(f) or f <= 0:
            raise BundleInputError(f"--{what} values must be positive and finite, got {v!r}.")
        out.append(f)
    return out


def audit_bundle(
    bundle_dir: str | os.PathLike,
    config_files: Sequence[str | os.PathLike] | None = None,
    overrides: Mapping[str, Any] | None = None,
    evaluator_id: str | None = None,
    dataset_dir: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Audit a bundle folder: find its evaluation config and evaluator, instantiate them as ``monai.bundle run``
    would (``initialize`` included), and run :class:`BundleAudit`.

    Args:
        bundle_dir: the bundle folder (model-zoo layout).
        config_files: the configs to stack (default :func:`~monai_adv.bundle.introspect.default_config_files`).
        overrides: ``{config id: value}``, as ``monai.bundle run --KEY VALUE`` takes them.
        evaluator_id: the evaluator's config id (default: found by :func:`find_evaluator`).
        dataset_dir: sets the config's ``dataset_dir`` (the model zoo's data folder key).
        kwargs: :class:`BundleAudit`'s arguments (``attacks``, ``eps``, ``eps_original``, ``label_free``,
            ``quick``, ``num_images``, ``output_dir``, ``weights``, ``seed``, ``amp``, ``detector``).

    Returns:
        the report (``report.json``'s content).

    Raises:
        BundleInputError: for a bundle that cannot be audited, naming the cause and the key to set.
    """
    root = Path(bundle_dir)
    if not (root / "configs").is_dir():
        raise BundleInputError(f"{str(root)!r} is not a bundle folder (it has no configs/).")
    files = (
        [Path(f) for f in config_files]
        if config_files
        else default_config_files(root, kwargs.get("label_free", False))
    )
    overrides = dict(overrides or {})
    if dataset_dir is not None:
        overrides["dataset_dir"] = str(Path(dataset_dir).resolve())
    parser = load_bundle_config(root, files, overrides)
    eid = evaluator_id or find_evaluator(parser, files)
    if "initialize" in parser:
        parser.get_parsed_content("initialize")
    try:
        evaluator = parser.get_parsed_content(eid)
    except BundleInputError:
        raise
    except Exception as e:
        raise BundleInputError(
            f"could not build the bundle's evaluator {eid!r} from {[f.name for f in files]}: {e}"
        ) from e
    info = {
        "configs": [str(f) for f in files],
        "evaluator_id": eid,
        "overrides": {k: str(v) for k, v in overrides.items()},
    }
    return BundleAudit(evaluator, bundle_root=root, parser=parser, info=info, **kwargs).run()


def add_commands(sub: Any) -> dict[str, Any]:
    """Register ``audit`` on the ``python -m monai_adv.bundle`` sub-parsers."""
    a = sub.add_parser(
        "audit",
        help="evaluate any MONAI bundle's model under attack and write a robustness report",
        description="Evaluate a MONAI bundle's own model (its network, weights, data, preprocessing and inferer) "
        "clean and under attack; writes report.json, report.md, the metric-vs-eps plot and a gallery. Extra "
        "--KEY VALUE arguments override the bundle's config ids as 'python -m monai.bundle run' does.",
    )
    a.add_argument("bundle_dir", help="the bundle folder (model-zoo layout: configs/, models/)")
    a.add_argument(
        "--config", nargs="+", default=None, help="config files to stack (default: found in configs/)"
    )
    a.add_argument("--evaluator", default=None, help="the evaluator's config id (default: found)")
    a.add_argument("--dataset-dir", default=None, help="sets the config's dataset_dir")
    a.add_argument("--label-free", action="store_true", help="labels are the clean predictions (stability)")
    a.add_argument("--attacks", default=None, help=f"comma-separated, from {','.join(AUDIT_ATTACKS)}")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--eps", default=None, help="comma-separated Linf radii in network-input units")
    g.add_argument(
        "--eps-original", default=None, help="comma-separated radii in original units (HU, grey levels)"
    )
    a.add_argument("--quick", action="store_true", help="smoke-size attack budgets")
    a.add_argument("--num-images", type=int, default=None, help="audit only the first N images")
    a.add_argument("--output-dir", default=None, help="default: BUNDLE_DIR/eval/robustness")
    a.add_argument("--device", default=None, help="cpu or cuda (default: the bundle's device)")
    a.add_argument("--weights", default=None, help="a checkpoint to audit instead of the bundle's own")
    a.add_argument(
        "--detector",
        default=None,
        metavar="FILE",
        help="a detector fitted on this network (e.g. models/detector.pt): adds detection and system risk",
    )
    a.add_argument("--seed", type=int, default=0)
    a.add_argument(
        "--mlflow",
        nargs="?",
        const="default",
        default=None,
        metavar="URI",
        help="log the clean and robust metrics to MLflow (default URI: an SQLite store OUT/mlflow.db)",
    )

    def run(args: Any, extra: list[str], parser: Any) -> int:
        try:
            overrides = parse_overrides(extra)
            if args.device is not None:
                overrides["device"] = f"$torch.device('{args.device}')"
            report = audit_bundle(
                args.bundle_dir,
                config_files=args.config,
                overrides=overrides,
                evaluator_id=args.evaluator,
                dataset_dir=args.dataset_dir,
                attacks=args.attacks,
                eps=args.eps,
                eps_original=args.eps_original,
                label_free=args.label_free,
                quick=args.quick,
                num_images=args.num_images,
                output_dir=args.output_dir,
                weights=args.weights,
                seed=args.seed,
                tracking_uri=args.mlflow,
                detector=args.detector,
            )
        except BundleInputError as e:
            parser.exit(2, f"error: {e}\n")
        out = args.output_dir or str(Path(args.bundle_dir) / "eval" / "robustness")
        print(_summary(report))
        print(f"report written to {out}")
        return 0

    return {"audit": run}


def _summary(report: Mapping[str, Any]) -> str:
    metric = report.get("metric", "metric")
    lines = [f"{report.get('task')}: clean {metric} {_fmt(report.get('clean'))}"]
    for a in report.get("attacks", []):
        orig = a.get("eps_original")
        extra = f" ({orig:.3g} {a.get('original_units')})" if isinstance(orig, (int, float)) else ""
        lines.append(
            f"  {a.get('name')}: eps {_fmt(a.get('eps'), 4)}{extra} -> {metric} {_fmt(a.get('value'))}"
        )
    for w in report.get("worst_case", []) or []:
        lines.append(f"  worst case at eps {_fmt(w.get('eps'), 4)}: {metric} {_fmt(w.get('value'))}")
    return "\n".join(lines)


def _fmt(v: Any, digits: int = 3) -> str:
    return (
        "-"
        if not isinstance(v, (int, float))
        else f"{float(v):.{digits}g}"
        if digits == 4
        else f"{float(v):.{digits}f}"
    )
