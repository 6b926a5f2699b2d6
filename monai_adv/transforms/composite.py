"""Attacks built from other attacks: transfer from a surrogate, and the per-sample worst case of a list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from monai_adv.transforms.apgd import APGD
from monai_adv.transforms.base import AdversarialAttack, EpsType
from monai_adv.transforms.fab import FAB
from monai_adv.transforms.square import SquareAttack

__all__ = ["TransferAttack", "WorstCaseEnsemble", "AdaptiveWorstCase", "autoattack"]

#: the suites :func:`autoattack` builds
AUTOATTACK_VERSIONS = ("fast", "standard")


class TransferAttack(AdversarialAttack):
    """A black-box attack by transfer: craft the example on a surrogate network you own.

    The target network is never queried; the examples are made with ``base_attack`` against
    ``surrogate_network`` and then given to the target (Papernot et al. 2017). MI-FGSM is the usual
    choice of base attack, as momentum transfers better.

    Args:
        surrogate_network: the white-box stand-in for the target.
        base_attack: an attack instance (a copy of it is aimed at the surrogate) or an attack class
            (built as ``base_attack(surrogate_network, **kwargs)``).
        kwargs: arguments for the attack class when ``base_attack`` is a class.

    Raises:
        TypeError: when ``base_attack`` is neither an attack instance nor an attack class.

    Example::

        atk = TransferAttack(surrogate, MIFGSM(surrogate, eps=4 / 255, steps=10))
        x_adv = atk(batch, labels)   # then evaluate the target network on x_adv
    """

    def __init__(
        self,
        surrogate_network: nn.Module | Callable,
        base_attack: AdversarialAttack | type[AdversarialAttack],
        **kwargs: Any,
    ) -> None:
        if isinstance(base_attack, type) and issubclass(base_attack, AdversarialAttack):
            base_attack = base_attack(surrogate_network, **kwargs)
        elif isinstance(base_attack, AdversarialAttack):
            if kwargs:
                raise TypeError(f"keyword arguments {sorted(kwargs)} apply only when base_attack is a class.")
            base_attack = base_attack.with_network(surrogate_network)
        else:
            raise TypeError(
                f"base_attack must be an AdversarialAttack or its class, got {type(base_attack).__name__}."
            )
        super().__init__(
            surrogate_network,
            value_range=base_attack.value_range,
            spatial_dims=base_attack.spatial_dims,
            targeted=base_attack.targeted,
            output_transform=base_attack.output_transform,
        )
        self.base_attack = base_attack

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.base_attack.set_random_state(seed, state)
        return self

    def __call__(self, img: Any, label: Any, mask: Any | None = None) -> Any:
        return self.base_attack(img, label, mask)

    def describe(self) -> dict[str, Any]:
        """The base attack's description (its eps, norm, steps), typed ``TransferAttack``, the base as ``base``."""
        base = self.base_attack.describe()
        return {**base, "name": f"transfer {base['name']}", "type": type(self).__name__, "base": base}

    def with_precision(self, amp: bool, amp_dtype: torch.dtype | None = None) -> TransferAttack:
        clone = super().with_precision(amp, amp_dtype)
        if clone is not self:
            clone.base_attack = self.base_attack.with_precision(amp, amp_dtype)
        return clone


