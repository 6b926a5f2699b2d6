"""An adaptive attack that knows the detector: misclassify *and* look clean to it.

Carlini & Wagner ("Adversarial examples are not easily detected", AISec 2017) showed that detectors
that stop standard attacks fall to an attacker who adds the detector's score to the objective; Ma et
al. (HFC, MICCAI 2021) broke medical-image detectors the same way. A detector is only worth what it
does against this attack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai_adv.transforms.base import EpsType, NormBoundedAttack, check_step_size, check_steps

__all__ = ["AdaptiveAttack", "BestIterate", "adaptive_worst_case", "median_clean_margin"]


class BestIterate:
    """Per sample, the best iterate of an attack on a classifier and a detector.

    A success (misclassified, by the attack's own criterion) beats no success; between two iterates that
    both succeed or both fail, the lower ``key`` wins (the detector score among successes, the margin
    otherwise).

    Args:
        x: the first iterate ``(B, ...)``.
        key_dtype: the dtype the keys are compared in.
    """

    def __init__(self, x: torch.Tensor, key_dtype: torch.dtype = torch.float64) -> None:
        self.x = x.clone()
        self.success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        self.key = torch.full((x.shape[0],), float("inf"), dtype=key_dtype, device=x.device)
        self._view = (-1,) + (1,) * (x.ndim - 1)

    def update(self, x: torch.Tensor, success: torch.Tensor, key: torch.Tensor) -> None:
        """Keep ``x`` for the samples where it is better than the best so far."""
        key = key.to(device=self.key.device, dtype=self.key.dtype)
        better = (success & ~self.success) | ((success == self.success) & (key < self.key))
        self.x = torch.where(better.reshape(self._view), x, self.x)
        self.key = torch.where(better, key, self.key)
        self.success = self.success | success


class AdaptiveAttack(NormBoundedAttack):
    """PGD on misclassification and a low detector score together, through the detector's differentiable score.

    With ``mode="sum"`` (default) each step ascends, per sample,
    ``J = -max(m(x'), -kappa) - lambda * s(x') / scale`` where ``m = z_y - max_{j != y} z_j`` is the
    classification margin (for a targeted attack, the margin of the target, negated), ``s`` is the
    detector's score and ``scale`` its calibrated threshold. The hinge at ``-kappa`` stops pushing the
    class once it is wrong by ``kappa``, so the rest of the budget goes to lowering the score (Carlini
    & Wagner 2017). With ``mode="selective"`` a sample follows the margin gradient until it is
    misclassified and the score gradient after (Bryniarski et al., ICLR 2022). Logits and score come
    from one forward pass (the detector's hooks). The returned point per sample is the best iterate:
    misclassified with the lowest score when one was found, else the lowest-margin iterate.

    Args:
        network: the classifier under attack (the detector's network).
        detector: a fitted :class:`~monai_adv.detectors.AdversarialDetector`.
        eps: radius of the ball in intensity units, or a ``(low, high)`` range drawn per call.
        alpha: step size; default ``2.5 * eps / steps``.
        steps: iterations (>= 1).
        detector_weight: ``lambda`` (>= 0); 0 gives a margin-loss PGD that ignores the detector.
        mode: ``"sum"`` or ``"selective"`` (see above).
        kappa: classification confidence margin (>= 0).
        score_scale: divides the score; default the detector's threshold when calibrated, else 1.
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a random point of the ball.
        eot_samples: gradients averaged per step (Expectation over Transformation, Athalye et al. 2018):
            for a detector or network with randomness in its forward pass; 1 for deterministic ones.
            Non-differentiable steps inside a detector (feature squeezing's rounding) are crossed by
            the detector's own BPDA (identity backward), so the gradient is never silently zero.
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack` (``loss`` is not used).

    Raises:
        ValueError: for an unfitted detector, a detector on another network, steps < 1, alpha <= 0,
            detector_weight < 0, kappa < 0, score_scale <= 0 or an unknown mode; when called with
            dense (segmentation) labels, which it does not support.

    Example::

        det = MahalanobisDetector(net).fit(clean_loader)
        det.calibrate(val_loader, fpr=0.05)
        x_adv = AdaptiveAttack(net, det, eps=8 / 255, steps=20)(images, labels)
    """

    needs_detector = True
    #: the detectors read a classifier's features: dense (segmentation) labels raise a ValueError
    supports_dense = False

    def __init__(
        self,
        network: nn.Module | Callable,
        detector: Any,
        eps: EpsType,
        alpha: float | None = None,
        steps: int = 20,
        detector_weight: float = 1.0,
        kappa: float = 0.0,
        score_scale: float | None = None,
        mode: str = "sum",
        norm: str = "linf",
        random_start: bool = True,
        eot_samples: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, norm=norm, **kwargs)
        for attr in ("predict_and_score", "is_fitted"):
            if not hasattr(detector, attr):
                raise ValueError(f"detector must be a monai_adv detector, got {type(detector).__name__}.")
        if not detector.is_fitted:
            raise ValueError("the detector is not fitted: fit (and calibrate) it before attacking it.")
        if getattr(detector, "network", network) is not network:
            raise ValueError("the detector reads the features of another network than the one under attack.")
        self.detector = detector
        self.alpha = check_step_size("alpha", alpha)
        self.steps = check_steps(steps)
        if not float(detector_weight) >= 0:
            raise ValueError(f"detector_weight must be >= 0, got {detector_weight!r}.")
        if not float(kappa) >= 0:
            raise ValueError(f"kappa must be >= 0, got {kappa!r}.")
        self.detector_weight = float(detector_weight)
        self.kappa = float(kappa)
        self.score_scale = check_step_size("score_scale", score_scale)
        self.random_start = bool(random_start)
        if mode not in ("selective", "sum"):
            raise ValueError(f"mode must be 'selective' or 'sum', got {mode!r}.")
        self.mode = mode
        if int(eot_samples) < 1:
            raise ValueError(f"eot_samples must be >= 1, got {eot_samples!r}.")
        self.eot_samples = int(eot_samples)

    def _scale(self) -> float:
        if self.score_scale is not None:
            return self.score_scale
        thr = getattr(self.detector, "threshold", None)
        return abs(float(thr)) if thr is not None and abs(float(thr)) > 1e-12 else 1.0

    def objective_and_grad(  # type: ignore[override]
        self, x_adv: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient of ``J`` w.r.t. the input (averaged over ``eot_samples`` passes); returns
        ``(grad, margin, score, logits)``, detached (margin, score and logits of the last pass)."""
        grad = None
        for _ in range(self.eot_samples):
            g, m, score, logits = self._objective_and_grad_once(x_adv, y)
            grad = g if grad is None else grad + g
        return grad / self.eot_samples, m, score, logits

    def _objective_and_grad_once(
        self, x_adv: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x_adv = x_adv.detach().requires_grad_(True)
        with self.autocast():
            logits, score = self.detector.predict_and_score(self.to_network_layout(x_adv), grad=True)
        logits, score = logits.to(x_adv.dtype), score.to(x_adv.dtype)
        if logits.ndim != 2 or logits.shape[0] != x_adv.shape[0]:
            raise ValueError(f"network output of shape {tuple(logits.shape)} is not class logits (B, K).")
        self._check_label_range(y, logits.shape[1])
        m = self.attack_margin(logits, y)
        cls_term = -m.clamp_min(-self.kappa)
        det_term = -score / self._scale()
        if self.mode == "sum":
            objective = cls_term + self.detector_weight * det_term
        else:  # selective: fool the classifier first; once fooled, lower the detector score
            fooled = self.succeeded(m, self.kappa)
            objective = torch.where(fooled, self.detector_weight * det_term, cls_term)
        grad = self.input_grad(objective.sum(), x_adv)
        return grad, m.detach(), score.detach(), logits.detach()

    def _attack(self, x, y, mask, generator):
        eps = self.current_eps
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
        x_adv = self.sample_in_ball(x, eps, mask, generator) if self.random_start else x.clone()
        best = BestIterate(x_adv, torch.get_default_dtype())
        for i in range(self.steps + 1):
            grad, m, score, _ = self.objective_and_grad(x_adv, y)
            success = self.succeeded(m, self.kappa)
            # among successes the lower score, else the lower margin
            best.update(x_adv, success, torch.where(success, score, m))
            if i == self.steps:
                break
            x_adv = self.project(x_adv + alpha * self.steepest_direction(grad, mask), x, eps, mask)
        return best.x


def median_clean_margin(
    network: nn.Module | Callable, loader: Any, output_transform: Callable | None = None
) -> float:
    """The median logit margin ``z_y - max_{j != y} z_j`` of the correctly classified clean items of ``loader``.

    The attacker's ``kappa`` for an adaptive attack on a margin-based detector: an adversarial example
    as confident as a typical clean one does not look unsure.

    Raises:
        ValueError: for a loader without labels, or when no item is classified correctly.
    """
    from monai_adv.detectors.features import iterate_loader, split_batch
    from monai_adv.utils import default_output_transform, eval_mode, network_device

    transform = output_transform or default_output_transform
    device = network_device(network) if isinstance(network, nn.Module) else None
    margins = []
    with torch.no_grad(), eval_mode(network):
        for batch in iterate_loader(loader):
            x, y = split_batch(batch)
            if y is None:
                raise ValueError("median_clean_margin needs labelled clean batches.")
            z = transform(network(x if device is None else torch.as_tensor(x).to(device))).float()
            y = torch.as_tensor(y).reshape(-1).long().to(z.device)
            top_other = z.scatter(1, y[:, None], float("-inf")).max(1).values
            m = z.gather(1, y[:, None]).squeeze(1) - top_other
            margins.append(m[m > 0].cpu())
    m = torch.cat(margins) if margins else torch.zeros(0)
    if m.numel() == 0:
        raise ValueError("no clean item is classified correctly: there is no clean margin to match.")
    return float(m.median())


def adaptive_worst_case(
    network: nn.Module | Callable,
    detector: Any,
    eps: float,
    clean_data: Any = None,
    kappa: float | None = None,
    weights: tuple[float, ...] = (0.1, 1.0, 10.0),
    steps: int = 100,
    adaptive_steps: int = 50,
    n_queries: int = 5000,
    hfc_layers: Any = None,
    standard: bool = True,
    **kwargs: Any,
) -> Any:
    """The per-image worst case of the standard suite and the adaptive menu against ``detector``.

    The functional form of :class:`~monai_adv.transforms.AdaptiveWorstCase` (same arguments): an image
    is broken when an attack leaves it misclassified *and* unflagged; the suite, then ``AdaptiveAttack``
    over ``weights`` x ``{0, median clean margin}``, the selective mode and HFC run in turn on the
    images still unbroken.
    """
    from monai_adv.transforms.composite import AdaptiveWorstCase

    return AdaptiveWorstCase(
        network,
        detector,
        eps,
        clean_data=clean_data,
        kappa=kappa,
        weights=weights,
        steps=steps,
        adaptive_steps=adaptive_steps,
        n_queries=n_queries,
        hfc_layers=hfc_layers,
        standard=standard,
        **kwargs,
    )
