"""Several clean-fitted scores combined at one overall false-positive rate.

Attacks leave two kinds of trace. Stopped at a small eps, the input sits just across the decision
boundary: the classifier is unsure (output scores) and the prediction does not survive a squeeze (input
consistency), while its features still look typical. Pushed to a large eps, it overshoots into
over-confident, atypical features: feature outlier scores (Mahalanobis) see it, and the logit margin
becomes *larger* than on clean data. No one score covers both regimes; a test per regime, each turned
into a p-value against clean data and combined, does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from monai_adv.detectors.base import (
    _REGISTRY,
    AdversarialDetector,
    network_fingerprint,
)
from monai_adv.detectors.features import iterate_loader, split_batch

__all__ = ["CombinedDetector", "COMBINATION_RULES"]

#: how :class:`CombinedDetector` combines its members' p-values
COMBINATION_RULES = ("min_p", "fisher")


class CombinedDetector(AdversarialDetector):
    """Member detectors' scores turned into clean-data p-values and combined into one calibrated score.

    Each member is fitted on the clean fit data (:meth:`fit`). :meth:`calibrate` scores the clean
    calibration data with every member, keeps those scores as each member's clean reference, and sets
    one threshold for the combined score at the target false-positive rate. An item's p-value under a
    member is the share of clean reference scores at or above its score (smoothed by a logistic kernel
    of ``bandwidth`` times the reference's spread, so that the combination stays differentiable for
    adaptive attacks); a two-sided member uses ``2 * min(upper, lower)``, which flags unusually low
    scores too (an over-confident margin). The combined score is

    - ``"min_p"`` (default): ``max_m -log p_m``, Tippett's test: an item is flagged when any member finds
      it unusual enough; this splits the false-positive budget across the members, so each regime's
      test keeps nearly its own power;
    - ``"fisher"``: ``-2 sum_m log p_m``, Fisher's test: evidence adds up across members.

    Calibration cross-fits (each half of the calibration data is scored against the other half's
    reference) so that the threshold holds on fresh clean data; calibrate on at least a few hundred
    clean images (1,000 or more for a 5% FPR within about a point).

    Args:
        network: the classifier (every member must read this network).
        detectors: the member detectors (fitted or not; :meth:`fit` fits them all).
        two_sided: one flag for every member, or one per member.
        rule: ``"min_p"`` or ``"fisher"``.
        bandwidth: the p-value smoothing, as a fraction of each reference's standard deviation.
        kwargs: ``output_transform``, ``image_key``, ``label_key``, ``progress``, ``amp``.

    Raises:
        ValueError: without members, for a member on another network, a CombinedDetector member, a
            ``two_sided`` of the wrong length, an unknown rule or a bandwidth <= 0.

    Example::

        det = CombinedDetector.standard(net)           # Mahalanobis + two-sided margin + squeezing
        det.fit(clean_train_loader)
        det.calibrate(clean_val_loader, fpr=0.05)      # one threshold, 5% of clean images flagged
        flags = det.detect(images)
    """

    _config_keys = ("two_sided", "rule", "bandwidth")

    def __init__(
        self,
        network: nn.Module,
        detectors: Sequence[AdversarialDetector],
        two_sided: bool | Sequence[bool] = False,
        rule: str = "min_p",
        bandwidth: float = 0.05,
        **kwargs: Any,
    ) -> None:
        detectors = list(detectors)
        if not detectors:
            raise ValueError("a CombinedDetector needs at least one member detector.")
        for d in detectors:
            if not isinstance(d, AdversarialDetector):
                raise ValueError(f"members must be monai_adv detectors, got {type(d).__name__}.")
            if isinstance(d, CombinedDetector):
                raise ValueError(
                    "a CombinedDetector cannot contain another CombinedDetector: list its members."
                )
            if d.network is not network:
                raise ValueError(
                    f"member {type(d).__name__} reads another network than the CombinedDetector's."
                )
        if isinstance(two_sided, bool):
            two_sided = [two_sided] * len(detectors)
        two_sided = [bool(t) for t in two_sided]
        if len(two_sided) != len(detectors):
            raise ValueError(f"two_sided has {len(two_sided)} entries for {len(detectors)} members.")
        if rule not in COMBINATION_RULES:
            raise ValueError(f"rule must be one of {COMBINATION_RULES}, got {rule!r}.")
        if not float(bandwidth) > 0:
            raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}.")
        union: list[str] = []
        for d in detectors:
            union += [name for name in d.layers if name not in union]
        super().__init__(network, union, **kwargs)
        self.detectors = detectors
        self.two_sided = two_sided
        self.rule = rule
        self.bandwidth = float(bandwidth)
        self.needs_input = any(d.needs_input for d in detectors)
        #: clean calibration scores ``(N, M)``, one column per member (``None`` before :meth:`calibrate`)
        self.reference: torch.Tensor | None = None

    @classmethod
    def standard(
        cls,
        network: nn.Module,
        feature_layers: str | Sequence[str] | None = None,
        value_range: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> CombinedDetector:
        """The combination that covers both regimes: Mahalanobis on ``feature_layers`` (the large-eps
        test), the two-sided logit margin and feature squeezing (the small-eps tests), min-p rule."""
        from monai_adv.detectors.mahalanobis import MahalanobisDetector
        from monai_adv.detectors.output import OutputDetector
        from monai_adv.detectors.squeezing import FeatureSqueezingDetector

        common = {
            k: v
            for k, v in kwargs.items()
            if k in ("output_transform", "image_key", "label_key", "progress", "amp")
        }
        members = [
            MahalanobisDetector(network, feature_layers, **common),
            OutputDetector(network, statistic="margin", **common),
            FeatureSqueezingDetector(network, value_range=value_range, **common),
        ]
        return cls(network, members, two_sided=[False, True, False], **kwargs)

    # ------------------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return all(d.is_fitted for d in self.detectors)

    @property
    def is_calibrated(self) -> bool:
        return self.threshold is not None and self.reference is not None

    def fit(self, loader: Iterable, use_labels: bool = True) -> CombinedDetector:
        """Fit every member on the clean ``loader`` (iterated once per member: pass a re-iterable loader).

        Raises:
            ValueError: as the members' ``fit`` (empty loader, NaN features, bad labels).
        """
        for d in self.detectors:
            d.fit(loader, use_labels=use_labels)
        self.num_classes = self.detectors[0].num_classes
        self.num_fit_samples = self.detectors[0].num_fit_samples
        self.network_fingerprint = network_fingerprint(self.network)
        self.layer_states = []
        self.threshold, self.fpr, self.reference = None, None, None
        return self

    def member_scores(self, features: Sequence[torch.Tensor], inputs: torch.Tensor | None) -> torch.Tensor:
        """``(B, M)`` member scores from one pass's features (in :attr:`layers` order) and inputs."""
        index = {name: i for i, name in enumerate(self.layers)}
        cols = []
        for d in self.detectors:
            sub = [features[index[name]] for name in d.layers]
            cols.append(d.score_features(sub, inputs if d.needs_input else None).to(torch.float64))
        return torch.stack(cols, dim=1)

    def p_values(self, scores: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, M)`` smoothed p-values of member scores ``(B, M)`` against clean ``reference`` ``(N, M)``."""
        ref = (self.reference if reference is None else reference).to(scores)
        n = ref.shape[0]
        h = (self.bandwidth * ref.std(0)).clamp_min(1e-12)  # (M,)
        diff = (ref[None, :, :] - scores[:, None, :]) / h  # (B, N, M): positive where the reference is larger
        upper = (1 + torch.sigmoid(diff).sum(1)) / (n + 1)
        lower = (1 + torch.sigmoid(-diff).sum(1)) / (n + 1)
        two = torch.tensor(self.two_sided, device=scores.device)
        return torch.where(two, (2 * torch.minimum(upper, lower)).clamp(max=1.0), upper)

    def combine(self, p: torch.Tensor) -> torch.Tensor:
        """The combined score of p-values ``(B, M)``: higher means more likely adversarial."""
        nlogp = -torch.log(p)
        return nlogp.max(dim=1).values if self.rule == "min_p" else 2 * nlogp.sum(1)

    def _score(self, features: Sequence[torch.Tensor], inputs: torch.Tensor | None) -> torch.Tensor:
        if self.reference is None:
            raise RuntimeError(
                "CombinedDetector is not calibrated: call calibrate(clean_val_loader, fpr) to score."
            )
        combined = self.combine(self.p_values(self.member_scores(features, inputs)))
        return combined.to(features[0].dtype) if features else combined

    def score_features(
        self, features: Sequence[torch.Tensor], inputs: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._require_fitted("scoring")
        if self.needs_input and inputs is None:
            raise ValueError("CombinedDetector has a member that scores the input batch: pass inputs=.")
        return self._score(features, inputs)

    def calibrate(self, loader: Iterable, fpr: float = 0.05) -> float:
        """Score clean calibration data with every member, keep the reference, set the combined threshold.

        Raises:
            ValueError: for fpr outside (0, 1), an empty loader, or fewer than 4 images (fewer than 200 warn).
            RuntimeError: before :meth:`fit`.
        """
        if not 0.0 < float(fpr) < 1.0:
            raise ValueError(f"fpr must lie in (0, 1), got {fpr!r}.")
        self._require_fitted("calibrate()")
        rows = []
        for batch in tqdm(iterate_loader(loader), desc="calibrate", disable=not self.progress, leave=False):
            x, _ = split_batch(batch, self.image_key, self.label_key)
            x = self._check_images(x)
            _, feats = self.predict_and_features(x)
            with torch.no_grad():
                rows.append(self.member_scores(feats, x if self.needs_input else None).cpu())
        if not rows:
            raise ValueError("the loader given to calibrate is empty: no clean images to calibrate on.")
        ref = torch.cat(rows)
        if ref.shape[0] < 4:
            raise ValueError(
                f"calibrating a CombinedDetector needs at least 4 clean images, got {ref.shape[0]}."
            )
        if ref.shape[0] < 200:
            warnings.warn(
                f"CombinedDetector calibrated on {ref.shape[0]} clean images: its false-positive rate on new "
                f"data may be several points off the target {fpr}; calibrate on a few hundred or more.",
                stacklevel=2,
            )
        if not torch.isfinite(ref).all():
            raise ValueError("member scores of the calibration data contain NaN or Inf values.")
        # cross-fit: each half's combined scores against the other half's reference; the halves are drawn
        # at random (a loader sorted by class must not put different classes on the two sides)
        order = torch.randperm(ref.shape[0], generator=torch.Generator().manual_seed(0))
        half = torch.zeros(ref.shape[0], dtype=torch.bool)
        half[order[: ref.shape[0] // 2]] = True
        combined = torch.empty(ref.shape[0], dtype=torch.float64)
        with torch.no_grad():
            combined[half] = self.combine(self.p_values(ref[half], ref[~half]))
            combined[~half] = self.combine(self.p_values(ref[~half], ref[half]))
        self.reference = ref
        self.threshold = float(torch.quantile(combined, 1.0 - float(fpr), interpolation="higher"))
        self.fpr = float(fpr)
        return self.threshold

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self._require_fitted("saving")
        return {
            **self._state_header(),
            "members": [d.state_dict() for d in self.detectors],
            "reference": None if self.reference is None else self.reference.cpu(),
        }

    @classmethod
    def _from_state(cls, state: dict[str, Any], network: nn.Module, **kwargs: Any) -> CombinedDetector:
        members = []
        for ms in state["members"]:
            klass = _REGISTRY.get(ms.get("class"))
            if klass is None or klass is cls:
                raise ValueError(
                    f"a CombinedDetector file holds an unknown member class {ms.get('class')!r}."
                )
            members.append(klass._from_state(ms, network, **kwargs))
        config = {k: v for k, v in state["config"].items() if k != "layer_weights"}
        det = cls(network, members, **{**config, **kwargs})
        det.layer_states = []
        det.reference = state["reference"]
        return det._restore_common(state)

    def __repr__(self) -> str:
        members = ", ".join(
            f"{type(d).__name__}{' (two-sided)' if t else ''}" for d, t in zip(self.detectors, self.two_sided)
        )
        status = "calibrated" if self.is_calibrated else ("fitted" if self.is_fitted else "not fitted")
        return f"CombinedDetector([{members}], rule={self.rule!r}; {status})"
