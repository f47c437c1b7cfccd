"""Probe a video file with PyAV: what a `videos` manifest row records about a source.

The probe demuxes every video packet (no decoding, so it is cheap) to count frames exactly and to
see whether frame durations vary (variable frame rate), and decodes the first frame to make sure
the stream is decodable and to read its display rotation.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from lavie.curate.discover import fs_path, not_regular_reason
from lavie.curate.video import as_fraction, decode_past_damage, open_video, timestamps_wrap


@dataclass
class Probe:
    """What a source file is. `error` is set (and the rest may be None) when it is not a video."""

    source_path: str
    size_bytes: int | None = None
    duration_s: float | None = None
    num_frames: int | None = None
    fps: float | None = None
    fps_num: int | None = None
    fps_den: int | None = None
    width: int | None = None  # display size: rotation applied
    height: int | None = None
    rotation: int | None = None
    codec: str | None = None
    pix_fmt: str | None = None
    has_audio: bool | None = None
    vfr: bool | None = None
    error: str | None = None
    frame_pts_s: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def row(self) -> dict:
        """Manifest columns of this probe."""
        row = asdict(self)
        row.pop("frame_pts_s")
        row.pop("error")
        return row


# Relative spread of frame durations above which a stream counts as variable frame rate. Timestamps
# are rounded to the time base (1/90000 s for MPEG-TS, 1/12800 s for many mp4 files), so exact
# equality is too strict.
VFR_TOLERANCE = 0.05


def probe(path: str | os.PathLike) -> Probe:
    """Probe `path`. Never raises for bad input: the reason is in `Probe.error`."""
    result = Probe(source_path=str(path))
    path = Path(fs_path(path))  # a manifest path with \xNN escapes names a non-UTF-8 file
    special = not_regular_reason(path)
    if special:  # a FIFO, device or socket is never opened: opening one may block forever
        result.error = special
        return result
    try:
        result.size_bytes = path.stat().st_size
    except OSError as exc:
        result.error = f"cannot stat file: {exc.strerror or exc}"
        return result
    if result.size_bytes == 0:
        result.error = "empty file (0 bytes)"
        return result
    if not os.access(path, os.R_OK):
        result.error = "file is not readable (permission denied)"
        return result
    try:
        _probe_streams(path, result)
    except av.error.FFmpegError as exc:
        result.error = f"not a decodable video (corrupt, truncated or not a video file): {_ffmpeg_reason(exc)}"
    except ValueError as exc:
        result.error = str(exc)
    except PermissionError:
        result.error = "file is not readable (permission denied)"
    except OSError as exc:
        result.error = f"cannot read file: {exc.strerror or exc}"
    except Exception as exc:  # a probe must never take the run down with it
        result.error = f"probe failed: {exc.__class__.__name__}: {exc}"
    return result


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(": '")[0] if text else exc.__class__.__name__


def _probe_streams(path: Path, result: Probe) -> None:
    container, stream = open_video(path, threads=False)
    try:
        result.has_audio = bool(container.streams.audio)
        result.codec = stream.codec_context.name
        result.pix_fmt = stream.codec_context.pix_fmt or (stream.format.name if stream.format else None)
        rate = as_fraction(stream.average_rate) or as_fraction(stream.guessed_rate)

        # 1. Demux: exact frame count and timestamps, without decoding. Corrupt packets or a
        #    truncated file surface here as errors or as fewer packets than the header promises.
        #    Every packet with data is a frame, with a timestamp or not (raw Annex-B streams and
        #    some negative-start Matroska files carry none on some or all packets).
        stamps = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # flush packet
            stamps.append(packet.pts if packet.pts is not None else packet.dts)
        if not stamps:
            raise ValueError("video stream has no frames")
        if stream.frames and len(stamps) < stream.frames:
            raise ValueError(f"truncated: {len(stamps)} of {stream.frames} frames present")
        result.num_frames = len(stamps)
        known = np.asarray([t for t in stamps if t is not None], dtype=np.int64)
        timed = len(known) == len(stamps) and not timestamps_wrap(known)
        if timed:
            base = int(known.min())  # the first frame is at 0 s, whatever the container's offset
            times = (np.sort(known) - base).astype(np.float64) * float(stream.time_base)
        else:
            times = None  # filled from the frame rate below

        # 2. Decode the first frame: the stream must really decode, and rotation lives in its
        #    display matrix.
        frame = _first_frame(path)
        if frame is None:
            raise ValueError("no frame could be decoded (truncated or corrupt stream)")
        rotation = int(round(frame.rotation or 0)) % 360
        w, h = frame.width, frame.height
        if rotation % 180 != 0:
            w, h = h, w
        result.rotation, result.width, result.height = rotation, w, h

        # 3. Frame rate and duration; variable frame rate from the spread of frame durations.
        #    The duration is that of the frames themselves (a header's figure may include a start
        #    offset, or stop before the stream does), so it always agrees with num_frames / fps.
        deltas = np.diff(times) if times is not None else np.zeros(0)
        deltas = deltas[deltas > 0]
        if len(deltas) >= 2:
            median = float(np.median(deltas))
            spread = float(np.max(np.abs(deltas - median))) / median
            result.vfr = spread > VFR_TOLERANCE
            if rate is None:
                rate = as_fraction(1.0 / median)
        else:
            result.vfr = False
        if rate is None:
            raise ValueError("frame rate unknown")
        result.fps_num, result.fps_den = rate.numerator, rate.denominator
        result.fps = float(rate)
        if times is None:
            times = np.arange(result.num_frames, dtype=np.float64) / result.fps
        result.frame_pts_s = times.tolist()
        result.duration_s = result.num_frames / result.fps
        if result.vfr:
            # Timestamps say how long it plays; fps is the average.
            span = float(times[-1] - times[0]) + float(np.median(deltas))
            result.duration_s = span
            result.fps = result.num_frames / span if span > 0 else result.fps
    finally:
        container.close()


def _first_frame(path: Path):
    container, stream = open_video(path, threads=False)
    try:
        for frame in decode_past_damage(container, stream):  # the first frame that decodes
            return frame
    except av.error.FFmpegError as exc:
        raise ValueError(f"no frame could be decoded: {_ffmpeg_reason(exc)}") from None
    finally:
        container.close()
    return None
