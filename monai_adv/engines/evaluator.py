"""RobustEvaluator: clean and attacked inputs, predictions and detector scores in one pass over the data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents

from monai_adv.engines.batches import prepare_engine_batch
from monai_adv.engines.precision import attack_in_engine_precision, configure_engine_amp, engine_autocast
from monai_adv.keys import RobustKeys
from monai_adv.transforms.base import describe_attack
from monai_adv.utils import full_precision

if TYPE_CHECKING:
    from monai_adv.detectors.base import AdversarialDetector

__all__ = ["RobustEvaluator"]


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
        super().__init__(
            device=torch.device(device), val_data_loader=val_data_loader, network=network, **kwargs
        )
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
