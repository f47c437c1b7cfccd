"""Faults during a curation run: a Ray worker killed mid-stage, the output failing part-way.

Each run is compared with the undisturbed scenes run over the same videos (`scenes_out`): a
fault may cost time, never a row, and never a duplicate.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

import lavie.curate.manifest as manifest
from lavie.curate.cli import main as curate_main
from lavie.curate.manifest import OutputError, read_manifest

CURATE = Path(sys.executable).with_name("lavie-curate")
# Two of the sample videos: enough for one to finish before a fault and one to be cut off.
FAULT_VIDEOS = ["Sports/bars_360p_30.mp4", "Documentary/portrait_ntsc.mp4"]


def clip_rows(out: Path, video_ids: set[str] | None = None, ignore=("clip_path",)) -> list[dict]:
    """The clips manifest's rows by clip id, without the columns that name the output folder."""
    rows = pq.read_table(out / "clips.parquet").drop(list(ignore)).to_pylist()
    if video_ids is not None:
        rows = [r for r in rows if r["video_id"] in video_ids]
    return sorted(rows, key=lambda r: r["clip_id"])


def video_rows(out: Path, video_ids: set[str] | None = None, ignore=()) -> list[dict]:
    rows = pq.read_table(out / "videos.parquet").drop(list(ignore)).to_pylist()
    if video_ids is not None:
        rows = [r for r in rows if r["video_id"] in video_ids]
    return sorted(rows, key=lambda r: r["video_id"])


def no_temp_files(out: Path) -> list[Path]:
    return sorted(out.rglob(".*.tmp"))


# ----------------------------------------------------------------------------------------------
# A Ray worker killed in the middle of a stage


def _busy_stage_workers(root_pid: int) -> list[psutil.Process]:
    """Stage actors under `root_pid` that are running a batch right now.

    Ray titles a worker process `ray::<actor class>.<method>` while it runs a method, so a
    Ray Data actor working on a block reads `ray::MapWorker(MapBatches(_StageActor)).submit`,
    and a task worker running a stage (the scenes flat map) `ray::MapBatches(_stage_task)`.
    Only descendants of our own run count: other Rays on this machine are left alone.
    """
    try:
        processes = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    busy = []
    for proc in processes:
        try:
            title = " ".join(proc.cmdline()).strip()
        except psutil.Error:
            continue
        if (title.startswith("ray::MapWorker") and title.endswith(".submit")) or title.startswith("ray::MapBatches("):
            busy.append(proc)
    return busy


def _run_and_kill(tmp_path: Path, args: list[str], busy_workers) -> tuple[int, str, int | None, set[int]]:
    """Run the CLI with `args`, SIGKILL the first stage worker `busy_workers(pid)` reports, and
    keep watching; returns (exit status, output, the killed pid, pids seen working after it)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    log = open(tmp_path / "run.log", "w")
    proc = subprocess.Popen([str(CURATE), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    killed: int | None = None
    worked_after_kill: set[int] = set()
    try:
        while proc.poll() is None:
            for worker in busy_workers(proc.pid):
                if killed is None:
                    worker.send_signal(signal.SIGKILL)
                    killed = worker.pid
                elif worker.pid != killed:
                    worked_after_kill.add(worker.pid)
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    return proc.returncode, (tmp_path / "run.log").read_text(), killed, worked_after_kill


@pytest.mark.slow
def test_killed_stage_worker_loses_and_duplicates_nothing(tmp_path, samples_dir, scenes_out):
    out = tmp_path / "out"
    # One actor: the kill is certain to hit the only worker doing the stage.
    code, output, killed, worked_after_kill = _run_and_kill(
        tmp_path, ["scenes", str(samples_dir), "-o", str(out), "--workers", "1", "--no-progress", "--executor", "ray"],
        _busy_stage_workers)
    assert code == 0, output[-3000:]
    assert killed is not None, "no stage worker was seen running a batch"
    assert worked_after_kill, "no restarted worker ran the stage after the kill"

    clips = clip_rows(out)
    assert len({r["clip_id"] for r in clips}) == len(clips), "duplicate clip rows"
    assert clips == clip_rows(scenes_out)
    assert video_rows(out) == video_rows(scenes_out)
    for row in pq.read_table(out / "clips.parquet").to_pylist():
        if row["clip_path"]:
            assert Path(row["clip_path"]).is_file()


def _pool_worker_busy(root_pid: int) -> list[psutil.Process]:
    """Workers of the run's local process pool that are using the CPU (splitting a video)."""
    try:
        children = psutil.Process(root_pid).children()
    except psutil.NoSuchProcess:
        return []
    busy = []
    for child in children:
        try:
            if "multiprocessing.spawn" in " ".join(child.cmdline()) and child.cpu_percent(0.05) > 20:
                busy.append(child)
        except psutil.Error:
            continue
    return busy


