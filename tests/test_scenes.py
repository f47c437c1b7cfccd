"""`lavie-curate scenes`: probe, detection accuracy, clip files, bad input, resume, CLI errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lavie.curate.cli import main as curate_main
from lavie.curate.manifest import ManifestError, read_manifest
from lavie.curate.probe import probe
from lavie.curate.samples import make_bad_inputs
from lavie.curate.scenes import DetectConfig, detect_cuts, scenes_from_cuts, split_long

from conftest import run_scenes

ROOT = Path(__file__).resolve().parents[1]


def match_cuts(detected: list[int], hard: list[int], gradual: list[list[int]]) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) under the rule stated in the README.

    A hard cut is found when a detection lies within +-1 frame of it. A dissolve or fade
    spanning frames [a, b] is found when a detection lies in [a-1, b+1]; a second detection in
    the same span (a gradual transition reported at its start and its end) is not a false
    positive. Every other detection is a false positive.
    """
    used = set()
    tp = fn = 0
    for cut in hard:
        hit = next((d for d in detected if abs(d - cut) <= 1 and d not in used), None)
        if hit is None:
            fn += 1
        else:
            tp += 1
            used.add(hit)
    for a, b in gradual:
        hits = [d for d in detected if a - 1 <= d <= b + 1 and d not in used]
        if hits:
            tp += 1
            used.update(hits)
        else:
            fn += 1
    fp = sum(1 for d in detected if d not in used)
    return tp, fp, fn


# ---------------------------------------------------------------------------------------------
# probe


def test_probe_reads_the_samples(samples_dir, cuts_truth):
    for name, truth in cuts_truth.items():
        info = probe(samples_dir / name)
        assert info.ok, info.error
        assert info.num_frames == truth["num_frames"]
        assert (info.width, info.height) == (truth["width"], truth["height"])
        assert Fraction(info.fps_num, info.fps_den) == Fraction(truth["fps"])
        assert info.has_audio == truth["audio"]
        assert info.vfr is False
        assert info.codec == "h264" and info.pix_fmt == "yuv420p"
        assert info.duration_s == pytest.approx(truth["num_frames"] / float(Fraction(truth["fps"])), abs=0.05)


def test_probe_bad_inputs(samples_dir):
    bad = samples_dir / "bad"
    errors = {
        "zero_bytes.mp4": "empty file",
        "not_a_video.mp4": "not a decodable video",
        "truncated.mp4": "not a decodable video",
        "audio_only.mp4": "no video stream",
        "dangling_link.mp4": "No such file",
    }
    for name, reason in errors.items():
        info = probe(bad / name)
        assert not info.ok and reason in info.error, (name, info.error)
    rotated = probe(bad / "rotated.mp4")
    assert rotated.ok and rotated.rotation in (90, 270) and (rotated.width, rotated.height) == (192, 320)
    vfr = probe(bad / "vfr.mp4")
    assert vfr.ok and vfr.vfr is True
    odd = probe(next(bad.glob("clip with spaces*")))
    assert odd.ok and odd.num_frames == 50


