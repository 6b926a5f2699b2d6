"""Keys of the robust evaluation output (``engine.state.output``)."""

from __future__ import annotations

__all__ = ["RobustKeys"]


class RobustKeys:
    """Keys of a :class:`~monai_adv.engines.RobustEvaluator` output item.

    Clean quantities use the plain keys; the quantities of attack ``name`` use ``adv(key, name)``,
    i.e. ``"<key>/<name>"`` (``"pred/pgd"``, ``"uad_score/pgd"``, ...).
    """

    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    SCORE = "uad_score"
    FLAG = "uad_flag"

    @staticmethod
    def adv(key: str, attack: str) -> str:
        """The key of ``key`` for the inputs attacked by ``attack``."""
        return f"{key}/{attack}"
