"""Auto-PGD (Croce & Hein, ICML 2020), the gradient component of AutoAttack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai_adv.transforms.base import EpsType, NormBoundedAttack, check_steps, per_sample_view
from monai_adv.transforms.losses import dlr_loss, targeted_dlr_loss

__all__ = ["APGD"]


class APGD(NormBoundedAttack):
    """Auto-PGD: step-size-free PGD with momentum and checkpoints (Croce & Hein, ICML 2020, Alg. 1).

    Starts with step ``2 * eps`` and a momentum of 0.75; at checkpoints ``w_j`` (``p_0 = 0``,
    ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` of the budget) it halves a
    sample's step and restarts it from its best point when, since the last checkpoint, the loss rose
    in fewer than 75% of the steps, or neither the step was reduced nor the best loss improved.
    Each sample returns its first adversarial point if one was found, else its highest-loss point.
    Restarts re-run, from new random points, only the samples not yet fooled.

    Args:
        network: the classifier under attack.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn per call.
        steps: iterations per restart (AutoAttack uses 100).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (Difference of Logits Ratio; the targeted DLR when
            ``targeted``; needs >= 3 classes, >= 4 when targeted), or a callable returning per-sample
            losses ``(B,)``.
        n_restarts: number of random restarts (>= 1).
        rho: the checkpoint condition's fraction of increasing steps (0.75 in the paper).
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Raises:
        ValueError: for steps < 1, n_restarts < 1, an unknown loss name, or rho outside (0, 1].

    Example::

        atk = APGD(net, eps=8 / 255, steps=100, loss="dlr")
        x_adv = atk(batch, labels)
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        steps: int = 100,
        norm: str = "linf",
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "ce",
        n_restarts: int = 1,
        rho: float = 0.75,
        **kwargs: Any,
    ) -> None:
        if isinstance(loss, str):
            name = loss.lower()
            if name not in ("ce", "dlr"):
                raise ValueError(f"loss must be 'ce', 'dlr' or a callable, got {loss!r}.")
            loss_fn = None if name == "ce" else (targeted_dlr_loss if kwargs.get("targeted") else dlr_loss)
        else:
            name, loss_fn = getattr(loss, "__name__", "custom"), loss
        super().__init__(network, eps, norm=norm, loss=loss_fn, **kwargs)
        self.loss_name = name
        self.steps = check_steps(steps)
        self.n_restarts = check_steps(n_restarts, "n_restarts")
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho!r}.")
        self.rho = float(rho)

    def checkpoints(self) -> list[int]:
        """The iterations at which the step size is reconsidered."""
        p = [0.0, 0.22]
        while p[-1] < 1:
            p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        points = sorted({int(round(q * self.steps)) for q in p[1:] if q <= 1})
        return [w for w in points if 0 < w <= self.steps]

    def _attack(self, x, y, mask, generator):
        eps = self.current_eps
        x_out = x.clone()
        best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device, dtype=x.dtype)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.n_restarts):
            idx = (~fooled).nonzero()[:, 0]
            if idx.numel() == 0:
                break
            m = mask[idx] if mask is not None else None
            x_run, loss_run, fooled_run = self._single_run(x[idx], y[idx], m, eps, generator)
            # keep, per sample, an adversarial point, else the highest loss seen over restarts
            take = fooled_run | (loss_run > best_loss[idx])
            x_out[idx[take]] = x_run[take]
            best_loss[idx[take]] = loss_run[take]
            fooled[idx] = fooled_run
        return x_out

    def _single_run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
        eps: float,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run of Algorithm 1 on a batch: returns (point, its loss, fooled) per sample."""
        b = x.shape[0]
        checkpoints = set(self.checkpoints())
        x_adv = self.sample_in_ball(x, eps, mask, generator)
        grad, loss, logits = self._grad(x_adv, y)
        fooled = self.is_adversarial(logits, y)
        x_best_adv = x_adv.clone()
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        step = per_sample_view(torch.full((b,), 2.0 * eps, device=x.device, dtype=x.dtype), x.ndim)
        x_prev = x_adv.clone()
        loss_at_last_check = loss_best.clone()
        reduced_at_last_check = torch.ones(b, dtype=torch.bool, device=x.device)
        n_increases = torch.zeros(b, device=x.device)
        last_check = 0
        loss_prev = loss.clone()
        for k in range(self.steps):
            # gradient step, projected, then the momentum combination (alpha = 0.75), projected again
            z = self.project(x_adv + step * self.steepest_direction(grad, mask), x, eps, mask)
            a = 0.75 if k > 0 else 1.0
            x_next = self.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps, mask)
            x_prev, x_adv = x_adv, x_next

            grad, loss, logits = self._grad(x_adv, y)
            now_fooled = self.is_adversarial(logits, y)
            x_best_adv[now_fooled & ~fooled] = x_adv[now_fooled & ~fooled]
            fooled |= now_fooled
            n_increases += (loss > loss_prev).float()
            loss_prev = loss
            improved = loss > loss_best
            x_best[improved], grad_best[improved], loss_best[improved] = (
                x_adv[improved],
                grad[improved],
                loss[improved],
            )

            if k + 1 in checkpoints:
                since = k + 1 - last_check
                oscillating = n_increases <= self.rho * since
                stalled = ~reduced_at_last_check & (loss_at_last_check >= loss_best)
                reduce = oscillating | stalled
                reduced_at_last_check = reduce
                loss_at_last_check = loss_best.clone()
                if reduce.any():
                    step[reduce] /= 2.0
                    x_adv[reduce] = x_best[reduce]
                    grad[reduce] = grad_best[reduce]
                n_increases.zero_()
                last_check = k + 1
        if self.amp:
            # success was judged on low-precision logits, and the first point that crossed the boundary
            # is kept: confirm both candidates in full precision, so that a point only bf16 called
            # adversarial is neither returned as one nor excluded from the next restart
            adv_ok, best_ok = (
                self.is_adversarial_full_precision(x_best_adv, y),
                self.is_adversarial_full_precision(x_best, y),
            )
            return (
                torch.where(per_sample_view(adv_ok, x.ndim), x_best_adv, x_best),
                loss_best,
                adv_ok | best_ok,
            )
        x_final = torch.where(per_sample_view(fooled, x.ndim), x_best_adv, x_best)
        return x_final, loss_best, fooled

    def _grad(self, x_adv: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grad, objective, logits = self.objective_and_grad(x_adv, y)
        if objective.ndim != 1:
            raise ValueError("APGD needs a loss that returns one value per sample, shape (B,).")
        return grad, objective, logits