@pytest.mark.slow
def test_killed_pool_worker_loses_and_duplicates_nothing(tmp_path, samples_dir, scenes_out):
    """The pool of local processes: a worker killed while it splits a video costs that video a
    second run in a fresh process, never a row."""
    out = tmp_path / "out"
    code, output, killed, _ = _run_and_kill(
        tmp_path, ["scenes", str(samples_dir), "-o", str(out), "--workers", "2", "--no-progress"], _pool_worker_busy)
    assert code == 0, output[-3000:]
    assert killed is not None, "no pool worker was seen splitting a video"
    assert "a worker process died" in output
    clips = clip_rows(out)
    assert len({r["clip_id"] for r in clips}) == len(clips), "duplicate clip rows"
    assert clips == clip_rows(scenes_out)
    assert video_rows(out) == video_rows(scenes_out)


# ----------------------------------------------------------------------------------------------
# The output failing part-way


@pytest.fixture
def two_videos(tmp_path, samples_dir) -> tuple[Path, set[str]]:
    """A raw folder linking two sample videos (same sources, so the same ids as `scenes_out`)."""
    raw = tmp_path / "raw"
    for rel in FAULT_VIDEOS:
        (raw / rel).parent.mkdir(parents=True, exist_ok=True)
        (raw / rel).symlink_to(samples_dir / rel)
    sources = {str(samples_dir / rel) for rel in FAULT_VIDEOS}
    return raw, sources


def _reference(scenes_out: Path, sources: set[str]) -> tuple[set[str], list[dict], list[dict]]:
    ids = {r["video_id"] for r in pq.read_table(scenes_out / "videos.parquet").to_pylist()
           if r["source_path"] in sources}
    assert len(ids) == len(sources)
    ignore = ("clip_path", "source_path")
    return ids, clip_rows(scenes_out, ids, ignore), video_rows(scenes_out, ids, ("source_path",))


def _fail_on_write(monkeypatch, after: int, fault) -> list[Path]:
    """Let `after` manifest parts through, then call `fault(temp_path)` before every later write.

    The fault hooks Parquet's writer under `write_part`, so the manifest's own error handling
    (temp file removed, OutputError raised) is what the test sees.
    """
    real = manifest.pq.write_table
    written: list[Path] = []

    def write_table(table, where, *args, **kwargs):
        where = Path(where)
        if len(written) >= after:
            fault(where)
        real(table, where, *args, **kwargs)
        # `.<name>.<hex>.tmp` becomes `<name>.parquet` once renamed.
        written.append(where.with_name(where.name[1:].rsplit(".", 2)[0] + ".parquet"))

    monkeypatch.setattr(manifest.pq, "write_table", write_table)
    return written


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lavie-curate")]
    assert len(err) == 1, err
    return err[0]


def _check_parts_intact(out: Path, written: list[Path]) -> None:
    """What was finished before the fault reads back whole; nothing half-written is left."""
    assert written, "the fault came before any part was finished"
    assert no_temp_files(out) == []
    parts = sorted((out / ".parts").rglob("*.parquet"))
    assert parts == sorted(written)
    videos = read_manifest(out / ".parts" / "videos", "videos")
    clips = read_manifest(out / ".parts" / "clips", "clips")
    assert videos.num_rows == 1  # the first video finished: clips part, then its videos part
    assert set(clips.column("video_id").to_pylist()) <= set(videos.column("video_id").to_pylist())
    assert not (out / "clips.parquet").exists()


def _check_resumed(out: Path, ids: set[str], clips: list[dict], videos: list[dict]) -> None:
    assert clip_rows(out, ignore=("clip_path", "source_path")) == clips
    assert video_rows(out, ignore=("source_path",)) == videos
    assert no_temp_files(out) == []
    summary = (out / "summary.json").read_text()
    assert '"skipped_done": 1' in summary


