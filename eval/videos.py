"""The video sets `fvd` and `clipsim` read, and the frames they take from each video.

A set is one of
  - an evaluation folder written by `lavie-eval generate` (its manifest: files and prompts);
  - a folder of video files, searched recursively (.mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg);
  - a clips manifest of `lavie-curate` (a stage folder, a Parquet file or a folder of parts):
    video rows with status ok and keep not false; a clip is its file, or its source over its frame
    range; relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
CLIP_STARTS = ("random", "first", "center")


@dataclass(frozen=True)
class VideoRef:
    """One video of a set: the file to decode and the frame range that belongs to it."""

    key: str  # stable within the set: video id, relative path or clip id
    path: str
    start_frame: int = 0
    num_frames: int | None = None  # frames from start_frame on; None: to the end of the file
    prompt: str | None = None


@dataclass
class VideoSet:
    spec: str
    kind: str  # "generated" | "directory" | "manifest"
    videos: list[VideoRef]
    unusable: list[dict] = field(default_factory=list)  # rows left out (failed samples, rejected clips)
    settings: dict | None = None  # generate.json of a generated folder

    def subset(self, max_videos: int | None, seed: int) -> "VideoSet":
        """At most `max_videos`, drawn without replacement by a generator seeded with `seed`, in set order."""
        if max_videos is None or max_videos >= len(self.videos):
            return self
        keep = np.sort(np.random.default_rng(seed).choice(len(self.videos), size=max_videos, replace=False))
        return VideoSet(self.spec, self.kind, [self.videos[i] for i in keep], self.unusable, self.settings)


def open_video_set(spec: str | Path) -> VideoSet:
    """The videos of a generated folder, a video folder or a clips manifest (InputError otherwise)."""
    from .generate import MANIFEST_FILE, PARTS_DIR, SETTINGS_FILE, read_rows, read_settings

    path = Path(spec)
    if not path.exists():
        raise InputError(f"video set {str(spec)!r} not found: pass a folder written by lavie-eval generate, "
                         f"a folder of videos, or a clips manifest")
    if path.is_dir() and any((path / name).exists() for name in (SETTINGS_FILE, MANIFEST_FILE, PARTS_DIR)):
        videos, unusable = [], []
        for row in read_rows(path):
            file = path / row["file"]
            if row.get("status") == "ok" and file.is_file():
                videos.append(VideoRef(row["video_id"], str(file), prompt=row.get("prompt")))
            else:
                unusable.append({"key": row["video_id"], "error": row.get("error") or f"{row['file']} is missing"})
        return VideoSet(str(spec), "generated", videos, unusable, read_settings(path))
    if path.is_dir() and not _is_manifest(path):
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise InputError(f"video folder {str(spec)!r} holds no video files ({' '.join(sorted(VIDEO_EXTENSIONS))})")
        return VideoSet(str(spec), "directory", [VideoRef(str(p.relative_to(path)), str(p)) for p in files])
    return _manifest_set(path)


def _is_manifest(path: Path) -> bool:
    return (path / "clips.parquet").is_file() or any(path.glob("*.parquet"))


def _manifest_set(path: Path) -> VideoSet:
    from lavie.curate.manifest import ManifestError, read_manifest, resolve_manifest

    try:
        table = read_manifest(path, "clips")
    except ManifestError as err:
        raise InputError(f"video set {str(path)!r} is not a readable clips manifest: {err}") from None
    base = resolve_manifest(path, "clips")
    base = base.parent if base.is_file() else base
    videos, unusable = [], []
    for row in table.to_pylist():
        if row.get("status") != "ok" or row.get("keep") is False or row.get("kind") == "image":
            why = "an image, not a video" if row.get("kind") == "image" else "keep=false"
            unusable.append({"key": row["clip_id"], "error": row.get("error") or row.get("reject_reason") or why})
            continue
        if row.get("clip_path"):
            file, start, count = row["clip_path"], 0, row.get("num_frames")
        else:  # a virtual clip: the source over the clip's frame range
            file, start, count = row["source_path"], int(row.get("start_frame") or 0), row.get("num_frames")
        file = str(file if Path(file).is_absolute() else base / file)
        videos.append(VideoRef(row["clip_id"], file, start, None if count is None else int(count), row.get("caption")))
    if not videos:
        raise InputError(f"clips manifest {str(path)!r} has no usable clips (status ok, keep not false)")
    return VideoSet(str(path), "manifest", videos, unusable)


def clip_indices(available: int, num_frames: int, stride: int, clip_start: str, rng: np.random.Generator) -> list[int]:
    """Frame offsets of a `num_frames` window, `stride` apart, inside `available` frames."""
    span = (num_frames - 1) * stride + 1
    if span > available:
        raise ValueError(f"has {available} frames; {num_frames} frames {stride} apart need {span}")
    slack = available - span
    start = int(rng.integers(slack + 1)) if clip_start == "random" else slack // 2 if clip_start == "center" else 0
    return [start + i * stride for i in range(num_frames)]


def read_clip(video: VideoRef, num_frames: int | None, stride: int = 1, clip_start: str = "first", seed: int = 0) -> np.ndarray:
    """(T, H, W, 3) uint8: `num_frames` frames of the video (all of them when None).

    A random window comes from a generator seeded with (seed, the video's key), so a video gets
    the same window whatever else the set holds. Raises ValueError for a short or unreadable video.
    """
    from lavie.curate.video import frame_timeline, read_frames

    try:
        available = video.num_frames if video.num_frames is not None else len(frame_timeline(video.path)) - video.start_frame
        if num_frames is None:
            offsets = list(range(available))
        else:
            rng = np.random.default_rng([seed, zlib.crc32(video.key.encode())])
            offsets = clip_indices(available, num_frames, stride, clip_start, rng)
        if not offsets:
            raise ValueError("has no frames")
        return read_frames(video.path, [video.start_frame + o for o in offsets])
    except ValueError:
        raise
    except Exception as err:  # PyAV raises its own error types for broken files
        raise ValueError(f"could not be decoded ({type(err).__name__}: {' '.join(str(err).split())})") from None
