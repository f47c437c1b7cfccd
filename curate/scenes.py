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
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from lavie.curate.discover import fs_path
from lavie.curate.manifest import STATUS_ERROR, STATUS_OK, clip_id_for
from lavie.curate.probe import Probe, probe
from lavie.curate.registry import register_stage
from lavie.curate.video import DecodeDamage, encode_pix_fmt, ffmpeg_exe, ffmpeg_failure, iter_frames, prefetch, scaled_size

DETECTORS = ("adaptive", "content")
CUT_MODES = ("reencode", "copy", "virtual")


@dataclass
class DetectConfig:
    detector: str = "adaptive"
    threshold: float | None = None  # adaptive: adaptive_threshold (3.0); content: threshold (27)
    min_scene_len: int = 6  # frames between cuts for the detector; short scenes are dropped later
    min_content_val: float = 15.0  # adaptive only
    window_width: int = 2  # adaptive only
    downscale_width: int = 256  # decode width for detection (PySceneDetect's auto-downscale)
    fast_decode: bool = True  # skip the deblocking filter when decoding for detection

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")

    def build(self):
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
                damage: DecodeDamage | None = None) -> tuple[list[int], int]:
    """Frame indices where a new scene starts (0 excluded), and the number of frames decoded."""
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
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(ffmpeg_failure(proc.returncode, proc.stderr))


def _cut_reencode(source, ranges, tmp_dir: Path, crf: int, preset: str, fps: Fraction,
                  pix_fmt: str = "yuv420p") -> None:
    # Keep only frames that belong to some clip (short scenes between clips are skipped), and
    # number the kept frames so that segment boundaries fall on clip starts.
    keep = "+".join(f"between(n\\,{a}\\,{b - 1})" for a, b in ranges)
    starts, total = [], 0
    for a, b in ranges:
        starts.append(total)
        total += b - a
    force = "+".join(f"eq(n,{s})" for s in starts)
    seg_frames = ",".join(str(s) for s in starts[1:])
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(source),
        "-map", "0:v:0", "-an", "-sn", "-dn",
        # Kept frames are renumbered on a constant-rate clock at the source's rate, also for a
        # variable-frame-rate source: a clip holds exactly its frames.
        "-vf", f"select='{keep}',setpts=N*{fps.denominator}/({fps.numerator}*TB)",
        "-r", f"{fps.numerator}/{fps.denominator}", "-fps_mode", "cfr", "-frames:v", str(total),
        "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", pix_fmt,
        "-force_key_frames", f"expr:{force}",
        "-f", "segment", "-reset_timestamps", "1", "-segment_format", "mp4",
    ]
    if seg_frames:
        cmd += ["-segment_frames", seg_frames]
    else:
        cmd += ["-segment_time", "999999999"]
    cmd.append(str(tmp_dir / "%05d.mp4"))
    _run_ffmpeg(cmd)
    made = sorted(tmp_dir.glob("*.mp4"))
    if len(made) != len(ranges):
        raise RuntimeError(f"ffmpeg wrote {len(made)} segments for {len(ranges)} clips")


def _cut_copy(source, ranges, tmp_dir: Path, fps: Fraction) -> None:
    for i, (a, b) in enumerate(ranges):
        start = float(Fraction(a) / fps)
        duration = float(Fraction(b - a) / fps)
        _run_ffmpeg([
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-ss", f"{start:.6f}", "-i", str(source), "-t", f"{duration:.6f}",
            "-map", "0:v:0", "-an", "-c", "copy", "-avoid_negative_ts", "make_zero",
            str(tmp_dir / f"{i:05d}.mp4"),
        ])


