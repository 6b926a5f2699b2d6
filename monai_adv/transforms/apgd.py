"""Auto-PGD (Croce & Hein, ICML 2020), the gradient component of AutoAttack."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_adv.transforms.base import EpsType, NormBoundedAttack, check_steps, per_sample_view
from monai_adv.transforms.losses import dlr_loss, per_sample_cross_entropy, targeted_dlr_loss

__all__ = ["APGD", "top_target_classes"]


def top_target_classes(logits: torch.Tensor, y: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n`` classes other than ``y`` with the highest logits, strongest first, ``(B, min(n, K - 1))``.

    AutoAttack's choice of targets for APGD-T and FAB-T: on a correctly classified input they are
    the 2nd, 3rd, ... classes of the clean prediction.

    Args:
        logits: ``(B, K)`` class logits of the clean inputs.
        y: ``(B,)`` true classes.
        n: how many targets (capped at ``K - 1``).
    """
    others = logits.detach().masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return others.argsort(dim=1, descending=True, stable=True)[:, : min(int(n), logits.shape[1] - 1)]


def full_precision_logits(attack: NormBoundedAttack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``attack.logits(x, y)`` with autocast off: the clean decisions a mixed-precision attack starts from."""
    amp, attack.amp = attack.amp, False
    try:
        return attack.logits(x, y)
    finally:
        attack.amp = amp


def _apgdt_dlr_loss(logits: torch.Tensor, target: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """APGD-T's targeted DLR with the true class (Croce & Hein 2020, eq. 7), ascended.

    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, with ``z_pi`` the logits in decreasing order.
    """
    if logits.shape[1] < 4:
        raise ValueError(
            f"the targeted DLR loss needs at least 4 classes, the network has {logits.shape[1]}."
        )
    z_sorted = logits.sort(dim=1, descending=True).values
    lead = logits.gather(1, y[:, None])[:, 0] - logits.gather(1, target[:, None])[:, 0]
    return -lead / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


class APGD(NormBoundedAttack):
    """Auto-PGD: step-size-free PGD with momentum and checkpoints (Croce & Hein, ICML 2020, Alg. 1).

    Starts with step ``2 * eps`` and a momentum of 0.75; at checkpoints ``w_j`` (``p_0 = 0``,
    ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` of the budget) it halves a
    sample's step and restarts it from its best point when, since the last checkpoint, the loss rose
    in fewer than 75% of the steps, or neither the step was reduced nor the best loss improved.
    Each sample returns its first adversarial point if one was found, else its highest-loss point.
    Restarts re-run, from new random points, only the samples not yet fooled.

    Targeted, there are two ways to call it:

    - ``targeted=True`` (``n_target_classes=None``): ``label`` is the target class, and the attack
      succeeds when the network predicts it (the contract of every targeted attack). With
      ``loss="dlr"`` it runs on the targeted DLR loss, with the strongest non-target logit as
      ``z_y`` (:func:`~monai_adv.transforms.losses.targeted_dlr_loss`).
    - ``targeted=True, n_target_classes=k``: **APGD-T as AutoAttack runs it** (Croce & Hein 2020,
      Sec. 4). ``label`` is the *true* class; for each of the ``k`` (at most ``K - 1``) classes with
      the highest clean logits after the true one, strongest first, the attack runs ``n_restarts``
      runs of ``steps`` iterations towards that target on the samples not yet misclassified,
      ascending ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` (``loss="dlr"``; ``"ce"`` ascends
      ``-CE(z, t)``). Success is any misclassification; each sample keeps its first success, else
      its point with the lowest margin ``z_y - max_{j != y} z_j`` over all runs. Samples the network
      already misclassifies are returned unchanged. AutoAttack's standard version uses
      ``n_target_classes=9, steps=100, n_restarts=1``. It needs class logits (no label maps).

    Args:
        network: the classifier under attack.
        eps: radius of the ball, in intensity units, or a ``(low, high)`` range drawn per call.
        steps: iterations per restart (AutoAttack uses 100).
        norm: ``"linf"`` or ``"l2"``.
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (Difference of Logits Ratio; the targeted DLR when
            ``targeted``; needs >= 3 classes, >= 4 when targeted), or a callable returning per-sample
            losses ``(B,)``.
        n_restarts: number of random restarts (>= 1), per target class for APGD-T.
        rho: the checkpoint condition's fraction of increasing steps (0.75 in the paper).
        n_target_classes: with ``targeted=True``, run APGD-T over this many target classes chosen
            from the clean logits (``label`` is then the true class); None: ``label`` is the target.
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Raises:
        ValueError: for steps < 1, n_restarts < 1, an unknown loss name, rho outside (0, 1], or
            n_target_classes < 1 or without ``targeted=True``.

    Example::

        atk = APGD(net, eps=8 / 255, steps=100, loss="dlr")
        x_adv = atk(batch, labels)
        # APGD-T, as in AutoAttack's standard version: labels are the true classes
        apgd_t = APGD(net, eps=8 / 255, loss="dlr", targeted=True, n_target_classes=9)
        x_adv = apgd_t(batch, labels)
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
        n_target_classes: int | None = None,
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
        if n_target_classes is not None:
            n_target_classes = check_steps(n_target_classes, "n_target_classes")
            if not self.targeted:
                raise ValueError(
                    "n_target_classes chooses the target classes of a targeted attack (APGD-T); "
                    "pass targeted=True with it (the label is then the true class)."
                )
        self.n_target_classes = n_target_classes

    @property
    def label_is_target(self) -> bool:
        """False for APGD-T over chosen targets (``n_target_classes``): the label is the true class."""
        return self.targeted and self.n_target_classes is None

    @property
    def supports_dense(self) -> bool:  # type: ignore[override]
        """APGD-T over chosen targets picks classes per sample, so it needs class logits, not label maps."""
        return self.n_target_classes is None

    def describe(self) -> dict[str, Any]:
        """:meth:`NormBoundedAttack.describe`; APGD-T over chosen targets is named ``APGD-T-<steps>``."""
        d = super().describe()
        if self.n_target_classes is not None:
            d.update(name=f"APGD-T-{self.steps}", n_target_classes=self.n_target_classes)
        return d

    def checkpoints(self, steps: int | None = None) -> list[int]:
        """The iterations at which the step size is reconsidered, in a run of ``steps`` (default ``self.steps``)."""
        steps = self.steps if steps is None else steps
        p = [0.0, 0.22]
        while p[-1] < 1:
            p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        points = sorted({int(round(q * steps)) for q in p[1:] if q <= 1})
        return [w for w in points if 0 < w <= steps]

    def iterate_score(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Which point a run returns: None (APGD's rule) or per-sample scores ``(B,)`` of an iterate.

        None: each sample's first adversarial point, else its highest-loss point. A subclass that
        returns scores makes a run return, for a sample never adversarial, its iterate with the
        lowest score (the latest among equals) instead of the highest-loss one.
        """
        return None

    def _attack(self, x, y, mask, generator):
        if self.n_target_classes is not None:
            return self._attack_top_targets(x, y, mask, generator)
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

    def _attack_top_targets(self, x, y, mask, generator):
        """APGD-T: runs towards each of the top target classes in turn, on the samples still robust."""
        eps = self.current_eps
        with torch.no_grad():
            clean = full_precision_logits(self, x, y)
        fooled = self.is_adversarial(clean, y)
        targets = top_target_classes(clean, y, self.n_target_classes)
        x_out = x.clone()
        best_margin = self.attack_margin(clean, y)
        for j in range(targets.shape[1]):
            for _ in range(self.n_restarts):
                idx = (~fooled).nonzero()[:, 0]
                if idx.numel() == 0:
                    return x_out
                m = mask[idx] if mask is not None else None
                x_run, _, fooled_run = self._single_run(x[idx], y[idx], m, eps, generator, targets[idx, j])
                with torch.no_grad():
                    margin_run = self.attack_margin(self.logits(x_run), y[idx])
                # the first success, else the lowest margin (the per-target losses do not compare)
                take = fooled_run | (margin_run < best_margin[idx])
                x_out[idx[take]] = x_run[take]
                best_margin[idx[take]] = margin_run[take]
                fooled[idx] = fooled_run
        return x_out

    def _single_run(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None,
        eps: float,
        generator: torch.Generator,
        target: torch.Tensor | None = None,
        x_init: torch.Tensor | None = None,
        steps: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run of Algorithm 1 on a batch: returns (point, its loss, fooled) per sample.

        ``target``: APGD-T's target classes ``(B,)`` for this run (``y`` is then the true class).
        ``x_init``: the starting point (projected onto the ball); None: a random point of the ball.
        ``steps``: the iterations of this run; None: ``self.steps``.

        In full precision a sample leaves the batch as soon as it is fooled: its result, the first
        adversarial point, is final, and no other sample's iterations depend on it (the loss
        returned for it is its best loss until then). Under autocast every sample runs to the end,
        since a point that only low precision calls adversarial falls back to the run's best point.
        """
        b = x.shape[0]
        steps = self.steps if steps is None else steps
        checkpoints = set(self.checkpoints(steps))
        if x_init is None:
            x_adv = self.sample_in_ball(x, eps, mask, generator)
        else:
            x_adv = self.project(x_init, x, eps, mask)
        grad, loss, logits = self._grad(x_adv, y, target)
        fooled = self.is_adversarial(logits, y)
        low_score = self.iterate_score(logits, y)  # None unless a subclass keeps its lowest-scoring iterate
        x_low = None if low_score is None else x_adv.clone()
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        step = per_sample_view(torch.full((b,), 2.0 * eps, device=x.device, dtype=x.dtype), x.ndim)
        x_prev = x_adv.clone()
        loss_at_last_check = loss_best.clone()
        reduced_at_last_check = torch.ones(b, dtype=torch.bool, device=x.device)
        n_increases = torch.zeros(b, device=x.device)
        last_check = 0
        loss_prev = loss.clone()
        if self.amp:
            x_best_adv = x_adv.clone()
        else:
            # the running samples are rows `rows` of the batch; the results of those that left
            rows = torch.arange(b, device=x.device)
            out_x, out_loss, out_fooled = x_adv.clone(), loss_best.clone(), fooled.clone()
        k = 0
        while True:
            if not self.amp and fooled.any():
                # the samples fooled just now leave with their first adversarial point
                out_x[rows[fooled]], out_loss[rows[fooled]] = x_adv[fooled], loss_best[fooled]
                out_fooled[rows[fooled]] = True
                keep = ~fooled
                rows, x, y, mask, target, x_adv, x_prev, grad, loss, x_best, loss_best, grad_best, step = (
                    None if t is None else t[keep]
                    for t in (
                        rows,
                        x,
                        y,
                        mask,
                        target,
                        x_adv,
                        x_prev,
                        grad,
                        loss,
                        x_best,
                        loss_best,
                        grad_best,
                        step,
                    )
                )
                x_low, low_score = (None if t is None else t[keep] for t in (x_low, low_score))
                loss_at_last_check, reduced_at_last_check = (
                    loss_at_last_check[keep],
                    reduced_at_last_check[keep],
                )
                n_increases, loss_prev, fooled = n_increases[keep], loss_prev[keep], fooled[keep]
                if rows.numel() == 0:
                    break
            if k > 0:
                n_increases += (loss > loss_prev).float()
                loss_prev = loss
                improved = loss > loss_best
                x_best[improved], grad_best[improved], loss_best[improved] = (
                    x_adv[improved],
                    grad[improved],
                    loss[improved],
                )
                if k in checkpoints:
                    since = k - last_check
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
                    last_check = k
            if k == steps:
                break
            # gradient step, projected, then the momentum combination (alpha = 0.75), projected again
            z = self.project(x_adv + step * self.steepest_direction(grad, mask), x, eps, mask)
            a = 0.75 if k > 0 else 1.0
            x_next = self.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps, mask)
            x_prev, x_adv = x_adv, x_next
            k += 1

            grad, loss, logits = self._grad(x_adv, y, target)
            now_fooled = self.is_adversarial(logits, y)
            if low_score is not None:
                score = self.iterate_score(logits, y)
                lower = score <= low_score
                x_low[lower], low_score = x_adv[lower], torch.minimum(score, low_score)
            if self.amp:
                x_best_adv[now_fooled & ~fooled] = x_adv[now_fooled & ~fooled]
                fooled |= now_fooled
            else:
                fooled = now_fooled
        if self.amp:
            # success was judged on low-precision logits, and the first point that crossed the boundary
            # is kept: confirm both candidates in full precision, so that a point only bf16 called
            # adversarial is neither returned as one nor excluded from the next restart
            x_kept = x_best if x_low is None else x_low
            adv_ok, best_ok = (
                self.is_adversarial_full_precision(x_best_adv, y),
                self.is_adversarial_full_precision(x_kept, y),
            )
            return (
                torch.where(per_sample_view(adv_ok, x.ndim), x_best_adv, x_kept),
                loss_best,
                adv_ok | best_ok,
            )
        # the samples never fooled: their highest-loss (or lowest-scoring) point
        out_x[rows], out_loss[rows] = (x_best if x_low is None else x_low), loss_best
        return out_x, out_loss, out_fooled

    def _grad(
        self, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if target is None:
            grad, objective, logits = self.objective_and_grad(x_adv, y)
        else:
            x_req = x_adv.detach().requires_grad_(True)
            logits = self.logits(x_req, y)
            if self.loss_name == "dlr":
                objective = _apgdt_dlr_loss(logits, target, y)
            elif self.loss is None:
                objective = -per_sample_cross_entropy(logits, target)
            else:
                objective = -self.loss_per_sample(logits, target)
            grad = self.input_grad(objective.sum(), x_req)
            objective, logits = objective.detach(), logits.detach()
        if objective.ndim != 1:
            raise ValueError("APGD needs a loss that returns one value per sample, shape (B,).")
        return grad, objective, logits
