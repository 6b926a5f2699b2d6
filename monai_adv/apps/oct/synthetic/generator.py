# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""Synthetic retinal OCT B-scans in the four Kermany classes (CNV, DME, DRUSEN, NORMAL).

The generator draws each B-scan on the native Spectralis grid (496 rows of about 3.9 um in depth,
512 columns of about 11.7 um across a 6 mm scan), from a layered reflectivity model of the retina, then
forms the image the way an OCT scanner and its viewer do:

1. reflectivity: vitreous, RNFL, GCL, IPL, INL, OPL, ONL, ELM, myoid zone, ellipsoid zone, outer
   segments, interdigitation zone, RPE / Bruch's membrane, choroid (mottled vessels fading with depth)
   and sclera; a foveal pit; retinal vessels; class lesions drawn with a per-image severity, a share
   of them subtle (a B-scan through the edge of the lesions);
2. attenuation along depth (Beer-Lambert on the cumulative reflectivity, plus absorbing vessels and
   hyperreflective foci), which casts shadows;
3. speckle: a depth-dependent noise floor of fully developed speckle (Gamma-distributed over two to
   four looks, correlated as the point-spread function makes it) plus the tissue signal under a
   smoother, frame-averaged multiplicative speckle;
4. the logarithmic display transform ``grey = g0 + ln(I) / dynamic_range``, clipped to [0, 1];
5. optional registration padding (white wedges), 8-bit JPEG compression, and the OCTMNIST-style
   preparation: centre crop to a square and resize.

Speed: about 80 images/s per core at any output size (``benchmarks/synthetic_speed.py``, which
measures it against generator v2 in the same run). The rendering is vectorised: the layers are drawn
on a band that follows the retina (not on the whole frame), the noise fields are blurred by short
separable kernels on slices or drawn on coarse grids, the noise floor's speckle is one correlated
Gaussian field mapped to its Gamma law rather than ``2 * looks`` blurred fields, and only the centre
square that is kept is formed.

Every class shares the nuisance factors (vertical position, tilt, curvature, lateral scale, pit
position, noise level, gain, blur, speckle looks, JPEG quality), so the class is carried by the lesion,
not by brightness. Its parameters were calibrated against 400 real Kermany B-scans; see
``experiments/synthetic_realism/README.md`` and ``experiments/synthetic_realism/run.py``.

The stages live in their own modules: :mod:`.anatomy` and :mod:`.lesions` (1), :mod:`.formation`
(2, 3), :mod:`.display` (4, 5), with the random fields in :mod:`.fields`; the data-set writer and the
command line are in :mod:`.writer`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from monai_adv.apps.oct.synthetic import anatomy, display, formation, lesions
from monai_adv.apps.oct.synthetic.fields import noise1d, noise2d, paint_ellipse, spawn_seed
from monai_adv.apps.oct.synthetic.labels import OCT_LAYER_CLASSES, LabelScene, layer_label_map
from monai_adv.apps.oct.utils import OCT_CLASSES, center_crop_square, label_to_index

__all__ = ["SyntheticOCTGenerator", "GENERATOR_VERSION", "progress_bar"]

#: Version of the images a seed gives; raised whenever they change, so that a data set written by an
#: older generator is not taken for a current one. 2: subtle cases (``subtle_prob``). 3: the same
#: model rendered about 5x faster (the noise floor's speckle drawn as one Gaussian field mapped to the
#: Gamma law, other random streams): the same images in distribution, not the same images.
GENERATOR_VERSION = 3


