"""Curation jobs: discover inputs, skip what is done, run a stage on Ray, write manifests.

A job's output folder holds the stage's manifests (`videos.parquet`, `clips.parquet`), the config
it ran with (`config.yaml`), a `summary.json`, the clip files (`clips/<video_id>/<clip_id>.mp4`)
and the run journal (`.parts/`). Re-running a job on the same folder resumes it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
from tqdm.auto import tqdm

from lavie.curate import runner
from lavie.curate.config import CurateConfig, save_config
from lavie.curate.manifest import STATUS_ERROR, PartStore, video_id_for

SUMMARY_FILE = "summary.json"


def discover(raw_dir: str | os.PathLike, extensions: list[str], skip: list[Path] | None = None) -> list[Path]:
    """Video files under `raw_dir` (recursive, sorted), hidden files and `skip` folders left out.

    Links are listed as they are, dangling ones too: a link that leads nowhere is an input the
    run must report, not silently pass over.
    """
    raw_dir = Path(raw_dir)
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    skip_resolved = {p.resolve() for p in (skip or [])}
    found = []
    for root, dirs, files in os.walk(raw_dir):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() not in skip_resolved)
        for name in files:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in exts:
                found.append(root_path / name)
    return sorted(found)


def category_of(path: Path, raw_dir: Path) -> str | None:
    """The top folder under the raw directory, for a tree organised as <category>/<video>."""
    rel = path.relative_to(raw_dir)
    return rel.parts[0] if len(rel.parts) > 1 else None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


@dataclass
class ScenesSummary:
    videos: int
    videos_ok: int
    videos_error: int
    clips: int
    clips_rejected: int
    hours: float
    skipped_done: int
    seconds: float

    def line(self) -> str:
        return (
            f"scenes: {self.videos} videos ({self.videos_ok} ok, {self.videos_error} errors), "
            f"{self.clips} clips kept, {self.clips_rejected} rejected, {self.hours:.4f} h of clips; "
            f"{self.skipped_done} videos already done; {self.seconds:.1f} s"
        )


def run_scenes(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: CurateConfig,
    progress: bool = True,
) -> ScenesSummary:
    """Split every video under `raw_dir` into single-scene clips; resumable."""
    started = time.time()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    videos = PartStore(out_dir, "videos", "video_id")
    clips = PartStore(out_dir, "clips", "clip_id")
    save_config(config, out_dir / "config.yaml")

    # 1. Resume: a video is done when its `videos` part exists. A `clips` part without its
    #    `videos` twin is what a kill between the two writes leaves: drop it, redo the video.
    clips.drop_parts_except(videos.part_names())
    done = videos.done()

    files = discover(raw_dir, config.input.extensions, skip=[out_dir])
    todo = []
    for path in files:
        vid = video_id_for(path, _size(path))
        if vid in done:
            continue
        category = category_of(path, raw_dir) if config.input.category_from_folder else None
        todo.append({"source_path": str(path), "video_id": vid, "category": category})
    todo_ids = {r["video_id"] for r in todo}
    skipped = len(files) - len(todo)

    # 2. Run the scenes stage over the videos still to do.
    if todo:
        sc = config.scenes
        spec = runner.StageSpec(
            name="scenes",
            kwargs=dict(
                clips_dir=str((out_dir / "clips").resolve()), detector=sc.detector,
                threshold=sc.threshold, min_scene_len=sc.min_scene_len,
                downscale_width=sc.downscale_width, min_frames=sc.min_frames,
                max_seconds=sc.max_seconds, cut=sc.cut, crf=sc.crf, preset=sc.preset,
            ),
            concurrency=min(len(todo), _workers(config)),
            batch_size=config.distribution.batch_size,
        )
        runner.init_ray(config.distribution.ray_address, num_cpus=config.distribution.workers)
        bar = tqdm(total=len(todo), unit="video", desc="scenes", disable=not progress)
        try:
            for block in runner.map_stage(pa.Table.from_pylist(todo), spec):
                _write_scenes_block(block, videos, clips)
                bar.update(block.num_rows)
        finally:
            bar.close()
    missing = todo_ids - videos.done()
    if missing:
        raise RuntimeError(f"{len(missing)} videos produced no row; re-run to resume")

    # 3. The stage's manifests, from the journal.
    vt = videos.consolidate(sort_by=["source_path"])
    ct = clips.consolidate(sort_by=["source_path", "start_frame"])
    summary = _summarise(vt, ct, skipped, time.time() - started)
    with open(out_dir / SUMMARY_FILE, "w") as fh:
        json.dump(asdict(summary), fh, indent=2)
    return summary


def _workers(config: CurateConfig) -> int:
    return config.distribution.workers or os.cpu_count() or 1


def _write_scenes_block(block: pa.Table, videos: PartStore, clips: PartStore) -> None:
    """Clips first, then the videos rows under the same part name: the videos part marks done."""
    rows = block.to_pylist()
    clip_rows = []
    for row in rows:
        clip_rows.extend(json.loads(row.pop("clips_json") or "[]"))
    name = f"part-{uuid.uuid4().hex}"
    if clip_rows:
        clips.write(clip_rows, name)
    videos.write(rows, name)


def _summarise(vt: pa.Table, ct: pa.Table, skipped: int, seconds: float) -> ScenesSummary:
    status = vt.column("status").to_pylist()
    keep = ct.column("keep").to_pylist()
    durations = [
        (e - s) for s, e, k in zip(ct.column("start_s").to_pylist(), ct.column("end_s").to_pylist(), keep)
        if k and s is not None and e is not None
    ]
    return ScenesSummary(
        videos=vt.num_rows,
        videos_ok=sum(s != STATUS_ERROR for s in status),
        videos_error=sum(s == STATUS_ERROR for s in status),
        clips=sum(bool(k) for k in keep),
        clips_rejected=sum(not k for k in keep),
        hours=sum(durations) / 3600.0,
        skipped_done=skipped,
        seconds=seconds,
    )