class WorstCaseEnsemble(AdversarialAttack):
    """The per-sample worst case over a list of attacks, as AutoAttack reports robust accuracy.

    Runs the attacks in order; each runs only on the samples that ``network`` still classifies
    correctly (for a targeted ensemble: not yet as the target), and a sample keeps the first
    adversarial example found. Robust accuracy under the ensemble is therefore the fraction of
    samples that resisted every attack. Samples no attack fooled get the last attack's output.

    Dense outputs (segmentation): each attack runs on the samples not yet fooled by the ensemble's
    dense success rule (``dense_success``, ``dense_threshold``), and a sample keeps the output with
    the lowest agreement with its label (targeted: the highest with its target) over all the
    attacks that ran on it, so the ensemble is per sample at least as strong as its best member.
    With ``dense_threshold=0`` every attack runs on every sample.

    With a calibrated ``detector``, success means *misclassified and not flagged*: an attack whose
    output the detector flags leaves the sample to the next attack, and the ensemble measures the
    undetected error of the classifier-and-detector system (the adaptive worst case when the attacks
    include detector-aware ones, :func:`~monai_adv.transforms.adaptive_worst_case`).

    Args:
        network: the network whose decisions decide success (the attacks may use surrogates).
        attacks: the attacks, cheapest first.
        detector: an optional calibrated detector on ``network`` (class outputs only).
        kwargs: see :class:`~monai_adv.transforms.base.AdversarialAttack`.

    Raises:
        ValueError: for an empty list, or attacks whose ``spatial_dims`` differ from the ensemble's or
            that read the label otherwise (:attr:`~AdversarialAttack.label_is_target`: true class or
            target; APGD-T and FAB-T over chosen targets take the true class, as an untargeted
            ensemble does).

    Attributes:
        last_success: per attack name, the number of samples it fooled first in the latest call.
    """

    def __init__(
        self,
        network: nn.Module | Callable,
        attacks: Sequence[AdversarialAttack],
        detector: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, **kwargs)
        if detector is not None:
            if not getattr(detector, "is_calibrated", False):
                raise ValueError(
                    "the ensemble's detector must be fitted and calibrated (its flags decide success)."
                )
            if getattr(detector, "network", network) is not network:
                raise ValueError("the ensemble's detector reads another network than the one under attack.")
        self.detector = detector
        attacks = list(attacks)
        if not attacks:
            raise ValueError("WorstCaseEnsemble needs at least one attack.")
        for atk in attacks:
            if not isinstance(atk, AdversarialAttack):
                raise TypeError(f"attacks must be AdversarialAttack instances, got {type(atk).__name__}.")
            if atk.spatial_dims != self.spatial_dims or atk.label_is_target != self.label_is_target:
                raise ValueError(
                    f"{type(atk).__name__} has spatial_dims={atk.spatial_dims}, takes the "
                    f"{'target' if atk.label_is_target else 'true class'} as label; the ensemble has "
                    f"spatial_dims={self.spatial_dims} and takes the "
                    f"{'target' if self.label_is_target else 'true class'}."
                )
        self.attacks = attacks
        self.last_success: dict[str, int] = {}

    def describe(self) -> dict[str, Any]:
        """The ensemble's description: the largest eps of its members, their descriptions as ``members``."""
        members = [atk.describe() for atk in self.attacks]
        eps = [m["eps"] for m in members if isinstance(m["eps"], (int, float))]
        norms = {m["norm"] for m in members}
        return {
            **super().describe(),
            "eps": max(eps) if eps else None,
            "norm": norms.pop() if len(norms) == 1 else None,
            "needs_detector": self.detector is not None or any(m["needs_detector"] for m in members),
            "members": members,
        }

    def with_precision(self, amp: bool, amp_dtype: torch.dtype | None = None) -> WorstCaseEnsemble:
        clone = super().with_precision(amp, amp_dtype)
        if clone is not self:
            clone.attacks = [atk.with_precision(amp, amp_dtype) for atk in self.attacks]
        return clone

    def randomize(self, data: Any = None) -> None:
        super().randomize(data)
        # seed every member from the ensemble's own stream, so one seed fixes the whole ensemble
        for atk in self.attacks:
            atk.set_random_state(int(self.R.randint(0, 2**31 - 1)))

    def _broken(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample success: misclassified, and not flagged by the detector when there is one."""
        with torch.no_grad():
            wrong = self.is_adversarial(self.logits(x, y), y)
            if self.detector is not None and wrong.any():
                wrong = wrong & ~self.detector.detect(self.to_network_layout(x)).to(wrong.device)
        return wrong

    def _attack(self, x, y, mask, generator):
        if self.is_dense(y):
            if self.detector is not None:
                raise ValueError(
                    "a WorstCaseEnsemble with a detector attacks class outputs, not dense labels."
                )
            return self._attack_dense(x, y, mask)
        x_adv = x.clone()
        fooled = self._broken(x, y)
        self.last_success = {"clean": int(fooled.sum())}
        for i, atk in enumerate(self.attacks):
            idx = (~fooled).nonzero()[:, 0]
            if idx.numel() == 0:
                break
            x_try = atk(x[idx], y[idx], None if mask is None else mask[idx])
            now = self._broken(x_try, y[idx])
            x_adv[idx[now]] = x_try[now]
            if i == len(self.attacks) - 1:
                x_adv[idx[~now]] = x_try[~now]
            fooled[idx[now]] = True
            self.last_success[f"{i}:{type(atk).__name__}"] = int(now.sum())
        return x_adv

    def _attack_dense(self, x, y, mask):
        """Dense outputs: per sample, the attacked image with the worst agreement (see the class docstring)."""
        x_adv = x.clone()
        with torch.no_grad():
            fooled = self.is_adversarial(self.logits(x, y), y)
        sign = -1.0 if self.label_is_target else 1.0  # lower sign * agreement is a stronger attack
        best = torch.full((x.shape[0],), float("inf"), device=x.device)
        self.last_success = {"clean": int(fooled.sum())}
        for i, atk in enumerate(self.attacks):
            idx = (~fooled).nonzero()[:, 0]
            if idx.numel() == 0:
                break
            # the members parse labels again: dense class indices go back with their channel axis
            # (multi-hot labels have theirs)
            y_try = y[idx] if self.multilabel else y[idx].unsqueeze(1)
            x_try = atk(x[idx], y_try, None if mask is None else mask[idx])
            with torch.no_grad():
                logits = self.logits(x_try, y[idx])
                now = self.is_adversarial(logits, y[idx])
                key = sign * self.dense_agreement(logits, y[idx]).to(best.device)
            better = key < best[idx]
            x_adv[idx[better]] = x_try[better]
            best[idx[better]] = key[better]
            fooled[idx[now]] = True
            self.last_success[f"{i}:{type(atk).__name__}"] = int(now.sum())
        return x_adv


class AdaptiveWorstCase(WorstCaseEnsemble):
    """The per-image worst case of the non-adaptive standard suite and the attacker's adaptive menu.

    An image counts as broken when an attack's output is misclassified *and* not flagged by
    ``detector``; the members run in order, each on the images still unbroken:

    1. AutoAttack's standard suite (APGD-CE, APGD-T, FAB-T, Square; ``steps``, ``n_queries``), the
       non-adaptive attacks (skipped with ``standard=False``, e.g. when the evaluation runs them apart);
    2. :class:`~monai_adv.transforms.AdaptiveAttack` on margin and detector score summed, for every
       ``lambda`` in ``weights`` and ``kappa`` in ``{0, median clean margin}`` (Carlini & Wagner 2017);
    3. the selective-step mode at both kappas (Bryniarski et al., ICLR 2022);
    4. the HFC-style attack (:class:`~monai_adv.transforms.HFCAttack`, Yao et al., MICCAI 2021) with the
       detector choosing its best iterate, when ``clean_data`` is given to fit its mixtures.

    Being a class that needs a detector, it can stand in a bundle's attack grid
    (``{"attack": "AdaptiveWorstCase", "eps": [...], "clean_data": "@validate#dataloader"}``).

    Args:
        network: the classifier.
        detector: a calibrated detector on ``network``.
        eps: the L-infinity radius.
        clean_data: labelled clean batches (for the median clean margin and HFC's mixtures).
        kappa: the second kappa; default the median clean margin of ``clean_data`` (0 only without it).
        weights: the lambdas of the summed objective.
        steps: iterations of the suite's gradient attacks.
        adaptive_steps: iterations of each adaptive variant.
        n_queries: Square's queries.
        hfc_layers: the layers HFC constrains; default those of the detector that are network modules,
            else the penultimate features.
        standard: include the non-adaptive suite.
        kwargs: ``value_range``, ``amp``, ... for every member.

    Raises:
        ValueError: for a detector that is not calibrated or reads another network.
    """

    needs_detector = True

    def __init__(
        self,
        network: nn.Module | Callable,
        detector: Any,
        eps: float,
        clean_data: Any = None,
        kappa: float | None = None,
        weights: Sequence[float] = (0.1, 1.0, 10.0),
        steps: int = 100,
        adaptive_steps: int = 50,
        n_queries: int = 5000,
        hfc_layers: Any = None,
        standard: bool = True,
        **kwargs: Any,
    ) -> None:
        from monai_adv.transforms.adaptive import AdaptiveAttack, median_clean_margin
        from monai_adv.transforms.hfc import HFCAttack

        if detector is None:
            raise ValueError("AdaptiveWorstCase needs a calibrated detector: it attacks the detector too.")
        if kappa is None:
            kappa = median_clean_margin(network, clean_data) if clean_data is not None else 0.0
        self.kappas = sorted({0.0, float(kappa)})
        members: list[AdversarialAttack] = []
        if standard:
            members += autoattack(
                network, eps, version="standard", steps=steps, n_queries=n_queries, **kwargs
            ).attacks
        for k in self.kappas:
            for w in weights:
                members.append(
                    AdaptiveAttack(
                        network, detector, eps, steps=adaptive_steps, detector_weight=w, kappa=k, **kwargs
                    )
                )
        for k in self.kappas:
            members.append(
                AdaptiveAttack(
                    network, detector, eps, steps=adaptive_steps, mode="selective", kappa=k, **kwargs
                )
            )
        if clean_data is not None:
            layers = hfc_layers
            if layers is None:
                names = dict(network.named_modules()) if isinstance(network, nn.Module) else {}
                layers = [
                    n for n in getattr(detector, "layers", []) if n in names or n == "penultimate"
                ] or None
            members.append(
                HFCAttack(network, eps, layers=layers, steps=adaptive_steps, detector=detector, **kwargs).fit(
                    clean_data
                )
            )
        super().__init__(network, members, detector=detector, **kwargs)


def autoattack(
    network: nn.Module | Callable,
    eps: EpsType,
    norm: str = "linf",
    steps: int = 100,
    n_queries: int = 5000,
    version: str = "fast",
    n_target_classes: int = 9,
    **kwargs: Any,
) -> WorstCaseEnsemble:
    """AutoAttack (Croce & Hein, ICML 2020): the per-sample worst case of complementary parameter-free attacks.

    Each attack runs only on the samples that every attack before it left correctly classified,
    and a sample keeps the first adversarial example found (:class:`WorstCaseEnsemble`), so the
    robust accuracy under the suite is the fraction of samples that resisted every attack.

    - ``version="standard"``: AutoAttack's standard version, as its reference implementation
      builds it for Linf and L2: APGD-CE (``steps`` iterations, 1 restart), then APGD-T (targeted
      DLR loss, ``steps`` iterations towards each of the ``n_target_classes`` strongest other
      classes, 1 restart), then FAB-T (``steps`` iterations per target class, 1 restart), then Square
      (``n_queries`` queries, ``p_init=0.8``, the margin loss, the square-size schedule followed
      query by query; for ``norm="l2"`` the L2 Square Attack). With ``K`` classes, at most ``K - 1``
      targets are tried. APGD-T needs at least 4 classes.
    - ``version="fast"`` (the default, and what this function built before the standard version
      existed): APGD-CE, then the untargeted APGD-DLR, then Square (Linf only), with the same
      budgets. Cheaper (no target classes, no FAB); comparable in spirit, not identical.

    The defaults are AutoAttack's budgets; lower them for quick checks.

    Args:
        network: the classifier under attack.
        eps: radius in intensity units (a ``(low, high)`` range is drawn by each member on its own).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations of APGD-CE, APGD-DLR / APGD-T (per target) and FAB-T (per target).
        n_queries: Square's query budget.
        version: ``"standard"`` or ``"fast"`` (see above).
        n_target_classes: the target classes APGD-T and FAB-T try (standard version; AutoAttack: 9).
        kwargs: ``value_range``, ``spatial_dims``, ``output_transform``, ``amp``, ... for all members.

    Raises:
        ValueError: for an unknown version, or ``targeted=True`` with the standard version (it is
            untargeted: APGD-T and FAB-T choose their own targets).

    Example::

        aa = autoattack(net, eps=8 / 255, version="standard").set_random_state(0)
        x_adv = aa(images, labels)
        robust = (net(x_adv).argmax(1) == labels).float().mean()
        aa.last_success   # how many samples each member fooled first
    """
    version = str(version).lower()
    if version not in AUTOATTACK_VERSIONS:
        raise ValueError(f"version must be one of {AUTOATTACK_VERSIONS}, got {version!r}.")
    if version == "fast":
        members: list[AdversarialAttack] = [
            APGD(network, eps, steps=steps, norm=norm, loss="ce", **kwargs),
            APGD(network, eps, steps=steps, norm=norm, loss="dlr", **kwargs),
        ]
        if norm == "linf":
            members.append(SquareAttack(network, eps, n_queries=n_queries, **kwargs))
        return WorstCaseEnsemble(network, members, **kwargs)
    if kwargs.pop("targeted", False):
        raise ValueError(
            "the standard AutoAttack suite is untargeted (its APGD-T and FAB-T choose their own target "
            "classes); pass the true labels and leave targeted unset."
        )
    targets = dict(targeted=True, n_target_classes=n_target_classes)
    members = [
        APGD(network, eps, steps=steps, norm=norm, loss="ce", n_restarts=1, **kwargs),
        APGD(network, eps, steps=steps, norm=norm, loss="dlr", n_restarts=1, **targets, **kwargs),
        FAB(network, eps, steps=steps, norm=norm, n_restarts=1, **targets, **kwargs),
    ]
    members.append(
        SquareAttack(
            network,
            eps,
            norm=norm,
            n_queries=n_queries,
            p_init=0.8,
            loss="margin",
            rescale_schedule=False,
            **kwargs,
        )
    )
    return WorstCaseEnsemble(network, members, **kwargs)
