"""One run per output folder: a lock that names its holder and dies with it.

Two runs writing one folder would process every video twice and race on the same clip files. The
lock is an advisory `flock` on `<out>/.lock`: the kernel drops it when its holder exits in any way
(crash, SIGKILL, power loss on a local disk), so a crashed run never leaves a folder stuck, and
no stale-lock guessing by pid or age is needed. The file holds who has the lock (command, pid,
host, start time) so the refused run can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = ".lock"


class OutputBusy(RuntimeError):
    """Another run holds the output folder; the message names it."""


def _holder() -> dict:
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else "python",
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']} ({info['command']}, since {info['started']})"
    except (ValueError, KeyError, TypeError):
        return "another run (it has not said who it is yet)"


@contextmanager
def output_lock(out_dir: str | os.PathLike):
    """Hold `out_dir` for this run; raises OutputBusy naming the holder when another run has it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / LOCK_FILE
    # Held through a read-only descriptor: flock needs no write access, and a file held open
    # for writing would keep the filesystem from being remounted read-only under the run.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        finally:
            os.close(fd)
        raise OutputBusy(f"output folder {out_dir} is in use by {describe_holder(text)}; "
                         f"wait for that run to end or stop it, then re-run to resume") from None
    try:
        try:
            # Who holds it, for the run that is refused. Only read while the lock is held, so
            # what a finished run leaves here is never shown.
            with open(path, "w") as fh:
                fh.write(json.dumps(_holder()))
        except OSError:
            pass  # an unwritable folder is the command's own error to report
        yield path
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
