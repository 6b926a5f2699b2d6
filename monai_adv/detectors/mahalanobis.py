"""Feature-space Mahalanobis detector (Lee et al., NeurIPS 2018), fitted on clean data only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
import torch.nn as nn

from monai_adv.detectors.base import AdversarialDetector
from monai_adv.utils import full_precision

__all__ = ["MahalanobisDetector", "ledoit_wolf_shrinkage", "shrunk_covariance"]

Shrinkage = Union[str, float, None]


def ledoit_wolf_shrinkage(x: torch.Tensor) -> float:
    """The Ledoit-Wolf (2004) shrinkage intensity of centred data ``x`` ``(N, D)``.

    The covariance estimate ``(1 - a) S + a * mu * I`` with ``S = x^T x / N`` and
    ``mu = trace(S) / D`` minimises the expected Frobenius error for ``a`` returned here (in [0, 1]);
    it stays well conditioned when the features outnumber the samples.
    """
    n, p = x.shape
    x2 = x * x
    var = x2.sum(0) / n
    mu = var.sum() / p
    beta_ = (x2.T @ x2).sum()
    delta_ = ((x.T @ x) ** 2).sum() / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2 * mu * var.sum() + p * mu**2) / p
    beta = torch.minimum(beta, delta)
    return 0.0 if float(delta) <= 0 else float((beta / delta).clamp(0, 1))


def shrunk_covariance(x: torch.Tensor, shrinkage: Shrinkage = "ledoit-wolf") -> tuple[torch.Tensor, float]:
    """Covariance of centred data ``x`` ``(N, D)`` shrunk towards ``mu * I``; returns ``(cov, a)``.

    Args:
        x: centred samples.
        shrinkage: ``"ledoit-wolf"``, a fixed intensity in [0, 1], or ``None`` (no shrinkage, the
            maximum-likelihood estimate ``x^T x / N``).
    """
    n, p = x.shape
    s = x.T @ x / n
    if shrinkage is None:
        a = 0.0
    elif isinstance(shrinkage, str):
        a = ledoit_wolf_shrinkage(x)
    else:
        a = float(shrinkage)
    mu = torch.trace(s) / p
    return (1 - a) * s + a * mu * torch.eye(p, dtype=x.dtype, device=x.device), a


class MahalanobisDetector(AdversarialDetector):
    """Class-conditional Gaussians with a tied covariance on a network's pooled features.

    Fitting estimates one mean per class and one covariance shared by the classes on the clean
    features of each chosen layer (labels from the loader, or the network's predictions when there
    are none). The score of an item is its squared Mahalanobis distance to the closest class mean,
    ``min_c (f - mu_c)^T Sigma^{-1} (f - mu_c)``; with several layers, the standardised per-layer
    scores are summed.

    Args:
        network: the classifier.
        layers: ``None`` for the penultimate features, or module names (see
            :class:`~monai_adv.detectors.base.AdversarialDetector`).
        shrinkage: ``"ledoit-wolf"`` (default), a fixed intensity in [0, 1], or ``None``. Shrinkage
            towards a scaled identity keeps the covariance invertible when features outnumber
            samples.
        input_preprocessing: Lee et al.'s input preprocessing magnitude ``m`` (input intensity units;
            0 turns it off): an item is scored at ``x - m * sign(grad_x score(x))``, the point nearby
            that looks most clean. Clean inputs move closer to their class than inputs pushed off the
            data by an attack, which widens the gap; costs a backward and a second forward pass.
        kwargs: ``output_transform``, ``image_key``, ``label_key``, ``progress``, ``amp``,
            ``layer_weights``.

    Raises:
        ValueError: for a shrinkage outside [0, 1] or an unknown name; in :meth:`fit`, for fewer than 2
            samples, features with no variance within the classes (identical images), or fractional
            float labels.

    Example::

        det = MahalanobisDetector(net)
        det.fit(clean_loader)
        det.calibrate(clean_val_loader, fpr=0.05)
        flags = det.detect(images)
    """

    _config_keys = ("shrinkage", "input_preprocessing")

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str] | None = None,
        shrinkage: Shrinkage = "ledoit-wolf",
        input_preprocessing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if not float(input_preprocessing) >= 0:
            raise ValueError(f"input_preprocessing must be >= 0, got {input_preprocessing!r}.")
        if isinstance(shrinkage, str):
            if shrinkage.lower().replace("_", "-") not in ("ledoit-wolf", "lw"):
                raise ValueError(
                    f"shrinkage must be 'ledoit-wolf', a number in [0, 1] or None, got {shrinkage!r}."
                )
            shrinkage = "ledoit-wolf"
        elif shrinkage is not None and not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage!r}.")
        super().__init__(network, layers, **kwargs)
        self.shrinkage = shrinkage if shrinkage is None or isinstance(shrinkage, str) else float(shrinkage)
        self.input_preprocessing = float(input_preprocessing)
        self.needs_input = self.input_preprocessing > 0

    def _fit_layer(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> dict[str, torch.Tensor]:
        n, d = features.shape
        if n < 2:
            raise ValueError(
                f"a Mahalanobis detector cannot be fitted on {n} sample: a covariance needs at least 2 clean "
                f"samples (and many more than the {d} feature dimensions for a useful one)."
            )
        counts = torch.bincount(labels, minlength=num_classes)
        present = counts > 0
        sums = torch.zeros(num_classes, d, dtype=features.dtype).index_add_(0, labels, features)
        means = sums / counts.clamp_min(1)[:, None].to(features.dtype)
        centred = features - means[labels]
        scale = float(features.pow(2).sum(1).mean()) + 1e-30
        if float(centred.pow(2).sum(1).mean()) <= 1e-12 * scale:
            raise ValueError(
                f"the {n} fit samples have no feature variance within their classes (identical images, or "
                "one sample per class): every distance would be 0 or huge and every input flagged. Fit on "
                "many varied clean images."
            )
        cov, a = shrunk_covariance(centred, self.shrinkage)
        # a tiny ridge relative to the average variance guards against exactly constant features
        ridge = 1e-6 * float(torch.trace(cov) / d) + 1e-12
        cov = cov + ridge * torch.eye(d, dtype=cov.dtype)
        precision = torch.linalg.inv(cov)
        precision = (precision + precision.T) / 2
        return {
            "means": means[present],
            "precision": precision,
            "shrinkage": torch.tensor(a, dtype=torch.float64),
        }

    def _score_layer(self, state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        diff = features[:, None, :] - state["means"][None]  # (B, K, D)
        dist = torch.einsum("bkd,de,bke->bk", diff, state["precision"], diff)
        return dist.min(dim=1).values

    def _score(self, features: Sequence[torch.Tensor], inputs: torch.Tensor | None) -> torch.Tensor:
        if not self.input_preprocessing:
            return self._score_full_precision(features)
        # Lee et al. (2018), eq. (4): step against the gradient of the distance, then score there
        with torch.enable_grad():
            x0 = inputs.detach().requires_grad_(True)
            _, f0 = self.predict_and_features(x0, grad=True)
            s0 = self._score_full_precision([full_precision(f) for f in f0])
            (g,) = torch.autograd.grad(s0.sum(), x0)
        x_hat = inputs - self.input_preprocessing * g.sign().to(inputs.dtype)
        _, f1 = self.predict_and_features(x_hat, grad=inputs.requires_grad and torch.is_grad_enabled())
        return self._score_full_precision([full_precision(f) for f in f1])
