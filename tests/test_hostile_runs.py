"""Concurrent runs and signals: the output-folder lock, SIGINT/SIGTERM/SIGKILL, a loopback-only Ray.

The signal tests run the real CLI with its own Ray (its session folders in a private
RAY_TMPDIR, so the test can find exactly its processes) and stop it while the scenes stage runs;
the same for the pool of local processes a model-free split runs in by default.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hostile_corpus import encode
from lavie.curate import ray_session
from lavie.curate.lock import OutputBusy, output_lock
from lavie.curate.manifest import PartStore

CLI = [sys.executable, "-m", "lavie.curate.cli"]


@pytest.fixture(scope="module")
def busy_raw(tmp_path_factory) -> Path:
    """Twenty hard links to one 3000-frame video: a scenes run that lasts long enough to stop."""
    raw = tmp_path_factory.mktemp("busy")
    encode(raw / "v00.mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"], "64x48", 25, 3000)
    for i in range(1, 20):
        os.link(raw / "v00.mp4", raw / f"v{i:02d}.mp4")
    return raw


@pytest.fixture
def ray_tmp():
    # Short: Ray's socket paths live under it and must stay under 108 bytes.
    path = tempfile.mkdtemp(prefix="lr", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def _start(raw: Path, out: Path, ray_tmp: Path) -> subprocess.Popen:
    env = dict(os.environ, RAY_TMPDIR=str(ray_tmp))
    return subprocess.Popen([*CLI, "scenes", str(raw), "-o", str(out), "--virtual", "--no-progress", "--workers", "1",
                             "--executor", "ray"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _start_local(raw: Path, out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.Popen([*CLI, "scenes", str(raw), "-o", str(out), "--virtual", "--no-progress", "--workers", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _pool_workers(proc: subprocess.Popen, timeout: float = 60.0) -> list[int]:
    """The pids of the local pool's worker processes, once both have started."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        children = [c for c in psutil.Process(proc.pid).children()
                    if "multiprocessing.spawn" in " ".join(c.cmdline()) and "resource_tracker" not in " ".join(c.cmdline())]
        if len(children) >= 2:
            time.sleep(0.5)
            return [c.pid for c in children]
        time.sleep(0.1)
    raise AssertionError("the local pool's workers did not start")


def _wait_for_session(proc: subprocess.Popen, ray_tmp: Path, workers: bool = False, timeout: float = 120.0):
    """(session name, raylet pids) once the run's local Ray is up and its watcher started (the run
    is then past `ray.init`); with `workers`, once a Ray worker process exists too."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        root = ray_tmp / "ray"
        for name in [p.name for p in root.glob("session_2*")] if root.exists() else []:
            raylets = ray_session.raylet_pids(name)
            procs = [_cmdline(p) for p in ray_session.session_pids(name, raylets)]
            watched = any(b"lavie.curate.ray_session" in c for c in procs)
            if raylets and watched and (not workers or any(c.startswith(b"ray::") for c in procs)):
                time.sleep(0.5)  # the run re-installs its handlers right after starting the watcher
                return name, raylets
        time.sleep(0.2)
    raise AssertionError("the run's Ray did not start")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.time() + seconds
    left = [p for p in pids if ray_session._alive(p)]
    while left and time.time() < deadline:
        time.sleep(0.2)
        left = [p for p in left if ray_session._alive(p)]
    return left


def _listening_addresses(pids: list[int]) -> set[str]:
    """Local addresses (hex, as /proc/net shows them) that these processes listen on over TCP."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.add(fields[1].rsplit(":", 1)[0])
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_busy_output_folder_is_refused_naming_its_holder(tmp_path):
    out = tmp_path / "out"
    (tmp_path / "raw").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lavie.curate.lock import output_lock\n"
                               f"with output_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"
        proc = subprocess.run([*CLI, "scenes", str(tmp_path / "raw"), "-o", str(out)], capture_output=True, text=True)
        assert proc.returncode == 3
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by pid" in lines[0] and str(holder.pid) in lines[0], proc.stderr
        with pytest.raises(OutputBusy):
            with output_lock(out):
                pass
    finally:
        holder.kill()  # a crashed holder: the kernel drops its lock
        holder.wait()
    with output_lock(out):
        pass


