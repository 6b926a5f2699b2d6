"""Build hook: ship the OCT bundles (configs, docs, licence) inside the wheel as package data.

The bundles live in ``bundles/oct_robust_classification`` and ``bundles/oct_layer_segmentation`` (MONAI
bundle folders, as the repository layout has them); a wheel gets a copy of their static files under
``monai_adv/bundle/resources/`` so that ``python -m monai_adv.bundle demo`` (and ``init``) run from any
folder after ``pip install monai-adv``. Everything else is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLES = (Path("bundles") / "oct_robust_classification", Path("bundles") / "oct_layer_segmentation")
#: the bundle's files that ship (its data, models and reports are made by the user's runs)
BUNDLE_FILES = ("configs/*.json", "configs/*.conf", "docs/*.md", "docs/*.txt", "LICENSE")


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies the bundles' static files into ``monai_adv/bundle/resources``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install uses the checkout's bundle folders directly
        for bundle in BUNDLES:
            if not bundle.is_dir():
                continue
            target = Path(self.build_lib) / "monai_adv" / "bundle" / "resources" / bundle.name
            for pattern in BUNDLE_FILES:
                for src in sorted(bundle.glob(pattern)):
                    dst = target / src.relative_to(bundle)
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            (target / "models").mkdir(parents=True, exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithBundle})
