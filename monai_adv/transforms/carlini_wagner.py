"""Carlini & Wagner's L2 attack (IEEE S&P 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai_adv.transforms.base import AdversarialAttack, check_step_size, check_steps
from monai_adv.transforms.losses import mean_over_voxels

__all__ = ["CarliniWagnerL2"]


class CarliniWagnerL2(AdversarialAttack):
    """Carlini-Wagner L2: the smallest L2 perturbation that changes the decision.

    Minimises ``||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j, -kappa)`` with Adam, in the tanh
    space ``x' = low + (high - low) * (tanh(w) + 1) / 2`` so that ``x'`` stays in the value range
    (directly on ``x' = x + w`` when ``value_range`` is None). A binary search over ``c`` per sample
    keeps the smallest successful perturbation: after a success ``c`` moves down, after a failure
    up (times 10 until a success brackets it).

    The defaults are chosen to *succeed* on an undefended network rather than to be cheap: ``c``
    starts at 1 (not 1e-3 or 1e-4, which on [0, 1] images with logits of order 10 wastes most of the
    search on failures), 5 binary-search rounds that can raise ``c`` to 10^4, 100 Adam steps at
    ``lr=0.01``. A sample that is never fooled is returned unchanged.

    Dense outputs (segmentation): the margin term is the per-voxel ``max(z_y - max_{j != y} z_j,
    -kappa)`` averaged over the voxels (each voxel stops pulling once it is fooled by ``kappa``), and
    a sample counts as fooled by the attack's dense success rule (``dense_success``,
    ``dense_threshold``), so the search finds the smallest perturbation that brings the agreement
    with the label below the threshold.

    Args:
        network: the classifier under attack.
        c: initial trade-off constant (> 0).
        kappa: confidence margin (>= 0): success requires the wrong class to lead by kappa.
        steps: Adam steps per binary-search round.
        lr: Adam learning rate.
        binary_search_steps: rounds of the search over ``c``.
        abort_early: stop a round when the objective has not improved by 0.01% in steps/10 steps.
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack` (``loss`` is not used).

    Raises:
        ValueError: for c <= 0, kappa < 0, steps < 1, lr <= 0 or binary_search_steps < 1.
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        c: float = 1.0,
        kappa: float = 0.0,
        steps: int = 100,
        lr: float = 0.01,
        binary_search_steps: int = 5,
        abort_early: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, **kwargs)
        self.c = check_step_size("c", c)
        if not float(kappa) >= 0:
            raise ValueError(f"kappa must be >= 0, got {kappa!r}.")
        self.kappa = float(kappa)
        self.steps = check_steps(steps)
        self.lr = check_step_size("lr", lr)
        self.binary_search_steps = check_steps(binary_search_steps, "binary_search_steps")
        self.abort_early = bool(abort_early)
        #: squared L2 norm of the returned perturbation per sample in the latest call (inf: not fooled)
        self.last_l2: torch.Tensor | None = None

    # the change of variables ---------------------------------------------------------------------
    def _to_w(self, x: torch.Tensor) -> torch.Tensor:
        if self.value_range is None:
            return torch.zeros_like(x)
        low, high = self.value_range
        unit = ((x - low) / (high - low) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        return torch.atanh(unit)

    def _from_w(self, w: torch.Tensor, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.value_range is None:
            x_new = x + w
        else:
            low, high = self.value_range
            x_new = low + (high - low) * (torch.tanh(w) + 1) / 2
        return x_new if mask is None else x + (x_new - x) * mask

    def _attack(self, x, y, mask, generator):
        b = x.shape[0]
        c = torch.full((b,), self.c, device=x.device, dtype=x.dtype)
        lower = torch.zeros_like(c)
        upper = torch.full_like(c, float("inf"))
        best_l2 = torch.full_like(c, float("inf"))
        best_adv = x.clone()
        w0 = self._to_w(x)
        check_every = max(self.steps // 10, 1)
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            succeeded = torch.zeros(b, dtype=torch.bool, device=x.device)
            prev = float("inf")
            for step in range(self.steps):
                x_new = self._from_w(w, x, mask)
                logits = self.logits(x_new, y)
                l2 = (x_new - x).pow(2).flatten(1).sum(1)
                if self.is_dense(y):
                    term = mean_over_voxels(self.voxel_attack_margin(logits, y).clamp_min(-self.kappa))
                    with torch.no_grad():
                        success = self.is_adversarial(logits, y)
                else:
                    m = self.attack_margin(logits, y)  # the C&W f6 function before clamping
                    term = m.clamp_min(-self.kappa)
                    success = self.succeeded(m.detach(), self.kappa)
                objective = (l2 + c * term).sum()
                grad = self.input_grad(objective, w)
                with torch.no_grad():
                    better = success & (l2 < best_l2)
                    best_l2[better] = l2[better]
                    best_adv[better] = x_new[better]
                    succeeded |= success
                w.grad = grad
                optimizer.step()
                if self.abort_early and (step + 1) % check_every == 0:
                    if objective.item() > prev * 0.9999:
                        break
                    prev = objective.item()
            # binary search on c, per sample
            upper = torch.where(succeeded, torch.minimum(upper, c), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, c))
            bracketed = torch.isfinite(upper)
            c = torch.where(bracketed, (lower + upper) / 2, c * 10)
        self.last_l2 = best_l2.detach().cpu()
        return best_adv.detach()
