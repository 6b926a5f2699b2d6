"""Where the bundles are: found by scanning, never by name.

A bundle is a folder in MONAI's model-zoo layout (:func:`is_bundle_dir`: ``configs/metadata.json`` and a
``train`` or ``inference`` config). The package knows its bundles only by looking for them, in the
folders :func:`bundle_search_roots` names:

- ``monai_adv/bundle/resources/`` in an installed wheel (or a non-editable ``pip install .``):
  ``setup.py`` copies there every bundle folder under the repository's ``bundles/``
  (:func:`find_bundle_dirs`), with its static files and pretrained weights (:func:`shipped_bundle_files`);
- the repository's ``bundles/`` when the package runs from a source checkout (an editable install).

:func:`available_bundles` lists them by folder name. Each bundle describes itself in the
``"monai_adv"`` section of its ``metadata.json`` (:data:`METADATA_SECTION`, read by
:mod:`monai_adv.bundle.description`); the one whose section says ``"default": true`` is what ``demo``
and ``init`` use when no bundle is named (:func:`default_bundle_name`).

A bundle writes its data set, models and reports into its own folder, so it is never run in place
inside ``site-packages`` (or the checkout, unless asked): :func:`resolve_bundle_dir` copies it to a
working folder first (``./<bundle name>`` by default) and reuses that copy on later runs.

This module uses the standard library only: ``setup.py`` loads it by its path at build time, before
the package's dependencies are installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "METADATA_SECTION",
    "SHIPPED_FILE_PATTERNS",
    "is_bundle_dir",
    "find_bundle_dirs",
    "shipped_bundle_files",
    "shipped_weights",
    "sha256_of",
    "bundle_search_roots",
    "available_bundles",
    "bundle_section",
    "default_bundle_name",
    "find_bundle",
    "packaged_bundle_dir",
    "copy_bundle",
    "resolve_bundle_dir",
]

#: the key of a bundle's ``metadata.json`` that holds its self-description for monai-adv (MONAI
#: ignores keys it does not know)
METADATA_SECTION = "monai_adv"
#: the files of a bundle that ship in the wheel and the sdist, relative to the bundle folder (its data,
#: models and reports are made by the user's runs)
SHIPPED_FILE_PATTERNS = (
    "configs/*.json",
    "configs/*.yaml",
    "configs/*.yml",
    "configs/*.conf",
    "docs/*.md",
    "docs/*.txt",
    "LICENSE",
)
#: config file extensions MONAI's bundle parser reads
CONFIG_EXTENSIONS = (".json", ".yaml", ".yml")
#: what a bundle's runs write into its folder: never copied, never shipped (except the pretrained
#: weights that a ``models/<file>.sha256`` vouches for, :func:`shipped_weights`)
GENERATED = ("data", "runs", "eval", "quick", "logs", "__pycache__", "*.pt", "*.ts", "*.pyc")

#: the wheel's copy of the bundles
RESOURCES = Path(__file__).resolve().parent / "resources"


def is_bundle_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a bundle folder in MONAI's model-zoo layout.

    That is: ``configs/metadata.json`` and a ``configs/train`` or ``configs/inference`` config
    (``.json``, ``.yaml`` or ``.yml``).

    Args:
        path: the folder to check.
    """
    configs = Path(path) / "configs"
    if not (configs / "metadata.json").is_file():
        return False
    return any(
        (configs / f"{stem}{ext}").is_file() for stem in ("train", "inference") for ext in CONFIG_EXTENSIONS
    )


