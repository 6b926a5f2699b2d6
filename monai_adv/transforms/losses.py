"""Per-sample losses on class logits: cross-entropy, DLR (Croce & Hein 2020), the C&W margin, and KL (TRADES)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = [
    "per_sample_cross_entropy",
    "dlr_loss",
    "targeted_dlr_loss",
    "margin",
    "per_sample_kl",
    "kl_attack_loss",
]


def per_sample_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample, ``(B,)``."""
    return F.cross_entropy(logits, y, reduction="none")


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per sample: positive while ``y`` wins, negative once another class does."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return true - others.amax(dim=1)


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio, untargeted (Croce & Hein 2020, eq. 6).

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi`` the logits sorted in decreasing
    order: invariant to shifting and rescaling the logits, so it cannot be masked by logit scaling.

    Raises:
        ValueError: for fewer than 3 classes.
    """
    if logits.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes, the network has {logits.shape[1]}.")
    z_sorted = logits.sort(dim=1, descending=True).values
    return -margin(logits, y) / (z_sorted[:, 0] - z_sorted[:, 2] + 1e-12)


def targeted_dlr_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce & Hein 2020, eq. 7) from the target alone.

    ``-(z_t - max_{j != t} z_j) / (z_pi1 - (z_pi3 + z_pi4) / 2)``: the paper's ``z_y`` is taken as the
    strongest non-target logit, which equals it whenever the true class leads (the case the targeted
    attack starts from). A targeted attack *decreases* this loss.

    Raises:
        ValueError: for fewer than 4 classes.
    """
    if logits.shape[1] < 4:
        raise ValueError(
            f"the targeted DLR loss needs at least 4 classes, the network has {logits.shape[1]}."
        )
    z_sorted = logits.sort(dim=1, descending=True).values
    return -margin(logits, target) / (z_sorted[:, 0] - 0.5 * (z_sorted[:, 2] + z_sorted[:, 3]) + 1e-12)


def per_sample_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(softmax(p) || softmax(q))`` per sample ``(B,)``; gradients flow into both arguments."""
    log_p = F.log_softmax(p_logits, dim=1)
    log_q = F.log_softmax(q_logits, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def kl_attack_loss(clean_logits: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An attack loss ``loss(logits, y) = KL(softmax(clean) || softmax(logits))`` per sample (TRADES' inner max).

    The labels are ignored; ``clean_logits`` are detached. An attack with this loss must start from a
    random point (the KL gradient is zero at the clean input).
    """
    clean = clean_logits.detach()

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return per_sample_kl(clean.to(logits.dtype), logits)

    return loss
