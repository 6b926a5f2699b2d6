"""k-nearest-neighbour distance detector on normalised features (Sun et al., ICML 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from monai_adv.detectors.base import AdversarialDetector

__all__ = ["KNNDetector"]


class KNNDetector(AdversarialDetector):
    """Distance to the k-th nearest clean training feature, on L2-normalised features.

    Fitting stores the normalised clean features of each chosen layer (all of them, or a random
    subset of ``max_samples``). The score of an item is the Euclidean distance between its
    normalised feature and the k-th closest stored one (in [0, 2]); with several layers, the
    standardised per-layer scores are summed. No labels are used.

    Args:
        network: the classifier.
        layers: ``None`` for the penultimate features, or module names.
        k: which neighbour (>= 1); must not exceed the number of stored features.
        max_samples: keep at most this many fitted features per layer (a seeded random subset).
        seed: seed of that subset.
        kwargs: ``output_transform``, ``image_key``, ``label_key``, ``progress``.

    Raises:
        ValueError: for k < 1, max_samples < 1, or (at fit) fewer fitted samples than k + 1.
    """

    _config_keys = ("k", "max_samples", "seed")

    def __init__(
        self,
        network: nn.Module,
        layers: str | Sequence[str] | None = None,
        k: int = 10,
        max_samples: int | None = None,
        seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if int(k) != k or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}.")
        if max_samples is not None and (int(max_samples) != max_samples or max_samples < 1):
            raise ValueError(f"max_samples must be an integer >= 1 or None, got {max_samples!r}.")
        super().__init__(network, layers, **kwargs)
        self.k = int(k)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.seed = int(seed)

    def _fit_layer(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int
    ) -> dict[str, torch.Tensor]:
        n = features.shape[0]
        if n < self.k + 1:
            raise ValueError(
                f"KNNDetector with k={self.k} needs at least {self.k + 1} clean samples to fit, got {n}."
            )
        bank = F.normalize(features.float(), dim=1)
        if self.max_samples is not None and n > self.max_samples:
            g = torch.Generator().manual_seed(self.seed)
            bank = bank[torch.randperm(n, generator=g)[: self.max_samples]]
        return {"bank": bank}

    def _kth_distance(self, bank: torch.Tensor, features: torch.Tensor, k: int) -> torch.Tensor:
        q = F.normalize(features, dim=1)
        out = []
        for chunk in q.split(1024):
            sims = chunk @ bank.T
            kth = sims.topk(k, dim=1).values[:, -1]
            out.append((2 - 2 * kth).clamp_min(1e-12).sqrt())
        return torch.cat(out)

    def _score_layer(self, state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        bank = state["bank"].to(features.dtype)
        return self._kth_distance(bank, features, min(self.k, bank.shape[0]))

    def _fit_scores(self, state: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
        # leave-one-out on the stored samples: their nearest neighbour is themselves
        bank = state["bank"].double()
        return self._kth_distance(bank, features, min(self.k + 1, bank.shape[0]))