def test_probe_truncated_with_index_kept(tmp_path, samples_dir):
    # A faststart file (index first) cut short keeps its header but loses frames.
    src = samples_dir / "Sports" / "bars_360p_30.mp4"
    data = src.read_bytes()
    cut = tmp_path / "short.mp4"
    cut.write_bytes(data[: len(data) // 3])
    info = probe(cut)
    assert not info.ok and "truncated" in info.error


# ---------------------------------------------------------------------------------------------
# detection


def test_every_hard_cut_found_and_f1(samples_dir, cuts_truth):
    tp = fp = fn = 0
    for name, truth in cuts_truth.items():
        info = probe(samples_dir / name)
        cuts, decoded = detect_cuts(info.source_path, Fraction(info.fps_num, info.fps_den),
                                    info.width, info.height, DetectConfig())
        assert decoded == truth["num_frames"]
        for cut in truth["cuts"]:
            assert any(abs(c - cut) <= 1 for c in cuts), f"{name}: hard cut {cut} missed, got {cuts}"
        t, p, n = match_cuts(cuts, truth["cuts"], truth["gradual"])
        tp, fp, fn = tp + t, fp + p, fn + n
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 >= 0.95, (tp, fp, fn)


def test_content_detector_finds_hard_cuts(samples_dir, cuts_truth):
    name = "Sports/bars_360p_30.mp4"
    info = probe(samples_dir / name)
    cuts, _ = detect_cuts(info.source_path, Fraction(30), info.width, info.height, DetectConfig("content"))
    assert match_cuts(cuts, cuts_truth[name]["cuts"], [])[1:] == (0, 0)


def test_unknown_detector_is_a_config_error():
    with pytest.raises(ValueError, match="adaptive"):
        DetectConfig("histogramm")


def test_scene_ranges_and_long_split():
    assert scenes_from_cuts([10, 30], 50) == [(0, 10), (10, 30), (30, 50)]
    parts = split_long([(0, 100), (100, 130)], fps=10.0, max_seconds=4.0)
    assert parts[:3] == [(0, 33, 0), (33, 67, 0), (67, 100, 0)] and parts[3] == (100, 130, 1)
    assert all(b - a <= 40 for a, b, _ in parts)


# ---------------------------------------------------------------------------------------------
# the scenes run


def test_scenes_manifests(scenes_out, samples_dir, cuts_truth):
    videos = read_manifest(scenes_out, "videos").to_pylist()
    clips = read_manifest(scenes_out, "clips").to_pylist()
    by_path = {Path(v["source_path"]).relative_to(samples_dir).as_posix(): v for v in videos}
    # One videos row per file found, bad ones included.
    assert len(videos) == len(cuts_truth) + len(make_bad_inputs_expectations())
    for name, v in by_path.items():
        if name.startswith("bad/"):
            expect = make_bad_inputs_expectations()[name[4:]]
            assert v["status"] == expect, (name, v["error"])
            if expect == "error":
                assert v["error"] and len(v["error"]) < 300
        else:
            assert v["status"] == "ok" and v["category"] == name.split("/")[0]
    assert len({c["clip_id"] for c in clips}) == len(clips)
    # A source that failed is one error row among the clips too, with its reason.
    failed = [c for c in clips if c["status"] == "error"]
    assert {Path(c["source_path"]).name for c in failed} == {
        n for n, e in make_bad_inputs_expectations().items() if e == "error"}
    assert all(c["error"] == by_path[Path(c["source_path"]).relative_to(samples_dir).as_posix()]["error"]
               for c in failed)
    # Sources found bad before any decoding (a dangling link) were never shown to a detector.
    assert {c["detector"] for c in clips if c["status"] == "ok"} == {"adaptive"}
    # The short shot (10 frames) is kept as a row and rejected for its length.
    short = [c for c in clips if c["status"] == "ok" and c["num_frames"] < 16]
    assert len(short) == 1 and short[0]["keep"] is False
    assert short[0]["reject_reason"] == "scene_length: 10 frames < 16"
    assert short[0]["source_path"].endswith("bars_360p_30.mp4")
    # Hard-cut clips start where the shots start.
    bars = sorted(c["start_frame"] for c in clips if c["source_path"].endswith("bars_360p_30.mp4"))
    assert bars == [0, 45, 90, 100]


def make_bad_inputs_expectations() -> dict[str, str]:
    return {
        "zero_bytes.mp4": "error", "not_a_video.mp4": "error", "truncated.mp4": "error",
        "audio_only.mp4": "error", "rotated.mp4": "ok", "vfr.mp4": "ok",
        "clip with spaces – ñandú 日本.mp4": "ok", "dangling_link.mp4": "error",
    }


def test_bad_input_expectations_match_generator(tmp_path):
    assert make_bad_inputs(tmp_path) == make_bad_inputs_expectations()


def test_clip_files_hold_exactly_their_frames(scenes_out):
    clips = [c for c in read_manifest(scenes_out, "clips").to_pylist() if c["keep"]]
    assert clips
    for c in clips:
        with av.open(c["clip_path"]) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate
            frames = list(container.decode(stream))
        assert len(frames) == c["num_frames"], c["clip_path"]
        assert (frames[0].width, frames[0].height) == (c["width"], c["height"])
        assert float(rate) == pytest.approx(c["fps"], rel=1e-4)
        assert c["end_frame"] - c["start_frame"] == c["num_frames"]


def test_rotated_and_vfr_clips(scenes_out):
    clips = {Path(c["source_path"]).name: c for c in read_manifest(scenes_out, "clips").to_pylist()}
    rot = clips["rotated.mp4"]
    assert (rot["width"], rot["height"]) == (192, 320) and rot["num_frames"] == 40
    vfr = clips["vfr.mp4"]
    with av.open(vfr["clip_path"]) as container:
        assert sum(1 for _ in container.decode(video=0)) == vfr["num_frames"] == 90


def test_rerun_skips_done_videos(scenes_out, samples_dir):
    before = pq.read_table(scenes_out / "clips.parquet")
    summary = run_scenes(samples_dir, scenes_out)
    assert summary.skipped_done == summary.videos
    assert pq.read_table(scenes_out / "clips.parquet").equals(before)


def test_virtual_and_copy_modes(tmp_path, samples_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    os.symlink(samples_dir / "Sports" / "bars_360p_30.mp4", raw / "bars.mp4")
    run_scenes(raw, tmp_path / "virtual", "stages.scenes.cut=virtual")
    virtual = read_manifest(tmp_path / "virtual").to_pylist()
    assert all(c["clip_path"] is None for c in virtual) and not (tmp_path / "virtual" / "clips").exists()
    run_scenes(raw, tmp_path / "copy", "stages.scenes.cut=copy")
    copied = [c for c in read_manifest(tmp_path / "copy").to_pylist() if c["keep"]]
    assert len(copied) == 3 and all(Path(c["clip_path"]).stat().st_size > 0 for c in copied)


def test_killed_run_resumes_to_the_same_result(tmp_path, samples_dir, scenes_out):
    """SIGKILL part-way, run again: exactly the rows and clip files of an uninterrupted run."""
    out = tmp_path / "out"
    cmd = [str(ROOT / ".venv" / "bin" / "lavie-curate") if (ROOT / ".venv" / "bin" / "lavie-curate").exists()
           else sys.executable, "scenes", str(samples_dir), "-o", str(out), "--no-progress"]
    if cmd[0] == sys.executable:
        cmd[1:1] = ["-m", "lavie.curate.cli"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    parts = out / ".parts" / "videos"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if parts.exists() and any(parts.glob("*.parquet")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(parts.glob("*.parquet")))
    assert done_before > 0
    assert not (out / "clips.parquet").exists()  # killed before the run could finish

    assert curate_main(["scenes", str(samples_dir), "-o", str(out), "--no-progress"]) == 0

    def rows(folder, table, key):
        tbl = pq.read_table(folder / f"{table}.parquet")
        if "clip_path" in tbl.column_names:
            tbl = tbl.drop(["clip_path"])
        return sorted(tbl.to_pylist(), key=lambda r: r[key])

    assert rows(out, "clips", "clip_id") == rows(scenes_out, "clips", "clip_id")
    assert rows(out, "videos", "video_id") == rows(scenes_out, "videos", "video_id")
    files = lambda root: sorted(p.relative_to(root).as_posix() for p in (root / "clips").rglob("*") if p.is_file())
    assert files(out) == files(scenes_out)
    assert not list(out.rglob("*.tmp")) and not list((out / "clips").rglob(".cut-*"))


# ---------------------------------------------------------------------------------------------
# CLI and schema errors


def test_cli_missing_raw_dir(tmp_path, capsys):
    assert curate_main(["scenes", str(tmp_path / "nope"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_cli_unwritable_out(tmp_path, samples_dir, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert curate_main(["scenes", str(samples_dir), "-o", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be created or written" in err[0]


def test_cli_bad_config_key(tmp_path, samples_dir, capsys):
    assert curate_main(["scenes", str(samples_dir), "-o", str(tmp_path), "--set", "stages.scenes.min_frame=3"]) == 2
    err = capsys.readouterr().err
    assert "(scenes): unknown key 'min_frame'" in err and "min_frames" in err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as exc:
        curate_main(["scenes", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--min-frames" in out and "--ray-address" in out and "PySceneDetect" in out


def test_manifest_missing_column_is_named(tmp_path, scenes_out):
    tbl = pq.read_table(scenes_out / "clips.parquet").drop(["clip_id"])
    pq.write_table(tbl, tmp_path / "clips.parquet")
    with pytest.raises(ManifestError, match="clip_id"):
        read_manifest(tmp_path / "clips.parquet")


def test_manifest_mistyped_column_is_named(tmp_path, scenes_out):
    tbl = pq.read_table(scenes_out / "clips.parquet")
    idx = tbl.column_names.index("num_frames")
    tbl = tbl.set_column(idx, "num_frames", pa.array([str(v) for v in tbl.column("num_frames").to_pylist()]))
    pq.write_table(tbl, tmp_path / "clips.parquet")
    with pytest.raises(ManifestError, match="num_frames"):
        read_manifest(tmp_path / "clips.parquet")


def test_samples_cli_writes_truth(tmp_path, capsys):
    # The CLI path of the generator (the fixture used the library call).
    assert curate_main(["samples", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "cuts.json").exists()
    assert len(list((tmp_path / "s").rglob("*.mp4"))) == 5


def test_frames_of_a_rotated_source_come_out_upright(scenes_out):
    """A virtual clip (source + range) reads the same upright frames as the cut clip file."""
    import numpy as np

    from lavie.curate.video import read_frames

    clip = next(c for c in read_manifest(scenes_out).to_pylist() if c["source_path"].endswith("rotated.mp4"))
    from_source = read_frames(clip["source_path"], [0, 7]).astype(int)
    from_clip = read_frames(clip["clip_path"], [0, 7]).astype(int)
    assert from_source.shape == from_clip.shape == (2, 320, 192, 3)
    assert np.abs(from_source - from_clip).mean() < 3  # re-encode noise only
    small = read_frames(clip["source_path"], [3], size=(96, 160))
    assert small.shape == (1, 160, 96, 3)


def test_a_link_to_a_listed_file_is_taken_once(tmp_path, samples_dir):
    raw = tmp_path / "raw"
    raw.mkdir()
    os.symlink(samples_dir / "Sports" / "bars_360p_30.mp4", raw / "a.mp4")
    os.symlink(raw / "a.mp4", raw / "b.mp4")
    summary = run_scenes(raw, tmp_path / "out", "stages.scenes.cut=virtual")
    assert summary.videos == 1 and summary.videos_error == 0
    clips = read_manifest(tmp_path / "out").to_pylist()
    assert len(clips) == 4 and len({c["clip_id"] for c in clips}) == 4
