"""HFC: the attack that hides its features at every layer (Yao et al., MICCAI 2021).

Yao et al. ("A Hierarchical Feature Constraint to Camouflage Medical Adversarial Attacks") observed that
medical-image adversarial examples are easy to detect because their deep features become outliers,
and that an attacker who models each class's clean features at every layer with a Gaussian mixture,
and pulls the adversarial features into the target class's mixture while misclassifying, evades the
feature-space detectors (Mahalanobis, kNN, LID, ...) without knowing which one is used. A
feature-space detector is tested only when it has faced this attack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn

from monai_adv.detectors.features import FeatureHooks, iterate_loader, split_batch
from monai_adv.transforms.adaptive import BestIterate
from monai_adv.transforms.base import EpsType, NormBoundedAttack, check_step_size, check_steps
from monai_adv.utils import eval_mode, full_precision

__all__ = ["HFCAttack", "fit_diagonal_gmm", "gmm_nll"]


def fit_diagonal_gmm(
    x: torch.Tensor, components: int, iterations: int = 30, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A Gaussian mixture with diagonal covariances fitted to ``x`` ``(N, D)`` by EM.

    Starts from ``components`` distinct samples as means (drawn with ``seed``) and the data's variance,
    then alternates responsibilities and weighted means/variances; variances are floored at 1e-6 of the
    data's mean variance. With fewer samples than components, one component per sample.

    Returns:
        ``{"means": (K, D), "vars": (K, D), "log_weights": (K,)}``, float64.

    Raises:
        ValueError: for an empty ``x`` or components < 1.
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"fit_diagonal_gmm needs samples (N, D) with N >= 1, got shape {tuple(x.shape)}.")
    if int(components) < 1:
        raise ValueError(f"components must be >= 1, got {components!r}.")
    x = x.double()
    n, d = x.shape
    k = min(int(components), n)
    g = torch.Generator().manual_seed(seed)
    means = x[torch.randperm(n, generator=g)[:k]].clone()
    floor = 1e-6 * float(x.var(0, unbiased=False).mean()) + 1e-12
    var = x.var(0, unbiased=False).clamp_min(floor).expand(k, d).clone()
    log_w = torch.full((k,), -torch.log(torch.tensor(float(k), dtype=torch.float64)))
    for _ in range(iterations):
        log_p = _component_log_density(x, means, var) + log_w  # (N, K)
        resp = torch.softmax(log_p, dim=1)
        nk = resp.sum(0).clamp_min(1e-10)
        means = (resp.T @ x) / nk[:, None]
        var = ((resp.T @ (x * x)) / nk[:, None] - means**2).clamp_min(floor)
        log_w = torch.log(nk / n)
    return {"means": means, "vars": var, "log_weights": log_w}


def _component_log_density(x: torch.Tensor, means: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``(N, K)`` log N(x_n; mu_k, diag var_k)."""
    diff2 = (x[:, None, :] - means[None]) ** 2 / var[None]
    return -0.5 * (diff2.sum(-1) + torch.log(var).sum(-1)[None] + x.shape[1] * 1.8378770664093453)