@pytest.mark.slow
def test_write_error_part_way_keeps_finished_parts_and_resumes(tmp_path, two_videos, scenes_out,
                                                                 monkeypatch, capsys):
    raw, sources = two_videos
    ids, clips, videos = _reference(scenes_out, sources)
    out = tmp_path / "out"

    def disk_full(tmp: Path):
        # Half a temp file on disk, then Arrow's own wording for the failed write.
        tmp.write_bytes(b"PAR1 half a part")
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    written = _fail_on_write(monkeypatch, 2, disk_full)
    assert curate_main(["scenes", str(raw), "-o", str(out), "--no-progress"]) == 1
    line = _error_line(capsys)
    assert "No space left on device" in line and "re-run to resume" in line
    assert str(out / ".parts" / "clips") in line
    _check_parts_intact(out, written)

    monkeypatch.undo()
    assert curate_main(["scenes", str(raw), "-o", str(out), "--no-progress"]) == 0
    _check_resumed(out, ids, clips, videos)


def test_write_part_removes_its_temp_file_and_names_the_part(tmp_path, monkeypatch):
    out = tmp_path / "parts"

    def full(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half")
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(manifest.pq, "write_table", full)
    with pytest.raises(OutputError) as info:
        manifest.write_part([{"clip_id": "a", "kind": "video", "source_path": "s", "status": "ok"}],
                            out, "clips", "part-1")
    assert info.value.errno == errno.ENOSPC
    assert str(out / "part-1.parquet") in str(info.value)
    assert "No space left on device" in str(info.value)
    assert list(out.iterdir()) == []


# A real filesystem of its own, so the kernel reports the fault: a small tmpfs (we run as root
# in the container; the mount is removed at the end).


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=False)
        subprocess.run(["umount", "-l", str(disk)], check=True)


def _fill(disk: Path) -> None:
    with open(disk / "filler", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # A page or two may remain: take those too.
    with open(disk / "filler-tail", "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 512)
                fh.flush()
        except OSError:
            pass


def _free(disk: Path) -> None:
    (disk / "filler").unlink()
    (disk / "filler-tail").unlink(missing_ok=True)


def _read_only(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)


def _writable(disk: Path) -> None:
    subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("fault, repair, words", [
    (_fill, _free, "No space left on device"),
    (_read_only, _writable, "Read-only file system"),
], ids=["disk-full", "read-only"])
def test_output_filesystem_fails_part_way(tmp_path, small_disk, two_videos, scenes_out, monkeypatch, capsys,
                                          fault, repair, words):
    raw, sources = two_videos
    ids, clips, videos = _reference(scenes_out, sources)
    out = small_disk / "out"
    faults = []

    def on_disk(tmp: Path):
        if not faults:
            fault(small_disk)
            faults.append(tmp)

    # Virtual clips: the run writes nothing but its manifests, so the fault hits those.
    written = _fail_on_write(monkeypatch, 2, on_disk)
    assert curate_main(["scenes", str(raw), "-o", str(out), "--virtual", "--no-progress"]) == 1
    line = _error_line(capsys)
    assert words in line and "re-run to resume" in line
    assert str(out) in line
    repair(small_disk)
    _check_parts_intact(out, written)

    monkeypatch.undo()
    assert curate_main(["scenes", str(raw), "-o", str(out), "--virtual", "--no-progress"]) == 0
    _check_resumed(out, ids, clips, videos)
    assert all(r["clip_path"] is None for r in pq.read_table(out / "clips.parquet").to_pylist())


def test_filter_output_fills_the_disk_one_line_no_partial_file(tmp_path, small_disk, capsys):
    """The in-process filter writes its manifest from a thread of its own: a disk that fills
    part-way through still ends the run with one line naming the manifest, and leaves neither a
    temp file nor a half manifest behind; with room again, the same command finishes."""
    from lavie.curate.manifest import write_manifest

    rng = np.random.default_rng(0)
    # Incompressible captions: about 6 MB of output for a 4 MB disk.
    rows = [{"clip_id": f"c{i}", "video_id": f"v{i // 4}", "kind": "video", "source_path": f"/raw/v{i // 4}.mp4",
             "status": "ok", "num_frames": 10 + i, "width": 1280, "height": 720 if i % 3 else 360,
             "fps": 25.0, "caption": rng.bytes(150).hex()} for i in range(20000)]
    src = write_manifest(rows, tmp_path / "in" / "clips.parquet", "clips")
    out = small_disk / "out"
    assert curate_main(["filter", str(src), "-o", str(out), "--cheap-only", "--no-progress"]) == 1
    line = _error_line(capsys)
    assert str(out / "clips.parquet") in line and "No space left on device" in line
    assert not (out / "clips.parquet").exists() and no_temp_files(out) == []
    out2 = tmp_path / "out"
    assert curate_main(["filter", str(src), "-o", str(out2), "--cheap-only", "--no-progress"]) == 0
    assert pq.read_metadata(out2 / "clips.parquet").num_rows == len(rows)
