"""Timestamps that trip seeking: probing and seeking agree with a straight decode.

MPEG-2 program stream (byte-based seeking), MPEG-TS started near the 2^33 wrap, Matroska with a
negative start, raw Annex-B H.264 named .mp4 (no timestamps at all), a 900000 s offset.
"""

from __future__ import annotations

import numpy as np
import pytest

from hostile_corpus import make_timestamp_corpus
from lavie.curate.probe import probe
from lavie.curate.scenes import ScenesConfig, ScenesStage
from lavie.curate.video import clip_frames, iter_frames, read_frames


@pytest.fixture(scope="module")
def timestamp_files(tmp_path_factory):
    return make_timestamp_corpus(tmp_path_factory.mktemp("timestamps"))


def test_probe_and_seek_agree_with_a_straight_decode(timestamp_files):
    for path in timestamp_files:
        straight = [img for _, img in iter_frames(path, size=(64, 48), seek=False)]
        info = probe(path)
        assert info.ok, (path.name, info.error)
        assert info.num_frames == len(straight) == 40, path.name
        assert info.duration_s == pytest.approx(info.num_frames / info.fps), path.name
        assert info.frame_pts_s[0] == 0.0 and len(info.frame_pts_s) == 40
        for index in (1, 13, 20, 25, 39):
            got = read_frames(path, [index], size=(64, 48))[0]
            assert np.array_equal(got, straight[index]), (path.name, index)


def test_virtual_clips_start_on_their_first_frame(timestamp_files, tmp_path):
    stage = ScenesStage(ScenesConfig(cut="virtual", min_frames=4), str(tmp_path))
    for path in timestamp_files:
        clips = stage.process(str(path), "v", None)
        assert all(c["status"] == "ok" for c in clips), (path.name, clips[0]["error"])
        assert [(c["start_frame"], c["end_frame"]) for c in clips] == [(0, 20), (20, 40)], path.name
        straight = [img for _, img in iter_frames(path, size=(64, 48), seek=False)]
        for clip in clips:
            frames = clip_frames(clip["source_path"], None, clip["start_frame"], clip["num_frames"], 3, size=(64, 48))
            wanted = [straight[clip["start_frame"] + o] for o in (0, clip["num_frames"] // 2, clip["num_frames"] - 1)]
            assert all(np.array_equal(a, b) for a, b in zip(frames, wanted)), (path.name, clip["start_frame"])


def _corrupt_middle(path, packets=(20, 24)):
    """Overwrite two packets in the middle of `path` (a key frame and a later one) with garbage."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        where = [(p.pos, p.size) for p in container.demux(stream) if p.size]
    data = bytearray(path.read_bytes())
    for i in packets:
        pos, size = where[i]
        data[pos:pos + size] = b"\x00\x00\x01" + b"\xff" * (size - 3)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("cut", ["reencode", "virtual"])
def test_a_corrupt_middle_loses_only_its_frames_and_is_recorded(tmp_path, cut):
    import json
    import subprocess

    from lavie.curate.video import ffmpeg_exe

    path = tmp_path / "corrupt.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "color=c=black:size=64x48:rate=25", "-vf", "geq=lum='30+N*4':cb=128:cr=128", "-frames:v", "50",
                    "-c:v", "libx264", "-g", "10", "-pix_fmt", "yuv420p", str(path)], check=True)
    _corrupt_middle(path)
    straight = [img for _, img in iter_frames(path, size=(64, 48), seek=False)]
    assert 30 < len(straight) < 50  # decoding went on past the damage

    pieces = ScenesStage(ScenesConfig(cut=cut, min_frames=4), str(tmp_path)).process(str(path), "v", None)
    video = pieces[0]["_video"]  # what the run records of the source itself: its videos row
    assert video["status"] == "ok", video["error"]
    assert video["undecodable_frames"] == 50 - len(straight) and "could not be decoded" in video["warnings"]
    clips = [c for c in pieces if c["keep"]]
    assert sum(c["num_frames"] for c in clips) == len(straight)
    for clip in clips:  # cut to files even in virtual mode: no reader seeks across the damage
        frames = clip_frames(clip["source_path"], clip["clip_path"], clip["start_frame"], clip["num_frames"], 2,
                             size=(64, 48))
        first = straight[clip["start_frame"]].astype(int)
        assert clip["clip_path"] and np.abs(frames[0].astype(int) - first).mean() < 4  # re-encoded: near, not equal
