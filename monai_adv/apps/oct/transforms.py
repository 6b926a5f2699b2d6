# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Loading and preparation transforms shared by every OCT source (JPEG/PNG, OCTMNIST arrays, DICOM, NIfTI).

``oct_train_transforms`` / ``oct_eval_transforms`` build the dictionary chains used by the bundles:
load -> channel first -> intensity in [0, 1] -> centre crop to a square -> resize (-> augmentation);
``oct_segmentation_transforms`` does the same for an image and its label map.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    Resized,
    Transform,
)

from monai_adv.apps.oct.datalists import DICOM_EXTENSIONS, NIFTI_EXTENSIONS, count_bscans
from monai_adv.apps.oct.utils import IMAGE_EXTENSIONS, ImageTooLargeError, check_pixel_limit

__all__ = [
    "read_image_file",
    "read_label_map",
    "LoadOCT",
    "LoadLabelMap",
    "LoadLabelMapd",
    "LoadLabelMapD",
    "LoadLabelMapDict",
    "SquareCenterCrop",
    "LoadOCTd",
    "SquareCenterCropd",
    "LoadOCTD",
    "LoadOCTDict",
    "SquareCenterCropD",
    "SquareCenterCropDict",
    "oct_train_transforms",
    "oct_eval_transforms",
    "oct_segmentation_transforms",
]

_SCALES = ("auto", "minmax", None)


