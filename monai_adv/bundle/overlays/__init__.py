"""Config overlays shipped with the package, stacked on a bundle's own configs with MONAI's syntax::

    python -m monai.bundle run --config_file "['configs/inference.yaml', '<overlay path>']" ...

``python -m monai_adv.bundle overlay NAME`` prints an overlay's path (``$(...)`` in a shell command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["OVERLAY_DIR", "available_overlays", "overlay_path", "add_commands"]

#: the folder of the shipped overlays
OVERLAY_DIR = Path(__file__).resolve().parent


def available_overlays() -> list[str]:
    """The names of the shipped overlays (their file names without ``.json``)."""
    return sorted(p.stem for p in OVERLAY_DIR.glob("*.json"))


def overlay_path(name: str) -> Path:
    """The path of the shipped overlay ``name`` (e.g. ``"robustness"``, ``"adversarial_training"``).

    Raises:
        ValueError: for an unknown overlay, listing the shipped ones.
    """
    path = OVERLAY_DIR / f"{Path(name).stem}.json"
    if not path.is_file():
        raise ValueError(f"no overlay {name!r}; the package ships {available_overlays()}.")
    return path


def add_commands(sub: Any) -> dict[str, Any]:
    """Register ``overlay`` on the ``python -m monai_adv.bundle`` sub-parsers."""
    o = sub.add_parser("overlay", help="print the path of a shipped config overlay (for monai.bundle run)")
    o.add_argument("name", help=f"one of {', '.join(available_overlays())}")

    def run(args: Any, extra: list[str], parser: Any) -> int:
        try:
            print(overlay_path(args.name))
        except ValueError as e:
            parser.exit(2, f"error: {e}\n")
        return 0

    return {"overlay": run}
