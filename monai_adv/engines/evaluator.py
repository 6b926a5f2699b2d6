"""RobustEvaluator: clean and attacked inputs, predictions and detector scores in one pass over the data;
RobustSegmentationEvaluator: the same for segmentation networks, with Dice and Hausdorff distance per class."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents
from monai.handlers import IgniteMetricHandler

from monai_adv.engines.batches import prepare_engine_batch
from monai_adv.engines.precision import (
    attack_in_engine_precision,
    configure_engine_amp,
    engine_autocast,
    resolve_engine_precision,
)
from monai_adv.keys import RobustKeys
from monai_adv.metrics.segmentation import (
    SegmentationDiceMetric,
    SegmentationHausdorffMetric,
    SegmentationOutputTransform,
)
from monai_adv.transforms.base import describe_attack
from monai_adv.utils import full_precision

if TYPE_CHECKING:
    from monai_adv.detectors.base import AdversarialDetector

__all__ = ["RobustEvaluator", "RobustSegmentationEvaluator"]


class RobustEvaluator(SupervisedEvaluator):
    """A MONAI ``SupervisedEvaluator`` that also attacks every batch and scores it with a detector.

    Per iteration it computes, in this order: the clean predictions (``"pred"``), with the
    detector's score and flag from the same forward pass (``"uad_score"``, ``"uad_flag"``); then
    for each configured attack ``name`` the adversarial images (``"image/<name>"``), their
    predictions (``"pred/<name>"``) and detector scores and flags (``"uad_score/<name>"``,
    ``"uad_flag/<name>"``), all in ``engine.state.output`` (see
    :class:`~monai_adv.handlers.RobustKeys`). Flags are present when the detector is calibrated.
    Metrics and handlers read them as usual, e.g.
    ``Accuracy(output_transform=from_engine(["pred/pgd", "label"]))``.

    The attacks describe themselves in :attr:`attack_descriptions` (type, eps, norm, steps, whether
    they need a detector), which :class:`~monai_adv.handlers.RobustnessReport` reports.

    Args:
        device: the device to run on.
        val_data_loader: the evaluation data (with labels: the attacks need them).
        network: the classifier.
        attacks: ``{name: attack}``; each attack is called as ``attack(images, labels)``. Names must
            not contain ``"/"``.
        detector: an optional fitted :class:`~monai_adv.detectors.AdversarialDetector` on ``network``.
        keep_adversarial_images: store ``"image/<name>"`` in the output (set False to save memory).
        attack_amp: the attacks' precision: None follows the evaluator (with ``amp=True`` the network
            and the attacks run under autocast, bfloat16 on CPU, float16 on CUDA, or ``amp_kwargs``'
            ``dtype``); True/False forces it.
        kwargs: every other argument of ``monai.engines.SupervisedEvaluator`` (``inferer``,
            ``postprocessing``, ``key_val_metric``, ``additional_metrics``, ``val_handlers``, ...).

    Raises:
        ValueError: for a bad attack name, a non-callable attack, or a detector fitted on another
            network or not fitted.

    Example::

        evaluator = RobustEvaluator(device, val_loader, net, attacks={"fgsm": FGSM(net, 2 / 255),
                                    "pgd": PGD(net, 2 / 255)}, detector=det)
        evaluator.run()
    """

    def __init__(
        self,
        device: torch.device | str,
        val_data_loader: Any,
        network: torch.nn.Module,
        attacks: Mapping[str, Callable] | None = None,
        detector: AdversarialDetector | None = None,
        keep_adversarial_images: bool = True,
        attack_amp: bool | None = None,
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

    @property
    def attack_descriptions(self) -> dict[str, dict[str, Any]]:
        """``{name: description}`` of the configured attacks, for reports and handlers.

        Each description is the attack's own :meth:`~monai_adv.transforms.AdversarialAttack.describe`
        (``name``, ``type``, ``eps``, ``norm``, ``steps``, ``needs_detector``, ...), so that nothing
        downstream has to look inside the attack objects.
        """
        return {name: describe_attack(atk) for name, atk in self.attacks.items()}

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
        return full_precision(out)

    def _iteration(self, engine: RobustEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:  # type: ignore[override]
        inputs, targets, args, kwargs = prepare_engine_batch(engine, batchdata)
        if self.attacks and targets is None:
            raise ValueError("RobustEvaluator needs labels to attack the inputs; the batch has none.")
        engine.state.output = {RobustKeys.IMAGE: inputs, RobustKeys.LABEL: targets}
        engine.state.output.update(self._predict(engine, inputs, args, kwargs))
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

    The network returns logits ``(B, K, *spatial)`` and the batches carry label maps (class indices
    ``(B, 1, *spatial)`` or one-hot ``(B, K, *spatial)``), which the attacks receive as dense labels.
    Every iteration computes the clean predictions and, per attack ``name``, the attacked ones, as
    :class:`RobustEvaluator` does (``"pred"``, ``"pred/<name>"``); from them MONAI metric handlers
    accumulate, on the argmax masks against the labels:

    - ``"dice"`` and ``"dice/<name>"``: :class:`~monai_adv.metrics.SegmentationDiceMetric` (MONAI's
      ``DiceMetric``), per image and class;
    - ``"hd95"`` and ``"hd95/<name>"`` (``"hd<percentile>"``): the Hausdorff distance at the
      ``hausdorff_percentile`` of the surface distances
      (:class:`~monai_adv.metrics.SegmentationHausdorffMetric`, MONAI's ``HausdorffDistanceMetric``),
      in pixels or, with ``spacing``, physical units.

    A class in neither the label nor the prediction is left out; in only one of them it scores Dice 0
    and the image diagonal as distance (an attack that erases or invents a structure is counted). At
    epoch end ``engine.state.metrics[name]`` holds the mean over every (image, class) pair that counts
    (MONAI's ``mean``), and ``engine.state.metric_details[name]`` the ``(N, K)`` values, from which
    :meth:`per_class_results` (and :class:`~monai_adv.handlers.SegmentationRobustnessReport`) take the
    per-class means. Unless ``key_val_metric`` is given, the clean ``"dice"`` is the key metric (for
    ``CheckpointSaver(save_key_metric=True)`` and early stopping).

    Args:
        device: the device to run on.
        val_data_loader: the evaluation data, with label maps.
        network: the segmentation network.
        num_classes: ``K``, the number of output channels.
        attacks: ``{name: attack}``, called as ``attack(images, label_maps)`` (see :class:`RobustEvaluator`).
        detector: an optional fitted detector (see :class:`RobustEvaluator`).
        include_background: count class 0 in the metrics.
        hausdorff: also compute the Hausdorff distance (about 0.1 s per image and variant for 13
            classes at 128 x 128 on one CPU core).
        hausdorff_percentile: its percentile (95: HD95; None: the maximum).
        spacing: pixel spacing for the distances (a number or one per axis); None: pixels.
        pred_key: the output key of the logits.
        label_key: the output key of the labels.
        keep_adversarial_images: store ``"image/<name>"`` in the output (for an overlay gallery).
        kwargs: any other argument of :class:`RobustEvaluator` and MONAI's ``SupervisedEvaluator``
            (``inferer``, ``val_handlers``, ``amp``, ``key_val_metric``, ``additional_metrics``, ...).

    Raises:
        ValueError: for fewer than 2 classes, a metric name that clashes with the ones above, or any
            error of :class:`RobustEvaluator`; at run time, for label maps that do not fit the output.

    Example::

        evaluator = RobustSegmentationEvaluator(
            device, val_loader, unet, num_classes=13,
            attacks={"pgd": PGD(unet, 0.004, steps=10), "segpgd": SegPGD(unet, 0.004, steps=10)},
            val_handlers=[SegmentationRobustnessReport("eval", class_names=OCT_LAYER_CLASSES)])
        evaluator.run()
        evaluator.state.metrics["dice/segpgd"]
    """

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
        spacing: float | Sequence[float] | None = None,
        pred_key: str = RobustKeys.PRED,
        label_key: str = RobustKeys.LABEL,
        keep_adversarial_images: bool = False,
        **kwargs: Any,
    ) -> None:
        if int(num_classes) < 2:
            raise ValueError(
                f"num_classes must be >= 2 (the network's output channels), got {num_classes!r}."
            )
        self.num_classes = int(num_classes)
        self.include_background = bool(include_background)
        self.hausdorff_name = (
            None
            if not hausdorff
            else ("hd" if hausdorff_percentile is None else f"hd{float(hausdorff_percentile):g}")
        )
        names = [n for n in (attacks or {}) if isinstance(n, str)]
        if "clean" in names:
            raise ValueError("an attack may not be named 'clean' (the name of the unattacked results).")
        self.variants: dict[str, str] = {"clean": pred_key, **{n: RobustKeys.adv(pred_key, n) for n in names}}
        metrics: dict[str, IgniteMetricHandler] = {}
        for variant, key in self.variants.items():
            suffix = "" if variant == "clean" else "/" + variant
            transform = SegmentationOutputTransform(self.num_classes, key, label_key)
            metrics["dice" + suffix] = IgniteMetricHandler(
                SegmentationDiceMetric(include_background=include_background), output_transform=transform
            )
            if self.hausdorff_name is not None:
                metrics[self.hausdorff_name + suffix] = IgniteMetricHandler(
                    SegmentationHausdorffMetric(
                        include_background=include_background,
                        percentile=hausdorff_percentile,
                        spacing=spacing,
                    ),
                    output_transform=transform,
                )
        key_metric = kwargs.pop("key_val_metric", None)
        additional = dict(kwargs.pop("additional_metrics", None) or {})
        clash = sorted(set(additional) & set(metrics) | set(key_metric or {}) & set(metrics))
        if clash:
            raise ValueError(f"metric names {clash} are the evaluator's own; name yours otherwise.")
        if key_metric is None:
            key_metric = {"dice": metrics.pop("dice")}
        super().__init__(
            device,
            val_data_loader,
            network,
            attacks=attacks,
            detector=detector,
            keep_adversarial_images=keep_adversarial_images,
            key_val_metric=key_metric,
            additional_metrics={**metrics, **additional},
            **kwargs,
        )
        self.spacing = spacing

    def per_class_results(self) -> dict[str, dict[str, Any]]:
        """``{variant: {"dice": [K], "mean_dice", "<hd>": [K], "mean_<hd>"}}`` of the last epoch.

        The variants are ``"clean"`` and the attack names; per class (from class 1 when
        ``include_background`` is false), the mean over the images where the class counts (``None``
        where it never does); the means are ``engine.state.metrics``'.

        Raises:
            RuntimeError: before an epoch has completed.
        """
        details = getattr(self.state, "metric_details", None) or {}
        if "dice" not in details:
            raise RuntimeError("no segmentation metrics yet: run the evaluator first.")
        first = 0 if self.include_background else 1
        out: dict[str, dict[str, Any]] = {}
        for variant in self.variants:
            suffix = "" if variant == "clean" else "/" + variant
            entry: dict[str, Any] = {}
            for base in ("dice",) + (() if self.hausdorff_name is None else (self.hausdorff_name,)):
                values = torch.as_tensor(details[base + suffix]).float().reshape(-1, self.num_classes - first)
                per_class = []
                for k in range(values.shape[1]):
                    col = values[:, k]
                    col = col[~torch.isnan(col)]
                    per_class.append(float(col.mean()) if col.numel() else None)
                entry[base] = per_class
                mean = self.state.metrics.get(base + suffix)
                entry["mean_" + base] = None if mean is None else float(mean)
            out[variant] = entry
        return out
