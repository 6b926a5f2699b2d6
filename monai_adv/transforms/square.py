"""Square Attack (Andriushchenko et al., ECCV 2020): a score-based, gradient-free L-infinity and L2 attack."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from monai_adv.transforms.base import EpsType, NormBoundedAttack, check_steps, per_sample_view
from monai_adv.transforms.losses import mean_over_voxels, per_sample_cross_entropy

__all__ = ["SquareAttack"]

# the paper's schedule of the square's area fraction p, keyed by the iteration rescaled to 10,000
_P_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)


class SquareAttack(NormBoundedAttack):
    """Square Attack, L-infinity and L2 (Andriushchenko et al., ECCV 2020, Alg. 1, 2 and 3).

    Random search that needs only the network's scores, never its gradients, so it also breaks
    defences that mask or obfuscate gradients. L-infinity: it starts from vertical stripes of +-eps
    and, at each query, proposes to set a random square (a cube for 3D volumes) of side ``s`` to
    +-eps per channel, keeping the proposal if it lowers the margin loss. L2 (``norm="l2"``): it
    starts from a grid of blocks, each holding the paper's centred pattern (nested squares weighted
    ``1 / (k + 1)^2``, positive in one half and negative in the other) with a random sign, scaled to
    L2 norm eps; each query moves the perturbation's mass in one random square and a second random
    square into a new pattern in the first, keeping the total norm at eps (AutoAttack's L2 Square).
    ``s`` shrinks on the paper's schedule from a fraction ``p_init`` of the image (AutoAttack uses
    0.8 for both norms). Each sample stops once it is fooled.

    Dense outputs (segmentation): the margin loss is the per-voxel margin ``max(z_y - max_{j != y}
    z_j, 0)`` averaged over the voxels (how far the voxels not yet fooled are from flipping), and a
    sample stops once it meets the dense success rule (``dense_success``, ``dense_threshold``).

    Args:
        network: the classifier under attack; only its outputs are used (it may block gradients).
        eps: radius of the L-infinity ball, in intensity units, or a ``(low, high)`` range per call.
        n_queries: the query budget per sample (the paper uses 10,000; AutoAttack 5,000).
        p_init: initial fraction of the image covered by the square (0.8 for L-infinity in the paper).
        rescale_schedule: stretch the paper's schedule of the square's size (written for 10,000
            queries) over ``n_queries``; False follows it query by query, as AutoAttack does
            (``resc_schedule=False``).
        loss: ``"margin"`` (``z_y - max_{j != y} z_j``, the paper's default), ``"ce"``, or a callable
            ``loss(logits, labels) -> (B,)`` that the search increases (decreases when targeted).
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack` (``norm``: ``"linf"`` or
            ``"l2"``).

    Raises:
        ValueError: for n_queries < 1, p_init outside (0, 1], or an unknown loss.

    Attributes:
        last_queries: queries spent per sample in the latest call, ``(B,)``.
    """

    uses_gradients = False
    supported_norms = ("linf", "l2")

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        n_queries: int = 1000,
        p_init: float = 0.8,
        loss: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "margin",
        rescale_schedule: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(loss, str) and loss not in ("margin", "ce"):
            raise ValueError(f"loss must be 'margin', 'ce' or a callable, got {loss!r}.")
        super().__init__(network, eps, loss=None if isinstance(loss, str) else loss, **kwargs)
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.n_queries = check_steps(n_queries, "n_queries")
        if not 0 < p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1], got {p_init!r}.")
        self.p_init = float(p_init)
        self.rescale_schedule = bool(rescale_schedule)
        self.last_queries: torch.Tensor | None = None

    def square_fraction(self, it: int) -> float:
        """The fraction p of the image the square covers at query ``it`` (the paper's schedule)."""
        it = int(it / self.n_queries * 10000) if self.rescale_schedule else int(it)
        divisor = 512
        for bound, div in _P_SCHEDULE:
            if it <= bound:
                divisor = div
                break
        return self.p_init / divisor

    def _steps(self) -> int:
        """The query budget, reported as the attack's steps."""
        return self.n_queries

    def _margin_and_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(:meth:`attack_margin`, loss to minimise), per sample."""
        logits = self.logits(x, y)
        m = self.attack_margin(logits, y)
        if self.loss is not None:
            value = self.loss_per_sample(logits, y)
            return m, (value if self.targeted else -value)
        if self.loss_name == "ce":
            ce = per_sample_cross_entropy(logits, y)
            return m, (ce if self.targeted else -ce)
        if self.is_dense(y):
            return m, mean_over_voxels(self.voxel_attack_margin(logits, y).clamp_min(0))
        return m, m

    def _attack(self, x, y, mask, generator):
        if self.norm == "l2":
            return self._attack_l2(x, y, mask, generator)
        eps = self.current_eps
        b, c, *spatial = x.shape
        d = len(spatial)
        n_voxels = math.prod(spatial)
        n_features = c * n_voxels

        def rand_sign(shape):
            return torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1

        # initialisation: vertical stripes of +-eps (one sign per channel and column)
        keep = mask if mask is not None else torch.ones((1,) * x.ndim, device=x.device, dtype=x.dtype)
        delta_best = eps * rand_sign((b, c, *([1] * (d - 1)), spatial[-1])).expand_as(x) * keep
        x_best = self.clip_to_range(x + delta_best)
        margin_best, loss_best = self._margin_and_loss(x_best, y)
        # A query changes the best perturbation in one square only, so it is computed there only: the
        # queried point is `base` (the projection of the best perturbation, which the query leaves
        # as it is outside its square) with the projected square written in. The queries run on a
        # working set of the samples not yet fooled, gathered once and shrunk when one is fooled.
        work = _WorkingSet(
            (~self.succeeded(margin_best)).nonzero()[:, 0],
            x=x,
            y=y,
            mask=mask,
            delta=delta_best,
            base=self.project(x + delta_best, x, eps, mask),
            x_best=x_best,
            margin=margin_best,
            loss=loss_best,
        )
        queries = torch.ones(b, device=x.device)
        offsets = torch.arange(n_voxels, device=x.device)

        for it in range(self.n_queries - 1):
            if work.size == 0:
                break
            n = work.size
            xa, ya, da, ma, base = work["x"], work["y"], work["delta"], work["mask"], work["base"]
            side = max(int(round((self.square_fraction(it) * n_features / c) ** (1.0 / d))), 1)
            side = min(side, max(min(spatial) - 1, 1))
            # the square of each sample, as flat voxel indices (n, c, side^d) in row-major order
            flat = torch.zeros((n, 1), dtype=torch.long, device=x.device)
            for size in spatial:
                start = torch.randint(0, size - side + 1, (n,), generator=generator, device=x.device)
                coord = start[:, None] + offsets[:side]
                flat = (flat[:, :, None] * size + coord[:, None, :]).reshape(n, -1)
            window = flat[:, None, :].expand(n, c, flat.shape[1])
            signs = (eps * rand_sign((n, c, 1))).expand(window.shape)
            d_win = da.reshape(n, c, n_voxels).gather(2, window)
            same = d_win == signs
            if ma is None:
                m_win = None
                # a proposal that changes nothing wastes a query: flip its signs instead
                unchanged = same.flatten(1).all(1)
                proposal = torch.where(per_sample_view(unchanged, 3), -signs, signs)
            else:
                m_win = ma.reshape(n, c, n_voxels).gather(2, window)
                inside = m_win != 0
                unchanged = (same | ~inside).flatten(1).all(1) & inside.flatten(1).any(1)
                proposal = torch.where(
                    inside, torch.where(per_sample_view(unchanged, 3), -signs, signs), d_win
                )
            x_win = xa.reshape(n, c, n_voxels).gather(2, window)
            x_new = base.clone(memory_format=torch.contiguous_format)
            x_new.view(n, c, n_voxels).scatter_(2, window, self.project(x_win + proposal, x_win, eps, m_win))
            margin_new, loss_new = self._margin_and_loss(x_new, ya)
            done = self.succeeded(margin_new)
            better = (loss_new < work["loss"]) | done
            if better.any():
                i = better.nonzero()[:, 0]
                work["loss"][i] = torch.minimum(loss_new[i], work["loss"][i])
                work["margin"][i] = margin_new[i]
                da[i] = x_new[i] - xa[i]
                work["x_best"][i] = x_new[i]
                base[i] = self.project(xa[i] + da[i], xa[i], eps, None if ma is None else ma[i])
            if done.any():
                queries[work.index[done]] = it + 2
                work.retire(done, x_best=x_best)
        queries[work.index] = float(self.n_queries)  # the samples never fooled spent the whole budget
        work.retire(None, x_best=x_best)
        self.last_queries = queries.cpu()
        return x_best

    def _attack_l2(self, x, y, mask, generator):
        """Alg. 3 of the paper, as AutoAttack's L2 Square runs it, for 2D images and 3D volumes."""
        eps = self.current_eps
        b, c, *spatial = x.shape
        d = len(spatial)
        spatial_axes = tuple(range(2, x.ndim))

        def rand_sign(shape):
            return torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1

        def channel_norm(t):
            return t.square().sum(spatial_axes, keepdim=True).sqrt()

        def in_ball(x0, delta, keep_):
            """``x0 + delta`` with delta (inside the mask, when one is given) scaled to L2 norm eps, then projected."""
            if keep_ is not None:
                delta = delta * keep_
            delta = delta * (eps / self.per_sample_norm(delta).clamp_min(1e-12))
            return self.project(x0 + delta, x0, eps, None if keep_ is None else keep_.expand_as(x0))

        # initialisation: a grid of blocks of side min(spatial) // 5, each a pattern with a random sign
        s = max(min(spatial) // 5, 1)
        delta = torch.zeros_like(x)
        starts = [(size - s * (size // s)) // 2 for size in spatial]
        for corner in (
            torch.cartesian_prod(*[torch.arange(size // s) for size in spatial]).reshape(-1, d).tolist()
        ):
            block = tuple(slice(st + k * s, st + (k + 1) * s) for st, k in zip(starts, corner))
            delta[(slice(None), slice(None), *block)] = self._l2_pattern(s, d, generator, x) * rand_sign(
                (b, c, *([1] * d))
            )
        x_best = in_ball(x, delta, mask)
        margin_best, loss_best = self._margin_and_loss(x_best, y)
        n_features = c * math.prod(spatial)
        # the samples not yet fooled, gathered once and shrunk only when one is fooled (see _attack)
        work = _WorkingSet(
            (~self.succeeded(margin_best)).nonzero()[:, 0],
            x=x,
            y=y,
            mask=mask,
            x_best=x_best,
            margin=margin_best,
            loss=loss_best,
        )
        queries = torch.ones(b, device=x.device)

        for it in range(self.n_queries - 1):
            if work.size == 0:
                break
            n = work.size
            xa, ya, keep_a = work["x"], work["y"], work["mask"]
            delta = work["x_best"] - xa
            side = max(int(round((self.square_fraction(it) * n_features / c) ** (1.0 / d))), 3)
            side = min(side + 1 - side % 2, min(spatial))  # odd, as in the paper, and inside the image
            w1 = self._random_window_mask(n, spatial, side, generator, x.device).to(x.dtype)
            w2 = self._random_window_mask(n, spatial, side, generator, x.device).to(x.dtype)
            # a new pattern in square 1 takes over the mass of both squares, per channel:
            # sqrt((eps^2 - ||delta||^2) / c + ||delta in the squares||^2)
            budget = (
                (eps**2 - self.per_sample_norm(delta).square()).clamp_min(0) / c
                + channel_norm(delta * torch.maximum(w1, w2)).square()
            ).sqrt()
            old = delta * w1 / (channel_norm(delta * w1) + 1e-12)
            pattern = self._l2_pattern(side, d, generator, x) * rand_sign((n, c, *([1] * d)))
            new = self._place(pattern, w1) + old
            if keep_a is not None:
                new = new * keep_a
            new = new / (channel_norm(new) + 1e-12) * budget
            x_new = in_ball(xa, delta * (1 - w1) * (1 - w2) + new, keep_a)
            margin_new, loss_new = self._margin_and_loss(x_new, ya)
            done = self.succeeded(margin_new)
            better = (loss_new < work["loss"]) | done
            if better.any():
                i = better.nonzero()[:, 0]
                work["loss"][i] = torch.minimum(loss_new[i], work["loss"][i])
                work["margin"][i] = margin_new[i]
                work["x_best"][i] = x_new[i]
            if done.any():
                queries[work.index[done]] = it + 2
                work.retire(done, x_best=x_best)
        queries[work.index] = float(self.n_queries)  # the samples never fooled spent the whole budget
        work.retire(None, x_best=x_best)
        self.last_queries = queries.cpu()
        return x_best

    @staticmethod
    def _l2_pattern(side: int, d: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
        """The paper's L2 pattern on a square (cube) of the given side, with unit L2 norm.

        Two halves along a random axis, each holding centred nested boxes (box ``k`` spans ``k``
        voxels either side of the centre) weighted ``1 / (k + 1)^2`` and normalised, the first half
        positive and the second negative.
        """
        axis = int(torch.randint(0, d, (1,), generator=generator, device=like.device))
        return _l2_pattern_on_axis(side, d, axis, like.dtype, like.device)

    @staticmethod
    def _place(pattern: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
        """Put a ``(n, c, side, ...)`` pattern where each sample's 0/1 ``window (n, 1, *spatial)`` is 1."""
        out = torch.zeros(pattern.shape[:2] + window.shape[2:], device=pattern.device, dtype=pattern.dtype)
        # every window holds side^d voxels per channel, selected in row-major order like the pattern's
        out[window.expand(out.shape).bool()] = pattern.reshape(-1)
        return out

    @staticmethod
    def _random_window_mask(
        n: int, spatial: list[int], side: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """A boolean ``(n, 1, *spatial)`` with one random square (cube) of the given side per sample."""
        window = None
        for axis, size in enumerate(spatial):
            start = torch.randint(0, size - side + 1, (n,), generator=generator, device=device)[:, None]
            pos = torch.arange(size, device=device)
            inside = ((pos >= start) & (pos < start + side)).reshape(
                n, 1, *[size if a == axis else 1 for a in range(len(spatial))]
            )
            window = inside if window is None else window & inside
        return window

    @staticmethod
    def _random_window(
        n: int, spatial: list[int], side: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor:
        """A 0/1 float tensor ``(n, 1, *spatial)`` with one random square (cube) of the given side per sample."""
        return SquareAttack._random_window_mask(n, spatial, side, generator, device).float()


class _WorkingSet:
    """The per-sample state of the samples a query loop still attacks, gathered from the batch once.

    ``work[name]`` is the state of the samples at ``work.index`` (rows of the batch), in batch order;
    :meth:`retire` writes finished samples' results back to the batch and drops them, so a query
    touches only the samples still attacked and the batch is gathered again only when one finishes.
    """

    def __init__(self, index: torch.Tensor, **state: torch.Tensor | None) -> None:
        self.index = index
        self.state = {k: None if v is None else v[index] for k, v in state.items()}

    @property
    def size(self) -> int:
        return self.index.numel()

    def __getitem__(self, name: str) -> torch.Tensor | None:
        return self.state[name]

    def retire(self, finished: torch.Tensor | None, **targets: torch.Tensor) -> None:
        """Write ``finished`` samples' state (all when None) into the batch tensors given by name, and drop them."""
        rows = self.index if finished is None else self.index[finished]
        for name, target in targets.items():
            target[rows] = self.state[name] if finished is None else self.state[name][finished]
        if finished is None:
            finished = torch.ones(self.size, dtype=torch.bool, device=self.index.device)
        keep = ~finished
        self.index = self.index[keep]
        self.state = {k: None if v is None else v[keep] for k, v in self.state.items()}


@functools.lru_cache(maxsize=256)
def _l2_pattern_on_axis(
    side: int, d: int, axis: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """:meth:`SquareAttack._l2_pattern` split along ``axis`` (deterministic, so computed once per shape).

    The result is shared between calls: callers must not modify it in place.
    """
    half = side // 2
    parts = []
    for sign, size in ((1.0, half), (-1.0, side - half)):
        shape = [side] * d
        shape[axis] = size
        if size == 0:
            parts.append(torch.zeros(shape, device=device, dtype=dtype))
            continue
        # a voxel whose Chebyshev distance to the centre is r lies in boxes r, r + 1, ...
        ring = torch.zeros(shape, device=device, dtype=torch.long)
        for ax, n_ax in enumerate(shape):
            view = [1] * d
            view[ax] = n_ax
            ring = torch.maximum(ring, (torch.arange(n_ax, device=device) - n_ax // 2).abs().reshape(view))
        n_boxes = max(n_ax // 2 + 1 for n_ax in shape)
        weights = 1.0 / (torch.arange(n_boxes, device=device, dtype=dtype) + 1) ** 2
        part = weights.flip(0).cumsum(0).flip(0)[ring]  # sum over the boxes k >= r
        parts.append(sign * part / part.square().sum().sqrt())
    pattern = torch.cat(parts, dim=axis)
    return pattern / pattern.square().sum().sqrt().clamp_min(1e-12)
