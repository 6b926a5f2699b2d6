"""Scratch copies of the MONAI model-zoo fixture bundles (``../shared/model-zoo``), with random weights and tiny
synthetic data made as the fixtures' README describes, for the audit, harden and tracking tests.

>>> zb = zoo_bundle("spleen_ct_segmentation", tmp_path)
>>> zb.root, zb.overrides["inference"]   # the scratch bundle, and the overrides that run its inference config here

Nothing is written into ``../shared``. The sizes are the smallest the fixtures' networks accept (32 px 2D for
DenseNet121, 32^3 for the 3D UNets), and the overrides shrink the sliding window and turn workers off so a test
run takes seconds.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

ZOO = Path(__file__).resolve().parents[3] / "shared" / "model-zoo"
ZOO_BUNDLES = ("classification_template", "segmentation_template", "spleen_ct_segmentation")

__all__ = ["ZOO", "ZOO_BUNDLES", "ZooBundle", "zoo_bundle", "requires_zoo"]

requires_zoo = pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/model-zoo is not beside the checkout")


@dataclass
class ZooBundle:
    """A scratch model-zoo bundle ready to run.

    Attributes:
        name: the fixture's name.
        root: the scratch bundle folder (``configs/``, ``models/model.pt`` with random weights).
        data: the synthetic data folder.
        configs: ``{role: config file paths relative to root}`` for the roles ``"evaluate"`` (labelled
            evaluation), ``"inference"`` (no labels) and ``"train"``.
        overrides: ``{role: {config id: value}}`` that run that role's configs on the tiny data.
    """

    name: str
    root: Path
    data: Path
    configs: dict[str, list[str]] = field(default_factory=dict)
    overrides: dict[str, dict] = field(default_factory=dict)


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> str:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return str(path)


def _random_weights(root: Path, config: str) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(root / "configs" / config))
    torch.manual_seed(0)
    (root / "models").mkdir(exist_ok=True)
    torch.save(parser.get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")


def _classification(root: Path, data: Path, rng: np.random.Generator) -> ZooBundle:
    lists = {}
    for split, n in (("train", 10), ("test", 4)):
        items = []
        for i in range(n):
            label = i % 4
            img = rng.normal(0.0, 0.1, (32, 32)).astype(np.float32)
            img[8:24, 8:24] += label  # a class-dependent square, so a network can learn something
            items.append(
                {"image": _nifti(data / f"{split}_data" / f"img{i:02d}.nii.gz", img), "label": label}
            )
        lists[split] = items
    (root / "data").mkdir(exist_ok=True)
    for split, items in lists.items():
        (root / "data" / f"{split}_samples.json").write_text(json.dumps(items))
    _random_weights(root, "inference.yaml")
    common = {"num_workers": 0}
    return ZooBundle(
        "classification_template",
        root,
        data,
        configs={
            "evaluate": ["configs/inference.yaml"],
            "inference": ["configs/inference.yaml"],
            "train": ["configs/train.yaml"],
        },
        overrides={"evaluate": dict(common), "inference": dict(common), "train": {**common, "num_epochs": 1}},
    )


def _segmentation(root: Path, data: Path, rng: np.random.Generator) -> ZooBundle:
    from monai.data import create_test_image_3d

    for split, n in (("train_data", 5), ("test_data", 2)):
        for i in range(n):
            img, lbl = create_test_image_3d(32, 32, 32, 4, rad_max=8, num_seg_classes=3, noise_max=0.5)
            _nifti(data / split / f"img{i:02d}.nii.gz", img.astype(np.float32))
            _nifti(data / split / f"lbl{i:02d}.nii.gz", lbl.astype(np.uint8))
    _random_weights(root, "inference.yaml")
    test = {"dataset_dir": str(data / "test_data"), "num_workers": 0}
    return ZooBundle(
        "segmentation_template",
        root,
        data,
        configs={
            "evaluate": ["configs/test.yaml"],
            "inference": ["configs/inference.yaml"],
            "train": ["configs/train.yaml"],
        },
        overrides={
            "evaluate": dict(test),
            "inference": {**test, "file_pattern": "img*.nii.gz", "output_dir": str(data / "out")},
            "train": {"dataset_dir": str(data / "train_data"), "num_workers": 0, "num_epochs": 1},
        },
    )


def _spleen(root: Path, data: Path, rng: np.random.Generator) -> ZooBundle:
    affine = np.diag([1.5, 1.5, 2.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"))
    for i in range(11):
        centre = rng.uniform(12, 20, size=3).reshape(3, 1, 1, 1)
        sphere = ((grid - centre) ** 2).sum(0) < rng.uniform(16, 36)
        img = (rng.normal(-100.0, 20.0, (32, 32, 32)) + 200.0 * sphere).astype(np.float32)
        folder = "imagesTs" if i == 10 else "imagesTr"
        _nifti(data / folder / f"spleen_{i:02d}.nii.gz", img, affine)
        if i < 10:
            _nifti(data / "labelsTr" / f"spleen_{i:02d}.nii.gz", sphere.astype(np.uint8), affine)
    _random_weights(root, "inference.json")
    small = [32, 32, 32]
    return ZooBundle(
        "spleen_ct_segmentation",
        root,
        data,
        configs={
            "evaluate": ["configs/train.json", "configs/evaluate.json"],
            "inference": ["configs/inference.json"],
            "train": ["configs/train.json"],
        },
        overrides={
            "evaluate": {
                "dataset_dir": str(data),
                "validate#dataloader#num_workers": 0,
                "validate#evaluator#amp": False,
                "validate#inferer#roi_size": small,
                "validate#inferer#sw_batch_size": 1,
            },
            "inference": {
                "dataset_dir": str(data),
                "dataloader#num_workers": 0,
                "evaluator#amp": False,
                "inferer#roi_size": small,
                "inferer#sw_batch_size": 1,
                "output_dir": str(data / "out"),
            },
            "train": {
                "dataset_dir": str(data),
                "epochs": 1,
                "train#dataset#num_workers": 0,
                "train#dataloader#num_workers": 0,
                "validate#dataloader#num_workers": 0,
                "train#random_transforms#0#spatial_size": [16, 16, 16],
                "train#trainer#amp": False,
                "validate#evaluator#amp": False,
                "validate#inferer#roi_size": small,
                "validate#inferer#sw_batch_size": 1,
            },
        },
    )


def zoo_bundle(name: str, tmp_path: Path, seed: int = 0) -> ZooBundle:
    """A scratch copy of the fixture bundle ``name`` with random weights (``models/model.pt``) and tiny data.

    Args:
        name: one of :data:`ZOO_BUNDLES`.
        tmp_path: where the copy (``<tmp_path>/<name>``) and its data (``<tmp_path>/<name>_data``) go.
        seed: the data's random seed.
    """
    if not ZOO.is_dir():
        pytest.skip("../shared/model-zoo is not beside the checkout")
    root = Path(tmp_path) / name
    shutil.copytree(ZOO / name, root)
    data = Path(tmp_path) / f"{name}_data"
    rng = np.random.default_rng(seed)
    make = {
        "classification_template": _classification,
        "segmentation_template": _segmentation,
        "spleen_ct_segmentation": _spleen,
    }[name]
    return make(root, data, rng)