def _scale(
    arr: np.ndarray,
    scale: str | None,
    bits: int | None = None,
    source: str = "<array>",
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """Scale an array to [0, 1]: integer data by its bit depth (``auto``), or per image (``minmax``);
    data with a known ``value_range`` (DICOM after its modality LUT) by that range (``auto``)."""
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"OCT image {source!r} contains NaN or Inf values.")
    if scale is None:
        return arr.astype(np.float32, copy=False)
    if scale == "auto" and value_range is not None and value_range[1] > value_range[0]:
        lo, hi = value_range
        return np.clip((arr.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if scale == "auto" and (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        if arr.dtype == np.bool_:
            return arr.astype(np.float32)
        if bits is None:
            bits = (
                8
                if arr.dtype in (np.uint8, np.int8)
                else (16 if arr.dtype in (np.uint16, np.int16) else None)
            )
        if bits is not None and np.issubdtype(arr.dtype, np.unsignedinteger):
            return np.clip(arr.astype(np.float32) / float(2**bits - 1), 0.0, 1.0)
    a = arr.astype(np.float32, copy=False)
    if scale == "auto" and a.size and float(a.min()) >= 0.0 and float(a.max()) <= 1.0:
        return a
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 1.0)
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


#: ITU-R BT.601 luma weights: how colour images (RGB, RGBA, ...) become one gray channel
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def read_image_file(path: str | os.PathLike) -> tuple[np.ndarray, int | None]:
    """Read a 2D image file (JPEG, PNG, BMP, TIFF) as one gray ``(H, W)`` array at its real bit depth.

    Pillow's modes are kept, not squeezed into 8 bits: ``1``/``L``/``P`` give uint8 (palette images
    through their gray or colour values), ``I;16*`` (16-bit PNG/TIFF) uint16, ``I`` (32-bit integer)
    int32, ``F`` (float TIFF) float32; colour images (``RGB``, ``RGBA``, ``LA``, ``CMYK``, ``YCbCr``)
    become gray with the ITU-R BT.601 weights (0.299 R + 0.587 G + 0.114 B, alpha dropped), as float
    in the units of their channels.

    Returns:
        ``(array, bits)``: ``bits`` is the bit depth integer data are scaled by (8 or 16), or ``None``
        for float data and 32-bit integers (scaled per image when outside [0, 1]).

    Raises:
        OSError: naming the file when it cannot be opened or decoded.
        ImageTooLargeError: (a ``ValueError``) naming the file, before decoding, for an image over
            :data:`~monai_adv.apps.oct.utils.MAX_IMAGE_PIXELS` values (width x height x channels).
    """
    from PIL import Image

    p = os.fspath(path)
    try:
        with Image.open(p) as im:
            check_pixel_limit(im.size, len(im.getbands()) if im.mode != "P" else 3, p)
            im.load()
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                mode = im.mode
            if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
                mode = "RGB"
            arr = np.array(im)  # a writable copy
    except ImageTooLargeError:
        raise
    except Exception as e:
        raise OSError(f"cannot read image file {p!r}: {e}") from e
    bits: int | None = None
    if mode == "1":
        return arr.astype(np.uint8), 1
    if mode in ("L", "LA", "RGB", "RGBA", "RGBX", "RGBa", "La"):
        bits = 8
    elif mode.startswith("I;16"):
        arr, bits = arr.astype(np.uint16, copy=False), 16
    if arr.ndim == 3:
        if arr.shape[-1] in (2, 4):  # gray + alpha, colour + alpha: drop alpha
            arr = arr[..., :-1]
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        elif arr.shape[-1] == 3:
            gray = arr.astype(np.float32) @ _LUMA.astype(np.float32)  # float32: 4 bytes per pixel and channel
            return (gray / float(2**bits - 1) if bits else gray).astype(np.float32), None
        else:
            raise OSError(f"image file {p!r}: unsupported {arr.shape[-1]}-channel mode {mode!r}.")
    if arr.ndim != 2:
        raise OSError(f"image file {p!r}: expected a 2D image, got shape {arr.shape} (mode {mode!r}).")
    return arr, bits


def read_label_map(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read a label map (class indices) as an int64 ``(H, W)`` array, as drawn.

    Gray (``L``, ``I;16``, ``I``, ``1``) images give their values; palette (``P``) PNGs, what
    annotation tools export, give their palette indices (not the colours they show). Colour (RGB,
    RGBA, LA, ...) label maps are refused: their colours are no class indices (the luma of a colour
    is not its class), so they would become wrong labels. Float images must hold whole numbers.
    NIfTI label maps (2D) are read with nibabel.

    Args:
        path: the label map file (PNG, TIFF, BMP, NIfTI).
        num_classes: when given, every value must lie in ``[0, num_classes)``.

    Raises:
        OSError: naming the file, when it cannot be read.
        ValueError: naming the file, for a colour label map, fractional values, or values outside the
            classes (naming them and the classes).
    """
    from PIL import Image

    p = os.fspath(path)
    if p.lower().endswith(NIFTI_EXTENSIONS):
        import nibabel as nib

        try:
            arr = np.asarray(nib.load(p).dataobj)
        except Exception as e:
            raise OSError(f"cannot read label map {p!r}: {e}") from e
        arr = arr.reshape([s for s in arr.shape if s != 1]) if arr.ndim > 2 else arr
    else:
        try:
            with Image.open(p) as im:
                check_pixel_limit(im.size, len(im.getbands()), p)
                im.load()
                mode = im.mode
                arr = np.array(im)
        except ImageTooLargeError:
            raise
        except Exception as e:
            raise OSError(f"cannot read label map {p!r}: {e}") from e
        if mode not in ("1", "L", "P", "I", "F") and not mode.startswith("I;16"):
            raise ValueError(
                f"label map {p!r} is a {mode} colour image: its colours are not class indices. Save label "
                "maps as 8-bit gray or palette PNGs whose pixel values are the class indices."
            )
    if arr.ndim != 2:
        raise ValueError(f"label map {p!r} must be 2D, got shape {arr.shape}.")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"label map {p!r} holds values that are not whole class indices.")
    out = arr.astype(np.int64)
    if num_classes is not None and out.size:
        bad = np.unique(out[(out < 0) | (out >= int(num_classes))])
        if bad.size:
            raise ValueError(
                f"label map {p!r} holds value(s) {bad[:10].tolist()} outside the {int(num_classes)} classes "
                f"(0..{int(num_classes) - 1})."
            )
    return out


class LoadLabelMap(Transform):
    """Load a label map of class indices (see :func:`read_label_map`) as a ``(1, H, W)`` int64 ``MetaTensor``.

    Args:
        num_classes: when given, a value outside ``[0, num_classes)`` is an error naming the file.

    Raises:
        FileNotFoundError: for a missing file.
        OSError, ValueError: from :func:`read_label_map`.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        self.num_classes = None if num_classes is None else int(num_classes)

    def __call__(self, src: str | os.PathLike | np.ndarray | torch.Tensor) -> MetaTensor:
        if isinstance(src, (np.ndarray, torch.Tensor)):
            arr = src.detach().cpu().numpy() if isinstance(src, torch.Tensor) else np.asarray(src)
            arr = arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and 1 in (arr.shape[0],) else arr
            return MetaTensor(torch.as_tensor(np.asarray(arr, dtype=np.int64))[None])
        if not Path(src).is_file():
            raise FileNotFoundError(f"label map {os.fspath(src)!r} does not exist.")
        arr = read_label_map(src, self.num_classes)
        meta = {"filename_or_obj": os.fspath(src), "spatial_shape": arr.shape}
        return MetaTensor(torch.as_tensor(np.ascontiguousarray(arr))[None], meta=meta)


class LoadLabelMapd(MapTransform):
    """Dictionary version of :class:`LoadLabelMap`.

    Args:
        keys: keys of the label maps.
        num_classes: see :class:`LoadLabelMap`.
        allow_missing_keys: don't raise for missing keys (unlabeled items).
    """

    def __init__(
        self, keys: KeysCollection, num_classes: int | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadLabelMap(num_classes)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


def _decode_dicom(path: Path) -> tuple[np.ndarray, int | None, tuple[float, float] | None]:
    """``(frames (N, H, W), bits, value_range)`` of a DICOM file, in the units of its modality LUT.

    The modality LUT (``RescaleSlope`` / ``RescaleIntercept``, or a Modality LUT Sequence) is applied
    as :func:`pydicom.pixels.apply_modality_lut` (and MONAI's reader) does; ``value_range`` is then the
    range the stored bit depth maps to, which ``scale="auto"`` scales by. ``MONOCHROME1`` is inverted
    within that range.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(path)
        arr = np.asarray(ds.pixel_array)
    except Exception as e:
        raise OSError(f"cannot read DICOM file {str(path)!r}: {e}") from e
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] != n:
        raise OSError(
            f"DICOM file {str(path)!r}: pixel data of shape {arr.shape} for {n} frame(s) of gray pixels."
        )
    bits = int(getattr(ds, "BitsStored", 0)) or None
    value_range: tuple[float, float] | None = None
    has_lut = (
        "ModalityLUTSequence" in ds
        or float(getattr(ds, "RescaleSlope", 1) or 1) != 1.0
        or float(getattr(ds, "RescaleIntercept", 0) or 0) != 0.0
    )
    if has_lut:
        if np.issubdtype(arr.dtype, np.integer) and bits:
            ends = np.asarray(
                apply_modality_lut(np.array([0, 2**bits - 1], dtype=arr.dtype), ds), dtype=np.float64
            )
            value_range = (float(ends.min()), float(ends.max()))
        arr = np.asarray(apply_modality_lut(arr, ds)).astype(np.float32)
        bits = None
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        if value_range is not None:
            arr = (value_range[0] + value_range[1]) - arr
        elif np.issubdtype(arr.dtype, np.integer) and bits:
            arr = (2**bits - 1) - arr
        else:
            arr = arr.max() - arr
    return arr, bits, value_range


def _decode_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        arr = np.asarray(np.asanyarray(nib.load(str(path)).dataobj))
    except Exception as e:
        raise OSError(f"cannot read NIfTI file {str(path)!r}: {e}") from e
    if arr.ndim > 3:
        arr = arr.reshape([s for s in arr.shape if s != 1])
    return arr


#: the last volume decoded by this process: ``(key, value)``. Inference lists one item per B-scan of a
#: volume, in order: keeping the last one decoded reads each file once, not once per B-scan.
_LAST_VOLUME: list[Any] = [None, None]


def _cached_volume(path: Path, kind: str, decode: Any) -> Any:
    st = os.stat(path)
    key = (os.path.abspath(path), kind, st.st_mtime_ns, st.st_size, st.st_ino)
    if _LAST_VOLUME[0] != key:
        _LAST_VOLUME[0], _LAST_VOLUME[1] = None, None  # free the old one before decoding the new one
        _LAST_VOLUME[1] = decode()
        _LAST_VOLUME[0] = key
    return _LAST_VOLUME[1]


class LoadOCT(Transform):
    """Load an OCT B-scan (or volume) as a channel-first float32 ``MetaTensor`` with intensities in [0, 1].

    Sources:
        * 2D image files (JPEG, PNG, BMP, TIFF) at their real bit depth (see :func:`read_image_file`):
          8-bit, 16-bit and 32-bit integer, float32 and colour images; rows are depth, columns are
          lateral position (no transposition).
        * DICOM (pydicom): single-frame or multi-frame ophthalmic tomography; each frame is a B-scan.
          The modality LUT (``RescaleSlope``/``RescaleIntercept``) is applied, as MONAI's reader and
          :func:`pydicom.pixels.apply_modality_lut` do; ``MONOCHROME1`` is inverted; integer data are
          scaled by ``BitsStored`` (after a modality LUT, by the range it maps the stored bits to).
        * Volumes (DICOM, NIfTI): the header's claims (frames, sizes) are checked against the file's
          size and the limits before decoding (:func:`~monai_adv.apps.oct.count_bscans`); the last volume
          decoded is kept, so the B-scans of one file, loaded in order, decode it once.
        * NIfTI (nibabel): a 2D B-scan, or a 3D volume with the B-scans along ``slice_axis``.
        * in-memory arrays (e.g. OCTMNIST items): ``(H, W)``, ``(1, H, W)`` or ``(H, W, 1)``.

    Output: ``(1, H, W)`` for a B-scan (a frame/slice is selected with ``frame``), or
    ``(1, H, W, N)`` for a whole volume when ``frame`` is ``None``. ``meta["filename_or_obj"]`` and
    ``meta["frame"]`` record the source.

    Args:
        scale: ``"auto"`` (integer data divided by the largest value of their bit depth: 255 for
            8-bit, 65535 for 16-bit files, ``2**BitsStored - 1`` for DICOM; float data kept if already
            in [0, 1], else min-max per image), ``"minmax"`` (per image: the darkest pixel 0, the
            brightest 1) or ``None`` (raw values as float32). A 16-bit file holding 12-bit data comes
            out dark with ``"auto"``: use ``"minmax"`` for it.
        slice_axis: NIfTI axis that indexes B-scans.

    Raises:
        FileNotFoundError: for a missing file.
        OSError: naming the file, when it cannot be read or decoded.
        ValueError: for an unsupported extension, a frame index out of range, an array of the wrong
            shape, or NaN/Inf values.
    """

    def __init__(self, scale: str | None = "auto", slice_axis: int = -1) -> None:
        if scale not in _SCALES:
            raise ValueError(f"scale must be one of {_SCALES}, got {scale!r}.")
        self.scale = scale
        self.slice_axis = int(slice_axis)

    def __call__(
        self, src: str | os.PathLike | np.ndarray | torch.Tensor, frame: int | None = None
    ) -> MetaTensor:
        if isinstance(src, (np.ndarray, torch.Tensor)):
            arr = src.detach().cpu().numpy() if isinstance(src, torch.Tensor) else np.asarray(src)
            if arr.ndim == 3 and arr.shape[0] == 1:
                arr = arr[0]
            elif arr.ndim == 3 and arr.shape[-1] == 1:
                arr = arr[..., 0]
            if arr.ndim != 2:
                raise ValueError(
                    f"an in-memory OCT image must be (H, W), (1, H, W) or (H, W, 1), got {arr.shape}."
                )
            return self._finish(_scale(arr, self.scale), "<array>", frame)
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"OCT file {str(path)!r} does not exist.")
        name = path.name.lower()
        if name.endswith(IMAGE_EXTENSIONS):
            arr, bits = read_image_file(path)
            if frame not in (None, 0):
                raise ValueError(f"{str(path)!r} is a single B-scan; frame {frame} does not exist.")
            return self._finish(_scale(arr, self.scale, bits, source=str(path)), str(path), frame)
        if name.endswith(DICOM_EXTENSIONS):
            return self._dicom(path, frame)
        if name.endswith(NIFTI_EXTENSIONS):
            return self._nifti(path, frame)
        raise ValueError(
            f"unsupported OCT file {str(path)!r}: expected {IMAGE_EXTENSIONS + DICOM_EXTENSIONS + NIFTI_EXTENSIONS}."
        )

    def _dicom(self, path: Path, frame: int | None) -> MetaTensor:
        count_bscans(path)  # the header's claims are checked before the pixel data are decoded
        arr, bits, value_range = _cached_volume(path, "dicom", lambda: _decode_dicom(path))
        n = arr.shape[0]

        def scaled(a: np.ndarray) -> np.ndarray:
            return _scale(a, self.scale, bits, str(path), value_range)

        if frame is None and n == 1:  # a single B-scan
            return self._finish(scaled(arr[0]), str(path), None)
        if frame is None:
            return self._finish(scaled(np.moveaxis(arr, 0, -1)), str(path), None)  # (H, W, N)
        if not 0 <= int(frame) < n:
            raise ValueError(f"frame {frame} out of range for {str(path)!r} with {n} frame(s).")
        return self._finish(scaled(arr[int(frame)]), str(path), int(frame))

    def _nifti(self, path: Path, frame: int | None) -> MetaTensor:
        count_bscans(path, slice_axis=self.slice_axis)  # the header's claims, before decoding
        arr = _cached_volume(path, "nifti", lambda: _decode_nifti(path))
        if arr.ndim == 2:
            if frame not in (None, 0):
                raise ValueError(f"{str(path)!r} is a single B-scan; frame {frame} does not exist.")
            return self._finish(_scale(arr, self.scale, source=str(path)), str(path), frame)
        if arr.ndim != 3:
            raise ValueError(f"NIfTI OCT file {str(path)!r} must be 2D or 3D, got shape {arr.shape}.")
        arr = np.moveaxis(arr, self.slice_axis, -1)
        if frame is None:
            return self._finish(_scale(arr, self.scale, source=str(path)), str(path), None)
        n = arr.shape[-1]
        if not 0 <= int(frame) < n:
            raise ValueError(f"frame {frame} out of range for {str(path)!r} with {n} B-scans.")
        return self._finish(_scale(arr[..., int(frame)], self.scale, source=str(path)), str(path), int(frame))

    @staticmethod
    def _finish(arr: np.ndarray, source: str, frame: int | None) -> MetaTensor:
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"OCT image {source!r} contains NaN or Inf values.")
        t = torch.tensor(np.asarray(arr, dtype=np.float32))[None]  # a copy: never a view of a cached volume
        meta = {
            "filename_or_obj": source,
            "frame": -1 if frame is None else int(frame),
            "spatial_shape": arr.shape,
        }
        return MetaTensor(t, meta=meta)


class SquareCenterCrop(Transform):
    """Crop the largest centred square from the first two spatial axes of a channel-first image."""

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        if img.ndim < 3:
            raise ValueError(f"expected a channel-first image (C, H, W[, D]), got shape {tuple(img.shape)}.")
        h, w = int(img.shape[1]), int(img.shape[2])
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return img[:, top : top + s, left : left + s, ...]


class LoadOCTd(MapTransform):
    """Dictionary version of :class:`LoadOCT`; the B-scan index is read from ``frame_key`` when present.

    Args:
        keys: keys of the sources to load.
        frame_key: item key holding the frame / slice index (items without it load whole files).
        scale: see :class:`LoadOCT`.
        slice_axis: see :class:`LoadOCT`.
        allow_missing_keys: don't raise for missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        frame_key: str = "frame",
        scale: str | None = "auto",
        slice_axis: int = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.frame_key = frame_key
        self.loader = LoadOCT(scale=scale, slice_axis=slice_axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        frame = d.get(self.frame_key)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key], None if frame is None else int(frame))
        return d


class SquareCenterCropd(MapTransform):
    """Dictionary version of :class:`SquareCenterCrop`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cropper = SquareCenterCrop()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key])
        return d


LoadOCTD = LoadOCTDict = LoadOCTd
LoadLabelMapD = LoadLabelMapDict = LoadLabelMapd
SquareCenterCropD = SquareCenterCropDict = SquareCenterCropd


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    s = (
        (int(image_size),) * 2
        if isinstance(image_size, (int, np.integer))
        else tuple(int(v) for v in image_size)
    )
    if len(s) != 2 or min(s) < 1:
        raise ValueError(f"image_size must be a positive int or (h, w), got {image_size!r}.")
    return s


def oct_eval_transforms(
    image_size: int | Sequence[int] = 224, keys: KeysCollection = ("image",), label_key: str | None = "label"
) -> Compose:
    """Evaluation chain: load -> [0, 1] -> centre square crop -> resize (area) -> float32 tensors.

    Args:
        image_size: output side (or ``(h, w)``).
        keys: image keys.
        label_key: label key converted to an int64 tensor when present, or ``None``.
    """
    size = _size(image_size)
    tfs: list[Any] = [
        LoadOCTd(keys),
        SquareCenterCropd(keys),
        Resized(keys, spatial_size=size, mode="area"),
        EnsureTyped(keys, dtype=torch.float32, track_meta=True),
    ]
    if label_key is not None:
        tfs.append(EnsureTyped(label_key, dtype=torch.int64, track_meta=False, allow_missing_keys=True))
    return Compose(tfs)


def oct_train_transforms(
    image_size: int | Sequence[int] = 224,
    keys: KeysCollection = ("image",),
    label_key: str | None = "label",
    augment: bool = True,
) -> Compose:
    """Training chain: the evaluation chain plus mild augmentation that keeps intensities in [0, 1].

    Augmentation: horizontal flip (left and right eyes), a small affine (rotation up to 8 degrees,
    shifts up to 6% of the side, scale 0.9 to 1.1, border filled with zeros) and a mild gamma change.

    Args:
        image_size: output side (or ``(h, w)``).
        keys: image keys.
        label_key: label key converted to an int64 tensor when present, or ``None``.
        augment: ``False`` gives the evaluation chain.
    """
    base = oct_eval_transforms(image_size, keys, label_key)
    if not augment:
        return base
    size = _size(image_size)
    aug = [
        RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandAffined(
            keys,
            prob=0.7,
            rotate_range=np.deg2rad(8.0),
            translate_range=(0.06 * size[0], 0.06 * size[1]),
            scale_range=(0.1, 0.1),
            padding_mode="zeros",
            mode="bilinear",
            # the output size is fixed, so the sampling grid is built once (same result, ~2x faster)
            spatial_size=size,
            cache_grid=True,
        ),
        RandAdjustContrastd(keys, prob=0.3, gamma=(0.8, 1.25)),
    ]
    return Compose([*base.transforms, *aug])


def oct_segmentation_transforms(
    image_size: int | Sequence[int] = 128,
    image_key: str = "image",
    label_key: str | None = "label",
    augment: bool = False,
    num_classes: int | None = None,
) -> Compose:
    """An image and its label map: load -> centre square crop -> resize -> tensors (-> augmentation).

    The image is loaded as :class:`LoadOCT` loads it (intensities in [0, 1], resized by area); the label
    map's values are kept as they are (class indices) and it is resized by nearest neighbour at the
    output pixel centres (``nearest-exact``), the points that the area resize of the image is centred
    on, so the two stay aligned; the result is a ``(1, H, W)`` float32 image and a ``(1, H, W)`` int64
    label map. Items without the label key (unlabeled images) pass with the image alone.

    Args:
        image_size: output side (or ``(h, w)``).
        image_key: the image key.
        label_key: the label map key, or ``None`` for images alone (inference).
        augment: add a horizontal flip of both (left and right eyes) and a mild gamma change of the
            image; no affine, whose border filling would invent labels.
        num_classes: when given, a label map value outside ``[0, num_classes)`` is an error naming the
            file. Label maps are read by :class:`LoadLabelMapd`: palette PNGs as their indices, colour
            label maps refused.
    """
    size = _size(image_size)
    tfs: list[Any] = [LoadOCTd(image_key)]
    if label_key is not None:
        tfs.append(LoadLabelMapd(label_key, num_classes=num_classes, allow_missing_keys=True))
    both = [image_key] + ([label_key] if label_key is not None else [])
    tfs += [
        SquareCenterCropd(both, allow_missing_keys=True),
        Resized(image_key, spatial_size=size, mode="area"),
        EnsureTyped(image_key, dtype=torch.float32, track_meta=True),
    ]
    if label_key is not None:
        tfs += [
            Resized(label_key, spatial_size=size, mode="nearest-exact", allow_missing_keys=True),
            EnsureTyped(label_key, dtype=torch.int64, track_meta=False, allow_missing_keys=True),
        ]
    if augment:
        tfs += [
            RandFlipd(both, prob=0.5, spatial_axis=1, allow_missing_keys=True),
            RandAdjustContrastd(image_key, prob=0.3, gamma=(0.8, 1.25)),
        ]
    return Compose(tfs)
