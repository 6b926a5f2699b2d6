"""What both bundle test files run: the ``monai.bundle`` CLI in a bundle folder, and its configs through
``ConfigWorkflow`` (with the bundle's quick config), and a readable chain of an error's causes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import subprocess_env

#: every bundle's smoke-size override
QUICK = "configs/quick.json"
CLI_TIMEOUT = 300


def run_cli(args: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` (or another module when args start with ``-m``) in ``cwd``."""
    cmd = [sys.executable, *(args if args[0] == "-m" else ["-m", "monai.bundle", *args])]
    proc = subprocess.run(
        cmd, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=CLI_TIMEOUT
    )
    if ok and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def workflow(bundle: Path, files: list[str], workflow_type: str, **override):
    """A ``ConfigWorkflow`` of ``configs/<f>.json`` for each of ``files``, plus the quick config."""
    from monai.bundle import ConfigWorkflow

    return ConfigWorkflow(
        config_file=[str(bundle / "configs" / f"{f}.json") for f in files] + [str(bundle / QUICK)],
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(bundle),
        **override,
    )


def causes(e: BaseException | None) -> str:
    """An exception and its causes, one per line (MONAI wraps config errors in several layers)."""
    msgs = []
    while e is not None:
        msgs.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return "\n".join(msgs)
