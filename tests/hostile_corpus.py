"""A small hostile corpus: exotic codecs and awkward files, made with ffmpeg in a second or two.

Every file is a few frames at a tiny size, so a scenes run over the whole set stays quick. Each
entry says what a scenes run must make of it: a video ("ok") or an error row and the words its
reason must contain.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from lavie.curate.video import ffmpeg_exe

SRC = "testsrc2=size={size}:rate={rate}"

# name -> (ffmpeg output arguments, lavfi size, frame rate, frames)
VIDEOS = {
    "vp9.webm": (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], "64x48", 10, 6),
    "av1.mkv": (["-c:v", "libaom-av1", "-cpu-used", "8", "-row-mt", "1"], "64x48", 10, 4),
    "mpeg2.mpg": (["-c:v", "mpeg2video", "-g", "5", "-bf", "2"], "64x48", 25, 30),
    "mjpeg.avi": (["-c:v", "mjpeg", "-q:v", "5", "-pix_fmt", "yuvj420p"], "64x48", 10, 6),
    "prores.mov": (["-c:v", "prores_ks", "-profile:v", "0"], "64x48", 10, 4),
    "hevc10.mkv": (["-c:v", "libx265", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=error"],
                   "64x48", 10, 6),
    "yuv444.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv444p"], "64x48", 10, 6),
    "interlaced.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p", "-flags", "+ildct+ilme", "-x264opts",
                        "tff=1"], "64x48", 25, 6),
    "fps240.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], "32x24", 240, 24),
    "fps0.5.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], "32x24", 0.5, 3),
    "one_frame.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], "32x24", 10, 1),
    "tiny2x2.mp4": (["-c:v", "libx264", "-pix_fmt", "yuv420p"], "2x2", 10, 20),
    "odd321x241.mp4": (["-vf", "scale=321:241", "-c:v", "libx264", "-pix_fmt", "yuv444p"], "320x240", 10, 20),
}

# Files that cannot be videos, and the words of their error rows.
BROKEN = {
    "loop_a.mp4": "link loop",
    "loop_b.mp4": "link loop",
    "fifo.mp4": "not a regular file: a FIFO",
    "socket.mp4": "not a regular file: a socket",
    "device.mp4": "not a regular file: a character device",
    "empty.mp4": "empty file",
    "text.mp4": "not a decodable video",
}

NON_UTF8 = b"caf\xe9-latin1.mp4"  # a Latin-1 name: not valid UTF-8


def encode(path: Path, args: list[str], size: str, rate, frames: int, extra_input: list[str] | None = None) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *(extra_input or []),
           "-f", "lavfi", "-i", SRC.format(size=size, rate=rate), "-frames:v", str(frames), *args, os.fsdecode(path)]
    subprocess.run(cmd, check=True, capture_output=True)


def make_corpus(root: Path) -> dict[str, str]:
    """Write the corpus under `root`; returns display name -> expected outcome ("ok" or error words).

    Also writes a folder link back to `root` (a loop discovery must not follow).
    """
    root.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, (args, size, rate, frames) in VIDEOS.items():
        encode(root / name, args, size, rate, frames)
        expected[name] = "ok"
    (root / "loop_a.mp4").symlink_to("loop_b.mp4")
    (root / "loop_b.mp4").symlink_to("loop_a.mp4")
    os.mkfifo(root / "fifo.mp4")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket.mp4"))
    sock.close()
    (root / "device.mp4").symlink_to("/dev/null")
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 50)
    expected.update(BROKEN)
    latin1 = os.path.join(os.fsencode(root), NON_UTF8)
    encode(Path(os.fsdecode(latin1)), VIDEOS["yuv444.mp4"][0], "64x48", 10, 6)
    expected[NON_UTF8.decode("utf-8", "backslashreplace")] = "ok"
    (root / "again").symlink_to(".")  # a folder link loop
    return expected


def make_long_path(root: Path, video: Path) -> str:
    """Copy `video` to a path over 4096 bytes long under `root` (built folder by folder)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    parts = []
    try:
        while sum(len(p) + 1 for p in parts) < 4200:
            name = f"d{len(parts):02d}" + "x" * 240
            os.mkdir(name, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            parts.append(name)
        out = os.open("deep.mp4", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, video.read_bytes())
        os.close(out)
    finally:
        os.close(fd)
    return os.path.join(str(root), *parts, "deep.mp4")


# Timestamp troubles (each 40 frames whose brightness encodes the frame number, a hard cut at 20):
# name -> ffmpeg output arguments. Probing and seeking must agree with a straight decode.
CUT_SOURCE = ("geq=lum='if(lt(N,20),30+N*4,230-(N-20)*4)':cb='if(lt(N,20),90,170)':cr=128")
TIMESTAMPS = {
    "program_stream.mpg": ["-c:v", "mpeg2video", "-g", "12", "-bf", "2", "-f", "vob"],
    "ts_near_wrap.ts": ["-c:v", "libx264", "-bf", "2", "-g", "12", "-pix_fmt", "yuv420p", "-output_ts_offset", "95442.5"],
    "negative_start.mkv": ["-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p", "-output_ts_offset", "-1",
                           "-avoid_negative_ts", "disabled"],
    "annexb_named.mp4": ["-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p", "-f", "h264"],
    "offset_900000s.mkv": ["-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p", "-output_ts_offset", "900000"],
}


def make_timestamp_corpus(root: Path) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name, args in TIMESTAMPS.items():
        path = root / name
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "lavfi",
               "-i", "color=c=black:size=64x48:rate=25", "-vf", CUT_SOURCE, "-frames:v", "40", *args, str(path)]
        subprocess.run(cmd, check=True, capture_output=True)
        out.append(path)
    return out