def find_bundle_dirs(root: str | os.PathLike) -> list[Path]:
    """The bundle folders directly under ``root``, sorted by name (none when ``root`` is not a folder).

    ``setup.py`` ships exactly these (from the repository's ``bundles/``); :func:`available_bundles`
    scans each search root with it. Hidden folders are skipped.

    Args:
        root: a folder holding bundle folders.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir() and is_bundle_dir(p))


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def shipped_weights(bundle_dir: str | os.PathLike, strict: bool = True) -> list[Path]:
    """The pretrained weights a bundle ships, relative to the bundle folder, each with its ``.sha256``.

    A file ``models/<name>`` ships when ``models/<name>.sha256`` lies beside it and holds its SHA-256
    (``sha256sum``'s format); the bundle's training runs write other files under ``models/``, which
    never ship.

    Args:
        bundle_dir: the bundle folder.
        strict: raise for a file that does not match its ``.sha256`` (at build time); otherwise such a
            file (e.g. retrained in place) is left out with a warning.

    Raises:
        ValueError: when ``strict`` and a file is missing or does not match its ``.sha256``.
    """
    root = Path(bundle_dir)
    found: list[Path] = []
    for sha in sorted(root.glob("models/*.sha256")):
        target = sha.with_name(sha.name[: -len(".sha256")])
        words = sha.read_text().split()
        problem = None
        if not target.is_file():
            problem = f"{str(target)!r} is missing"
        elif not words or sha256_of(target) != words[0].lower():
            problem = f"{str(target)!r} does not match {str(sha)!r} (damaged, or replaced by a training run)"
        if problem is None:
            found += [target.relative_to(root), sha.relative_to(root)]
        elif strict:
            raise ValueError(
                f"pretrained weights: {problem}; restore the file (git checkout) or write a new .sha256."
            )
        else:
            warnings.warn(f"pretrained weights not copied: {problem}.", stacklevel=2)
    return found


def shipped_bundle_files(bundle_dir: str | os.PathLike) -> list[Path]:
    """The files of a bundle that ship with the package, relative to the bundle folder, sorted.

    Those matching :data:`SHIPPED_FILE_PATTERNS` (its configs, docs and licence) and its pretrained
    weights (:func:`shipped_weights`), never its data set, reports or the models its runs train.

    Args:
        bundle_dir: the bundle folder.

    Raises:
        ValueError: for pretrained weights that do not match their ``.sha256``.
    """
    root = Path(bundle_dir)
    found = {
        p.relative_to(root) for pattern in SHIPPED_FILE_PATTERNS for p in root.glob(pattern) if p.is_file()
    }
    return sorted(found | set(shipped_weights(root)))


def _source_bundles_root() -> Path | None:
    """The repository's ``bundles/`` when this package runs from a source checkout, else None."""
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "bundles").is_dir():
        return repo / "bundles"
    return None


def bundle_search_roots() -> list[Path]:
    """The folders scanned for bundles, in order: the wheel's ``resources/``, then a checkout's ``bundles/``.

    Only those that exist are listed.
    """
    roots = [RESOURCES] if RESOURCES.is_dir() else []
    source = _source_bundles_root()
    if source is not None:
        roots.append(source)
    return roots


def available_bundles(roots: Iterable[str | os.PathLike] | None = None) -> dict[str, Path]:
    """The bundles this installation provides: ``{folder name: bundle folder}``, sorted by name.

    Args:
        roots: the folders to scan (default: :func:`bundle_search_roots`); when a name is found in
            several, the first root's bundle is the one listed.
    """
    found: dict[str, Path] = {}
    for root in bundle_search_roots() if roots is None else roots:
        for d in find_bundle_dirs(root):
            found.setdefault(d.name, d)
    return dict(sorted(found.items()))


