# Copyright (c) monai-adv developers.
# Licensed under the Apache License, Version 2.0.
"""The synthetic OCT data set on disk: the writer (Kermany folder layout, manifest) and its command line.

Command line::

    python -m monai_adv.apps.oct.synthetic --out DIR --n-train 200 --n-unlabeled 200 --n-test 50 --size 128
    python -m monai_adv.apps.oct.synthetic --out DIR --layers ...   # the segmentation layout, with label maps

Every file (images and the manifest) is written atomically through :mod:`monai_adv.io`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from monai_adv.apps.oct.synthetic.generator import GENERATOR_VERSION, SyntheticOCTGenerator, progress_bar
from monai_adv.apps.oct.synthetic.labels import OCT_LAYER_CLASSES
from monai_adv.apps.oct.utils import OCT_CLASSES
from monai_adv.io import atomic_open, atomic_write_text

__all__ = [
    "write_synthetic_oct_dataset",
    "DEFAULT_SPLITS",
    "UNLABELED_PREFIX",
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "SyntheticSetMismatchError",
    "IMAGES_DIR",
    "LABELS_DIR",
    "main",
]

#: Default number of images per class for each split written by :func:`write_synthetic_oct_dataset`.
DEFAULT_SPLITS: dict[str, int] = {"train": 100, "unlabeled": 300, "test": 50}
#: File-name prefix of images in the ``unlabeled`` split (their class is not revealed).
UNLABELED_PREFIX = "SCAN"
#: Name of the manifest file written at the data set root.
MANIFEST_NAME = "synthetic_oct.json"
#: The manifest's ``"format"``: a manifest without it is not the writer's own, and nothing it lists is touched.
MANIFEST_FORMAT = "monai-adv synthetic OCT"
#: Folders of the segmentation layout (``layers=True``): ``<split>/images/`` and ``<split>/labels/``.
IMAGES_DIR, LABELS_DIR = "images", "labels"


class SyntheticSetMismatchError(FileExistsError):
    """The folder holds a synthetic set written with other arguments (seed, sizes, generator version)."""


def _split_counts(
    n_per_class: int | Mapping[str, int], splits: Sequence[str] | Mapping[str, int] | None
) -> dict[str, int]:
    if isinstance(splits, Mapping):
        counts = {str(k): int(v) for k, v in splits.items()}
    else:
        names = list(DEFAULT_SPLITS) if splits is None else [str(s) for s in splits]
        if isinstance(n_per_class, Mapping):
            counts = {s: int(n_per_class[s]) for s in names if s in n_per_class}
            missing = [s for s in names if s not in n_per_class]
            if missing:
                raise ValueError(f"n_per_class has no count for split(s) {missing}.")
        else:
            counts = {s: int(n_per_class) for s in names}
    if not counts:
        raise ValueError("no splits to write.")
    for s, n in counts.items():
        if n < 0:
            raise ValueError(f"the number of images per class must be >= 0, got {n} for split {s!r}.")
        if not s or "/" in s or "\\" in s or s.startswith("."):
            raise ValueError(f"invalid split name {s!r}.")
    return counts


def _plan(
    counts: dict[str, int], images_per_patient: int, layers: bool = False
) -> list[tuple[str, int, int, int, str]]:
    """(split, class index, image index, patient id, relative path) for every image, in a fixed order.

    The path has no extension; with ``layers`` it lies in the split's ``images/`` folder (the label map
    has the same name in ``labels/``).
    """
    plan = []
    for si, (split, n) in enumerate(counts.items()):
        for ci, cname in enumerate(OCT_CLASSES):
            for i in range(n):
                pid = 100000 * (si + 1) + 10000 * ci + i // images_per_patient
                num = i % images_per_patient + 1
                if split == "unlabeled":
                    name = f"{UNLABELED_PREFIX}-{pid}-{num}"
                    rel = f"{split}/{IMAGES_DIR}/{name}" if layers else f"{split}/{name}"
                else:
                    name = f"{cname}-{pid}-{num}"
                    rel = f"{split}/{IMAGES_DIR}/{name}" if layers else f"{split}/{cname}/{name}"
                plan.append((split, ci, i, pid, rel))
    return plan


def _label_path(image_rel: str) -> str:
    """The label map beside an image of the segmentation layout: ``<split>/labels/<name>.png``."""
    split, _, name = image_rel.split("/", 2)
    return f"{split}/{LABELS_DIR}/{name.rsplit('.', 1)[0]}.png"


def _render_job(args: tuple) -> tuple[str, str, str | None, str | None]:
    (gen_kwargs, seed, si, ci, i, pid, images_per_patient, path, fmt, quality, label_path) = args
    gen = SyntheticOCTGenerator(seed=None, **gen_kwargs)
    img_seed = np.random.SeedSequence(seed, spawn_key=(si, ci, i))
    pat_seed = np.random.SeedSequence(seed, spawn_key=(si, ci, 10_000_000 + i // images_per_patient))
    if label_path is None:
        img = gen.sample(ci, img_seed, patient_seed=pat_seed)
    else:
        img, layers = gen.sample(ci, img_seed, patient_seed=pat_seed, return_layers=True)
    arr = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    with atomic_open(path, "wb") as fh:
        if fmt == "jpeg":
            Image.fromarray(arr).save(fh, format="JPEG", quality=quality)
        else:
            Image.fromarray(arr).save(fh, format="PNG")
    if label_path is None:
        return path, _sha1(path), None, None
    with atomic_open(label_path, "wb") as fh:
        Image.fromarray(layers).save(fh, format="PNG")  # 8-bit indices, lossless
    return path, _sha1(path), label_path, _sha1(label_path)


def _inside(root: Path, path: Path) -> bool:
    """Whether ``path``, with every link resolved, lies inside ``root`` (links resolved too)."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _make_folder_inside(root: Path, folder: Path) -> None:
    """Create ``folder`` under ``root``, refusing one that is (or passes through) a link leading out of it."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if _inside(root, existing):  # check before creating anything, and again after (a link made meanwhile)
        folder.mkdir(parents=True, exist_ok=True)
    if not _inside(root, folder):
        raise FileExistsError(
            f"{folder} leads out of the data set folder {root} (a symbolic link, to {folder.resolve()}): the "
            "synthetic writer writes only inside its own folder; remove the link or choose another folder."
        )


def _remove_own_files(root: Path, manifest: Mapping[str, Any]) -> None:
    """Remove the files an old manifest lists, but only those the writer wrote.

    A listed path is removed only when it is relative, resolves (links included) inside ``root``, and
    the file there still has the SHA-1 the manifest recorded for it; anything else (an absolute or
    ``../`` path, a link out of the folder, a file changed since, a path with no checksum) is left
    alone with a warning.
    """
    skipped = []
    for f in manifest.get("files") or []:
        if not isinstance(f, Mapping):
            continue
        for key, sha_key in (("path", "sha1"), ("layers", "layers_sha1")):
            rel = f.get(key)
            if not rel:
                continue
            rel_s = str(rel)
            p = root / rel_s
            if os.path.isabs(rel_s) or ".." in Path(rel_s).parts or not _inside(root, p):
                skipped.append(f"{rel_s} (outside {root})")
                continue
            if p.is_symlink() or not p.is_file():
                continue
            if f.get(sha_key) is None or _sha1(p) != f.get(sha_key):
                skipped.append(f"{rel_s} (not the file the writer recorded)")
                continue
            p.unlink()
    if skipped:
        warnings.warn(
            f"the old manifest of {root} lists {len(skipped)} file(s) the synthetic writer did not write, left "
            f"untouched: {', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}",
            stacklevel=3,
        )


def _sha1(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha1(fh.read()).hexdigest()


def write_synthetic_oct_dataset(
    root: str | os.PathLike,
    n_per_class: int | Mapping[str, int] = 100,
    image_size: int = 224,
    seed: int = 0,
    splits: Sequence[str] | Mapping[str, int] | None = None,
    image_format: str = "jpeg",
    jpeg_quality: int = 95,
    images_per_patient: int = 1,
    num_workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
    verify: bool = True,
    layers: bool = False,
    **generator_kwargs: Any,
) -> dict[str, Any]:
    """Write a synthetic OCT data set in the Kermany folder layout, or with layer label maps for segmentation.

    Layout: ``root/<split>/<CLASS>/<CLASS>-<PATIENT>-<N>.<ext>`` for labeled splits, and
    ``root/unlabeled/SCAN-<PATIENT>-<N>.<ext>`` (no class folders, no class in the name) for the split
    called ``unlabeled``; ``root/synthetic_oct.json`` records the arguments (and
    :data:`GENERATOR_VERSION`: a set written by an older generator counts as different arguments), the
    files, their labels
    (also the hidden labels of the unlabeled split, for analysis) and their SHA-1.

    With ``layers=True`` the segmentation layout: ``root/<split>/images/<CLASS>-<PATIENT>-<N>.<ext>``
    and beside it the layer label map ``root/<split>/labels/<CLASS>-<PATIENT>-<N>.png`` (8-bit PNG of
    indices into :data:`~monai_adv.apps.oct.synthetic.labels.OCT_LAYER_CLASSES`, pixel for pixel with the
    image; see :meth:`SyntheticOCTGenerator.sample`); the ``unlabeled`` split has ``images/`` only. The
    manifest lists the label map of each image (``"layers"``, with its ``"layers_sha1"``) and the
    layer classes; :func:`~monai_adv.apps.oct.segmentation_datalist` reads the layout.

    Idempotent: a second call with the same arguments finds the manifest, checks that every file is
    there with the recorded checksum (``verify``) and returns without rendering; missing or damaged
    files are rendered again. Images depend only on ``seed`` and their position, not on
    ``num_workers``.

    Args:
        root: output folder.
        n_per_class: images per class, for every split, or a mapping ``{split: n}``.
        image_size: side length of the written square images.
        seed: seed of the whole data set.
        splits: split names (default ``("train", "unlabeled", "test")``), or a mapping ``{split: n}``
            that overrides ``n_per_class``.
        image_format: ``"jpeg"`` (as Kermany) or ``"png"`` (lossless).
        jpeg_quality: quality of the written JPEG files.
        images_per_patient: consecutive images of a class share one synthetic eye (patient id).
        num_workers: processes used to render; ``None`` uses all available cores (at most 8).
        progress: show a tqdm progress bar.
        overwrite: replace an existing data set written with different arguments.
        verify: check the SHA-1 of existing files when reusing a data set.
        layers: write the layer label maps, in the segmentation layout.
        generator_kwargs: passed to :class:`SyntheticOCTGenerator` (e.g. ``severity``, ``padding_prob``).

    Returns:
        the manifest (a dict, also written to ``root/synthetic_oct.json``).

    Raises:
        ValueError: for bad counts, split names, format or patient grouping.
        SyntheticSetMismatchError: (a ``FileExistsError``) when ``root`` holds a data set written with
            different arguments and ``overwrite`` is false.
        FileExistsError: when ``root`` is not empty and holds no manifest of the writer (it is not a
            synthetic set: nothing is written there), or a split folder in it links out of it.
    """
    fmt = str(image_format).lower().lstrip(".")
    fmt = {"jpg": "jpeg"}.get(fmt, fmt)
    if fmt not in ("jpeg", "png"):
        raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}.")
    if int(image_size) < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}.")
    if int(images_per_patient) < 1:
        raise ValueError(f"images_per_patient must be >= 1, got {images_per_patient}.")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in [1, 100], got {jpeg_quality}.")
    counts = _split_counts(n_per_class, splits)
    root = Path(root)
    ext = ".jpeg" if fmt == "jpeg" else ".png"
    gen_kwargs = {"image_size": int(image_size), **generator_kwargs}
    SyntheticOCTGenerator(seed=None, **gen_kwargs)  # validate the generator arguments early
    args = {
        "n_per_class": counts,
        "image_size": int(image_size),
        "seed": int(seed),
        "image_format": fmt,
        "jpeg_quality": int(jpeg_quality),
        "images_per_patient": int(images_per_patient),
        "generator": {k: (list(v) if isinstance(v, tuple) else v) for k, v in generator_kwargs.items()},
        "generator_version": GENERATOR_VERSION,
    }
    if layers:  # only then: the arguments of a classification set stay what they were
        args["layers"] = True
    args = json.loads(json.dumps(args))
    manifest_path = root / MANIFEST_NAME
    old: dict[str, Any] | None = None
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is not a folder: the synthetic set is not written there.")
    if manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
            if not isinstance(old, dict) or old.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"not a manifest of the synthetic OCT writer (format {MANIFEST_FORMAT!r})")
        except (OSError, ValueError) as e:
            raise FileExistsError(
                f"unreadable manifest {manifest_path}: {e}; the folder is left untouched: remove the manifest "
                "(and the files it lists) yourself, or choose another folder."
            ) from e
        if old.get("arguments") != args:
            if not overwrite:
                raise SyntheticSetMismatchError(
                    f"{root} holds a synthetic OCT data set written with different arguments "
                    f"({old.get('arguments')}; generator version "
                    f"{(old.get('arguments') or {}).get('generator_version', 1)}, this is "
                    f"{GENERATOR_VERSION}); pass overwrite=True or choose another folder."
                )
            _remove_own_files(root, old)
            old = None
    elif root.is_dir() and any(True for _ in os.scandir(root)):
        raise FileExistsError(
            f"{root} is not empty and holds no {MANIFEST_NAME}: it is not a synthetic set written by monai-adv, "
            "so nothing is written there (a real data set would be mixed with synthetic images). Point "
            "--synthetic_dir (or the writer's root) at a new or empty folder."
        )

    plan = _plan(counts, int(images_per_patient), bool(layers))
    known = {f["path"]: f.get("sha1") for f in (old or {}).get("files", [])}
    known_layers = {f["path"]: f.get("layers_sha1") for f in (old or {}).get("files", [])}
    todo = []
    records: dict[str, dict[str, Any]] = {}
    split_idx = {s: i for i, s in enumerate(counts)}
    for split, ci, i, pid, rel in plan:
        relp = rel + ext
        rec = {"path": relp, "split": split, "label": ci, "class": OCT_CLASSES[ci], "patient": pid}
        if split == "unlabeled":
            rec = {"path": relp, "split": split, "hidden_label": ci, "class": OCT_CLASSES[ci], "patient": pid}
        label_rel = _label_path(relp) if layers and split != "unlabeled" else None
        if label_rel is not None:
            rec["layers"] = label_rel
        records[relp] = rec
        p = root / relp
        ok = p.is_file() and known.get(relp) is not None
        if ok and verify:
            ok = _sha1(p) == known[relp]
        if ok and label_rel is not None:
            lp = root / label_rel
            ok = lp.is_file() and known_layers.get(relp) is not None
            if ok and verify:
                ok = _sha1(lp) == known_layers[relp]
        if ok:
            rec["sha1"] = known[relp]
            if label_rel is not None:
                rec["layers_sha1"] = known_layers[relp]
        else:
            _make_folder_inside(root, p.parent)
            if label_rel is not None:
                _make_folder_inside(root, (root / label_rel).parent)
            todo.append(
                (
                    gen_kwargs,
                    int(seed),
                    split_idx[split],
                    ci,
                    i,
                    pid,
                    int(images_per_patient),
                    str(p),
                    fmt,
                    int(jpeg_quality),
                    None if label_rel is None else str(root / label_rel),
                )
            )

    if todo and old is None:
        # the folder is ours from now on: a manifest naming every planned file (without checksums: they
        # are rendered again) goes first, so that a run killed while rendering is resumed, not refused
        pending = {
            "format": MANIFEST_FORMAT, "version": 1, "complete": False, "classes": list(OCT_CLASSES),
            "arguments": args, "files": [{k: v for k, v in records[rel + ext].items() if not k.endswith("sha1")}
                                         for *_, rel in plan],
        }  # fmt: skip
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest_path, json.dumps(pending, indent=1))
    if todo:
        workers = min(8, os.cpu_count() or 1) if num_workers is None else max(1, int(num_workers))
        workers = min(workers, len(todo))
        bar = progress_bar(len(todo), progress, f"synthetic OCT -> {root}")
        try:
            if workers == 1:
                results = []
                for job in todo:
                    results.append(_render_job(job))
                    bar.update(1)
            else:
                results = []
                with ProcessPoolExecutor(max_workers=workers) as ex:
                    for r in ex.map(_render_job, todo, chunksize=max(1, len(todo) // (workers * 8))):
                        results.append(r)
                        bar.update(1)
        finally:
            bar.close()
        for path, digest, _, layers_digest in results:
            rec = records[Path(path).relative_to(root).as_posix()]
            rec["sha1"] = digest
            if layers_digest is not None:
                rec["layers_sha1"] = layers_digest

    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "complete": True,
        "classes": list(OCT_CLASSES),
        "arguments": args,
        "counts": {s: n * len(OCT_CLASSES) for s, n in counts.items()},
        "files": [records[rel + ext] for *_, rel in plan],
    }
    if layers:
        manifest["layer_classes"] = list(OCT_LAYER_CLASSES)
    if todo or old is None or old.get("complete") is False:
        atomic_write_text(manifest_path, json.dumps(manifest, indent=1))
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: ``python -m monai_adv.apps.oct.synthetic --out DIR ...``."""
    p = argparse.ArgumentParser(
        prog="python -m monai_adv.apps.oct.synthetic",
        description="Write a synthetic retinal OCT data set (CNV/DME/DRUSEN/NORMAL) in the Kermany folder layout.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-train", type=int, default=DEFAULT_SPLITS["train"], help="train images per class")
    p.add_argument(
        "--n-unlabeled", type=int, default=DEFAULT_SPLITS["unlabeled"], help="unlabeled images per class"
    )
    p.add_argument("--n-test", type=int, default=DEFAULT_SPLITS["test"], help="test images per class")
    p.add_argument("--size", type=int, default=224, help="side length of the square images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="jpeg", choices=["jpeg", "png"])
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--images-per-patient", type=int, default=1)
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    p.add_argument("--overwrite", action="store_true", help="replace a data set written with other arguments")
    p.add_argument(
        "--layers",
        action="store_true",
        help="write the layer label maps: <split>/images/ and <split>/labels/ (segmentation layout)",
    )
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    splits = {"train": a.n_train, "unlabeled": a.n_unlabeled, "test": a.n_test}
    splits = {k: v for k, v in splits.items() if v > 0}
    if not splits:
        p.error("all split sizes are zero: nothing to write.")
    try:
        m = write_synthetic_oct_dataset(
            a.out,
            image_size=a.size,
            seed=a.seed,
            splits=splits,
            image_format=a.format,
            jpeg_quality=a.jpeg_quality,
            images_per_patient=a.images_per_patient,
            num_workers=a.workers,
            progress=not a.no_progress,
            overwrite=a.overwrite,
            layers=a.layers,
        )
    except (ValueError, FileExistsError) as e:
        print(f"error: {e}")
        return 2
    print(f"wrote {sum(m['counts'].values())} images to {a.out}: {m['counts']}")
    return 0
