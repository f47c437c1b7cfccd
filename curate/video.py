"""Video decoding and ffmpeg access shared by curation and training.

Decoding goes through PyAV (FFmpeg's libraries in-process); cutting and encoding go through the
``ffmpeg`` program: the system one when it is on PATH, else the binary shipped in the
``imageio-ffmpeg`` wheel, so ``pip install`` alone gives a working toolkit.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from lavie.curate.discover import fs_path, not_regular_reason


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg program: $LAVIE_FFMPEG, the system ffmpeg, or imageio-ffmpeg's."""
    env = os.environ.get("LAVIE_FFMPEG")
    if env:
        return env
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg
    except ImportError:  # pragma: no cover - imageio-ffmpeg is a dependency
        raise RuntimeError(
            "ffmpeg not found: install it on PATH, set LAVIE_FFMPEG, or pip install imageio-ffmpeg"
        ) from None
    return imageio_ffmpeg.get_ffmpeg_exe()


# Words that mark the line of an ffmpeg log naming why it failed; the lines after it are
# consequences ("Error while opening encoder", "Nothing was written", "Invalid argument").
_CAUSE = re.compile(r"error|invalid|not divisible|unsupported|not supported|failed|cannot|could not|"
                    r"no such|denied|unknown|incorrect|too (?:large|small|many)|out of", re.I)


def ffmpeg_failure(returncode: int, stderr: str) -> str:
    """One line for a failed ffmpeg run: its status, the first line naming a cause, the last line."""
    lines = [re.sub(r" @ 0x[0-9a-f]+", "", line).strip() for line in (stderr or "").splitlines()]
    lines = [line for line in lines if line]
    cause = next((line for line in lines if _CAUSE.search(line)), None)
    shown = [line for line in (cause, lines[-1] if lines else None) if line]
    return f"ffmpeg exited {returncode}: " + (" | ".join(dict.fromkeys(shown)) or "no message")


def encode_pix_fmt(width: int | None, height: int | None) -> str:
    """Pixel format for an H.264 clip of this size: 4:2:0 where libx264 takes it, else 4:4:4.

    4:2:0 halves the chroma planes, so libx264 refuses odd sizes ("width not divisible by 2");
    4:4:4 keeps every pixel of an odd-sized source (1919x1079, 321x241) instead of cropping one.
    """
    if width and height and (width % 2 or height % 2):
        return "yuv444p"
    return "yuv420p"


def scaled_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Size with width near `target_width`, aspect kept, both even and >= 2 (never upscaled)."""
    if width <= target_width:
        return width - width % 2 or 2, height - height % 2 or 2
    scale = target_width / width
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


# Decoder options for analysis-only decoding: skipping the in-loop deblocking filter saves a
# good part of H.264/HEVC decode time and changes pixels by a fraction of a grey level, which is
# invisible once a frame is scaled down for scene detection.
FAST_DECODE = {"skip_loop_filter": "all"}


def open_video(
    path: str | os.PathLike, threads: bool = True, fast: bool = False
) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open a file's first video stream for decoding; raises ValueError when it has none.

    A path that is not a regular file (FIFO, device, socket) is a ValueError before anything
    opens it, so a reader never blocks on it; manifest paths go through `fs_path` first.
    """
    path = fs_path(path)
    special = not_regular_reason(path)
    if special:
        raise ValueError(special)
    container = av.open(path, metadata_errors="ignore")
    if not container.streams.video:
        container.close()
        raise ValueError("no video stream (audio-only or not a video file)")
    stream = container.streams.video[0]
    if threads:
        # Frame + slice threading: decoding is the bottleneck of scene detection.
        stream.thread_type = "AUTO"
    if fast:
        stream.codec_context.options = dict(FAST_DECODE)
    return container, stream


