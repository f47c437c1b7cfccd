"""Scene splitting (LaVie §4.1): PySceneDetect cuts, length rules, clips cut with ffmpeg.

Detection runs PySceneDetect's own detectors (adaptive by default, content selectable) on frames
that FFmpeg decodes with frame threading and scales straight from the decoder's planes to a
small BGR image, so no full-resolution RGB copy of a frame is ever made: that is where the stock
`scenedetect` pipeline (OpenCV decode to full-size BGR, then resize) spends its time.

Scenes shorter than `min_frames` (16 in the paper) are kept as rows with `reject_reason`, and
scenes longer than `max_seconds` are split into equal parts no longer than that.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
from typing import Literal

from lavie.curate.discover import fs_path
from lavie.curate.manifest import STATUS_ERROR, STATUS_OK, VIDEO_SCHEMA, clip_id_for
from lavie.curate.registry import register_stage
from lavie.curate.stage import Resources, Stage, StageConfig

DETECTORS = ("adaptive", "content", "transnetv2")
CUT_MODES = ("reencode", "copy", "virtual")


class ScenesConfig(StageConfig):
    """Shot detection and the scene rules; every default lives here."""

    detector: Literal["adaptive", "content", "transnetv2"] = "adaptive"
    # adaptive: adaptive_threshold (3.0); content: threshold (27.0); transnetv2: the transition
    # probability above which a frame belongs to a transition (0.5). null: that default.
    threshold: float | None = None
    min_scene_len: int = 6  # frames between cuts (PySceneDetect detectors)
    min_content_val: float = 15.0  # adaptive only: minimum content change of a cut
    window_width: int = 2  # adaptive only: frames on each side of the rolling average
    downscale_width: int = 256  # decode width for PySceneDetect detection
    fast_decode: bool = True  # skip the in-loop deblocking filter when decoding for detection
    min_frames: int = 16  # LaVie §4.1: segments under 16 frames are dropped (kept as rejected rows)
    max_seconds: float | None = 60.0  # longer scenes are split into equal parts
    cut: Literal["reencode", "copy", "virtual"] = "reencode"
    crf: int = 18
    preset: str = "veryfast"

    def detect_config(self) -> "DetectConfig":
        return DetectConfig(self.detector, self.threshold, self.min_scene_len, self.min_content_val,
                            self.window_width, self.downscale_width, self.fast_decode)


@dataclass
class DetectConfig:
    detector: str = "adaptive"
    threshold: float | None = None
    min_scene_len: int = 6
    min_content_val: float = 15.0
    window_width: int = 2
    downscale_width: int = 256
    fast_decode: bool = True

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")

    def build(self):
        from scenedetect import AdaptiveDetector, ContentDetector

        if self.detector == "adaptive":
            return AdaptiveDetector(
                adaptive_threshold=3.0 if self.threshold is None else self.threshold,
                min_scene_len=self.min_scene_len,
                window_width=self.window_width,
                min_content_val=self.min_content_val,
            )
        return ContentDetector(
            threshold=27.0 if self.threshold is None else self.threshold,
            min_scene_len=self.min_scene_len,
        )


def detect_cuts(path: str | os.PathLike, fps: Fraction, width: int, height: int, config: DetectConfig,
                transnet=None, damage=None) -> tuple[list[int], int]:
    """Frame indices where a new scene starts (0 excluded), and the number of frames decoded.

    `transnet` is a loaded `TransNetV2Detector`, needed when `config.detector` is "transnetv2";
    `damage` (a `DecodeDamage`) records corrupt stretches decoded past.
    """
    from lavie.curate.video import iter_frames, prefetch, scaled_size  # PyAV: only where frames are read

    if config.detector == "transnetv2":
        if transnet is None:
            raise ValueError("the transnetv2 detector needs its model: pass transnet=TransNetV2Detector()")
        return transnet.detect(path, 0.5 if config.threshold is None else config.threshold)
    from scenedetect import FrameTimecode

    detector = config.build()
    size = scaled_size(width, height, config.downscale_width)
    cuts: list[int] = []
    last = -1
    frames = prefetch(iter_frames(path, size=size, fmt="bgr24", fast=config.fast_decode, damage=damage))
    for index, bgr in frames:
        for tc in detector.process_frame(FrameTimecode(index, fps), bgr):
            cuts.append(tc.frame_num)
        last = index
    if last >= 0:
        for tc in detector.post_process(FrameTimecode(last, fps)):
            cuts.append(tc.frame_num)
    cuts = sorted({c for c in cuts if 0 < c <= last})
    return cuts, last + 1


def scenes_from_cuts(cuts: list[int], num_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges between cuts."""
    bounds = [0] + [c for c in cuts if 0 < c < num_frames] + [num_frames]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def split_long(scenes: list[tuple[int, int]], fps: float, max_seconds: float | None) -> list[tuple[int, int, int]]:
    """Split scenes longer than `max_seconds` into equal parts; returns (start, end, scene_index)."""
    out = []
    for scene_index, (a, b) in enumerate(scenes):
        n = b - a
        max_frames = None if not max_seconds else max(1, int(math.floor(max_seconds * fps)))
        if max_frames is None or n <= max_frames:
            out.append((a, b, scene_index))
            continue
        parts = math.ceil(n / max_frames)
        edges = [a + round(i * n / parts) for i in range(parts + 1)]
        out.extend((edges[i], edges[i + 1], scene_index) for i in range(parts))
    return out


