"""Per-sample attack losses on class logits: cross-entropy, DLR (Croce & Hein 2020) and the C&W margin."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["per_sample_cross_entropy", "dlr_loss", "targeted_dlr_loss", "margin"]


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
