"""Bundle input errors that the user reads first: one ERROR log line, and the cause as the last line printed.

MONAI's config parser reports an error raised inside a config expression as its own ``RuntimeError:
Failed to evaluate ConfigExpression`` at the end of a long traceback. :func:`input_error` logs the
actual problem as one ERROR line when it happens and, should the exception end the program, prints it
again as the very last line, after the traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["BundleInputError", "input_error"]

logger = logging.getLogger("monai_adv.bundle")


class BundleInputError(ValueError):
    """Bad input to a bundle run (data set folder, label fraction, ...): the message says what and where."""


def _chain(e: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _install_hook() -> None:
    if getattr(sys.excepthook, "_monai_adv", False):
        return
    previous = sys.excepthook

    def hook(etype: type[BaseException], value: BaseException, tb: Any) -> None:
        previous(etype, value, tb)
        causes = [e for e in _chain(value) if getattr(e, "_monai_adv_input_error", False)]
        if causes:
            print(f"ERROR: {causes[-1]}", file=sys.stderr, flush=True)

    hook._monai_adv = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def input_error(exc: BaseException) -> BaseException:
    """Log ``exc`` as one ERROR line, mark it to be repeated as the last line of an uncaught traceback, return it.

    Usage: ``raise input_error(FileNotFoundError(f"dataset_dir {path!r} does not exist ..."))``.
    """
    logger.error(str(exc))
    exc._monai_adv_input_error = True  # type: ignore[attr-defined]
    _install_hook()
    return exc
