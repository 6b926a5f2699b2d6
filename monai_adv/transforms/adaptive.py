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

__all__ = ["AdaptiveAttack"]


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

    def _scale(self) -> float:
        if self.score_scale is not None:
            return self.score_scale
        thr = getattr(self.detector, "threshold", None)
        return abs(float(thr)) if thr is not None and abs(float(thr)) > 1e-12 else 1.0

    def objective_and_grad(  # type: ignore[override]
        self, x_adv: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gradient of ``J`` w.r.t. the input; returns ``(grad, margin, score, logits)``, detached."""
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
        best = x_adv.clone()
        best_success = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        best_key = torch.full((x.shape[0],), float("inf"), device=x.device)
        view = (-1,) + (1,) * (x.ndim - 1)
        for i in range(self.steps + 1):
            grad, m, score, _ = self.objective_and_grad(x_adv, y)
            success = self.succeeded(m, self.kappa)
            # rank: any success beats no success; among successes the lower score, else the lower margin
            key = torch.where(success, score.to(best_key.dtype), m.to(best_key.dtype))
            better = (success & ~best_success) | ((success == best_success) & (key < best_key))
            best = torch.where(better.reshape(view), x_adv, best)
            best_key = torch.where(better, key, best_key)
            best_success = best_success | success
            if i == self.steps:
                break
            x_adv = self.project(x_adv + alpha * self.steepest_direction(grad, mask), x, eps, mask)
        return best
