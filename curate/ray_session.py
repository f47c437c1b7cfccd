"""A local Ray that keeps to itself and leaves nothing behind.

- **Loopback only.** A local Ray (no `--ray-address`) listens on 127.0.0.1: Ray picks the
  loopback address for its servers when cluster mode is off (its own switch,
  `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), which is what a single-machine run wants. Joining a
  cluster is untouched.
- **No orphans.** A run killed with SIGKILL cannot stop its Ray; its workers would live on for
  about a minute. A small watcher process, in its own session so a process-group kill spares it,
  holds a pipe from the run: when the pipe closes (the run ended, however), it kills whatever
  process still belongs to that Ray session.
- **No growing /tmp/ray.** Session folders of Ray sessions that no running process belongs to are
  removed when a new local Ray starts (those older than `PRUNE_AGE_S`, so a session that is
  still starting up is never touched).

This module does not import Ray: `lavie.curate.runner` calls it around `ray.init`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
PRUNE_AGE_S = 600.0


def ray_temp_root() -> Path:
    """Where a local Ray keeps its session folders (Ray's own rule: $RAY_TMPDIR, $TMPDIR, /tmp)."""
    base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return Path(base) / "ray"


def _cmdlines():
    """(pid, command line bytes) of every process this user can see."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                yield int(entry), fh.read()
        except OSError:
            continue


def _environ_has(pid: int, needles: list[bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read().split(b"\0")
    except OSError:
        return False
    return any(n in env for n in needles)


def raylet_pids(session_name: str) -> list[int]:
    """The raylets of a session (their command line names the session folder)."""
    key = session_name.encode()
    return [pid for pid, cmd in _cmdlines() if key in cmd and b"raylet" in cmd.split(b"\0")[0]]


def session_pids(session_name: str, raylets: list[int] = ()) -> list[int]:
    """Processes that belong to a Ray session.

    Ray's own servers name the session folder on their command line; workers rename themselves
    (`ray::IDLE`, `ray::MapWorker`) but carry their raylet's pid in `RAY_RAYLET_PID`, and so
    does anything they start (ffmpeg).
    """
    key = session_name.encode()
    needles = [f"RAY_RAYLET_PID={pid}".encode() for pid in raylets]
    me = os.getpid()
    return [pid for pid, cmd in _cmdlines()
            if pid != me and (key in cmd or (needles and _environ_has(pid, needles)))]


def prune_sessions(root: str | os.PathLike | None = None, min_age_s: float = PRUNE_AGE_S) -> list[str]:
    """Remove session folders of Ray sessions that are over and older than `min_age_s`."""
    root = Path(root) if root is not None else ray_temp_root()
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith("session_") and not p.is_symlink() and p.is_dir()]
    except OSError:
        return []
    if not candidates:
        return []
    live = b"\0".join(cmd for _, cmd in _cmdlines())
    now = time.time()
    removed = []
    for folder in candidates:
        try:
            age = now - folder.stat().st_mtime
        except OSError:
            continue
        if age < min_age_s or folder.name.encode() in live:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    latest = root / "session_latest"
    if latest.is_symlink() and not latest.exists():
        latest.unlink(missing_ok=True)
    return removed


class Watcher:
    """The reaper of one Ray session: kills what is left of it once this process is gone."""

    def __init__(self, session_dir: str):
        self.session_name = Path(session_dir).name
        raylets = [str(pid) for pid in raylet_pids(self.session_name)]
        read_end, self._write_end = os.pipe()  # both ends close on exec: only the watcher gets one
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lavie.curate.ray_session", self.session_name, *raylets],
            stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # a kill of the run's process group spares the watcher
        )
        os.close(read_end)

    def close(self) -> None:
        """The session ended normally: let the watcher sweep up and leave."""
        if self._write_end is not None:
            os.close(self._write_end)
            self._write_end = None


def reap(session_name: str, raylets: list[int] = (), grace_s: float = 2.0) -> int:
    """SIGTERM every process of the session, SIGKILL those still there after `grace_s`."""
    pids = session_pids(session_name, raylets)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.time() + grace_s
        while pids and time.time() < deadline:
            time.sleep(0.1)
            pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    return len(pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _watch(session_name: str, raylets: list[int]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C for the run is not for the watcher
    while os.read(0, 4096):  # returns b"" once every write end is closed: the run is gone
        pass
    # A run that shut Ray down itself leaves nothing; give a dying raylet a moment to take its
    # workers along before sweeping.
    time.sleep(0.5)
    reap(session_name, raylets)
    return 0


if __name__ == "__main__":
    sys.exit(_watch(sys.argv[1], [int(p) for p in sys.argv[2:]]))
