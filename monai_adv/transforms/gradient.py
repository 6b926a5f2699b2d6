"""Gradient-sign attacks: FGSM, PGD and MI-FGSM."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai_adv.transforms.base import EpsType, NormBoundedAttack, check_step_size, check_steps

__all__ = ["FGSM", "PGD", "MIFGSM"]


class FGSM(NormBoundedAttack):
    """Fast Gradient Sign Method (Goodfellow et al., ICLR 2015).

    One step of size eps along the sign of the loss gradient: ``x + eps * sign(grad_x L(f(x), y))``.
    With ``norm="l2"`` it is the fast gradient method, ``x + eps * g / ||g||_2``.

    Args:
        network: the classifier under attack.
        eps: step size and radius, in intensity units; ``(low, high)`` draws it per call (the paper's
            SSAT uses ``(0.001, 0.003)``).
        kwargs: ``norm``, ``value_range``, ``spatial_dims``, ``targeted``, ``loss``,
            ``output_transform``; see :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Example::

        atk = FGSM(net, eps=2 / 255)
        x_adv = atk(img, label)
    """

    def __init__(self, network: nn.Module | Callable, eps: EpsType, **kwargs: Any) -> None:
        super().__init__(network, eps, **kwargs)

    def _attack(self, x, y, mask, generator):
        grad, _, _ = self.objective_and_grad(x, y)
        return self.project(
            x + self.current_eps * self.steepest_direction(grad, mask), x, self.current_eps, mask
        )


class PGD(NormBoundedAttack):
    """Projected Gradient Descent (Madry et al., ICLR 2018), L-infinity or L2.

    From a random point of the eps-ball, ``steps`` times: step by ``alpha`` along the steepest
    ascent direction of the loss (the gradient's sign for Linf, its normalised direction for L2),
    then project back onto the eps-ball, the mask and the value range.

    Args:
        network: the classifier under attack.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn per call.
        alpha: step size; default ``2.5 * eps / steps`` (Madry et al.'s rule, so the iterates can
            cross the ball).
        steps: number of iterations (>= 1).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform random point of the ball instead of the input.
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Raises:
        ValueError: for steps < 1 or alpha <= 0.

    Example::

        atk = PGD(net, eps=8 / 255, alpha=2 / 255, steps=10)
        x_adv = atk(batch, labels)
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        alpha: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, norm=norm, **kwargs)
        self.alpha = check_step_size("alpha", alpha)
        self.steps = check_steps(steps)
        self.random_start = bool(random_start)

    def step_size(self, eps: float) -> float:
        return self.alpha if self.alpha is not None else 2.5 * eps / self.steps

    def step_loss(self, t: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """The loss of iteration ``t`` (0-based); None: ``self.loss``. Variants with a per-step loss override it."""
        return None

    def _attack(self, x, y, mask, generator):
        eps = self.current_eps
        alpha = self.step_size(eps)
        x_adv = self.sample_in_ball(x, eps, mask, generator) if self.random_start else x.clone()
        for t in range(self.steps):
            grad, _, _ = self.objective_and_grad(x_adv, y, loss=self.step_loss(t))
            x_adv = self.project(x_adv + alpha * self.steepest_direction(grad, mask), x, eps, mask)
        return x_adv


class MIFGSM(NormBoundedAttack):
    """Momentum Iterative FGSM (Dong et al., CVPR 2018).

    Accumulates the L1-normalised gradient with a decay factor, ``g <- mu * g + grad / ||grad||_1``,
    and steps along ``sign(g)``; the momentum stabilises the update direction, which makes the
    examples transfer better to other networks.

    Args:
        network: the classifier under attack.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn per call.
        alpha: step size; default ``eps / steps`` as in the paper.
        steps: number of iterations (>= 1).
        decay: the momentum factor ``mu`` (>= 0); 0 gives iterative FGSM.
        kwargs: ``norm`` and the arguments of :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Raises:
        ValueError: for steps < 1, alpha <= 0 or decay < 0.
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        alpha: float | None = None,
        steps: int = 10,
        decay: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, **kwargs)
        self.alpha = check_step_size("alpha", alpha)
        self.steps = check_steps(steps)
        if not float(decay) >= 0:
            raise ValueError(f"decay must be >= 0, got {decay!r}.")
        self.decay = float(decay)

    def _attack(self, x, y, mask, generator):
        eps = self.current_eps
        alpha = self.alpha if self.alpha is not None else eps / self.steps
        momentum = torch.zeros_like(x)
        x_adv = x.clone()
        for _ in range(self.steps):
            grad, _, _ = self.objective_and_grad(x_adv, y)
            if mask is not None:
                grad = grad * mask
            l1 = grad.abs().flatten(1).mean(1).reshape(-1, *([1] * (x.ndim - 1)))
            momentum = self.decay * momentum + grad / l1.clamp_min(1e-12)
            x_adv = self.project(x_adv + alpha * self.steepest_direction(momentum, None), x, eps, mask)
        return x_adv
