"""Checks `lavie-curate` makes before any work: each failure is one line with its exit status.

Kept apart from the commands so each check is a small function a command calls first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from lavie.curate.lock import output_lock

EXIT_USAGE = 2
EXIT_BUSY = 3

# Commands whose output folder a run writes, by the argument that names it.
_OUTPUTS = {"scenes": "out", "filter": "out", "caption": "out", "run": "out", "report": "out", "import": "out"}


def check_config_file(path: str | os.PathLike | None) -> None:
    """A `-c` file that is missing, a folder or unreadable is a usage error (exit 2), not an output one."""
    if path is None:
        return
    path = Path(path)
    if not path.exists():
        raise ValueError(f"config file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"config file {path} is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"config file {path} is not readable (permission denied)")


def output_folder(args: argparse.Namespace) -> Path | None:
    attr = _OUTPUTS.get(args.command)
    out = getattr(args, attr, None) if attr else None
    if out is None:
        return None
    out = Path(out)
    return None if out.suffix == ".parquet" else out  # a single manifest file: no folder to hold


@contextlib.contextmanager
def locked_output(args: argparse.Namespace):
    """Hold the command's output folder for the whole run (see `lavie.curate.lock`)."""
    out = output_folder(args)
    if out is None:
        yield None
        return
    try:
        lock = output_lock(out)
        held = lock.__enter__()
    except OSError:
        # A folder that cannot be created is the command's own one-line error to report.
        yield None
        return
    try:
        yield held
    finally:
        lock.__exit__(None, None, None)
