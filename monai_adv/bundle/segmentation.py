"""Helpers of the OCT layer segmentation bundle (``bundles/oct_layer_segmentation``).

The data set (the synthetic layer set written on the first run, or the user's folder in the
segmentation layout ``<split>/images/`` + ``<split>/labels/``), its labeled / unlabeled / validation /
test lists, the metric handlers of training and validation, and the writer of the predicted masks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from monai_adv.apps.oct.synthetic import OCT_LAYER_CLASSES
from monai_adv.bundle.data import prepare_dataset, split_datalists
from monai_adv.bundle.writers import StreamedOutputWriter
from monai_adv.io import atomic_open

logger = logging.getLogger(__name__)

__all__ = [
    "prepare_oct_layer_dataset",
    "oct_layer_datalists",
    "segmentation_dice_metric",
    "MaskWriter",
]


def prepare_oct_layer_dataset(
    dataset_dir: str | os.PathLike,
    synthetic_dir: str | os.PathLike | None = None,
    n_per_class: int | Mapping[str, int] | None = None,
    image_size: int = 128,
    seed: int = 0,
    num_workers: int | None = 1,
    progress: bool = True,
    num_classes: int | None = None,
    check: bool = True,
) -> str:
    """:func:`~monai_adv.bundle.data.prepare_dataset` in the segmentation layout: the layer bundle's data set.

    The synthetic set is the OCT layer set (B-scans with their layer label maps,
    :func:`~monai_adv.apps.oct.write_synthetic_oct_dataset` with ``layers=True``), by default
    ``{"train": 100, "val": 10, "test": 20}`` B-scans per class (CNV, DME, DRUSEN, NORMAL: each B-scan
    has its lesions); any other folder must hold a ``train/images/`` folder (the layout of
    :func:`~monai_adv.apps.oct.segmentation_datalist`).

    Args: as :func:`~monai_adv.bundle.data.prepare_dataset`.

    Raises:
        FileNotFoundError: (``BundleInputError``-logged) when ``dataset_dir`` or its ``train/images/``
            folder does not exist.
    """
    return prepare_dataset(
        dataset_dir, synthetic_dir, "segmentation", n_per_class=n_per_class, image_size=image_size, seed=seed,
        num_workers=num_workers, progress=progress, check=check, num_classes=num_classes,
    )  # fmt: skip


def oct_layer_datalists(
    root: str | os.PathLike,
    label_fraction: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_items: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """:func:`~monai_adv.bundle.data.split_datalists` of a segmentation data set (the layer bundle's).

    The labeled lists hold label maps; a training image without one is unlabeled data.

    Args: as :func:`~monai_adv.bundle.data.split_datalists`.
    """
    return split_datalists(
        root, "segmentation", label_fraction, seed=seed, val_fraction=val_fraction, max_items=max_items
    )


def segmentation_dice_metric(num_classes: int, pred_key: str = "pred", label_key: str = "label") -> Any:
    """A MONAI metric handler of the mean Dice of argmax masks, for a trainer's ``key_train_metric``.

    Args:
        num_classes: the network's output channels.
        pred_key: the output key of the logits.
        label_key: the output key of the label maps.
    """
    from monai.handlers import IgniteMetricHandler

    from monai_adv.metrics.segmentation import SegmentationDiceMetric, SegmentationOutputTransform

    return IgniteMetricHandler(
        SegmentationDiceMetric(),
        output_transform=SegmentationOutputTransform(num_classes, pred_key, label_key),
        save_details=False,
    )


class MaskWriter(StreamedOutputWriter):
    """Writes the predicted masks: one 8-bit PNG of class indices per image, and ``masks.csv``.

    A mask is the argmax of the network's output, at the network's input size (the image's centre
    square, resized), named after its image (``<stem>.png``, ``<stem>_frame<i>.png`` for a B-scan of a
    DICOM or NIfTI volume; ``_2``, ``_3``, ... added when two images share a name) in
    ``output_dir/masks/``. ``masks.csv`` lists ``image, frame, mask`` and the
    share of the mask's pixels in each class (``frac_<class>``).

    Masks and rows are written as they are made into the run's :class:`~monai_adv.io.OutputSet` (a
    fresh ``.partial-*`` folder in ``output_dir``, beside ``failures.csv``), moved into place when the
    epoch completes; ``masks/`` is replaced whole, so it never holds masks of another run, and a killed
    run leaves the complete previous set in place (its own work so far stays in its ``.partial-*``).

    Args:
        output_dir: where the masks and the list go.
        class_names: the class names in output order.
        filename: the list's file name.

    Raises:
        ValueError: (when run) for an output that is not dense logits with one channel per class.
    """

    what = "masks"

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = OCT_LAYER_CLASSES,
        filename: str = "masks.csv",
    ) -> None:
        super().__init__(output_dir, filename, class_names)
        self._used: set[str] = set()

    def _header(self) -> list[str]:
        return ["image", "frame", "mask", *[f"frac_{c}" for c in self.class_names]]

    def _reset(self, engine: Any) -> None:
        self._used = set()
        super()._reset(engine)

    def _start(self) -> None:
        import shutil

        shutil.rmtree(self._set.path("masks"), ignore_errors=True)  # a fresh folder, whatever came before
        os.makedirs(self._set.path("masks"))

    def _written_to(self) -> str:
        return os.path.join(self.output_dir, "masks")

    def _rows(self, engine: Any) -> list[list[Any]]:
        from PIL import Image

        from monai_adv.utils import gather_output

        logits = gather_output(engine.state.output, "pred").detach().float().cpu()
        k = len(self.class_names)
        if logits.ndim != 4 or logits.shape[1] != k:
            raise ValueError(
                f"predictions of shape {tuple(logits.shape)} are not 2D masks of the {k} classes (B, {k}, H, W)."
            )
        masks = logits.argmax(dim=1).to(torch.uint8).numpy()
        n = masks.shape[0]
        names = self._meta_list(engine.state.batch, "filename_or_obj", n)
        frames = self._meta_list(engine.state.batch, "frame", n)
        rows = []
        for i in range(n):
            src = str(names[i]) or f"item{len(self.rows) + len(rows)}"
            base = os.path.basename(src)
            stem = base[: -len(".nii.gz")] if base.lower().endswith(".nii.gz") else os.path.splitext(base)[0]
            frame = frames[i]
            has_frame = frame not in (None, "") and int(frame) >= 0
            name = f"{stem}_frame{int(frame)}" if has_frame else stem
            unique, k_dup = name, 1
            while unique in self._used:  # two images of one name in different folders
                k_dup += 1
                unique = f"{name}_{k_dup}"
            self._used.add(unique)
            rel = os.path.join("masks", unique + ".png")
            if self._set is not None:
                with atomic_open(os.path.join(self._set.path("masks"), unique + ".png"), "wb") as fh:
                    Image.fromarray(masks[i]).save(fh, format="PNG")
            counts = np.bincount(masks[i].reshape(-1), minlength=k)[:k] / masks[i].size
            rows.append([src, int(frame) if has_frame else "", rel, *[f"{c:.6f}" for c in counts]])
        return rows
