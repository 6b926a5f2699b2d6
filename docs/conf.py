"""Sphinx configuration of the monai-adv API site (``make docs``).

The guide pages are the Markdown files in this folder; the README and the tutorials (notebooks,
shown with their stored outputs, not executed) are copied into ``_generated/`` at build time, with
their relative links rewritten to work from there. The API pages are in ``api/``, one per package.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import monai_adv  # noqa: E402

project = "monai-adv"
author = "monai-adv developers"
copyright = "monai-adv developers"
release = version = monai_adv.__version__
SOURCE_URL = "https://github.com/monai-adv/monai-adv/blob/main/"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_nb",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"

# autodoc: the public names of each package (its __all__), Google-style docstrings through napoleon
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# MyST and notebooks: render what is stored, never execute (the test suite runs the notebooks)
nb_execution_mode = "off"
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath", "colon_fence"]

html_theme = "alabaster"
html_title = f"monai-adv {release}"
html_static_path: list[str] = []

_LINK = re.compile(r"(\]\()([^)\s#]+)([^)]*\))")
_IMAGES = {".png", ".jpg", ".jpeg", ".svg", ".gif"}


def _rewrite_links(text: str, src: Path, dst: Path) -> str:
    """Relative links of ``src`` made to work from ``dst``: to pages in docs/ relatively, else to the source."""

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if "://" in target or target.startswith(("mailto:", "/")):
            return m.group(0)
        path = (src.parent / target).resolve()
        if not path.exists():
            return m.group(0)
        if DOCS in path.parents or path == DOCS:
            return m.group(1) + os.path.relpath(path, dst.parent) + m.group(3)
        if path.suffix.lower() in _IMAGES and ROOT in path.parents:
            # a figure kept beside its experiment: copied into the site, so that the page shows it offline
            copy = DOCS / "_generated" / "assets" / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
            return m.group(1) + os.path.relpath(copy, dst.parent) + m.group(3)
        return m.group(1) + SOURCE_URL + path.relative_to(ROOT).as_posix() + m.group(3)

    return _LINK.sub(fix, text)


def _copy_pages() -> None:
    """Copy the README, the tutorials and the experiments' write-ups into ``_generated/`` (links rewritten)."""
    out = DOCS / "_generated"
    shutil.rmtree(out, ignore_errors=True)
    (out / "tutorials").mkdir(parents=True)
    pages = [(ROOT / "README.md", out / "readme.md")]
    pages += [(p, out / "tutorials" / p.name) for p in sorted((ROOT / "tutorials").glob("*.md"))]
    # each experiment's write-up (its README and any other page of its folder) is a guide page
    for folder in sorted(
        p for p in (ROOT / "experiments").iterdir() if p.is_dir() and (p / "README.md").is_file()
    ):
        (out / "experiments" / folder.name).mkdir(parents=True, exist_ok=True)
        pages += [(md, out / "experiments" / folder.name / md.name) for md in sorted(folder.glob("*.md"))]
    for src, dst in pages:
        dst.write_text(_rewrite_links(src.read_text(encoding="utf-8"), src, dst), encoding="utf-8")
    for nb in sorted((ROOT / "tutorials").glob("*.ipynb")):
        shutil.copy2(nb, out / "tutorials" / nb.name)


_copy_pages()


# every public name (each package's __all__) must have an entry in the API pages
_API_PAGES = {
    **{p: p for p in ("transforms", "engines", "detectors", "metrics", "handlers", "visualize", "bundle")},
    "apps.oct": "data",
    **{m: "core" for m in ("utils", "keys", "io", "distributed", "precision")},
}


def _check_public_names(app, exception) -> None:
    if exception is not None or app.builder.name != "html":
        return
    import importlib

    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    for module, page in _API_PAGES.items():
        html = (Path(app.outdir) / "api" / f"{page}.html").read_text(encoding="utf-8")
        mod = importlib.import_module(f"monai_adv.{module}")
        missing = [n for n in mod.__all__ if f'id="monai_adv.{module}.{n}"' not in html]
        if missing:
            logger.warning(f"public names of monai_adv.{module} missing from api/{page}: {missing}")


def setup(app):
    app.connect("build-finished", _check_public_names)
    return {"parallel_read_safe": True}
