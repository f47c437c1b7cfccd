"""Frame access by index: seeking must land on the same frames a decode from the start gives."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from lavie.curate.video import ffmpeg_exe, iter_frames, read_frames


@pytest.fixture(scope="module")
def awkward_files(tmp_path_factory):
    """Variable frame rate with a key frame every 10 frames, and B-frames with a 12-frame GOP."""
    root = tmp_path_factory.mktemp("video")
    ff = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    vfr = root / "vfr_gop10.mp4"
    subprocess.run(ff + ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30", "-frames:v", "90",
                         "-vf", "select='lt(mod(n\\,10)\\,7)'", "-fps_mode", "vfr", "-c:v", "libx264",
                         "-g", "10", "-bf", "2", "-pix_fmt", "yuv420p", str(vfr)], check=True)
    bframes = root / "bframes_gop12.mp4"
    subprocess.run(ff + ["-f", "lavfi", "-i", "mandelbrot=size=160x120:rate=25", "-frames:v", "60",
                         "-c:v", "libx264", "-g", "12", "-bf", "3", "-pix_fmt", "yuv420p", str(bframes)], check=True)
    return [vfr, bframes]


def test_seeking_reads_the_frames_a_full_decode_gives(awkward_files):
    for path in awkward_files:
        sequential = [img for _, img in iter_frames(path, size=(64, 48), seek=False)]
        assert len(sequential) >= 60
        for i in range(len(sequential)):
            assert np.array_equal(read_frames(path, [i], size=(64, 48))[0], sequential[i]), (path.name, i)
        window = [7, 11, 15, 19, 23]
        assert np.array_equal(read_frames(path, window, size=(64, 48)), np.stack([sequential[i] for i in window]))


def test_frames_past_the_end_are_an_error(awkward_files):
    with pytest.raises(ValueError, match="could not be decoded"):
        read_frames(awkward_files[1], [58, 70])