def _even(value: int) -> int:
    return value - value % 2


def cut_clips(
    source: str | os.PathLike,
    ranges: list[tuple[int, int]],
    out_paths: list[Path],
    mode: str = "reencode",
    crf: int = 18,
    preset: str = "veryfast",
    fps: Fraction | None = None,
    size: tuple[int, int] | None = None,
) -> None:
    """Write one clip file per frame range, each file appearing whole or not at all.

    "reencode": one ffmpeg run decodes the source once, forces key frames at every clip start
    and splits there with the segment muxer, so each clip holds exactly its frames (frame
    accurate, timestamps reset, rotation applied, audio dropped). "copy": stream copy per clip,
    boundaries snap to the key frames before them (fast, not frame accurate).
    """
    if mode not in ("reencode", "copy"):
        raise ValueError(f"cut mode must be 'reencode' or 'copy', got {mode!r}")
    if fps is None:
        raise ValueError("cutting clips needs the source fps")
    if not ranges:
        return
    from lavie.curate.video import encode_pix_fmt

    source = fs_path(source)  # the name on disk of a manifest path
    tmp_dir = out_paths[0].parent / f".cut-{uuid.uuid4().hex}"
    tmp_dir.mkdir(parents=True)
    try:
        if mode == "reencode":
            _cut_reencode(source, ranges, tmp_dir, crf, preset, fps, encode_pix_fmt(*(size or (None, None))))
        else:
            _cut_copy(source, ranges, tmp_dir, fps)
        for i, final in enumerate(out_paths):
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_dir / f"{i:05d}.mp4", final)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _run_ffmpeg(cmd: list[str]) -> None:
    from lavie.curate.video import ffmpeg_failure

    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(ffmpeg_failure(proc.returncode, proc.stderr))


SOURCE = "{source}"  # stands for the source's file name in a graph until the command is compiled


def _ffmpeg(stream, source) -> list[str]:
    """The command line of an ffmpeg-python graph, for the toolkit's ffmpeg, quiet and non-interactive.

    The source's name goes in after compiling: ffmpeg-python cannot hold a name that is not
    valid UTF-8 (bytes kept as surrogates), which the subprocess call passes on as it is on disk.
    """
    from lavie.curate.video import ffmpeg_exe

    args = stream.global_args("-hide_banner", "-loglevel", "error", "-nostdin").overwrite_output().compile(
        cmd=ffmpeg_exe())
    return [str(source) if a == SOURCE else a for a in args]


def _cut_reencode(source, ranges, tmp_dir: Path, crf: int, preset: str, fps: Fraction,
                  pix_fmt: str = "yuv420p") -> None:
    import ffmpeg

    # Keep only frames that belong to some clip (short scenes between clips are skipped), and
    # number the kept frames so that segment boundaries fall on clip starts.
    keep = "+".join(f"between(n,{a},{b - 1})" for a, b in ranges)
    starts, total = [], 0
    for a, b in ranges:
        starts.append(total)
        total += b - a
    force = "+".join(f"eq(n,{s})" for s in starts)
    # Kept frames are renumbered on a constant-rate clock at the source's rate, also for a
    # variable-frame-rate source: a clip holds exactly its frames.
    video = (ffmpeg.input(SOURCE)["v:0"]
             .filter("select", keep)
             .filter("setpts", f"N*{fps.denominator}/({fps.numerator}*TB)"))
    split = ({"segment_frames": ",".join(str(s) for s in starts[1:])} if len(starts) > 1
             else {"segment_time": "999999999"})
    out = ffmpeg.output(
        video, str(tmp_dir / "%05d.mp4"), an=None, sn=None, dn=None,
        r=f"{fps.numerator}/{fps.denominator}", fps_mode="cfr", vcodec="libx264", preset=preset, crf=crf,
        pix_fmt=pix_fmt, force_key_frames=f"expr:{force}", f="segment", reset_timestamps=1,
        segment_format="mp4", **{"frames:v": total}, **split,
    )
    _run_ffmpeg(_ffmpeg(out, source))
    made = sorted(tmp_dir.glob("*.mp4"))
    if len(made) != len(ranges):
        raise RuntimeError(f"ffmpeg wrote {len(made)} segments for {len(ranges)} clips")


