"""Hostile raw folders: every input becomes exactly one `videos` row, the run goes on.

Link loops (file and folder), a name that is not UTF-8, a path over PATH_MAX, FIFOs, sockets and
devices, odd frame sizes, exotic codecs, and a source that changes between runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest

from hostile_corpus import NON_UTF8, encode, make_corpus, make_long_path
from lavie.curate.config import CurateConfig
from lavie.curate.discover import discover_sources, display_path, fs_path
from lavie.curate.jobs import run_clip_stages, run_scenes
from lavie.curate.manifest import read_manifest
from lavie.curate.video import clip_frames, ffmpeg_exe, ffmpeg_failure

EXTS = CurateConfig().input.extensions


@pytest.fixture(scope="module")
def hostile_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    expected = make_corpus(root)
    deep = make_long_path(root, root / "one_frame.mp4")
    expected[os.path.relpath(deep, root)] = "PATH_MAX"
    return root, expected


def _config(cut: str) -> CurateConfig:
    config = CurateConfig()
    config.scenes.cut = cut
    config.scenes.min_frames = 2
    config.distribution.workers = 2
    return config


def test_discovery_finds_every_input_without_opening_it(hostile_raw):
    root, expected = hostile_raw
    found = {os.path.relpath(s.display, display_path(root)): s for s in discover_sources(root, EXTS)}
    assert set(found) == set(expected)  # the folder link "again" is not followed: no duplicates
    for name, outcome in expected.items():
        if outcome in ("ok", "empty file", "not a decodable video"):
            assert found[name].problem is None, name
        else:
            assert outcome in found[name].problem, (name, found[name].problem)
    latin1 = found[NON_UTF8.decode("utf-8", "backslashreplace")]
    assert os.fsencode(latin1.path).endswith(NON_UTF8)  # the name on disk, byte for byte
    assert fs_path(latin1.display) == latin1.path


@pytest.mark.parametrize("cut", ["virtual", "reencode"])
def test_scenes_gives_one_row_per_input(hostile_raw, tmp_path, cut):
    root, expected = hostile_raw
    summary = run_scenes(root, tmp_path / "out", _config(cut), progress=False)
    videos = pq.read_table(tmp_path / "out" / "videos.parquet").to_pylist()
    rows = {os.path.relpath(r["source_path"], display_path(root)): r for r in videos}
    assert len(videos) == len(expected) == summary.videos
    assert set(rows) == set(expected)
    for name, outcome in expected.items():
        row = rows[name]
        if outcome == "ok":
            assert row["status"] == "ok", (name, row["error"])
        else:
            assert row["status"] == "error" and outcome in row["error"], (name, row["error"])

    clips = pq.read_table(tmp_path / "out" / "clips.parquet").to_pylist()
    kept = [c for c in clips if c["keep"]]
    assert {c["video_id"] for c in kept} >= {rows[n]["video_id"] for n in ("odd321x241.mp4", "mpeg2.mpg", "vp9.webm")}
    for clip in kept:
        frames = clip_frames(clip["source_path"], clip["clip_path"], clip["start_frame"], clip["num_frames"], 2)
        assert frames.shape[1:] == (clip["height"], clip["width"], 3), clip["source_path"]
    if cut == "reencode":
        # Odd sizes make correct clips (libx264 refuses them in 4:2:0): every pixel kept.
        odd = [c for c in kept if c["video_id"] == rows["odd321x241.mp4"]["video_id"]]
        with av.open(odd[0]["clip_path"]) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == (321, 241)
            assert sum(1 for _ in container.decode(stream)) == odd[0]["num_frames"]


def test_ffmpeg_failure_keeps_the_line_naming_the_cause(tmp_path):
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-f", "lavfi", "-i",
                           "testsrc=size=321x241:rate=5", "-frames:v", "2", "-c:v", "libx264",
                           "-pix_fmt", "yuv420p", str(tmp_path / "o.mp4")], capture_output=True, text=True)
    assert proc.returncode != 0
    message = ffmpeg_failure(proc.returncode, proc.stderr)
    assert "width not divisible by 2" in message and "\n" not in message


def test_changed_source_replaces_its_rows_and_the_corpus_folder_moves(tmp_path):
    corpus = tmp_path / "corpus"
    raw = corpus / "raw"
    raw.mkdir(parents=True)
    encode(raw / "v.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "64x48", 10, 20)
    encode(raw / "w.mp4", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "64x48", 10, 20)
    out = corpus / "scenes"
    config = _config("reencode")
    run_scenes(raw, out, config, progress=False)
    first = pq.read_table(out / "clips.parquet").to_pylist()

    with open(raw / "v.mp4", "ab") as fh:  # the source changes between runs
        fh.write(b"x")
    summary = run_scenes(raw, out, config, progress=False)
    videos = pq.read_table(out / "videos.parquet").to_pylist()
    assert len(videos) == 2 and summary.skipped_done == 1
    changed = {Path(r["source_path"]).name: r for r in videos}
    assert "size" in changed["v.mp4"]["source_change"] and changed["v.mp4"]["size_bytes"] == (raw / "v.mp4").stat().st_size
    assert changed["w.mp4"]["source_change"] is None
    clips = pq.read_table(out / "clips.parquet").to_pylist()
    assert len(clips) == len(first)  # replaced, not added
    assert len({c["clip_id"] for c in clips}) == len(clips)
    files = [p for p in (out / "clips").rglob("*.mp4")]
    assert sorted(map(str, files)) == sorted(c["clip_path"] for c in clips if c["clip_path"])

    summary = run_scenes(raw, out, config, progress=False)  # unchanged now: nothing to do
    assert summary.skipped_done == 2 and summary.videos == 2

    # A movable corpus: a later stage's manifest, then the whole folder moved elsewhere.
    run_clip_stages(out, corpus / "filtered", [], config, "filtered", progress=False)
    moved = tmp_path / "elsewhere" / "corpus-moved"
    moved.parent.mkdir()
    os.rename(corpus, moved)
    for stage in ("scenes", "filtered"):
        rows = read_manifest(moved / stage, "clips").to_pylist()
        assert len(rows) == len(clips)
        for row in rows:
            assert row["source_path"].startswith(str(moved)) and os.path.isfile(row["source_path"])
            if row["clip_path"]:
                assert row["clip_path"].startswith(str(moved / "scenes" / "clips"))
                frames = clip_frames(row["source_path"], row["clip_path"], row["start_frame"], row["num_frames"], 2)
                assert frames.shape[0] == 2
    sources = read_manifest(moved / "scenes", "videos").column("source_path").to_pylist()
    assert sorted(sources) == [str(moved / "raw" / "v.mp4"), str(moved / "raw" / "w.mp4")]
