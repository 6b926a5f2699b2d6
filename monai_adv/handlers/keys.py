"""Keys of the robust evaluation output (``engine.state.output``); defined in :mod:`monai_adv.keys`."""

from __future__ import annotations

from monai_adv.keys import RobustKeys

__all__ = ["RobustKeys"]
