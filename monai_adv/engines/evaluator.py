"""RobustEvaluator: clean and attacked inputs, predictions, detector scores and robust accuracy in one pass
over the data; RobustSegmentationEvaluator: the same for segmentation networks, with Dice and Hausdorff
distance per class. Both take softmax or multi-label sigmoid outputs, labels or the network's own clean
predictions (``label_free``), and put their robust metrics in ``engine.state.metrics``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from ignite.engine import Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents

from monai_adv.engines.batches import prepare_engine_batch
from monai_adv.engines.precision import (
    attack_in_engine_precision,
    configure_engine_amp,
    engine_autocast,
    resolve_engine_precision,
)
from monai_adv.keys import RobustKeys
from monai_adv.metrics.classification import (
    ClassificationAccuracyMetric,
    ClassificationOutputTransform,
    check_activation,
)
from monai_adv.metrics.robust import OutputMetricHandler, WorstCaseMetricHandler
from monai_adv.metrics.segmentation import (
    SegmentationDiceMetric,
    SegmentationHausdorffMetric,
    SegmentationOutputTransform,
    SpacingType,
    image_spacing,
)
from monai_adv.transforms.base import AdversarialAttack, describe_attack
from monai_adv.utils import default_output_transform, full_precision, plain_tensor

if TYPE_CHECKING:
    from monai_adv.detectors.base import AdversarialDetector

__all__ = ["RobustEvaluator", "RobustSegmentationEvaluator", "WORST"]

#: the name of the per-image worst case over the attacks in the metric names (``"accuracy/worst"``)
WORST = "worst"

logger = logging.getLogger(__name__)


def _check_attack_loss(name: str, attack: Any, activation: str) -> None:
    """Refuse an attack whose loss does not fit the outputs (softmax cross-entropy on sigmoid outputs)."""
    inner = getattr(attack, "__wrapped__", attack)
    # each of our attacks reads its labels by its own loss (ensembles too); any other callable is trusted
    if not isinstance(inner, AdversarialAttack):
        return
    if activation == "sigmoid" and not inner.multilabel:
        raise ValueError(
            f"attack {name!r} ({type(inner).__name__}) uses a softmax loss but activation='sigmoid': give it a "
            "multi-label loss, e.g. loss='bce' (monai_adv.transforms.losses.per_sample_bce)."
        )
    if activation == "softmax" and inner.multilabel:
        raise ValueError(
            f"attack {name!r} ({type(inner).__name__}) uses a multi-label loss but activation='softmax': set "
            "activation='sigmoid' for multi-label outputs."
        )


class RobustEvaluator(SupervisedEvaluator):
    """A MONAI ``SupervisedEvaluator`` that also attacks every batch, scores it with a detector, and measures
    robust accuracy.

    Per iteration it computes, in this order: the clean predictions (``"pred"``), with the
    detector's score and flag from the same forward pass (``"uad_score"``, ``"uad_flag"``); then
    for each configured attack ``name`` the adversarial images (``"image/<name>"``), their
    predictions (``"pred/<name>"``) and detector scores and flags (``"uad_score/<name>"``,
    ``"uad_flag/<name>"``), all in ``engine.state.output`` (see
    :class:`~monai_adv.handlers.RobustKeys`), with the images (``"image"``) and labels (``"label"``).
    Flags are present when the detector is calibrated. The network's output goes through
    ``network_output_transform`` first, so a network returning a tuple or dict (deep supervision,
    several heads) gives its logits as ``"pred"``.

    **Metrics.** The evaluator attaches its own MONAI metric handlers, so that ``engine.state.metrics``
    holds, at epoch end (and MONAI's ``StatsHandler``, ``TensorBoardStatsHandler``, ``MetricsSaver``
    and ``MLFlowHandler`` see):

    - ``"accuracy"``: the clean accuracy;
    - ``"accuracy/<name>"``: the accuracy under each attack;
    - ``"accuracy/worst"`` (with two attacks or more): the per-image worst case over the attacks (not
      the clean input): an image counts as correct only when it is correct under every attack
      (Croce & Hein, ICML 2020, report AutoAttack's robust accuracy this way). An attack that is
      itself named ``"worst"`` (say, a :class:`~monai_adv.transforms.WorstCaseEnsemble`) takes the
      name instead.

    Per image values are in ``engine.state.metric_details`` under the same names
    (:class:`~monai_adv.metrics.ClassificationAccuracyMetric`). Unless ``key_val_metric`` is given,
    ``"accuracy"`` is the key metric (for ``CheckpointSaver(save_key_metric=True)`` and early
    stopping); a metric of the caller's (``key_val_metric``, ``additional_metrics``) with one of
    these names is refused. With ``activation="sigmoid"`` (multi-label outputs: logits ``(B, K)``,
    labels multi-hot ``(B, K)``) the prediction is ``logits > 0`` per label and an image's accuracy
    is the share of its ``K`` labels predicted right, so ``"accuracy"`` is the mean per-label
    accuracy (1 minus the Hamming loss) and ``"accuracy/worst"`` takes per image the attack with the
    lowest share.

    **Without labels.** ``label_free=True`` makes the network's own clean prediction the label
    (argmax class, or the thresholded multi-hot labels for sigmoid), from the same clean forward
    pass: the attacks try to change the prediction, ``"label"`` holds it, the clean accuracy is 1 by
    construction and ``"accuracy/<name>"`` is the share of predictions an attack leaves unchanged
    (the stability of the deployed model, for data without labels). Batches need no label then.

    The metrics read ``"pred"`` and ``"pred/<name>"`` after MONAI's ``postprocessing`` (which runs on
    the output before the metrics do): a ``postprocessing`` of a bundle's must leave logits there
    (softmax: probabilities or one-hot predictions give the same argmax; sigmoid: 0/1 thresholded
    predictions give the same ``> 0``, probabilities do not), or write to other keys.

    The attacks describe themselves in :attr:`attack_descriptions` (type, eps, norm, steps, whether
    they need a detector), which :class:`~monai_adv.handlers.RobustnessReport` reports.

    Args:
        device: the device to run on.
        val_data_loader: the evaluation data (with labels, unless ``label_free``).
        network: the classifier.
        attacks: ``{name: attack}``; each attack is called as ``attack(images, labels)``. Names must
            not contain ``"/"``. With ``activation="sigmoid"`` the attacks need a multi-label loss
            (``PGD(net, eps, loss="bce")``).
        detector: an optional fitted :class:`~monai_adv.detectors.AdversarialDetector` on ``network``.
        keep_adversarial_images: store ``"image/<name>"`` in the output (set False to save memory).
        attack_amp: the attacks' precision: None follows the evaluator (with ``amp=True`` the network
            and the attacks run under autocast, bfloat16 on CPU, float16 on CUDA, or ``amp_kwargs``'
            ``dtype``); True/False forces it.
        activation: ``"softmax"`` (one class per image, the default) or ``"sigmoid"`` (multi-label).
        label_free: use the network's clean predictions as the labels (above).
        network_output_transform: picks the logits from the network's (or the inferer's) output;
            default: a tensor as it is, a tuple's first item, a dict's ``"logits"``/``"pred"``/...
        kwargs: every other argument of ``monai.engines.SupervisedEvaluator`` (``inferer``,
            ``postprocessing``, ``key_val_metric``, ``additional_metrics``, ``val_handlers``,
            ``decollate``, ``amp``, ...).

    Raises:
        ValueError: for a bad attack name, a non-callable attack, an attack whose loss does not fit
            ``activation``, a detector fitted on another network or not fitted, an unknown
            activation, or a metric name of the caller's that is one of the evaluator's own; at run
            time, for a batch without labels when there are attacks and ``label_free`` is False.

    Example::

        evaluator = RobustEvaluator(device, val_loader, net, attacks={"fgsm": FGSM(net, 2 / 255),
                                    "pgd": PGD(net, 2 / 255)}, detector=det)
        evaluator.run()
        evaluator.state.metrics["accuracy/pgd"], evaluator.state.metrics["accuracy/worst"]
    """

    #: the base name of the evaluator's metrics: clean ``"<base>"``, per attack ``"<base>/<name>"``
    metric_base = "accuracy"

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        attacks: Mapping[str, Callable] | None = None,
        detector: AdversarialDetector | None = None,
        keep_adversarial_images: bool = True,
        attack_amp: bool | None = None,
        activation: str = "softmax",
        label_free: bool = False,
        network_output_transform: Callable[[Any], Any] = default_output_transform,
        **kwargs: Any,
    ) -> None:
        attacks = dict(attacks or {})
        for name, atk in attacks.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"attack names must be non-empty strings without '/', got {name!r}.")
            if not callable(atk):
                raise ValueError(f"attack {name!r} is not callable.")
        if detector is not None:
            if not getattr(detector, "is_fitted", False):
                raise ValueError("the detector is not fitted: fit (and calibrate) it before evaluating.")
            if detector.network is not network:
                raise ValueError("the detector reads the features of another network than the one evaluated.")
        if not callable(network_output_transform):
            raise ValueError(
                "network_output_transform must be callable (it picks the logits from the output)."
            )
        self.activation = check_activation(activation)
        for name, atk in attacks.items():
            _check_attack_loss(name, atk, self.activation)
        self.label_free = bool(label_free)
        self.network_output_transform = network_output_transform
        #: ``{variant: output key of its predictions}``: ``"clean"`` and every attack
        self.variants: dict[str, str] = self._variant_keys(list(attacks))
        #: whether the per-image worst case over the attacks is a metric of its own (>= 2 attacks)
        self.worst_case = len(attacks) >= 2 and WORST not in attacks
        kwargs = self._with_own_metrics(self._robust_metrics(list(attacks)), kwargs)
        precision = resolve_engine_precision(device, kwargs, type(self).__name__)
        super().__init__(
            device=torch.device(device), val_data_loader=val_data_loader, network=network, **kwargs
        )
        self.precision = precision
        configure_engine_amp(self)
        self.attack_amp = attack_amp
        attacks = {name: attack_in_engine_precision(atk, self, attack_amp) for name, atk in attacks.items()}
        self.attacks = attacks
        self.detector = detector
        self.keep_adversarial_images = bool(keep_adversarial_images)

    # metrics ----------------------------------------------------------------------------------------
    def _variant_keys(self, names: Sequence[str], pred_key: str = RobustKeys.PRED) -> dict[str, str]:
        return {"clean": pred_key, **{n: RobustKeys.adv(pred_key, n) for n in names}}

    def metric_name(self, base: str, variant: str) -> str:
        """The metric's name in ``engine.state.metrics``: ``base`` for ``"clean"``, else ``"<base>/<variant>"``."""
        return base if variant == "clean" else f"{base}/{variant}"

    def _robust_metrics(self, names: Sequence[str]) -> dict[str, Metric]:
        """The evaluator's own metric handlers, in the order they are attached (the worst case last)."""
        metrics: dict[str, Metric] = {}
        for variant, key in self.variants.items():
            metrics[self.metric_name(self.metric_base, variant)] = OutputMetricHandler(
                ClassificationAccuracyMetric(self.activation),
                output_transform=ClassificationOutputTransform(key, RobustKeys.LABEL),
            )
        if self.worst_case:
            metrics[self.metric_name(self.metric_base, WORST)] = WorstCaseMetricHandler(
                [self.metric_name(self.metric_base, n) for n in names], mode="min"
            )
        return metrics

    def _with_own_metrics(self, own: dict[str, Metric], kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the evaluator's metrics added to ``key_val_metric`` / ``additional_metrics``."""
        key_metric = kwargs.pop("key_val_metric", None)
        additional = dict(kwargs.pop("additional_metrics", None) or {})
        clash = sorted((set(additional) | set(key_metric or {})) & set(own))
        if clash:
            raise ValueError(f"metric names {clash} are the evaluator's own; name yours otherwise.")
        if key_metric is None:
            key_metric = {self.metric_base: own.pop(self.metric_base)}
        return {**kwargs, "key_val_metric": key_metric, "additional_metrics": {**own, **additional}}

    @property
    def attack_descriptions(self) -> dict[str, dict[str, Any]]:
        """``{name: description}`` of the configured attacks, for reports and handlers.

        Each description is the attack's own :meth:`~monai_adv.transforms.AdversarialAttack.describe`
        (``name``, ``type``, ``eps``, ``norm``, ``steps``, ``needs_detector``, ...), so that nothing
        downstream has to look inside the attack objects.
        """
        return {name: describe_attack(atk) for name, atk in self.attacks.items()}

    # the iteration ----------------------------------------------------------------------------------
    def predicted_labels(self, logits: torch.Tensor) -> torch.Tensor:
        """The network's own labels from its logits, as ``label_free`` uses them.

        Softmax: the argmax class, ``(B,)`` for class logits and ``(B, 1, *spatial)`` for dense ones
        (long); sigmoid: the multi-hot ``logits > 0`` of the logits' shape (float).
        """
        z = plain_tensor(logits).detach()
        if self.activation == "sigmoid":
            return (z > 0).to(torch.float32)
        return z.argmax(dim=1, keepdim=z.ndim > 2)

    def _predict(self, engine: RobustEvaluator, inputs: torch.Tensor, args: tuple, kwargs: dict) -> dict:
        """One forward pass: predictions, and detector score/flag from hooks on that same pass."""
        out: dict[str, Any] = {}
        with engine.mode(engine.network):
            if self.detector is None:
                out[RobustKeys.PRED] = self._infer(engine, inputs, args, kwargs)
            else:
                with self.detector.hooks() as hooks:
                    out[RobustKeys.PRED] = self._infer(engine, inputs, args, kwargs)
                    score = self.detector.score_hooks(hooks, inputs.shape[0])
                out[RobustKeys.SCORE] = score
                if self.detector.is_calibrated:
                    out[RobustKeys.FLAG] = self.detector.flags(score)
        return out

    @staticmethod
    def _infer(engine: RobustEvaluator, inputs: torch.Tensor, args: tuple, kwargs: dict) -> Any:
        with engine_autocast(engine):
            out = engine.inferer(inputs, engine.network, *args, **kwargs)
        return full_precision(engine.network_output_transform(out))

    def _batch_outputs(self, inputs: torch.Tensor) -> dict[str, Any]:
        """Further per-batch values for the output (the segmentation evaluator's voxel spacing)."""
        return {}

    def _iteration(self, engine: RobustEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        inputs, targets, args, kwargs = prepare_engine_batch(engine, batchdata)
        if self.attacks and targets is None and not self.label_free:
            raise ValueError(
                f"{type(self).__name__} needs labels to attack the inputs; the batch has none (set "
                "label_free=True to attack the network's own predictions instead)."
            )
        extra = self._batch_outputs(inputs)
        clean = self._predict(engine, inputs, args, kwargs)
        if self.label_free:
            targets = self.predicted_labels(clean[RobustKeys.PRED])
        engine.state.output = {RobustKeys.IMAGE: inputs, RobustKeys.LABEL: targets}
        engine.state.output.update(clean)
        engine.state.output.update(extra)
        for name, atk in self.attacks.items():
            x_adv = atk(inputs, targets)
            adv = self._predict(engine, x_adv, args, kwargs)
            if self.keep_adversarial_images:
                engine.state.output[RobustKeys.adv(RobustKeys.IMAGE, name)] = x_adv
            for key, value in adv.items():
                engine.state.output[RobustKeys.adv(key, name)] = value
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class RobustSegmentationEvaluator(RobustEvaluator):
    """A :class:`RobustEvaluator` for segmentation networks: Dice and Hausdorff distance per class, clean and
    under every attack, in one pass over the data.

    The network returns logits ``(B, K, *spatial)`` (2D or 3D; a tuple or dict gives them through
    ``network_output_transform``; a sliding-window ``inferer`` computes them on large volumes) and the
    batches carry label maps, which the attacks receive as dense labels:

    - ``activation="softmax"`` (one class per voxel): class indices ``(B, 1, *spatial)`` or one-hot
      ``(B, K, *spatial)``; the masks are the one-hot argmax;
    - ``activation="sigmoid"`` (one binary mask per channel, regions that may overlap, such as BraTS'
      tumour core / whole tumour / enhancing tumour): 0/1 masks ``(B, K, *spatial)``; the masks are
      ``sigmoid(logits) > 0.5`` per channel, every channel counts (there is no background channel,
      ``include_background`` is ignored), and the attacks need a multi-label loss
      (``PGD(net, eps, loss="bce")``).

    Every iteration computes the clean predictions and, per attack ``name``, the attacked ones, as
    :class:`RobustEvaluator` does (``"pred"``, ``"pred/<name>"``); from them MONAI metric handlers
    accumulate, on the masks against the labels:

    - ``"dice"`` and ``"dice/<name>"``: :class:`~monai_adv.metrics.SegmentationDiceMetric` (MONAI's
      ``DiceMetric``), per image and class;
    - ``"hd95"`` and ``"hd95/<name>"`` (``"hd<percentile>"``): the Hausdorff distance at the
      ``hausdorff_percentile`` of the surface distances
      (:class:`~monai_adv.metrics.SegmentationHausdorffMetric`, MONAI's ``HausdorffDistanceMetric``),
      in physical units where the voxel spacing is known (see ``spacing``; :attr:`distance_units`);
    - with two attacks or more, ``"dice/worst"`` and ``"hd95/worst"``: the per-image worst case over
      the attacks: for each image, the attack with the lowest mean Dice over the image's classes
      (for the distance: the largest mean distance), its values taken for that image
      (Croce, Singh & Hein, ECCV 2024, evaluate segmentation robustness per image this way). An
      attack itself named ``"worst"`` takes the names instead.

    A class in neither the label nor the prediction is left out; in only one of them it scores Dice 0
    and the image diagonal as distance (an attack that erases or invents a structure is counted). At
    epoch end ``engine.state.metrics[name]`` holds MONAI's ``mean`` (over the images of the mean over
    the classes that count), and ``engine.state.metric_details[name]`` the ``(N, K)`` values, from
    which :meth:`per_class_results` (and :class:`~monai_adv.handlers.RobustnessReport`)
    take the per-class means. Unless ``key_val_metric`` is given, the clean ``"dice"`` is the key
    metric (for ``CheckpointSaver(save_key_metric=True)`` and early stopping). With
    ``label_free=True`` the labels are the clean argmax masks ``(B, 1, *spatial)`` (sigmoid: the
    clean thresholded masks): clean Dice is 1 and ``"dice/<name>"`` is the Dice of the attacked
    prediction to the clean one.

    Args:
        device: the device to run on.
        val_data_loader: the evaluation data, with label maps (unless ``label_free``).
        network: the segmentation network.
        num_classes: ``K``, the number of output channels (>= 2 for softmax, >= 1 for sigmoid).
        attacks: ``{name: attack}``, called as ``attack(images, label_maps)`` (see :class:`RobustEvaluator`).
        detector: an optional fitted detector (see :class:`RobustEvaluator`).
        include_background: count class 0 in the metrics (softmax only).
        hausdorff: also compute the Hausdorff distance (about 0.1 s per image and variant for 13
            classes at 128 x 128 on one CPU core).
        hausdorff_percentile: its percentile (95: HD95; None: the maximum).
        spacing: the voxel spacing for the distances. ``"auto"`` (the default): read per image from
            the input ``MetaTensor``'s metadata (its affine, else a ``"pixdim"`` entry; see
            :func:`~monai_adv.metrics.image_spacing`), so that a batch of scans with different
            spacings is measured each in its own, in mm; images without metadata are measured in
            voxels. A number or one per spatial axis: that spacing for every image. None: voxels.
        pred_key: the output key of the logits.
        label_key: the output key of the labels.
        keep_adversarial_images: store ``"image/<name>"`` in the output (for an overlay gallery).
        activation: ``"softmax"`` or ``"sigmoid"`` (above).
        label_free: use the network's clean predictions as the labels (above).
        kwargs: any other argument of :class:`RobustEvaluator` and MONAI's ``SupervisedEvaluator``
            (``inferer``, ``val_handlers``, ``amp``, ``key_val_metric``, ``additional_metrics``,
            ``network_output_transform``, ``decollate``, ...).

    Raises:
        ValueError: for too few classes, a bad ``spacing``, an attack named ``"clean"``, a metric
            name that clashes with the ones above, or any error of :class:`RobustEvaluator`; at run
            time, for label maps that do not fit the output.

    Example::

        evaluator = RobustSegmentationEvaluator(
            device, val_loader, unet, num_classes=13,
            attacks={"pgd": PGD(unet, 0.004, steps=10), "segpgd": SegPGD(unet, 0.004, steps=10)},
            val_handlers=[RobustnessReport("eval", class_names=OCT_LAYER_CLASSES)])
        evaluator.run()
        evaluator.state.metrics["dice/segpgd"], evaluator.state.metrics["dice/worst"]
    """

    metric_base = "dice"
    #: the output key of the per-image voxel spacings ``(B, D)`` read from the metadata (``spacing="auto"``)
    spacing_key = "spacing"

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        num_classes: int,
        attacks: Mapping[str, Callable] | None = None,
        detector: AdversarialDetector | None = None,
        include_background: bool = True,
        hausdorff: bool = True,
        hausdorff_percentile: float | None = 95.0,
        spacing: SpacingType = "auto",
        pred_key: str = RobustKeys.PRED,
        label_key: str = RobustKeys.LABEL,
        keep_adversarial_images: bool = False,
        activation: str = "softmax",
        label_free: bool = False,
        **kwargs: Any,
    ) -> None:
        check_activation(activation)
        least = 2 if activation == "softmax" else 1
        if int(num_classes) < least:
            raise ValueError(
                f"num_classes must be >= {least} for {activation} outputs (the network's output channels), "
                f"got {num_classes!r}."
            )
        if isinstance(spacing, str) and spacing != "auto":
            raise ValueError(
                f"spacing must be 'auto', a number, one number per axis or None, got {spacing!r}."
            )
        self.num_classes = int(num_classes)
        # sigmoid outputs have no background channel: every channel is a structure of its own
        self.include_background = True if activation == "sigmoid" else bool(include_background)
        self.hausdorff_name = (
            None
            if not hausdorff
            else ("hd" if hausdorff_percentile is None else f"hd{float(hausdorff_percentile):g}")
        )
        self.hausdorff_percentile = hausdorff_percentile
        self.spacing = spacing
        self.pred_key = pred_key
        self.label_key = label_key
        self._spacing_counts = [0, 0]  # images with and without spacing metadata, this epoch
        names = [n for n in (attacks or {}) if isinstance(n, str)]
        if "clean" in names:
            raise ValueError("an attack may not be named 'clean' (the name of the unattacked results).")
        super().__init__(
            device,
            val_data_loader,
            network,
            attacks=attacks,
            detector=detector,
            keep_adversarial_images=keep_adversarial_images,
            activation=activation,
            label_free=label_free,
            **kwargs,
        )
        self.add_event_handler(Events.EPOCH_STARTED, self._reset_spacing_counts)

    def _variant_keys(self, names: Sequence[str], pred_key: str = RobustKeys.PRED) -> dict[str, str]:
        return super()._variant_keys(names, self.pred_key)

    def _robust_metrics(self, names: Sequence[str]) -> dict[str, Metric]:
        metrics: dict[str, Metric] = {}
        bases = ("dice",) + (() if self.hausdorff_name is None else (self.hausdorff_name,))
        for variant, key in self.variants.items():
            metrics[self.metric_name("dice", variant)] = OutputMetricHandler(
                SegmentationDiceMetric(include_background=self.include_background),
                output_transform=SegmentationOutputTransform(
                    self.num_classes, key, self.label_key, self.activation
                ),
            )
            if self.hausdorff_name is not None:
                metrics[self.metric_name(self.hausdorff_name, variant)] = OutputMetricHandler(
                    SegmentationHausdorffMetric(
                        include_background=self.include_background,
                        percentile=self.hausdorff_percentile,
                        spacing=self.spacing,
                    ),
                    output_transform=SegmentationOutputTransform(
                        self.num_classes,
                        key,
                        self.label_key,
                        self.activation,
                        spacing_key=self.spacing_key if self.spacing == "auto" else None,
                    ),
                )
        if self.worst_case:
            for base in bases:
                metrics[self.metric_name(base, WORST)] = WorstCaseMetricHandler(
                    [self.metric_name(base, n) for n in names], mode="min" if base == "dice" else "max"
                )
        return metrics

    # voxel spacing ----------------------------------------------------------------------------------
    def _reset_spacing_counts(self, engine: Any = None) -> None:
        self._spacing_counts = [0, 0]

    def _batch_outputs(self, inputs: torch.Tensor) -> dict[str, Any]:
        if self.spacing != "auto" or self.hausdorff_name is None:
            return {}
        spacing = image_spacing(inputs, inputs.ndim - 2)
        known = 0 if spacing is None else int((~torch.isnan(spacing).any(dim=1)).sum())
        before = tuple(self._spacing_counts)
        self._spacing_counts[0] += known
        self._spacing_counts[1] += int(inputs.shape[0]) - known
        if before == (0, 0) and self.state.epoch <= 1:
            logger.info(
                "%s: Hausdorff distances in %s (voxel spacing %s).",
                type(self).__name__,
                "mm" if known else "voxels",
                "from the image metadata" if known else "not in the image metadata",
            )
        return {} if spacing is None else {self.spacing_key: spacing}

    @property
    def distance_units(self) -> str | None:
        """The units of the Hausdorff distances: ``"mm"``, ``"voxels"``, or ``"mixed"``.

        ``"mm"`` for an explicit ``spacing`` (in the units it was given in; MONAI's convention is mm)
        and, with ``spacing="auto"``, when every image of the last epoch carried its spacing;
        ``"voxels"`` for ``spacing=None`` or when no image did; ``"mixed"`` when only some did (those
        without are measured in voxels). None with ``spacing="auto"`` before any image was seen, and
        without a Hausdorff metric.
        """
        if self.hausdorff_name is None:
            return None
        if self.spacing is None:
            return "voxels"
        if self.spacing != "auto":
            return "mm"
        known, unknown = self._spacing_counts
        if known == 0 and unknown == 0:
            return None
        return "mm" if unknown == 0 else ("voxels" if known == 0 else "mixed")

    # results ----------------------------------------------------------------------------------------
    def per_class_results(self) -> dict[str, dict[str, Any]]:
        """``{variant: {"dice": [K], "mean_dice", "<hd>": [K], "mean_<hd>"}}`` of the last epoch.

        The variants are ``"clean"``, the attack names and, with two attacks or more, ``"worst"``
        (the per-image worst case); per class (from class 1 when ``include_background`` is false),
        the mean over the images where the class counts (``None`` where it never does); the means
        are ``engine.state.metrics``'.

        Raises:
            RuntimeError: before an epoch has completed.
        """
        details = getattr(self.state, "metric_details", None) or {}
        if "dice" not in details:
            raise RuntimeError("no segmentation metrics yet: run the evaluator first.")
        first = 0 if self.include_background else 1
        variants = list(self.variants) + ([WORST] if self.worst_case else [])
        out: dict[str, dict[str, Any]] = {}
        for variant in variants:
            entry: dict[str, Any] = {}
            for base in ("dice",) + (() if self.hausdorff_name is None else (self.hausdorff_name,)):
                name = self.metric_name(base, variant)
                values = torch.as_tensor(details[name]).float().reshape(-1, self.num_classes - first)
                per_class = []
                for k in range(values.shape[1]):
                    col = values[:, k]
                    col = col[~torch.isnan(col)]
                    per_class.append(float(col.mean()) if col.numel() else None)
                entry[base] = per_class
                mean = self.state.metrics.get(name)
                entry["mean_" + base] = None if mean is None else float(mean)
            out[variant] = entry
        return out