def iter_frames(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    fmt: str = "rgb24",
    start_frame: int = 0,
    end_frame: int | None = None,
    seek: bool = True,
    fast: bool = False,
    only: set[int] | None = None,
    damage: DecodeDamage | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(frame_index, image)` for frames `[start_frame, end_frame)` in decode order.

    Frames are converted and scaled by FFmpeg's swscale straight from the decoder's planes
    (`size` is the displayed `(width, height)`), so a full-resolution RGB copy is never made,
    and turned upright when the stream carries a rotation. Frame indices
    count decoded frames from the start of the stream, which is what scene detection and the
    manifests use; with `seek`, decoding starts at the key frame before `start_frame`, found
    through the stream's presentation times (`frame_timeline`), which also give every decoded
    frame's index.
    `fast` decodes for analysis only (see FAST_DECODE). With `only`, frames outside that set
    are decoded (they must be, for prediction) but neither converted nor yielded.
    Decoding goes on past corrupt packets (`decode_past_damage`); `damage` counts them.
    """
    timeline = seek_timeline(path) if seek and start_frame > 0 else None
    if timeline is not None and len(timeline) <= start_frame:
        return
    if timeline is not None:
        # Seek to the key frame at or before a frame a little ahead of the target, found by its
        # own timestamp (exact also for variable frame rate). Some demuxers (MPEG program and
        # transport streams) seek by bytes and may land after the target: then seek further
        # back, and in the end decode from the start. A decoded frame whose timestamp is not
        # in the timeline (wrapped or missing timestamps) also means: decode from the start.
        back = 2
        while back < 4 * max(start_frame, 1):
            frames = _frames_after_seek(path, timeline, max(0, start_frame - back), start_frame, fast)
            first = next(frames, None)
            if first is not None and first[0] is not None and first[0] <= start_frame:
                yield from _select(path, itertools.chain([first], frames), size, fmt, start_frame, end_frame, only)
                return
            frames.close()
            if first is not None and first[0] is None:
                break  # timestamps that do not match the timeline: no seek is trustworthy
            back *= 4
    yield from _select(path, _decode_all(path, fast, damage), size, fmt, start_frame, end_frame, only)


class DecodeDamage:
    """What a decode that went on past corrupt data met: rejected packets, decoded frames."""

    def __init__(self):
        self.packets = 0  # packets the decoder rejected
        self.frames = 0  # frames decoded
        self.first_error: str | None = None

    def rejected(self, exc: Exception) -> None:
        self.packets += 1
        if self.first_error is None:
            self.first_error = (getattr(exc, "strerror", None) or str(exc)).split(": '")[0]

    def summary(self, num_frames: int | None) -> dict:
        """The `videos` columns that record the damage (nothing when there was none)."""
        if not self.packets:
            return {}
        lost = max(0, (num_frames or 0) - self.frames) or self.packets
        return {"undecodable_frames": lost,
                "warnings": f"{lost} of {num_frames} frames could not be decoded ({self.first_error}); "
                            f"the frames that decode were used"}


def decode_past_damage(container, stream, damage: DecodeDamage | None = None):
    """Decoded frames of `stream`, packet by packet, going on past packets the decoder rejects.

    A corrupt stretch in the middle costs the frames it holds (as a straight `ffmpeg` decode
    would), not the whole video; `damage` counts what was lost.
    """
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as exc:
            if damage is not None:
                damage.rejected(exc)
            continue
        for frame in frames:
            if damage is not None:
                damage.frames += 1
            yield frame


def _decode_all(path, fast: bool, damage: DecodeDamage | None = None):
    """Every frame from the start, indexed by decode order: what a straight decode gives."""
    container, stream = open_video(path, fast=fast)
    try:
        for index, frame in enumerate(decode_past_damage(container, stream, damage)):
            yield index, frame
    finally:
        container.close()


def _frames_after_seek(path, timeline: np.ndarray, seek_frame: int, start_frame: int, fast: bool):
    """Frames after a seek to `seek_frame`'s timestamp, indexed by their timestamp in `timeline`.

    Yields `(None, frame)` once and stops when the first frame's timestamp is not in the timeline.
    """
    container, stream = open_video(path, fast=fast)
    try:
        try:
            container.seek(int(timeline[seek_frame]), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            yield None, None  # the demuxer cannot seek there
            return
        index = None
        for frame in decode_past_damage(container, stream):
            if index is None:
                pos = int(np.searchsorted(timeline, frame.pts)) if frame.pts is not None else len(timeline)
                if pos >= len(timeline) or timeline[pos] != frame.pts:
                    yield None, frame
                    return
                index = pos
            yield index, frame
            index += 1
    finally:
        container.close()


def _select(path, frames, size, fmt: str, start_frame: int, end_frame: int | None, only: set[int] | None):
    """Convert and scale the wanted frames of an `(index, frame)` stream."""
    scaler = VideoReformatter()
    for index, frame in frames:
        if end_frame is not None and index >= end_frame:
            break
        if index >= start_frame and (only is None or index in only):
            # The display matrix says how a player turns the picture (counter-clockwise
            # degrees); frames come out as displayed, `size` being the displayed size.
            turns = int(round(frame.rotation or 0)) // 90 % 4
            w, h = size if size else (None, None)
            if turns % 2 and size:
                w, h = h, w
            # One reformatter for the whole stream: its scaler is set up once, not per frame.
            img = scaler.reformat(frame, width=w, height=h, format=fmt).to_ndarray()
            if turns:
                img = np.ascontiguousarray(np.rot90(img, turns))
            yield index, img


@functools.lru_cache(maxsize=512)
def _timeline(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, bool]:
    container, stream = open_video(path, threads=False)
    try:
        stamps = [p.pts for p in container.demux(stream) if p.size]
    finally:
        container.close()
    known = np.asarray([t for t in stamps if t is not None], dtype=np.int64)
    timeline = np.sort(known)
    # Seeking by timestamp needs one distinct timestamp per frame, on one clock that does not
    # wrap (an MPEG-TS clock wraps at 2^33 ticks: a drop of many hours in demux order).
    seekable = (len(known) == len(stamps) and len(timeline) > 0 and bool(np.all(np.diff(timeline) > 0))
                and not timestamps_wrap(known))
    return timeline, seekable


def timestamps_wrap(pts_in_demux_order: np.ndarray) -> bool:
    """Whether a stream's timestamps wrap around (drop by far more than frame reordering does)."""
    return bool(len(pts_in_demux_order) > 1 and np.any(np.diff(pts_in_demux_order) < -(1 << 30)))


def frame_timeline(path: str | os.PathLike) -> np.ndarray:
    """Sorted presentation timestamps of a file's video frames (stream time base): frame i's pts.

    Read by demuxing only (no decoding) and cached per file version, so a loader that reads many
    clips of one source demuxes it once. Frames without a timestamp are left out.
    """
    path = fs_path(path)
    st = os.stat(path)
    return _timeline(path, st.st_size, st.st_mtime_ns)[0]


def seek_timeline(path: str | os.PathLike) -> np.ndarray | None:
    """The timeline when seeking by it is sound, else None (frames without or with repeated
    timestamps: raw Annex-B streams, some negative-start Matroska files): decode from the start."""
    path = fs_path(path)
    st = os.stat(path)
    timeline, seekable = _timeline(path, st.st_size, st.st_mtime_ns)
    return timeline if seekable else None


def read_frames(
    path: str | os.PathLike,
    indices: list[int] | np.ndarray,
    size: tuple[int, int] | None = None,
    fmt: str = "rgb24",
) -> np.ndarray:
    """Decode only the frames at `indices` (sorted or not): `(len(indices), H, W, 3)` uint8.

    Decoding starts at the key frame before the first wanted frame and stops after the last one.
    """
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        raise ValueError("read_frames needs at least one frame index")
    got: dict[int, np.ndarray] = {}
    for index, img in iter_frames(path, size, fmt, start_frame=wanted[0], end_frame=wanted[-1] + 1,
                                  only=set(wanted)):
        got[index] = img
    missing = [i for i in wanted if i not in got]
    if missing:
        raise ValueError(f"{path}: frames {missing[:5]} could not be decoded (file shorter than its manifest says?)")
    return np.stack([got[int(i)] for i in indices])


def as_fraction(rate) -> Fraction | None:
    if rate is None:
        return None
    frac = Fraction(rate).limit_denominator(1001 * 1000)
    return frac if frac > 0 else None


def display_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) a player shows: rotation applied."""
    container, stream = open_video(path, threads=False)
    try:
        frame = next(container.decode(stream))
        w, h = frame.width, frame.height
        if int(round(frame.rotation or 0)) % 180 != 0:
            w, h = h, w
        return w, h
    finally:
        container.close()


def is_writable_dir(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return True
    except OSError:
        return False


def frame_positions(num_frames: int, k: int) -> list[int]:
    """k frame offsets spread over a clip: first, middle, last for k=3 (evenly spaced)."""
    if num_frames <= 0:
        raise ValueError("clip has no frames")
    if k <= 1:
        return [num_frames // 2]
    return sorted({round(i * (num_frames - 1) / (k - 1)) for i in range(k)})


def clip_frames(
    source_path: str,
    clip_path: str | None,
    start_frame: int,
    num_frames: int,
    k: int,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """k RGB frames of a manifest clip, `(k', H, W, 3)` uint8 (k' <= k for very short clips).

    Reads the clip file when it was cut, else the source over the clip's frame range (a virtual
    clip). Only the frames needed are decoded.
    """
    offsets = frame_positions(int(num_frames), k)
    if clip_path:
        return read_frames(clip_path, offsets, size=size)
    return read_frames(source_path, [int(start_frame) + o for o in offsets], size=size)


def prefetch(frames: Iterator, depth: int = 8) -> Iterator:
    """Run a frame iterator in a background thread, `depth` items ahead of the consumer.

    FFmpeg decodes and scales with the GIL released, so the consumer (a detector, a model's
    preprocessing) works on frame n while frame n+1 decodes. Errors reach the consumer.
    """
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in frames:
                if stop.is_set():
                    return
                box.put(item)
            box.put(done)
        except BaseException as exc:  # handed to the consumer below
            box.put(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                box.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)
