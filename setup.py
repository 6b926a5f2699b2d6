"""Build hook: ship every bundle under ``bundles/`` (configs, docs, licence) inside the wheel as package data.

The bundles live in ``bundles/<name>/`` (MONAI bundle folders, as the repository layout has them); a
wheel gets a copy of their static files under ``monai_adv/bundle/resources/<name>/`` so that
``python -m monai_adv.bundle demo`` (and ``init``) run from any folder after ``pip install monai-adv``.
No bundle is named here: the folders and their files come from ``monai_adv/bundle/locate.py``
(:func:`find_bundle_dirs`, :func:`shipped_bundle_files`), the same discovery the package uses at run
time, loaded by its path (it needs only the standard library). Everything else is declared in
``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def _locate():
    """``monai_adv/bundle/locate.py``, loaded by its path (importing ``monai_adv`` would import torch)."""
    name = "_monai_adv_bundle_locate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "monai_adv" / "bundle" / "locate.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def bundle_package_files(bundles_root: Path) -> dict[Path, Path]:
    """``{path inside the wheel's monai_adv/bundle/resources: source file}`` for every bundle under ``bundles_root``.

    Every folder of ``bundles_root`` that is a bundle (``configs/metadata.json`` and a train or
    inference config) ships its configs, docs and licence; nothing else under ``bundles_root`` ships.
    """
    locate = _locate()
    files: dict[Path, Path] = {}
    for bundle in locate.find_bundle_dirs(bundles_root):
        for rel in locate.shipped_bundle_files(bundle):
            files[Path(bundle.name) / rel] = bundle / rel
    return files


class BuildPyWithBundles(build_py):
    """``build_py`` that also copies the bundles' static files into ``monai_adv/bundle/resources``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install finds the checkout's bundle folders directly
        resources = Path(self.build_lib) / "monai_adv" / "bundle" / "resources"
        shipped = bundle_package_files(HERE / "bundles")
        for dst, src in shipped.items():
            target = resources / dst
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        for bundle in {dst.parts[0] for dst in shipped}:
            (resources / bundle / "models").mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import it for bundle_package_files
    setup(cmdclass={"build_py": BuildPyWithBundles})