def bundle_section(bundle_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``"monai_adv"`` section of a bundle's ``configs/metadata.json`` (``{}`` when it has none).

    Args:
        bundle_dir: the bundle folder.

    Raises:
        FileNotFoundError: when the bundle has no ``configs/metadata.json``.
        ValueError: when the file is not valid JSON, or the section is not a JSON object.
    """
    path = Path(bundle_dir) / "configs" / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} does not exist: a bundle describes itself in configs/metadata.json."
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{str(path)!r} is not valid JSON: {e}") from e
    section = meta.get(METADATA_SECTION, {}) if isinstance(meta, Mapping) else {}
    if not isinstance(section, Mapping):
        raise ValueError(
            f"{str(path)!r}: {METADATA_SECTION!r} must be a JSON object, got {type(section).__name__}."
        )
    return dict(section)


def _listing(bundles: Mapping[str, Path]) -> str:
    return ", ".join(bundles) if bundles else "none"


def _no_bundles_message() -> str:
    roots = bundle_search_roots()
    where = (
        ", ".join(str(r) for r in roots) if roots else "no bundle folder (not a wheel, not a source checkout)"
    )
    return (
        f"this installation of monai-adv provides no bundle (searched: {where}); pass a bundle folder instead"
    )


def default_bundle_name(roots: Iterable[str | os.PathLike] | None = None) -> str:
    """The bundle ``demo`` and ``init`` use when none is named.

    The one whose ``metadata.json`` section says ``"default": true``, or the only bundle there is.

    Args:
        roots: the folders to scan (default: :func:`bundle_search_roots`).

    Raises:
        FileNotFoundError: when no bundle is found.
        ValueError: when several bundles are found and none, or more than one, is marked default.
    """
    bundles = available_bundles(roots)
    if not bundles:
        raise FileNotFoundError(_no_bundles_message() + ".")
    marked = [n for n, d in bundles.items() if bundle_section(d).get("default") is True]
    if len(marked) == 1:
        return marked[0]
    if not marked and len(bundles) == 1:
        return next(iter(bundles))
    why = f"several are marked default ({', '.join(marked)})" if marked else "none is marked default"
    raise ValueError(f"name a bundle: {why} (available: {_listing(bundles)}).")


def find_bundle(name: str, roots: Iterable[str | os.PathLike] | None = None) -> Path:
    """The bundle folder named ``name`` among :func:`available_bundles`.

    Args:
        name: the bundle's folder name.
        roots: the folders to scan (default: :func:`bundle_search_roots`).

    Raises:
        FileNotFoundError: when no bundle is found at all.
        ValueError: for a name that is not among them; the message lists the available bundles.
    """
    bundles = available_bundles(roots)
    if not bundles:
        raise FileNotFoundError(_no_bundles_message() + f" (looking for bundle {name!r}).")
    if name not in bundles:
        raise ValueError(f"unknown bundle {name!r}; available: {_listing(bundles)}.")
    return bundles[name]


def packaged_bundle_dir(name: str | None = None) -> Path | None:
    """The read-only bundle ``name`` this installation provides, or None when it provides no bundle.

    The wheel's copy under ``monai_adv/bundle/resources/``, or in a source checkout (an editable
    install) the repository's ``bundles/<name>``.

    Args:
        name: the bundle's folder name (default: :func:`default_bundle_name`).

    Raises:
        ValueError: for a name that is not among :func:`available_bundles` (they are listed), or no
            name when no bundle is marked default.
    """
    if not available_bundles():
        return None
    return find_bundle(name if name is not None else default_bundle_name())


def copy_bundle(
    dst: str | os.PathLike, src: str | os.PathLike | None = None, name: str | None = None
) -> Path:
    """Copy a bundle (its configs, docs, licence, pretrained weights and anything else but data, trained models and reports) to ``dst``.

    The pretrained weights are those :func:`shipped_weights` finds (a file that no longer matches its
    ``.sha256`` is left out, with a warning).

    Args:
        dst: the new bundle folder; it must not exist yet, or be an empty folder.
        src: the bundle to copy (default: the bundle ``name`` this installation provides).
        name: which provided bundle, when ``src`` is None (default: :func:`default_bundle_name`).

    Returns:
        ``dst`` as a ``Path``.

    Raises:
        FileNotFoundError: when there is no bundle to copy.
        FileExistsError: when ``dst`` exists and is not empty.
        ValueError: for an unknown bundle name (the available ones are listed).
    """
    source = Path(src) if src is not None else packaged_bundle_dir(name)
    if source is None:
        raise FileNotFoundError(_no_bundles_message() + ".")
    if not is_bundle_dir(source):
        raise FileNotFoundError(
            f"no bundle to copy at {str(source)!r} (no configs/metadata.json with a configs/train or "
            "configs/inference config)."
        )
    target = Path(dst)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{str(target)!r} exists and is not empty; choose a new folder for the bundle.")
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*GENERATED), dirs_exist_ok=True)
    (target / "models").mkdir(exist_ok=True)
    for rel in shipped_weights(source, strict=False):
        shutil.copy2(source / rel, target / rel)
    return target


def resolve_bundle_dir(
    bundle_dir: str | os.PathLike | None = None,
    work_dir: str | os.PathLike | None = None,
    name: str | None = None,
) -> Path:
    """The bundle folder to run: ``bundle_dir`` when given, else a working copy of the provided bundle ``name``.

    Args:
        bundle_dir: an existing bundle folder (e.g. ``bundles/oct_robust_classification`` in a checkout).
        work_dir: where the provided bundle is copied to when ``bundle_dir`` is None: the copy is
            ``<work_dir>/<name>`` (default: the current folder), reused when it exists.
        name: the bundle (:func:`available_bundles`) when ``bundle_dir`` is None (default:
            :func:`default_bundle_name`).

    Raises:
        FileNotFoundError: when ``bundle_dir`` is not a bundle folder, or none is given and the
            installation provides no bundle.
        ValueError: for an unknown bundle name (the available ones are listed).
    """
    if bundle_dir is not None:
        root = Path(bundle_dir)
        if not is_bundle_dir(root):
            raise FileNotFoundError(
                f"{str(root)!r} is not a bundle folder (no configs/metadata.json with a configs/train or "
                "configs/inference config)."
            )
        return root
    if not available_bundles():
        raise FileNotFoundError(_no_bundles_message() + " (--bundle-dir DIR, bundle_dir=...).")
    name = name if name is not None else default_bundle_name()
    source = find_bundle(name)
    target = Path(work_dir if work_dir is not None else os.getcwd()) / name
    if is_bundle_dir(target):
        return target
    print(
        f"copying the bundle {name} to {target} (its data, models and reports are written there)", flush=True
    )
    return copy_bundle(target, src=source)


def __getattr__(attr: str) -> Any:
    # BUNDLE_NAMES was a hard-coded tuple of the two OCT bundles; it is now what discovery finds
    if attr == "BUNDLE_NAMES":
        warnings.warn(
            "monai_adv.bundle.locate.BUNDLE_NAMES is deprecated: use available_bundles().",
            DeprecationWarning,
            stacklevel=2,
        )
        return tuple(available_bundles())
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