def gmm_nll(x: torch.Tensor, gmm: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-dimension negative log-likelihood ``(N,)`` of ``x`` ``(N, D)`` under a mixture of :func:`fit_diagonal_gmm`."""
    log_p = _component_log_density(x, gmm["means"].to(x), gmm["vars"].to(x)) + gmm["log_weights"].to(x)
    return -torch.logsumexp(log_p, dim=1) / x.shape[1]


class HFCAttack(NormBoundedAttack):
    """PGD towards a target class while every hooked layer's feature stays typical of that class.

    Fitted on clean data (:meth:`fit`): per layer and class, a diagonal Gaussian mixture of the pooled
    clean features. Each step ascends, per sample,
    ``J = -max(m_t(x'), -kappa) - lambda * mean_l NLL_l(h_l(x') | t)``, where ``t`` is the strongest
    wrong class at the clean input (fixed), ``m_t`` the largest other logit's lead over ``z_t`` and
    ``NLL_l`` the per-dimension negative log-likelihood of layer ``l``'s feature under class ``t``'s
    mixture (Yao et al., MICCAI 2021, eq. 3-5). The returned point per sample is the best iterate:
    misclassified with the lowest score of ``detector`` when one is given (else the lowest feature NLL),
    otherwise the iterate closest to misclassification.

    Args:
        network: the classifier under attack.
        eps: radius in intensity units, or a ``(low, high)`` range drawn per call.
        layers: module names (``"penultimate"`` allowed) whose features are constrained; default the
            penultimate features.
        alpha: step size; default ``2.5 * eps / steps``.
        steps: iterations.
        feature_weight: ``lambda`` (>= 0).
        components: mixture components per class and layer.
        kappa: the misclassification confidence after which only the features are pushed (>= 0).
        detector: an optional fitted detector whose score picks the best successful iterate (the
            attacker knows the detector; it is not in the objective).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a random point of the ball.
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Raises:
        ValueError: for steps < 1, alpha <= 0, feature_weight < 0, kappa < 0, components < 1; a detector
            on another network; attacking before :meth:`fit`; dense labels.

    Example::

        hfc = HFCAttack(net, eps=2 / 255, layers=["layer2", "layer3", "penultimate"]).fit(clean_loader)
        x_adv = hfc(images, labels)
    """

    #: it reads a classifier's features: dense (segmentation) labels raise a ValueError
    supports_dense = False

    def __init__(
        self,
        network: nn.Module | Callable,
        eps: EpsType,
        layers: str | Sequence[str] | None = None,
        alpha: float | None = None,
        steps: int = 20,
        feature_weight: float = 1.0,
        components: int = 4,
        kappa: float = 0.0,
        detector: Any = None,
        norm: str = "linf",
        random_start: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, eps, norm=norm, **kwargs)
        self.hooks = FeatureHooks(network, layers, detach=False)
        self.layers = self.hooks.layers
        self.alpha = check_step_size("alpha", alpha)
        self.steps = check_steps(steps)
        if not float(feature_weight) >= 0:
            raise ValueError(f"feature_weight must be >= 0, got {feature_weight!r}.")
        if not float(kappa) >= 0:
            raise ValueError(f"kappa must be >= 0, got {kappa!r}.")
        if int(components) < 1:
            raise ValueError(f"components must be >= 1, got {components!r}.")
        if detector is not None and getattr(detector, "network", network) is not network:
            raise ValueError("the detector reads the features of another network than the one under attack.")
        self.feature_weight = float(feature_weight)
        self.components = int(components)
        self.kappa = float(kappa)
        self.detector = detector
        self.random_start = bool(random_start)
        #: per layer, per class: the fitted mixture (``None`` before :meth:`fit`)
        self.mixtures: list[list[dict[str, torch.Tensor]]] | None = None

    def fit(self, loader: Iterable, image_key: str = "image", label_key: str = "label") -> HFCAttack:
        """Fit each layer's per-class mixtures on clean, labelled data (batches as detectors take them).

        Raises:
            ValueError: for an empty loader, batches without labels, or a class with no sample.
        """
        feats: list[list[torch.Tensor]] = [[] for _ in self.layers]
        labels = []
        hooks = FeatureHooks(self.network, self.layers, detach=True)
        with torch.no_grad(), eval_mode(self.network), hooks:
            for batch in iterate_loader(loader):
                x, y = split_batch(batch, image_key, label_key)
                if y is None:
                    raise ValueError(
                        "HFCAttack.fit needs labelled clean batches (the mixtures are per class)."
                    )
                self.network(self.to_network_layout(torch.as_tensor(x).to(self._network_device(x.device))))
                for store, f in zip(feats, hooks.collect(len(x))):
                    store.append(full_precision(f).cpu())
                labels.append(torch.as_tensor(y).reshape(-1).long().cpu())
        if not labels:
            raise ValueError("the loader given to HFCAttack.fit is empty.")
        y = torch.cat(labels)
        classes = int(y.max()) + 1
        missing = [c for c in range(classes) if not (y == c).any()]
        if missing:
            raise ValueError(
                f"HFCAttack.fit saw no clean sample of class(es) {missing}: each class needs a mixture."
            )
        self.mixtures = [
            [fit_diagonal_gmm(torch.cat(f)[y == c], self.components, seed=c) for c in range(classes)]
            for f in feats
        ]
        return self

    def feature_nll(self, features: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """``(B,)`` mean over layers of the features' NLL under the target class's mixture."""
        total = None
        for f, per_class in zip(features, self.mixtures):
            f = full_precision(f).double()
            nll = torch.stack([gmm_nll(f, per_class[c]) for c in range(len(per_class))], dim=1)  # (B, C)
            v = nll.gather(1, target[:, None]).squeeze(1)
            total = v if total is None else total + v
        return total / len(self.layers)

    def _objective(self, x_adv: torch.Tensor, y: torch.Tensor, target: torch.Tensor):
        x_adv = x_adv.detach().requires_grad_(True)
        self.hooks.clear()
        logits = self.logits(x_adv, y)
        features = self.hooks.collect(x_adv.shape[0])
        logits = logits.double()
        z_t = logits.gather(1, target[:, None]).squeeze(1)
        others = logits.scatter(1, target[:, None], float("-inf")).max(1).values
        m_t = others - z_t
        nll = self.feature_nll(features, target)
        objective = -m_t.clamp_min(-self.kappa) - self.feature_weight * nll
        grad = self.input_grad(objective.sum(), x_adv)
        return grad, logits.detach(), nll.detach()

    def _attack(self, x, y, mask, generator):
        if self.mixtures is None:
            raise ValueError("HFCAttack is not fitted: call fit(clean_loader) before attacking.")
        eps = self.current_eps
        alpha = self.alpha if self.alpha is not None else 2.5 * eps / self.steps
        with torch.no_grad():
            z = self.logits(x, y).double()
        self._check_label_range(y, z.shape[1])
        if z.shape[1] > len(self.mixtures[0]):
            raise ValueError(
                f"the network has {z.shape[1]} classes; HFCAttack was fitted on {len(self.mixtures[0])}."
            )
        target = z.scatter(1, y[:, None], float("-inf")).argmax(1)
        x_adv = self.sample_in_ball(x, eps, mask, generator) if self.random_start else x.clone()
        best = BestIterate(x_adv, torch.float64)
        with self.hooks:
            for i in range(self.steps + 1):
                grad, logits, nll = self._objective(x_adv, y, target)
                m = self.attack_margin(logits, y)
                success = self.succeeded(m)
                key = m.double()
                if success.any():  # among successes the lower detector score (or feature NLL without one)
                    with torch.no_grad():
                        low = self.detector.score(x_adv) if self.detector is not None else nll
                    key = torch.where(success, low.double().to(key.device), key)
                best.update(x_adv, success, key)
                if i == self.steps:
                    break
                x_adv = self.project(x_adv + alpha * self.steepest_direction(grad, mask), x, eps, mask)
        return best.x
