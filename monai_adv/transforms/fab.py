"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), AutoAttack's minimum-norm component."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai_adv.transforms.apgd import full_precision_logits, top_target_classes
from monai_adv.transforms.base import EpsType, NormBoundedAttack, check_steps, per_sample_view

__all__ = ["FAB", "project_onto_hyperplane"]


def project_onto_hyperplane(
    points: torch.Tensor,
    w: torch.Tensor,
    value: torch.Tensor,
    norm: str = "linf",
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """The smallest step ``d`` (Linf or L2) with ``w . d = -value`` that keeps ``points + d`` in the box.

    The problem FAB solves at each iteration: the hyperplane ``{z : w . (z - t) + value = 0}`` (a
    linearised decision boundary, ``value`` the linear function at ``t``), projected onto under the
    box constraint ``low <= t + d <= high`` (Croce & Hein 2020, Sec. 3.1). Each coordinate moves in
    the direction that closes the gap, by ``min(mu, room_i)`` (Linf) or ``min(mu |w_i|, room_i)``
    (L2), where ``room_i`` is its distance to the box in that direction; the progress
    ``sum_i s_i min(mu, b_i)`` is piecewise linear and increasing in ``mu``, so the smallest ``mu``
    that closes the gap is found exactly from its breakpoints (one sort per row). When even the whole
    box cannot close the gap, the step goes as far as the box allows (every coordinate to its bound).
    Coordinates with ``w_i = 0`` (e.g. outside a region of interest) never move.

    Args:
        points: ``(N, D)`` points ``t``, inside the box.
        w: ``(N, D)`` hyperplane normals.
        value: ``(N,)`` the linear function's value at each point; the hyperplane is where it is 0.
        norm: ``"linf"`` or ``"l2"``.
        value_range: the box ``(low, high)``, or None for no box.

    Returns:
        ``(N, D)`` steps ``d``.

    Raises:
        ValueError: for an unknown norm.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}.")
    need = value.abs()
    # +1: the coordinate increases, -1: it decreases, 0: it cannot help
    direction = -torch.where(value >= 0, 1.0, -1.0).to(w.dtype)[:, None] * w.sign()
    aw = w.abs()
    moves = aw > 0
    if norm == "linf":
        slope, scale = aw, torch.ones_like(aw)
    else:
        slope, scale = aw * aw, aw
    if value_range is None:
        # no box: no coordinate ever saturates; any breakpoint beyond the free solution does
        free = need / slope.sum(dim=1).clamp_min(torch.finfo(w.dtype).tiny)
        room = None
        breaks = (2.0 * free + 1.0)[:, None].expand_as(w)
    else:
        low, high = value_range
        room = torch.where(direction > 0, high - points, points - low).clamp_min(0.0)
        breaks = torch.where(moves, room / scale.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(room))
    slope = torch.where(moves, slope, torch.zeros_like(slope))
    # progress(mu) = sum_i slope_i * min(mu, breaks_i); its value at each sorted breakpoint
    b_sorted, order = breaks.sort(dim=1)
    s_sorted = slope.gather(1, order)
    saturated = torch.cumsum(s_sorted * b_sorted, dim=1)  # sum over breakpoints <= k
    total = s_sorted.sum(dim=1, keepdim=True)
    remaining = total - torch.cumsum(s_sorted, dim=1)  # slopes of the breakpoints > k
    at_breaks = saturated + b_sorted * remaining
    k = (at_breaks < need[:, None]).sum(dim=1, keepdim=True)  # breakpoints passed before closing the gap
    feasible = k[:, 0] < w.shape[1]
    zero = torch.zeros_like(total)
    sat_before = torch.cat([zero, saturated], dim=1).gather(1, k)
    slope_after = torch.cat([total, remaining], dim=1).gather(1, k)
    mu = ((need[:, None] - sat_before) / slope_after.clamp_min(torch.finfo(w.dtype).tiny)).clamp_min(0.0)
    step = direction * scale * torch.minimum(mu, breaks)
    if room is not None:
        # the gap cannot be closed inside the box: go as far as it allows
        step = torch.where(feasible[:, None], step, direction * room)
    return torch.where(moves, step, torch.zeros_like(step))


class FAB(NormBoundedAttack):
    """Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), Linf or L2, as AutoAttack runs it.

    FAB looks for the *smallest* adversarial perturbation. At each iteration it linearises the
    network at the current point ``x_k``, takes the closest linearised decision boundary (for each
    class ``l != y`` the hyperplane ``z_l - z_y = 0``, at distance ``|z_l - z_y| / ||grad||_*``) and
    projects onto it, under the box constraint of ``value_range``, both ``x_k`` (step ``d_k``) and the
    original input ``x_0`` (step ``d_0``). The next point is the biased combination

    ``x_{k+1} = clip((1 - a) (x_k + eta d_k) + a (x_0 + eta d_0))``,
    ``a = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max)``;

    once it is adversarial, the smallest such point so far is kept and the iterate is pulled back
    towards the input, ``x_0 + beta (x_{k+1} - x_0)``. Restarts after the first start from a random
    point at distance ``eps / 2``. As an eps-bounded attack it returns, per sample, the smallest
    adversarial point it found when that lies within ``eps``, and the input otherwise (exactly as
    AutoAttack uses it); :attr:`last_distance` holds the smallest distance found, within eps or not.

    Targeted, there are two ways to call it (as for :class:`~monai_adv.transforms.APGD`):

    - ``targeted=True`` (``n_target_classes=None``): ``label`` is the target ``t``; the boundary is
      ``z_t - z_j = 0`` with ``j`` the strongest other class at the current point, and the attack
      succeeds when the network predicts ``t``.
    - ``targeted=True, n_target_classes=k``: **FAB-T as AutoAttack runs it**. ``label`` is the true
      class; for each of the ``k`` (at most ``K - 1``) classes with the highest clean logits after
      the true one, strongest first, it runs FAB on the one boundary ``z_t - z_y = 0`` on the samples
      not yet fooled within eps. Success is any misclassification. AutoAttack's standard version uses
      ``n_target_classes=9, steps=100, n_restarts=1``, which is deterministic.

    Samples the network already gets wrong (or, given a target, already classifies as the target) are
    returned unchanged. FAB attacks classifiers (class logits), not dense (segmentation) outputs. The
    untargeted attack costs one forward and ``K`` backward passes per iteration, the targeted ones one
    backward pass, plus one forward pass to check success.

    Args:
        network: the classifier under attack.
        eps: radius of the ball the result must lie in, in intensity units, or a ``(low, high)``
            range drawn per call; it also sets the random restarts' distance.
        steps: iterations per run (AutoAttack: 100).
        norm: ``"linf"`` or ``"l2"``.
        n_restarts: runs per sample (per target class for FAB-T); the first starts at the input.
        alpha_max: the largest weight of the step from the original input (0.1 in the paper).
        eta: the overshoot of each projection, >= 1 (1.05 in the paper).
        beta: the backward step towards the input after a success, in (0, 1] (0.9 in the paper).
        n_target_classes: with ``targeted=True``, run FAB-T over this many target classes chosen from
            the clean logits (``label`` is then the true class); None: ``label`` is the target.
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Raises:
        ValueError: for steps < 1, n_restarts < 1, alpha_max outside [0, 1], eta < 1, beta outside
            (0, 1], or n_target_classes < 1 or without ``targeted=True``.

    Attributes:
        last_distance: per sample of the latest call, the norm of the smallest adversarial
            perturbation found (0 for an input already adversarial, ``inf`` where none was found),
            ``(B,)`` on the CPU.

    Example::

        fab_t = FAB(net, eps=8 / 255, targeted=True, n_target_classes=9)   # AutoAttack's FAB-T
        x_adv = fab_t(batch, labels)
        fab = FAB(net, eps=1.0, norm="l2")
        x_adv = fab(batch, labels)
        fab.last_distance   # the smallest L2 distances found, also beyond eps
    """

    #: FAB's boundaries are those between class logits: dense (segmentation) labels raise a ValueError
    supports_dense = False

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        steps: int = 100,
        norm: str = "linf",
        n_restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        n_target_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, norm=norm, **kwargs)
        self.steps = check_steps(steps)
        self.n_restarts = check_steps(n_restarts, "n_restarts")
        if not 0 <= alpha_max <= 1:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max!r}.")
        if not eta >= 1:
            raise ValueError(f"eta (the overshoot) must be >= 1, got {eta!r}.")
        if not 0 < beta <= 1:
            raise ValueError(f"beta must be in (0, 1], got {beta!r}.")
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        if n_target_classes is not None:
            n_target_classes = check_steps(n_target_classes, "n_target_classes")
            if not self.targeted:
                raise ValueError(
                    "n_target_classes chooses the target classes of a targeted attack (FAB-T); "
                    "pass targeted=True with it (the label is then the true class)."
                )
        self.n_target_classes = n_target_classes
        self.last_distance: torch.Tensor | None = None

    @property
    def label_is_target(self) -> bool:
        """False for FAB-T over chosen targets (``n_target_classes``): the label is the true class."""
        return self.targeted and self.n_target_classes is None

    def describe(self) -> dict[str, Any]:
        """:meth:`NormBoundedAttack.describe`; FAB-T over chosen targets is named ``FAB-T-<steps>``."""
        d = super().describe()
        if self.n_target_classes is not None:
            d.update(name=f"FAB-T-{self.steps}", n_target_classes=self.n_target_classes)
        return d

    # ------------------------------------------------------------------------------------------
    def _attack(self, x, y, mask, generator):
        eps = self.current_eps
        with torch.no_grad():
            clean = full_precision_logits(self, x, y)
        fooled = self.is_adversarial(clean, y)
        distance = torch.where(fooled, 0.0, float("inf")).to(x.dtype)
        x_out = x.clone()
        if self.n_target_classes is None:
            rounds: list[torch.Tensor | None] = [None]
        else:
            targets = top_target_classes(clean, y, self.n_target_classes)
            rounds = [targets[:, j] for j in range(targets.shape[1])]
        for target in rounds:
            for restart in range(self.n_restarts):
                idx = (~fooled).nonzero()[:, 0]
                if idx.numel() == 0:
                    break
                m = mask[idx] if mask is not None else None
                t = target[idx] if target is not None else None
                x_run, dist_run = self._single_run(x[idx], y[idx], m, eps, generator, t, restart > 0)
                distance[idx] = torch.minimum(distance[idx], dist_run)
                ok = dist_run <= eps
                if self.amp and ok.any():
                    # found on autocast logits: keep only what the network in full precision confirms
                    ok &= self.is_adversarial_full_precision(x_run, y[idx])
                x_out[idx[ok]] = x_run[ok]
                fooled[idx[ok]] = True
        self.last_distance = distance.cpu()
        return x_out

    def _single_run(
        self,
        x0: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
        eps: float,
        generator: torch.Generator,
        target: torch.Tensor | None,
        random_start: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One FAB run: (the smallest adversarial point found, else the input; its distance or inf)."""
        b = x0.shape[0]
        x1 = self._random_start(x0, eps, mask, generator) if random_start else x0.clone()
        x_best = x0.clone()
        best = torch.full((b,), float("inf"), device=x0.device, dtype=x0.dtype)
        flat0 = x0.flatten(1)
        for _ in range(self.steps):
            value, grad = self._boundary(x1, y, target, mask)
            w = grad.flatten(1)
            value0 = value + (w * (flat0 - x1.flatten(1))).sum(dim=1)  # the linear function at x0
            steps = project_onto_hyperplane(
                torch.cat([x1.flatten(1), flat0]),
                torch.cat([w, w]),
                torch.cat([value, value0]),
                self.norm,
                self.value_range,
            )
            d1, d0 = steps[:b].reshape(x0.shape), steps[b:].reshape(x0.shape)
            n1 = self.per_sample_norm(d1).clamp_min(1e-8)
            n0 = self.per_sample_norm(d0).clamp_min(1e-8)
            alpha = (n1 / (n1 + n0)).clamp(0.0, self.alpha_max)
            x1 = self.clip_to_range((1 - alpha) * (x1 + self.eta * d1) + alpha * (x0 + self.eta * d0))
            if mask is not None:
                x1 = x0 + (x1 - x0) * mask
            with torch.no_grad():
                adv = self.is_adversarial(self.logits(x1, y), y)
            if adv.any():
                dist = self.per_sample_norm(x1 - x0).flatten()
                better = adv & (dist < best)
                x_best[better] = x1[better]
                best[better] = dist[better]
                x1[adv] = x0[adv] + self.beta * (x1[adv] - x0[adv])
        return x_best, best

    def _random_start(
        self, x0: torch.Tensor, eps: float, mask: torch.Tensor | None, generator: torch.Generator
    ) -> torch.Tensor:
        """A random point at distance ``eps / 2`` from the input (AutoAttack's restarts), in the box."""
        if self.norm == "linf":
            t = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) * 2 - 1
        else:
            t = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        if mask is not None:
            t = t * mask
        t = t / self.per_sample_norm(t).clamp_min(1e-12)
        return self.clip_to_range(x0 + 0.5 * eps * t)

    def _boundary(
        self, x1: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The linearised boundary FAB projects onto: ``(value (B,), gradient)`` of ``z_l - z_y`` at ``x1``.

        Untargeted: the class ``l`` whose boundary is closest, ``|z_l - z_y| / ||grad||_*``;
        FAB-T: ``l`` is the target; given a target ``t`` as label: ``z_t - z_j`` with ``j`` the
        strongest other class. The gradient is restricted to the mask.
        """
        x_req = x1.detach().requires_grad_(True)
        logits = self.logits(x_req, y)
        rows = torch.arange(x1.shape[0], device=x1.device)
        if self.label_is_target:  # label = target: the boundary against the strongest other class
            others = logits.detach().clone()
            others[rows, y] = float("-inf")
            diff = logits[rows, y] - logits[rows, others.argmax(dim=1)]
            return diff.detach(), self._masked(self._grad(diff.sum(), x_req, retain=False), mask)
        if target is not None:  # FAB-T: the one boundary to the target
            diff = logits[rows, target] - logits[rows, y]
            return diff.detach(), self._masked(self._grad(diff.sum(), x_req, retain=False), mask)
        # untargeted: every class's boundary, keep the closest per sample
        true = logits[rows, y]
        best_dist = torch.full((x1.shape[0],), float("inf"), device=x1.device, dtype=x1.dtype)
        best_value = torch.zeros_like(best_dist)
        best_grad = torch.zeros_like(x1)
        k = logits.shape[1]
        for c in range(k):
            diff = logits[:, c] - true
            grad = self._masked(self._grad(diff.sum(), x_req, retain=c < k - 1), mask)
            dual = grad.flatten(1).abs().sum(1) if self.norm == "linf" else grad.flatten(1).norm(dim=1)
            dist = diff.detach().abs() / (dual + 1e-12)
            closer = (dist < best_dist) & (y != c)
            best_dist = torch.where(closer, dist, best_dist)
            best_value = torch.where(closer, diff.detach(), best_value)
            best_grad = torch.where(per_sample_view(closer, x1.ndim), grad, best_grad)
        return best_value, best_grad

    @staticmethod
    def _masked(grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return grad if mask is None else grad * mask

    def _grad(self, objective: torch.Tensor, inputs: torch.Tensor, retain: bool) -> torch.Tensor:
        """``d objective / d inputs`` (one class's row of the Jacobian), keeping the graph when asked."""
        if not retain:
            return self.input_grad(objective, inputs)
        scaled = self.amp and self.resolved_amp_dtype(inputs.device) == torch.float16
        if not scaled:
            (grad,) = torch.autograd.grad(objective, inputs, retain_graph=True)
            return grad.detach()
        while True:  # float16 autocast: scaled as in AdversarialAttack.input_grad, graph kept
            scale = self._grad_scale
            (grad,) = torch.autograd.grad(objective * scale, inputs, retain_graph=True)
            if torch.isfinite(grad).all() or scale <= 1.0:
                return (grad / scale).detach()
            self._grad_scale = scale / 2.0
