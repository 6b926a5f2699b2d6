"""The named training recipes, as first published: now a view of :mod:`monai_adv.engines.methods`.

:data:`PRESETS` holds the seven adversarial recipes this module listed before the methods were
registered in one place (``ssat``, ``ssat_pgd``, ``ssat_kl``, ``ssat_threshold``, ``ssat_teacher``,
``madry``, ``trades``); :data:`~monai_adv.engines.methods.TRAINING_METHODS` lists every method
(``supervised`` and ``rst`` too) and is what new code reads. :class:`TrainingPreset` is
:class:`~monai_adv.engines.methods.TrainingMethod`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from monai_adv.engines.methods import (
    SSAT_EPS_RANGE,
    TRAINING_METHODS,
    TrainingMethod,
    create_trainer,
)

__all__ = ["TrainingPreset", "PRESETS", "create_trainer", "SSAT_EPS_RANGE"]

#: the former name of :class:`~monai_adv.engines.methods.TrainingMethod`
TrainingPreset = TrainingMethod

#: the seven adversarial recipes of the first release, by name (a read-only view of the registry)
PRESETS: Mapping[str, TrainingMethod] = MappingProxyType(
    {
        name: TRAINING_METHODS[name]
        for name in ("ssat", "ssat_pgd", "ssat_kl", "ssat_threshold", "ssat_teacher", "madry", "trades")
    }
)