def _cut_copy(source, ranges, tmp_dir: Path, fps: Fraction) -> None:
    import ffmpeg

    for i, (a, b) in enumerate(ranges):
        start = float(Fraction(a) / fps)
        duration = float(Fraction(b - a) / fps)
        out = ffmpeg.input(SOURCE, ss=f"{start:.6f}").output(
            str(tmp_dir / f"{i:05d}.mp4"), t=f"{duration:.6f}", map="0:v:0", an=None, c="copy",
            avoid_negative_ts="make_zero")
        _run_ffmpeg(_ffmpeg(out, source))


VIDEO_COLUMN = "_video"  # the source's `videos` row, carried on each of its clip rows
# The `videos` columns, and those a scenes run adds to them: what decoding lost (the damage a
# source's frames had) and the source's identity on disk for the next run (lavie.curate.sources).
VIDEO_TYPE = pa.struct(list(VIDEO_SCHEMA) + [
    pa.field("undecodable_frames", pa.int64()), pa.field("warnings", pa.string()),
    pa.field("source_signature", pa.string()), pa.field("source_change", pa.string()),
])
VIDEO_SOURCE_COLUMNS = ("source_signature", "source_change")  # input columns that belong to the video


@register_stage("scenes")
class ScenesStage(Stage):
    """A flat map: one source video in, its clip rows out (LaVie §4.1).

    Input columns: `source_path`, `video_id`, `category`. Each output row is a clip with every
    `clips` column, `detector` (which shot detector cut it) and `_video`, the source's `videos`
    row, from which the writer builds the `videos` table. A source that cannot be read or split
    comes out as one error row (status error, the reason in `error`, no frame range), so a bad
    file is counted wherever clips are.
    """

    Config = ScenesConfig
    flat = True
    default_batch_size = 1

    def __init__(self, config: ScenesConfig | None = None, out_dir: str | None = None):
        super().__init__(config)
        if self.config.cut != "virtual" and out_dir is None:
            raise ValueError("the scenes stage cuts clip files into its run's folder: pass out_dir")
        self.clips_dir = Path(out_dir or ".") / "clips"
        self.detect = self.config.detect_config()
        self.transnet = None

    @classmethod
    def resources(cls, config: ScenesConfig) -> Resources:
        if config.detector == "transnetv2":
            # The network runs batched on a GPU where the cluster has one; decoding stays on CPU.
            return Resources(cpus=1.0, gpus=0.25, holds_model=True)
        return Resources(cpus=1.0)

    @classmethod
    def check_available(cls, config: ScenesConfig) -> str | None:
        if config.detector == "transnetv2":
            from lavie.curate.transnet import transnet_unavailable

            return transnet_unavailable()
        return None

    def setup(self) -> None:
        if self.config.detector == "transnetv2":
            from lavie.curate.transnet import TransNetV2Detector

            self.transnet = TransNetV2Detector()

    def __call__(self, batch: pa.Table) -> pa.Table:
        from lavie.curate.manifest import conform

        rows: list[dict] = []
        source_columns = [c for c in VIDEO_SOURCE_COLUMNS if c in batch.column_names]
        for i, video in enumerate(batch.select(["source_path", "video_id", "category", *source_columns]).to_pylist()):
            clips = self.process(video["source_path"], video["video_id"], video["category"], i)
            for c in clips:  # what the run knows of the file itself goes to its `videos` row
                c[VIDEO_COLUMN].update({k: video[k] for k in source_columns})
            rows.extend(clips)
        take = pa.array([r.pop("_input") for r in rows], pa.int64())
        videos = [r.pop(VIDEO_COLUMN) for r in rows]
        table = conform(rows, "clips").append_column(VIDEO_COLUMN, pa.array(videos, VIDEO_TYPE))
        # Columns the input carried besides these (an order index) repeat on each of its clips.
        for name in batch.column_names:
            if name not in ("source_path", "video_id", "category", *source_columns) and name not in table.column_names:
                table = table.append_column(name, batch.column(name).take(take))
        return table

    def process(self, source_path: str, video_id: str, category: str | None, index: int = 0) -> list[dict]:
        """The clip rows of one source (one error row when it fails), each with its `_video`."""
        from lavie.curate.probe import probe

        info = probe(source_path)
        video = {**info.row(), "video_id": video_id, "category": category,
                 "num_scenes": None, "num_clips": None, "num_pieces": None, "status": STATUS_OK,
                 "error": None}
        clips: list[dict] = []
        if not info.ok:
            video.update(status=STATUS_ERROR, error=info.error)
        else:
            from lavie.curate.video import DecodeDamage

            damage = DecodeDamage()  # corrupt stretches are decoded past, and recorded
            try:
                clips = self._clips(info, video_id, category, damage)
                if not clips:
                    video.update(status=STATUS_ERROR, error="no frames could be decoded")
            except Exception as exc:  # bad input is data: the row says why, the run goes on
                video.update(status=STATUS_ERROR, error=f"scene split failed: {exc}")
                clips = []
            video.update(damage.summary(info.num_frames))
        if video["status"] == STATUS_ERROR:
            clips = [{
                "clip_id": clip_id_for(video_id, 0, 0), "video_id": video_id, "kind": "video",
                "source_path": source_path, "clip_path": None, "category": category,
                "width": info.width, "height": info.height, "codec": info.codec, "fps": info.fps,
                "status": STATUS_ERROR, "error": video["error"], "keep": False, "reject_reason": None,
                "detector": self.config.detector,
            }]
        else:
            video["num_scenes"] = len({c.pop("_scene") for c in clips})
            video["num_clips"] = sum(1 for c in clips if c["keep"])
            video["num_pieces"] = len(clips)
        for c in clips:
            c[VIDEO_COLUMN] = {f.name: video.get(f.name) for f in VIDEO_TYPE}
            c["_input"] = index
        return clips

    def _clips(self, info, video_id: str, category: str | None, damage=None) -> list[dict]:
        fps = Fraction(info.fps_num, info.fps_den)
        cuts, decoded = detect_cuts(info.source_path, fps, info.width, info.height, self.detect, self.transnet,
                                    damage)
        num_frames = min(info.num_frames, decoded) if decoded else info.num_frames
        scenes = scenes_from_cuts(cuts, num_frames)
        pieces = split_long(scenes, info.fps, self.config.max_seconds)
        times = np.asarray(info.frame_pts_s, dtype=np.float64)
        min_frames = self.config.min_frames
        clips = []
        for index, (a, b, scene_index) in enumerate(pieces):
            n = b - a
            # Its own reason kind: the filter stage re-judges its rules, never the scene split
            # (a scene too short was never cut into a clip file).
            reject = f"scene_length: {n} frames < {min_frames}" if n < min_frames else None
            clip_id = clip_id_for(video_id, a, b)
            end_s = float(times[b]) if b < len(times) else float(times[-1]) + 1.0 / info.fps
            clips.append({
                "clip_id": clip_id, "video_id": video_id, "kind": "video",
                "source_path": info.source_path, "clip_path": None, "clip_index": index,
                "start_frame": a, "end_frame": b, "num_frames": n, "fps": info.fps,
                "start_s": float(times[a]), "end_s": end_s,
                "width": info.width, "height": info.height, "codec": info.codec,
                "category": category, "status": STATUS_OK, "error": None,
                "keep": reject is None, "reject_reason": reject, "detector": self.config.detector,
                "_scene": scene_index,
            })
        kept = [c for c in clips if c["keep"]]
        # A killed run may have left some of this video's clips: start its folder afresh.
        shutil.rmtree(self.clips_dir / video_id, ignore_errors=True)
        # Frame indices count decoded frames. Past a corrupt stretch a seek (which counts by
        # timestamp) would disagree, so a damaged source's clips are always cut to files.
        damaged = damage is not None and damage.packets
        cut = "reencode" if self.config.cut == "virtual" and damaged else self.config.cut
        if cut != "virtual" and kept:
            # The clip files of one video live in their own folder, named by clip id.
            paths = [self.clips_dir / video_id / f"{c['clip_id']}.mp4" for c in kept]
            cut_clips(info.source_path, [(c["start_frame"], c["end_frame"]) for c in kept], paths,
                      mode=cut, crf=self.config.crf, preset=self.config.preset, fps=fps,
                      size=(info.width, info.height))
            for c, p in zip(kept, paths):
                c["clip_path"] = str(p)
                if cut == "reencode":
                    c["codec"] = "h264"
        return clips
