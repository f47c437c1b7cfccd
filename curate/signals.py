"""SIGINT and SIGTERM end a run the documented way: one line, exit 130 or 143, Ray stopped.

The handlers raise `Interrupted` (a BaseException, so no `except Exception` in a stage or a
library swallows it) in the main thread; the CLI catches it, stops Ray, prints one line and
exits 128 + the signal number, the shell's convention. Finished parts are whole (every write is
atomic), so re-running resumes. Ray installs its own SIGTERM handler when it starts, so the runner
installs these again right after `ray.init`. A second signal while the run is stopping exits at
once with the same status.
"""

from __future__ import annotations

import os
import signal
import threading

EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
_installed = False


class Interrupted(BaseException):
    """The run was asked to stop by a signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_status = 128 + signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _stopping(signum, frame):  # pragma: no cover - runs only on a second signal
    os._exit(128 + signum)


def _handler(signum, frame):
    # From here on the run is stopping: a second signal does not wait for the cleanup.
    signal.signal(signal.SIGINT, _stopping)
    signal.signal(signal.SIGTERM, _stopping)
    raise Interrupted(signum)


_previous: dict = {}


def install() -> None:
    """Install the handlers (main thread only; elsewhere a no-op); `restore` puts back the old ones."""
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.signal(sig, _handler)
        if not _installed:
            _previous[sig] = previous
    _installed = True


def restore() -> None:
    """The handlers from before `install` (a CLI called in-process leaves its caller's alone)."""
    global _installed
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    for sig, previous in _previous.items():
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
    _previous.clear()
    _installed = False


def reinstall() -> None:
    """Put the handlers back after a library (Ray) replaced them; only if a CLI installed them."""
    if _installed:
        install()