@register_stage("scenes")
class ScenesStage:
    """One source video in, one `videos` row out, with its clips as JSON in `clips_json`.

    Input columns: `source_path`, `video_id`, `category`. Output adds every `videos` column.
    The clip rows travel as JSON so that a batch stays one row per video; the runner explodes
    them into the `clips` manifest.
    """

    def __init__(
        self,
        clips_dir: str,
        detector: str = "adaptive",
        threshold: float | None = None,
        min_scene_len: int = 6,
        downscale_width: int = 256,
        min_frames: int = 16,
        max_seconds: float | None = 60.0,
        cut: str = "reencode",
        crf: int = 18,
        preset: str = "veryfast",
    ):
        if cut not in CUT_MODES:
            raise ValueError(f"cut must be one of {CUT_MODES}, got {cut!r}")
        self.detect = DetectConfig(detector, threshold, min_scene_len, downscale_width=downscale_width)
        self.clips_dir = Path(clips_dir)
        self.min_frames = min_frames
        self.max_seconds = max_seconds
        self.cut = cut
        self.crf = crf
        self.preset = preset

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.process(str(path), str(vid), None if cat is None else str(cat))
                for path, vid, cat in zip(batch["source_path"], batch["video_id"], batch["category"])]
        return {key: np.array([row[key] for row in rows], dtype=object) for key in rows[0]}

    def process(self, source_path: str, video_id: str, category: str | None) -> dict:
        info = probe(source_path)
        row = {**info.row(), "video_id": video_id, "category": category,
               "num_scenes": None, "num_clips": None, "status": STATUS_OK, "error": None,
               "clips_json": "[]"}
        if not info.ok:
            row.update(status=STATUS_ERROR, error=info.error)
            return row
        damage = DecodeDamage()  # corrupt stretches are decoded past, and recorded
        try:
            clips = self._clips(info, video_id, category, damage)
        except Exception as exc:  # bad input is data: the row says why, the run goes on
            row.update(status=STATUS_ERROR, error=f"scene split failed: {exc}", **damage.summary(info.num_frames))
            return row
        row.update(damage.summary(info.num_frames))
        row["num_scenes"] = len({c.pop("_scene") for c in clips}) if clips else 0
        row["num_clips"] = sum(1 for c in clips if c["keep"])
        row["clips_json"] = json.dumps(clips)
        return row

    def _clips(self, info: Probe, video_id: str, category: str | None, damage: DecodeDamage | None = None) -> list[dict]:
        fps = Fraction(info.fps_num, info.fps_den)
        cuts, decoded = detect_cuts(info.source_path, fps, info.width, info.height, self.detect, damage)
        num_frames = min(info.num_frames, decoded) if decoded else info.num_frames
        scenes = scenes_from_cuts(cuts, num_frames)
        pieces = split_long(scenes, info.fps, self.max_seconds)
        times = np.asarray(info.frame_pts_s, dtype=np.float64)
        clips = []
        for index, (a, b, scene_index) in enumerate(pieces):
            n = b - a
            reject = f"frames: {n} < {self.min_frames}" if n < self.min_frames else None
            clip_id = clip_id_for(video_id, a, b)
            end_s = float(times[b]) if b < len(times) else float(times[-1]) + 1.0 / info.fps
            clips.append({
                "clip_id": clip_id, "video_id": video_id, "kind": "video",
                "source_path": info.source_path, "clip_path": None, "clip_index": index,
                "start_frame": a, "end_frame": b, "num_frames": n, "fps": info.fps,
                "start_s": float(times[a]), "end_s": end_s,
                "width": info.width, "height": info.height, "codec": info.codec,
                "category": category, "status": STATUS_OK, "error": None,
                "keep": reject is None, "reject_reason": reject, "_scene": scene_index,
            })
        kept = [c for c in clips if c["keep"]]
        # A killed run may have left some of this video's clips: start its folder afresh.
        shutil.rmtree(self.clips_dir / video_id, ignore_errors=True)
        # Frame indices count decoded frames. Past a corrupt stretch a seek (which counts by
        # timestamp) would disagree, so a damaged source's clips are always cut to files.
        cut = "reencode" if self.cut == "virtual" and damage is not None and damage.packets else self.cut
        if cut != "virtual" and kept:
            # The clip files of one video live in their own folder, named by clip id.
            paths = [self.clips_dir / video_id / f"{c['clip_id']}.mp4" for c in kept]
            cut_clips(info.source_path, [(c["start_frame"], c["end_frame"]) for c in kept], paths,
                      mode=cut, crf=self.crf, preset=self.preset, fps=fps,
                      size=(info.width, info.height))
            for c, p in zip(kept, paths):
                c["clip_path"] = str(p)
                if cut == "reencode":
                    c["codec"] = "h264"
        return clips
