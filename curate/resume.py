"""The resume engine: a run's journal of finished rows, and the manifests made from it.

A run writes each block the stage list hands back as an atomic part under `OUT/.parts/` (see
`PartStore`); a part appears whole or not at all, so the keys found in parts are exactly the
finished rows, and a killed run resumes from there without duplicates or losses.

When the run starts from raw videos, each clip row carries its source's `videos` row (`_video`).
A video is done when all its rows are back: they are written as one `clips` part, then the
`videos` part of the same name, which marks the video done. A `clips` part without its `videos`
twin is what a kill between the two writes leaves: it is dropped and the video redone.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lavie.curate.manifest import ORDER_COLUMN, PartStore

VIDEO_COLUMN = "_video"


class RunJournal:
    def __init__(self, out_dir: str | Path, videos: bool):
        self.out_dir = Path(out_dir)
        self.clips = PartStore(self.out_dir, "clips", "clip_id")
        self.videos = PartStore(self.out_dir, "videos", "video_id") if videos else None
        self._pending: dict[str, list[pa.Table]] = {}  # video_id -> its rows back so far
        self._expected: dict[str, int] = {}
        self.rows_written = 0

    # -- what is done ---------------------------------------------------------------------------

    def done_videos(self) -> set[str]:
        self.clips.drop_parts_except(self.videos.part_names())
        return self.videos.done()

    def done_clips(self) -> set[str]:
        return self.clips.done()

    # -- writing --------------------------------------------------------------------------------

    def write(self, block: pa.Table) -> int:
        """Journal a finished block; returns the rows written now (a video's rows wait for all)."""
        if block.num_rows == 0:
            return 0
        if self.videos is None or VIDEO_COLUMN not in block.column_names:
            self._write_part(block, None)
            return block.num_rows
        return self._write_videos(block)

    def write_failed_sources(self, videos: list[dict]) -> None:
        """Sources known bad before any decoding (unreadable, special files): their `videos` rows,
        and each one error row among the clips, so every count of clips sees them."""
        from lavie.curate.manifest import STATUS_ERROR, clip_id_for

        clips = [{"clip_id": clip_id_for(v["video_id"], 0, 0), "video_id": v["video_id"], "kind": "video",
                  "source_path": v["source_path"], "category": v.get("category"), "status": STATUS_ERROR,
                  "error": v.get("error"), "keep": False} for v in videos]
        name = f"part-failed-{uuid.uuid4().hex[:8]}"
        self.clips.write(clips, name)
        self.videos.write(videos, name)
        self.rows_written += len(clips)

    def _name(self, block: pa.Table) -> str:
        first = pc.min(block.column(ORDER_COLUMN)).as_py() if ORDER_COLUMN in block.column_names else 0
        return f"part-{int(first or 0):012d}-{uuid.uuid4().hex[:8]}"

    def _write_part(self, clips: pa.Table, videos: list[dict] | None) -> None:
        name = self._name(clips)
        self.clips.write(clips.drop_columns([c for c in (VIDEO_COLUMN,) if c in clips.column_names]), name)
        if videos is not None:
            self.videos.write(videos, name)
        self.rows_written += clips.num_rows

    def _write_videos(self, block: pa.Table) -> int:
        ids = block.column("video_id").to_pylist()
        counts: dict[str, int] = {}
        for vid in ids:
            counts[vid] = counts.get(vid, 0) + 1
        video_rows = {}
        for vid, row in zip(ids, block.column(VIDEO_COLUMN).to_pylist()):
            video_rows.setdefault(vid, row)
        for vid, n in counts.items():
            mask = pc.equal(block.column("video_id"), vid)
            self._pending.setdefault(vid, []).append(block.filter(mask))
            if vid not in self._expected:
                row = video_rows[vid]
                # An error video comes as one row; an ok one as one row per scene piece.
                self._expected[vid] = 1 if row["status"] == "error" else _rows_of(row)
        complete = [vid for vid in counts if sum(t.num_rows for t in self._pending[vid]) >= self._expected[vid]]
        if not complete:
            return 0
        tables = [t for vid in complete for t in self._pending.pop(vid)]
        videos = [video_rows[vid] for vid in complete]
        for vid in complete:
            self._expected.pop(vid)
        out = pa.concat_tables(tables, promote_options="permissive")
        self._write_part(out, videos)
        return out.num_rows

    def finish(self) -> None:
        """Write the manifests from the journal: clips in input order, videos by path."""
        if self._pending:
            missing = ", ".join(sorted(self._pending)[:3])
            raise RuntimeError(f"{len(self._pending)} videos came back incomplete ({missing}); re-run to resume")
        if self.videos is not None:
            self.videos.consolidate(sort_by=["source_path"])
        self.clips.consolidate()


def _rows_of(video: dict) -> int:
    """Clip rows an ok video yields: every scene piece, kept or not (`num_pieces`)."""
    return int(video.get("num_pieces") or 0)
