# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Synthetic retinal OCT B-scans in the four Kermany classes (CNV, DME, DRUSEN, NORMAL), and data sets of them.

:class:`SyntheticOCTGenerator` draws the images (:mod:`.generator`, along the stages of
:mod:`.anatomy`, :mod:`.lesions`, :mod:`.formation` and :mod:`.display`, with the random fields of
:mod:`.fields`) and, on request, their layer label maps (:mod:`.labels`);
:func:`write_synthetic_oct_dataset` writes a data set in the Kermany folder layout with a manifest, or
in the segmentation layout with the label maps (:mod:`.writer`, also the command line
``python -m monai_adv.apps.oct.synthetic``).
"""

# the noise helpers under the names they had in the single-module generator (tests read them)
from monai_adv.apps.oct.synthetic.fields import gaussian_field as _gaussian_field  # noqa: F401
from monai_adv.apps.oct.synthetic.fields import normal as _normal  # noqa: F401
from monai_adv.apps.oct.synthetic.fields import ramp_sums as _ramp_sums  # noqa: F401
from monai_adv.apps.oct.synthetic.fields import upsample_linear as _upsample_linear  # noqa: F401
from monai_adv.apps.oct.synthetic.generator import GENERATOR_VERSION, SyntheticOCTGenerator
from monai_adv.apps.oct.synthetic.labels import OCT_LAYER_CLASSES, OCT_LAYER_DESCRIPTIONS, layer_label_map
from monai_adv.apps.oct.synthetic.writer import (
    DEFAULT_SPLITS,
    IMAGES_DIR,
    LABELS_DIR,
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    UNLABELED_PREFIX,
    SyntheticSetMismatchError,
    main,
    write_synthetic_oct_dataset,
)

__all__ = [
    "SyntheticOCTGenerator",
    "write_synthetic_oct_dataset",
    "SyntheticSetMismatchError",
    "MANIFEST_FORMAT",
    "OCT_LAYER_CLASSES",
    "OCT_LAYER_DESCRIPTIONS",
    "layer_label_map",
    "IMAGES_DIR",
    "LABELS_DIR",
    "DEFAULT_SPLITS",
    "UNLABELED_PREFIX",
    "MANIFEST_NAME",
    "GENERATOR_VERSION",
    "main",
]
