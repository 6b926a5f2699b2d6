"""``python -m monai_adv.bundle <command>``: each command module registers its own sub-command.

A command module has ``add_commands(subparsers) -> {command name: run}`` with
``run(args, extra, parser) -> exit code``; ``extra`` holds the ``--KEY VALUE`` arguments argparse did not
know (the bundle config overrides of ``audit`` and ``harden``), and a command that takes none refuses them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

__all__ = ["COMMAND_MODULES", "main"]

#: the modules whose ``add_commands`` make up the command line, in the order ``--help`` lists them
COMMAND_MODULES = (
    "monai_adv.bundle.audit",
    "monai_adv.bundle.compare",
    "monai_adv.bundle.demo",
    "monai_adv.bundle.harden",
    "monai_adv.bundle.overlays",
)

#: commands that take ``--KEY VALUE`` overrides of the bundle's config ids
TAKES_OVERRIDES: set[str] = {"audit", "harden"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``python -m monai_adv.bundle`` command (``--help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="python -m monai_adv.bundle",
        description="monai-adv's bundle tools: audit, harden, demos, compare.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    runners = {}
    for name in COMMAND_MODULES:
        runners.update(importlib.import_module(name).add_commands(sub))
    args, extra = parser.parse_known_args(argv)
    if extra and args.cmd not in TAKES_OVERRIDES:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return int(runners[args.cmd](args, extra, parser) or 0)