class SyntheticOCTGenerator:
    """Physically motivated synthetic retinal OCT B-scans in the classes CNV, DME, DRUSEN and NORMAL.

    Example::

        gen = SyntheticOCTGenerator(image_size=128, seed=0)
        img = gen("DME")                       # (128, 128) float32 in [0, 1]
        images, labels = gen.generate(10)      # (40, 128, 128), (40,)
        # with the layer label maps (indices into OCT_LAYER_CLASSES), pixel for pixel with the images
        images, labels, layers = gen.generate(10, return_layers=True)   # layers: (40, 128, 128) uint8
        img, layer_map = gen.sample("DME", seed=7, return_layers=True)

    The layer label map (:mod:`.labels`) names the structure under every pixel: vitreous, RNFL,
    GCL+IPL, INL, OPL, ONL, IS/OS, RPE, choroid, and where drawn sub-retinal fluid (SRF), the sub-RPE
    space of drusen and PEDs (PED), intraretinal cysts (IRF) and registration padding
    (:data:`~monai_adv.apps.oct.synthetic.labels.OCT_LAYER_CLASSES`). It is drawn from the boundaries the
    image was rendered from, on the output image's own grid, and costs nothing when not asked for:
    the images are the same either way.

    Args:
        image_size: side length of the square output (or ``(h, w)``), after the centre crop of the
            native frame; ``None`` returns the native centre crop (496 x 496).
        seed: seed of the generator's random stream; the same seed gives the same images in the same
            call order. ``None`` draws fresh entropy.
        native_shape: ``(rows, columns)`` of the native grid the B-scan is drawn on.
        severity: ``(a, b)`` of the Beta distribution of per-image lesion severity in (0, 1); the
            default has its mode near 0.2, so many lesions are mild.
        subtle_prob: probability that a CNV, DME or DRUSEN B-scan is a subtle case: it cuts through the
            edge of the lesions (or an early lesion), which are drawn at severity 0 and scaled down to
            20-50% of their smallest size (one or two small drusen, a little thickening with at most one
            small cyst, a thin and narrow RPE elevation), often too small to see at 128 px. Real
            graded data sets hold such scans, and without them a classifier finds the task too easy.
        jpeg_quality: JPEG quality range ``(low, high)`` drawn per image, a fixed quality, or ``None``
            for no compression. The real data set is stored as JPEG.
        padding_prob: probability of white registration-padding wedges, as in many Kermany images.
        output_dtype: dtype of the returned arrays (float32 by default).

    Raises:
        ValueError: for a non-positive size, a bad severity pair, a JPEG quality outside [1, 100] or a
            probability outside [0, 1].
    """

    classes: tuple[str, ...] = OCT_CLASSES
    #: the classes of the layer label maps (``return_layers=True``)
    layer_classes: tuple[str, ...] = OCT_LAYER_CLASSES

    def __init__(
        self,
        image_size: int | Sequence[int] | None = 224,
        seed: int | None = 0,
        native_shape: Sequence[int] = (496, 512),
        severity: Sequence[float] = (1.4, 2.4),
        jpeg_quality: int | Sequence[int] | None = (75, 95),
        padding_prob: float = 0.75,
        subtle_prob: float = 0.15,
        output_dtype: np.dtype | type = np.float32,
    ) -> None:
        if image_size is not None:
            sizes = [image_size] if isinstance(image_size, (int, np.integer)) else list(image_size)
            if len(sizes) not in (1, 2) or any(int(s) < 1 for s in sizes):
                raise ValueError(
                    f"image_size must be a positive int, a pair of them, or None, got {image_size!r}."
                )
        native = tuple(int(s) for s in native_shape)
        if len(native) != 2 or native[0] < 64 or native[1] < 64:
            raise ValueError(f"native_shape must be (rows, columns), each >= 64, got {native_shape!r}.")
        sev = tuple(float(s) for s in severity)
        if len(sev) != 2 or min(sev) <= 0:
            raise ValueError(f"severity must be a pair of positive Beta parameters, got {severity!r}.")
        if jpeg_quality is not None:
            q = (
                (jpeg_quality, jpeg_quality)
                if isinstance(jpeg_quality, (int, np.integer))
                else tuple(jpeg_quality)
            )
            if len(q) != 2 or not 1 <= int(q[0]) <= int(q[1]) <= 100:
                raise ValueError(
                    f"jpeg_quality must be in [1, 100] (or a low <= high pair), got {jpeg_quality!r}."
                )
            jpeg_quality = (int(q[0]), int(q[1]))
        if not 0.0 <= float(padding_prob) <= 1.0:
            raise ValueError(f"padding_prob must be in [0, 1], got {padding_prob}.")
        if not 0.0 <= float(subtle_prob) <= 1.0:
            raise ValueError(f"subtle_prob must be in [0, 1], got {subtle_prob}.")
        self.image_size = image_size
        self.seed = seed
        self.native_shape = native
        self.severity = sev
        self.jpeg_quality = jpeg_quality
        self.padding_prob = float(padding_prob)
        self.subtle_prob = float(subtle_prob)
        self.output_dtype = np.dtype(output_dtype)
        self.set_random_state(seed)

    # ------------------------------------------------------------------ public API
    def set_random_state(self, seed: int | None = None) -> SyntheticOCTGenerator:
        """Reset the random stream of :meth:`__call__` and :meth:`generate` to ``seed``."""
        self._rng = np.random.default_rng(seed)
        return self

    def __call__(self, label: int | str) -> np.ndarray:
        """Draw one B-scan of class ``label`` (an index or a class name) from the generator's stream.

        Returns:
            an ``(H, W)`` array of ``output_dtype`` in [0, 1].
        """
        return self.sample(label, spawn_seed(self._rng))

    def generate(
        self,
        n_per_class: int,
        shuffle: bool = False,
        num_workers: int = 1,
        progress: bool = False,
        return_layers: bool = False,
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n_per_class`` B-scans of every class.

        Every image has its own seed drawn from the generator's stream, so the result does not depend
        on ``num_workers`` (nor on ``return_layers``).

        Args:
            n_per_class: number of images per class (>= 0).
            shuffle: interleave the classes randomly; otherwise the result is ordered by class.
            num_workers: processes used to render (1 renders in this process).
            progress: show a tqdm progress bar.
            return_layers: also return the layer label maps.

        Returns:
            ``(images, labels)``: ``(4 * n_per_class, H, W)`` and ``(4 * n_per_class,)`` int64; with
            ``return_layers``, ``(images, labels, layers)``, ``layers`` the ``(4 * n_per_class, H, W)``
            uint8 label maps (indices into :data:`~monai_adv.apps.oct.synthetic.labels.OCT_LAYER_CLASSES`).

        Raises:
            ValueError: when ``n_per_class`` is negative.
        """
        if int(n_per_class) < 0:
            raise ValueError(f"n_per_class must be >= 0, got {n_per_class}.")
        n = int(n_per_class)
        labels = np.repeat(np.arange(len(self.classes), dtype=np.int64), n)
        seeds = spawn_seed(self._rng).spawn(labels.size)
        if shuffle:
            labels = labels[self._rng.permutation(labels.size)]
        shape = self.output_shape
        images = np.empty((labels.size, *shape), dtype=self.output_dtype)
        layers = np.empty((labels.size, *shape), dtype=np.uint8) if return_layers else None
        jobs = [(int(lab), s) for lab, s in zip(labels, seeds)]
        bar = progress_bar(len(jobs), progress, "synthetic OCT")
        try:
            workers = max(1, min(int(num_workers), len(jobs)))
            if workers == 1:
                for i, (lab, s) in enumerate(jobs):
                    if layers is None:
                        images[i] = self.sample(lab, s)
                    else:
                        images[i], layers[i] = self.sample(lab, s, return_layers=True)
                    bar.update(1)
            else:
                chunks = [(jobs[i : i + 16], return_layers) for i in range(0, len(jobs), 16)]
                with ProcessPoolExecutor(max_workers=workers) as ex:
                    i = 0
                    for block, block_layers in ex.map(self._sample_many, chunks):
                        images[i : i + len(block)] = block
                        if layers is not None:
                            layers[i : i + len(block)] = block_layers
                        i += len(block)
                        bar.update(len(block))
        finally:
            bar.close()
        return (images, labels) if layers is None else (images, labels, layers)

    def _sample_many(
        self, chunk: tuple[Sequence[tuple[int, np.random.SeedSequence]], bool]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        jobs, with_layers = chunk
        if not with_layers:
            return np.stack([self.sample(lab, s) for lab, s in jobs]), None
        pairs = [self.sample(lab, s, return_layers=True) for lab, s in jobs]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    @property
    def output_shape(self) -> tuple[int, int]:
        """Shape ``(H, W)`` of the images this generator returns."""
        if self.image_size is None:
            s = min(self.native_shape)
            return (s, s)
        if isinstance(self.image_size, (int, np.integer)):
            return (int(self.image_size), int(self.image_size))
        sizes = [int(s) for s in self.image_size]
        return (sizes[0], sizes[-1])

    def sample(
        self,
        label: int | str,
        seed: int | np.random.SeedSequence | None,
        patient_seed: int | np.random.SeedSequence | None = None,
        return_info: bool = False,
        return_layers: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, Any] | tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Draw one B-scan deterministically from explicit seeds (independent of the generator's stream).

        Args:
            label: class index or name.
            seed: seed of this image (noise, speckle, small shifts, padding, compression).
            patient_seed: seed of the eye (anatomy and lesions); images sharing it are B-scans of the
                same eye with the same lesions, like the several images per patient in Kermany.
                ``None`` uses ``seed``.
            return_info: also return a dict with the drawn severity and a few other parameters.
            return_layers: also return the layer label map: an ``(H, W)`` uint8 array of indices into
                :data:`~monai_adv.apps.oct.synthetic.labels.OCT_LAYER_CLASSES`, on the image's grid (see
                :func:`~monai_adv.apps.oct.synthetic.labels.layer_label_map`). The image is the same with
                or without it.

        Returns:
            the image; ``(image, info)`` with ``return_info``; ``(image, layers)`` with
            ``return_layers``; ``(image, layers, info)`` with both.
        """
        lab = label_to_index(label)
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        if patient_seed is None:
            ss_anat, ss_img = ss.spawn(2)
        else:
            pss = (
                patient_seed
                if isinstance(patient_seed, np.random.SeedSequence)
                else np.random.SeedSequence(patient_seed)
            )
            ss_anat, ss_img = pss.spawn(1)[0], ss.spawn(2)[1]
        H, W = self.native_shape
        # only the centre square is kept: form the image on its columns alone (the JPEG blocks stay
        # aligned with the full frame's when the offset is a multiple of 8, as for 496 x 512)
        cols = slice((W - H) // 2, (W - H) // 2 + H) if W > H else None
        scene = LabelScene(H, W) if return_layers else None
        img8, info = self._render(
            lab, np.random.default_rng(ss_anat), np.random.default_rng(ss_img), cols, scene=scene
        )
        sq = np.ascontiguousarray(center_crop_square(img8))
        if self.image_size is None or self.output_shape == sq.shape:
            out = sq.astype(np.float32) / np.float32(255.0)
        else:
            # the same antialiased bilinear resize as center_crop_resize, on 0..255 floats, then scaled
            h, w = self.output_shape
            out = np.asarray(Image.fromarray(sq).convert("F").resize((w, h), Image.BILINEAR))
            out = out / np.float32(255.0)
        out = np.clip(out, 0.0, 1.0).astype(self.output_dtype, copy=False)
        if scene is not None:
            layers = layer_label_map(scene, out.shape)
            return (out, layers, info) if return_info else (out, layers)
        return (out, info) if return_info else out

    # ------------------------------------------------------------------ rendering
    def render_native(
        self,
        label: int,
        rng_anat: np.random.Generator,
        rng_img: np.random.Generator,
        columns: slice | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw one full native-grid B-scan (``native_shape``, float32 in [0, 1]) and its parameters.

        ``columns`` (a ``slice`` of the native columns) forms only those columns of the image: the
        anatomy is the same, and the image formation, the most costly part, is spent on them alone
        (its noise is drawn for those columns, so it is not a crop of the full frame's noise).
        :meth:`sample` uses it for the centre square it keeps.
        """
        img8, info = self._render(label, rng_anat, rng_img, columns)
        return img8.astype(np.float32) / np.float32(255.0), info

    def _render(
        self,
        label: int,
        rng_anat: np.random.Generator,
        rng_img: np.random.Generator,
        columns: slice | None = None,
        scene: LabelScene | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """:meth:`render_native`, returning the 8-bit image as the scanner's viewer stores it.

        The stages, in the order they draw from the two random streams (``rng_anat``: the eye,
        ``rng_img``: this image): severity, scan geometry, layer profiles, class lesions, boundaries,
        the layered band, choroid and sclera, lesion objects, image formation, display. A ``scene``,
        when given, records what the layer label map needs (boundaries, cysts, padding); it draws
        nothing from the streams.
        """
        H, W = self.native_shape
        cs = slice(None) if columns is None else columns
        x_first = int(cs.indices(W)[0])
        ra, ri = rng_anat, rng_img
        z = np.arange(H, dtype=np.float32)[:, None]
        x = np.arange(W, dtype=np.float32)
        sev, subtle, k = lesions.draw_severity(ra, label, self.severity, self.subtle_prob)
        info: dict[str, Any] = {
            "label": label,
            "class": OCT_CLASSES[label],
            "severity": sev,
            "subtle": subtle,
            "lesion_scale": k,
        }
        # 1. reflectivity: geometry, layers, the class's lesions, boundaries, band, choroid, objects
        geo = anatomy.scan_geometry(ra, ri, H, W, x)
        t_scale, f, pit_depth, thick, refl = anatomy.layer_profiles(ra, x, W, geo)
        les, pit_depth = lesions.class_lesions(ra, label, x, W, geo, thick, pit_depth, sev, subtle, k, info)
        anatomy.apply_pit_and_swelling(thick, f, pit_depth, les.swell)
        b = anatomy.layer_boundaries(
            ra, W, geo, thick, t_scale, les.elev, les.rpe_extra, les.rpe_rough, les.gap
        )
        R, Rb, top, hb, gain = anatomy.retina_band(
            ra, ri, H, W, b, refl, les.ez_gain, les.gap, les.gap_val, les.elev, les.sub_rpe_val
        )
        R = anatomy.choroid_and_sclera(ra, ri, H, W, geo, b.bm, R, Rb, top, hb, z)
        if scene is not None:
            scene.bounds = b.bounds.copy()
        R, absorb, first_row = lesions.paint_lesion_objects(
            ra, R, H, W, geo, b, les, int(top.min()), None if scene is None else scene.cysts
        )
        # 2, 3. attenuation, gain, noise floor and speckle, on the requested columns only
        intensity = formation.form_intensity(
            ra, ri, R, absorb, cs, first_row, H, W, z, gain, les.shadow_cols, b.rpe_bottom
        )
        # 4, 5. display: log transform, clip, quantise, padding, JPEG
        out = display.to_display(
            ri,
            intensity,
            self.padding_prob,
            self.jpeg_quality,
            x_first,
            W,
            None if scene is None else scene.padding,
        )
        info.update({"fovea_x": float(geo.xf), "bruch_depth": float(geo.z_c), "gain": gain})
        return out, info

    # the stage helpers, where they were before the split
    _noise1d = staticmethod(noise1d)
    _noise2d = staticmethod(noise2d)
    _paint_ellipse = staticmethod(paint_ellipse)
    _speckle = staticmethod(formation.speckle)
    _registration_padding = staticmethod(display.registration_padding)


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm progress bar of ``total`` steps (a silent stand-in when disabled or without tqdm)."""
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=not enabled, desc=desc, unit="img")
    except ImportError:  # pragma: no cover - tqdm is a dependency
        warnings.warn("tqdm is not installed: no progress bar.", stacklevel=2)

        class _Null:
            def update(self, n: int) -> None: ...

            def close(self) -> None: ...

        return _Null()
