"""Adversarial attacks as MONAI transforms: array versions and their dictionary versions."""

from monai_adv.transforms import (
    adaptive,
    apgd,
    base,
    carlini_wagner,
    composite,
    dictionary,
    fab,
    gradient,
    hfc,
    losses,
    sea,
    segmentation,
    square,
)
from monai_adv.transforms.adaptive import *  # noqa: F403
from monai_adv.transforms.apgd import *  # noqa: F403
from monai_adv.transforms.base import AdversarialAttack, NormBoundedAttack, default_output_transform
from monai_adv.transforms.carlini_wagner import *  # noqa: F403
from monai_adv.transforms.composite import *  # noqa: F403
from monai_adv.transforms.dictionary import *  # noqa: F403
from monai_adv.transforms.fab import *  # noqa: F403
from monai_adv.transforms.gradient import *  # noqa: F403
from monai_adv.transforms.hfc import *  # noqa: F403
from monai_adv.transforms.losses import *  # noqa: F403
from monai_adv.transforms.sea import *  # noqa: F403
from monai_adv.transforms.segmentation import *  # noqa: F403
from monai_adv.transforms.square import *  # noqa: F403

__all__ = ["AdversarialAttack", "NormBoundedAttack", "default_output_transform"]
for _module in (
    gradient,
    carlini_wagner,
    apgd,
    fab,
    square,
    composite,
    losses,
    dictionary,
    adaptive,
    hfc,
    segmentation,
    sea,
):
    __all__ += _module.__all__
del _module, base
