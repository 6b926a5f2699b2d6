"""Helpers of the OCT layer segmentation bundle (``bundles/oct_layer_segmentation``).

The data set (the synthetic layer set written on the first run, or the user's folder in the
segmentation layout ``<split>/images/`` + ``<split>/labels/``), its labeled / unlabeled / validation /
test lists, the metric handlers of training and validation, and the writer of the predicted masks.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_adv.bundle.data import _same_path
from monai_adv.bundle.errors import BundleInputError, input_error
from monai_adv.data.datalists import segmentation_datalist, split_by_patient
from monai_adv.data.synthetic import OCT_LAYER_CLASSES, write_synthetic_oct_dataset
from monai_adv.distributed import barrier, is_main_process
from monai_adv.io import atomic_open, atomic_write_text

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
) -> str:
    """Make sure ``dataset_dir`` holds a segmentation data set and return its path.

    When ``dataset_dir`` is ``synthetic_dir`` (the bundle's default), the synthetic OCT layer set
    (B-scans with their layer label maps, :func:`~monai_adv.data.write_synthetic_oct_dataset` with
    ``layers=True``) is written there on the first call and reused afterwards; under
    ``torch.distributed`` rank 0 writes while the others wait. Any other folder must exist and hold a
    ``train/images/`` folder (the layout of :func:`~monai_adv.data.segmentation_datalist`).

    Args:
        dataset_dir: the data set root (``--dataset_dir``).
        synthetic_dir: the folder of the generated synthetic set.
        n_per_class: images per class (CNV, DME, DRUSEN, NORMAL: each B-scan has its lesions), one
            number for every split or ``{split: n}``; default ``{"train": 100, "val": 10, "test": 20}``.
        image_size: side of the generated images.
        seed: seed of the generated set.
        num_workers: processes used to render the synthetic images.
        progress: show a progress bar while rendering.

    Raises:
        FileNotFoundError: (``BundleInputError``-logged) when ``dataset_dir`` or its ``train/images/``
            folder does not exist.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(dataset_dir)))
    if synthetic_dir is not None and _same_path(path, synthetic_dir):
        counts = dict(n_per_class) if isinstance(n_per_class, Mapping) else None
        if counts is None:
            n = 100 if n_per_class is None else int(n_per_class)
            counts = {"train": n, "val": max(1, n // 10), "test": max(1, n // 5)}
        if is_main_process():
            write_synthetic_oct_dataset(
                path, image_size=int(image_size), seed=int(seed), splits=counts, image_format="png",
                num_workers=num_workers, progress=progress, overwrite=True, layers=True,
            )  # fmt: skip
        barrier()
        return path
    if not os.path.isdir(path):
        raise input_error(
            FileNotFoundError(
                f"dataset_dir {path!r} does not exist; point --dataset_dir at a segmentation data set "
                "(<dataset_dir>/train/images/*.png with label maps in <dataset_dir>/train/labels/, and test/), "
                "or leave it out to use the synthetic OCT layer set."
            )
        )
    if not os.path.isdir(os.path.join(path, "train", "images")):
        raise input_error(
            FileNotFoundError(
                f"dataset_dir {path!r} has no train/images/ folder: a segmentation data set holds "
                "<split>/images/ and <split>/labels/ (label maps of class indices, named as their images)."
            )
        )
    return path


def _limit(items: list[dict[str, Any]], n: int | None) -> list[dict[str, Any]]:
    return items if n is None or n <= 0 else items[: int(n)]


def oct_layer_datalists(
    root: str | os.PathLike,
    label_fraction: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.1,
    max_items: int | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The labeled, unlabeled, validation and test datalists of a segmentation data set.

    - ``train`` (minus the validation patients) is divided by patient into ``labeled`` (about
      ``label_fraction`` of it, with label maps) and ``unlabeled`` (label maps left out); its images
      without a label map are unlabeled too;
    - images of an ``unlabeled/`` split are added to ``unlabeled``;
    - ``val`` comes from a ``val/`` split, or else ``val_fraction`` of the labeled train patients;
    - ``test`` comes from ``test/``, or else is the validation list.

    When no unlabeled image is left, the labeled images without their maps serve as the unlabeled
    data (with a warning).

    Args:
        root: the data set root.
        label_fraction: share of the training images that keep their label map, in (0, 1].
        seed: seed of the patient shuffles.
        val_fraction: share of the training patients held out for validation when there is no ``val/``.
        max_items: cap every list at this many items (a smoke-test option; None or 0: no cap).

    Raises:
        BundleInputError: for a label fraction outside (0, 1].
        FileNotFoundError: for a missing root or ``train/images/``.
        ValueError: for an empty split, no labeled image, or a layout that does not parse (from
            :func:`~monai_adv.data.segmentation_datalist`).
    """
    f = float(label_fraction)
    if not (math.isfinite(f) and 0.0 < f <= 1.0):
        raise input_error(BundleInputError(f"label_fraction must lie in (0, 1], got {label_fraction!r}."))
    root = Path(root)
    train, unlabeled = segmentation_datalist(root, "train", seed=seed)
    if not train:
        raise input_error(
            BundleInputError(f"{root}/train holds no image with a label map in {root}/train/labels.")
        )
    if (root / "val" / "images").is_dir():
        val, _ = segmentation_datalist(root, "val", seed=seed)
        rest = train
    else:
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction!r}.")
        val, rest = split_by_patient(train, float(val_fraction), seed=seed + 1, label_key=None)
        if not rest:
            raise ValueError(f"{root}/train holds too few patients to hold out a validation set.")
    if f >= 1.0:
        labeled = rest
    else:
        labeled, unl = split_by_patient(rest, f, seed=seed, label_key=None)
        unlabeled = unlabeled + [{k: v for k, v in it.items() if k != "label"} for it in unl]
    if (root / "unlabeled" / "images").is_dir():
        unlabeled = unlabeled + segmentation_datalist(root, "unlabeled")[1]
    if not unlabeled:
        warnings.warn(
            "no unlabeled images (label_fraction=1 and no unlabeled/ split): the labeled images, without "
            "their label maps, are used as the unlabeled data.",
            stacklevel=2,
        )
        unlabeled = [{k: v for k, v in it.items() if k != "label"} for it in labeled]
    test = segmentation_datalist(root, "test", seed=seed)[0] if (root / "test" / "images").is_dir() else val
    out = {"labeled": labeled, "unlabeled": unlabeled, "val": val, "test": test}
    return {k: _limit(v, max_items) for k, v in out.items()}


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


class MaskWriter:
    """Writes the predicted masks: one 8-bit PNG of class indices per image, and ``masks.csv``.

    A mask is the argmax of the network's output, at the network's input size (the image's centre
    square, resized), named after its image (``<stem>.png``, ``<stem>_frame<i>.png`` for a B-scan of a
    DICOM or NIfTI volume; ``_2``, ``_3``, ... added when two images share a name) in
    ``output_dir/masks/``. ``masks.csv`` lists ``image, frame, mask`` and the
    share of the mask's pixels in each class (``frac_<class>``).

    Args:
        output_dir: where the masks and the list go.
        class_names: the class names in output order.
        filename: the list's file name.

    Raises:
        ValueError: (when run) for an output that is not dense logits with one channel per class.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        class_names: Sequence[str] = OCT_LAYER_CLASSES,
        filename: str = "masks.csv",
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.class_names = [str(c) for c in class_names]
        self.filename = filename
        self.rows: list[list[Any]] = []
        self._used: set[str] = set()

    @property
    def path(self) -> str:
        """The path of ``masks.csv``."""
        return os.path.join(self.output_dir, self.filename)

    def attach(self, engine: Any) -> None:
        """Register the handler's event callbacks on ``engine``."""
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Any) -> None:
        self.rows = []
        self._used = set()

    def _collect(self, engine: Any) -> None:
        from PIL import Image

        from monai_adv.bundle.writers import PredictionWriter
        from monai_adv.utils import gather_output

        logits = gather_output(engine.state.output, "pred").detach().float().cpu()
        k = len(self.class_names)
        if logits.ndim != 4 or logits.shape[1] != k:
            raise ValueError(
                f"predictions of shape {tuple(logits.shape)} are not 2D masks of the {k} classes (B, {k}, H, W)."
            )
        masks = logits.argmax(dim=1).to(torch.uint8).numpy()
        n = masks.shape[0]
        names = PredictionWriter._meta_list(engine.state.batch, "filename_or_obj", n)
        frames = PredictionWriter._meta_list(engine.state.batch, "frame", n)
        os.makedirs(os.path.join(self.output_dir, "masks"), exist_ok=True)
        for i in range(n):
            src = str(names[i]) or f"item{len(self.rows)}"
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
            if is_main_process():
                with atomic_open(os.path.join(self.output_dir, rel), "wb") as fh:
                    Image.fromarray(masks[i]).save(fh, format="PNG")
            counts = np.bincount(masks[i].reshape(-1), minlength=k)[:k] / masks[i].size
            self.rows.append([src, int(frame) if has_frame else "", rel, *[f"{c:.6f}" for c in counts]])

    def _write(self, engine: Any) -> None:
        if not is_main_process():
            return
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["image", "frame", "mask", *[f"frac_{c}" for c in self.class_names]])
        w.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        print(f"{len(self.rows)} masks written to {os.path.join(self.output_dir, 'masks')}", flush=True)
