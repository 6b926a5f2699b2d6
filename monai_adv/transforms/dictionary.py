"""Dictionary versions of the attacks, for MONAI ``Compose`` pipelines over ``{"image": ..., "label": ...}``.

Each ``Foo`` has ``Food`` with the aliases ``FooD`` and ``FooDict``, as MONAI names them. All are thin
wrappers of :class:`AdversarialAttackd`, which applies any attack instance to the chosen keys.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from monai_adv.transforms.adaptive import AdaptiveAttack
from monai_adv.transforms.apgd import APGD
from monai_adv.transforms.base import AdversarialAttack
from monai_adv.transforms.carlini_wagner import CarliniWagnerL2
from monai_adv.transforms.composite import TransferAttack, WorstCaseEnsemble
from monai_adv.transforms.fab import FAB
from monai_adv.transforms.gradient import FGSM, MIFGSM, PGD
from monai_adv.transforms.sea import SEA, SegmentationAPGD
from monai_adv.transforms.segmentation import CosPGD, SegPGD
from monai_adv.transforms.square import SquareAttack

__all__ = [
    "AdversarialAttackd",
    "AdversarialAttackD",
    "AdversarialAttackDict",
    "FGSMd",
    "FGSMD",
    "FGSMDict",
    "PGDd",
    "PGDD",
    "PGDDict",
    "MIFGSMd",
    "MIFGSMD",
    "MIFGSMDict",
    "CarliniWagnerL2d",
    "CarliniWagnerL2D",
    "CarliniWagnerL2Dict",
    "APGDd",
    "APGDD",
    "APGDDict",
    "FABd",
    "FABD",
    "FABDict",
    "SquareAttackd",
    "SquareAttackD",
    "SquareAttackDict",
    "TransferAttackd",
    "TransferAttackD",
    "TransferAttackDict",
    "WorstCaseEnsembled",
    "WorstCaseEnsembleD",
    "WorstCaseEnsembleDict",
    "AdaptiveAttackd",
    "AdaptiveAttackD",
    "AdaptiveAttackDict",
    "SegPGDd",
    "SegPGDD",
    "SegPGDDict",
    "CosPGDd",
    "CosPGDD",
    "CosPGDDict",
    "SegmentationAPGDd",
    "SegmentationAPGDD",
    "SegmentationAPGDDict",
    "SEAd",
    "SEAD",
    "SEADict",
]


class AdversarialAttackd(Randomizable, MapTransform):
    """Apply an attack to the image keys of a data dictionary.

    Args:
        keys: the image keys to attack (each with the same label and mask).
        attack: any attack instance from :mod:`monai_adv.transforms`.
        label_key: where the label (the target, for a targeted attack) is.
        mask_key: optional key of a region-of-interest mask; only voxels where it is nonzero change.
        output_postfix: when given, write the adversarial image to ``f"{key}_{output_postfix}"`` and
            keep the clean image; by default the image is replaced.
        allow_missing_keys: do not raise when an image key is missing.

    Raises:
        KeyError: when the label key or the mask key is missing from the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        attack: AdversarialAttack,
        label_key: str = "label",
        mask_key: str | None = None,
        output_postfix: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not isinstance(attack, AdversarialAttack):
            raise TypeError(f"attack must be an AdversarialAttack, got {type(attack).__name__}.")
        self.attack = attack
        self.label_key = label_key
        self.mask_key = mask_key
        self.output_postfix = output_postfix

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> AdversarialAttackd:
        super().set_random_state(seed, state)
        self.attack.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.attack.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.label_key not in d:
            raise KeyError(f"label key {self.label_key!r} is not in the data (keys: {sorted(map(str, d))}).")
        mask = None
        if self.mask_key is not None:
            if self.mask_key not in d:
                raise KeyError(
                    f"mask key {self.mask_key!r} is not in the data (keys: {sorted(map(str, d))})."
                )
            mask = d[self.mask_key]
        for key in self.key_iterator(d):
            out_key = key if self.output_postfix is None else f"{key}_{self.output_postfix}"
            d[out_key] = self.attack(d[key], d[self.label_key], mask)
        return d