def test_consolidation_tolerates_a_duplicated_part(tmp_path):
    store = PartStore(tmp_path, "clips", "clip_id")
    rows = [{"clip_id": f"c{i}", "kind": "video", "source_path": "v.mp4", "status": "ok", "_order": i} for i in range(3)]
    store.write(rows, "part-000000000000-a")
    shutil.copy(store.parts_dir / "part-000000000000-a.parquet", store.parts_dir / "part-000000000000-b.parquet")
    assert store.consolidate() == 3
    assert pq.read_table(store.manifest_path).column("clip_id").to_pylist() == ["c0", "c1", "c2"]
    assert store.consolidate(sort_by=["clip_id"]).num_rows == 3


@pytest.mark.slow
def test_sigterm_exits_143_in_one_line_on_a_loopback_ray_and_prunes_old_sessions(busy_raw, tmp_path, ray_tmp):
    old = ray_tmp / "ray" / "session_2020-01-01_00-00-00_000000_1"
    (old / "logs").mkdir(parents=True)
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    proc = _start(busy_raw, tmp_path / "out", ray_tmp)
    session, raylets = _wait_for_session(proc, ray_tmp)
    pids = ray_session.session_pids(session, raylets)
    listening = _listening_addresses(pids)
    assert listening and listening <= LOOPBACK, listening  # item: local Ray on loopback only
    assert not old.exists()  # a finished session's folder, pruned when the run started

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()[-2000:]
    err = err.decode()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == "lavie-curate scenes: stopped by SIGTERM; finished parts are kept, re-run to resume"
    assert _gone_within(pids, 5.0) == []


@pytest.mark.slow
def test_sigint_exits_130_in_one_line(busy_raw, tmp_path, ray_tmp):
    proc = _start(busy_raw, tmp_path / "out", ray_tmp)
    session, raylets = _wait_for_session(proc, ray_tmp)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("lavie-curate scenes: stopped by SIGINT;")
    assert _gone_within(ray_session.session_pids(session, raylets), 5.0) == []


@pytest.mark.slow
def test_sigkill_of_the_process_group_leaves_no_ray_worker(busy_raw, tmp_path, ray_tmp):
    proc = _start(busy_raw, tmp_path / "out", ray_tmp)
    session, raylets = _wait_for_session(proc, ray_tmp, workers=True)
    pids = ray_session.session_pids(session, raylets)
    assert any(_cmdline(p).startswith(b"ray::") for p in pids)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    # Without the watcher, the workers outlive their raylet by about a minute.
    assert _gone_within(pids, 8.0) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_a_local_pool_in_one_line_and_resumes(busy_raw, tmp_path, sig, code):
    out = tmp_path / "out"
    proc = _start_local(busy_raw, out)
    workers = _pool_workers(proc)
    if sig == signal.SIGINT:
        os.killpg(proc.pid, sig)  # Ctrl-C reaches the whole group: the workers leave it to the driver
    else:
        proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    err = err.decode()
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"lavie-curate scenes: stopped by {sig.name};")
    assert _gone_within(workers, 5.0) == []
    if sig != signal.SIGINT:
        return  # the resume is the same after either signal: checked once
    again = subprocess.run([*CLI, "scenes", str(busy_raw), "-o", str(out), "--virtual", "--no-progress"],
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    videos = pq.read_table(out / "videos.parquet").column("video_id").to_pylist()
    assert len(videos) == len(set(videos)) == 20


@pytest.mark.slow
def test_sigkill_of_the_driver_alone_ends_its_local_pool(busy_raw, tmp_path):
    proc = _start_local(busy_raw, tmp_path / "out")
    workers = _pool_workers(proc)
    proc.kill()  # the driver only: nothing tells the workers but the kernel
    proc.communicate(timeout=30)
    assert _gone_within(workers, 5.0) == []
