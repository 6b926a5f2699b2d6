# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""OCT data: the embedded synthetic OCT generator and loaders for real OCT layouts."""

from monai_adv.data.datalists import (
    DICOM_EXTENSIONS,
    KERMANY_NAME_PATTERN,
    NIFTI_EXTENSIONS,
    count_bscans,
    kermany_datalist,
    load_octmnist,
    octmnist_datalist,
    parse_kermany_name,
    split_by_patient,
    volume_datalist,
)
from monai_adv.data.realism import (
    image_statistics,
    intensity_histograms,
    load_octmnist_style,
    padding_mask,
    retina_fraction,
    speckle_contrast,
    wasserstein_1d,
)
from monai_adv.data.synthetic import (
    DEFAULT_SPLITS,
    MANIFEST_NAME,
    SyntheticOCTGenerator,
    write_synthetic_oct_dataset,
)
from monai_adv.data.transforms import (
    LoadOCT,
    LoadOCTD,
    LoadOCTd,
    LoadOCTDict,
    SquareCenterCrop,
    SquareCenterCropD,
    SquareCenterCropd,
    SquareCenterCropDict,
    oct_eval_transforms,
    oct_train_transforms,
)
from monai_adv.data.utils import (
    CLASS_TO_INDEX,
    IMAGE_EXTENSIONS,
    OCT_CLASSES,
    center_crop_resize,
    label_to_index,
)

__all__ = [
    "OCT_CLASSES",
    "CLASS_TO_INDEX",
    "IMAGE_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "KERMANY_NAME_PATTERN",
    "DEFAULT_SPLITS",
    "MANIFEST_NAME",
    "label_to_index",
    "center_crop_resize",
    "SyntheticOCTGenerator",
    "write_synthetic_oct_dataset",
    "parse_kermany_name",
    "kermany_datalist",
    "split_by_patient",
    "load_octmnist",
    "octmnist_datalist",
    "count_bscans",
    "volume_datalist",
    "LoadOCT",
    "SquareCenterCrop",
    "LoadOCTd",
    "LoadOCTD",
    "LoadOCTDict",
    "SquareCenterCropd",
    "SquareCenterCropD",
    "SquareCenterCropDict",
    "oct_train_transforms",
    "oct_eval_transforms",
    "load_octmnist_style",
    "padding_mask",
    "wasserstein_1d",
    "intensity_histograms",
    "retina_fraction",
    "speckle_contrast",
    "image_statistics",
]