class _ArrayAttackd(AdversarialAttackd):
    """Builds ``array_class(*args, **kwargs)`` and applies it to the keys."""

    array_class: type[AdversarialAttack]

    def __init__(
        self,
        keys: KeysCollection,
        *args: Any,
        label_key: str = "label",
        mask_key: str | None = None,
        output_postfix: str | None = None,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            keys,
            self.array_class(*args, **kwargs),
            label_key=label_key,
            mask_key=mask_key,
            output_postfix=output_postfix,
            allow_missing_keys=allow_missing_keys,
        )


class FGSMd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.FGSM`: ``FGSMd(keys, network, eps, ...)``."""

    array_class = FGSM


class PGDd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.PGD`: ``PGDd(keys, network, eps, alpha, steps, ...)``."""

    array_class = PGD


class MIFGSMd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.MIFGSM`."""

    array_class = MIFGSM


class CarliniWagnerL2d(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.CarliniWagnerL2`."""

    array_class = CarliniWagnerL2


class APGDd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.APGD`."""

    array_class = APGD


class FABd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.FAB`: ``FABd(keys, network, eps, steps, ...)``."""

    array_class = FAB


class SquareAttackd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.SquareAttack`."""

    array_class = SquareAttack


class TransferAttackd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.TransferAttack`: ``(keys, surrogate, base_attack)``."""

    array_class = TransferAttack


class WorstCaseEnsembled(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.WorstCaseEnsemble`: ``(keys, network, attacks)``."""

    array_class = WorstCaseEnsemble


class AdaptiveAttackd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.AdaptiveAttack`: ``(keys, network, detector, eps, ...)``."""

    array_class = AdaptiveAttack


class SegPGDd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.SegPGD`: ``SegPGDd(keys, network, eps, alpha, steps, ...)``.

    ``label_key`` names the label map: ``(1, *spatial)`` class indices or ``(K, *spatial)`` one-hot.
    """

    array_class = SegPGD


class CosPGDd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.CosPGD`: ``CosPGDd(keys, network, eps, alpha, steps, ...)``.

    ``label_key`` names the label map: ``(1, *spatial)`` class indices or ``(K, *spatial)`` one-hot.
    """

    array_class = CosPGD


class SegmentationAPGDd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.SegmentationAPGD`: ``SegmentationAPGDd(keys, network, eps, steps, loss=...)``.

    ``label_key`` names the label map: ``(1, *spatial)`` class indices or ``(K, *spatial)`` one-hot.
    """

    array_class = SegmentationAPGD


class SEAd(_ArrayAttackd):
    """Dictionary version of :class:`~monai_adv.transforms.SEA`: ``SEAd(keys, network, eps, steps, losses=...)``.

    ``label_key`` names the label map: ``(1, *spatial)`` class indices or ``(K, *spatial)`` one-hot.
    """

    array_class = SEA


AdversarialAttackD = AdversarialAttackDict = AdversarialAttackd
FGSMD = FGSMDict = FGSMd
PGDD = PGDDict = PGDd
MIFGSMD = MIFGSMDict = MIFGSMd
CarliniWagnerL2D = CarliniWagnerL2Dict = CarliniWagnerL2d
APGDD = APGDDict = APGDd
FABD = FABDict = FABd
SquareAttackD = SquareAttackDict = SquareAttackd
TransferAttackD = TransferAttackDict = TransferAttackd
WorstCaseEnsembleD = WorstCaseEnsembleDict = WorstCaseEnsembled
AdaptiveAttackD = AdaptiveAttackDict = AdaptiveAttackd
SegPGDD = SegPGDDict = SegPGDd
CosPGDD = CosPGDDict = CosPGDd
SegmentationAPGDD = SegmentationAPGDDict = SegmentationAPGDd
SEAD = SEADict = SEAd
