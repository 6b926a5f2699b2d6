"""Build hook: ship the OCT bundle (configs, docs, licence) inside the wheel as package data.

The bundle lives in ``bundles/oct_robust_classification`` (a MONAI bundle folder, as the repository
layout has it); a wheel gets a copy of its static files under ``monai_adv/bundle/resources/`` so that
``python -m monai_adv.bundle demo`` runs from any folder after ``pip install monai-adv``. Everything
else is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLE = Path("bundles") / "oct_robust_classification"
#: the bundle's files that ship (its data, models and reports are made by the user's runs)
BUNDLE_FILES = ("configs/*.json", "configs/*.conf", "docs/*.md", "docs/*.txt", "LICENSE")


class BuildPyWithBundle(build_py):
    """``build_py`` that also copies the bundle's static files into ``monai_adv/bundle/resources``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or not BUNDLE.is_dir():
            return  # an editable install uses the checkout's bundle folder directly
        target = Path(self.build_lib) / "monai_adv" / "bundle" / "resources" / BUNDLE.name
        for pattern in BUNDLE_FILES:
            for src in sorted(BUNDLE.glob(pattern)):
                dst = target / src.relative_to(BUNDLE)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        (target / "models").mkdir(parents=True, exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithBundle})
