"""What a scenes run has to do: new sources, changed sources, and sources already done.

A source is done when a `videos` part holds its row. A source whose file changed since that row
was written (another size or modification time, as make and rsync judge it) is not done: its old
`videos` and `clips` rows are removed from the run's journal, its clip files deleted, and it is
processed again, its new row saying what changed in `source_change`. A source therefore has one
`videos` row and one set of clips, never two, however often its file changes between runs.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lavie.curate.discover import Source, category_of, discover_sources, error_row
from lavie.curate.paths import resolve_paths

log = logging.getLogger(__name__)

SIGNATURE_COLUMN = "source_signature"  # "size:mtime_ns" of the file when it was processed
CHANGE_COLUMN = "source_change"  # set when this run replaced earlier rows of the source


@dataclass
class ScenesPlan:
    todo: list[dict] = field(default_factory=list)  # rows for the scenes stage
    problems: list[dict] = field(default_factory=list)  # error rows, known without opening a file
    done: int = 0  # sources already processed and unchanged
    changed: int = 0  # sources whose earlier rows this run replaces


def _earlier_rows(parts_dir: Path) -> list[dict]:
    rows = []
    for f in sorted(parts_dir.glob("*.parquet")) if parts_dir.exists() else []:
        names = pq.read_schema(f).names
        cols = [c for c in ("video_id", "source_path", "size_bytes", SIGNATURE_COLUMN) if c in names]
        # Paths as the manifest rule resolves them: a corpus folder that moved still matches.
        rows.extend(resolve_paths(pq.read_table(f, columns=cols), f).to_pylist())
    return rows


def _describe(source: Source, before: dict) -> str:
    when = datetime.fromtimestamp((source.mtime_ns or 0) / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    old_sig = before.get(SIGNATURE_COLUMN)
    old_size = int(old_sig.split(":")[0]) if old_sig else before.get("size_bytes")
    if old_size is not None and source.size is not None and old_size != source.size:
        what = f"size {old_size} -> {source.size} bytes"
    else:
        what = "modified"
    return f"source changed since an earlier run ({what}, modified {when}); its earlier rows were replaced"


def plan_scenes(raw_dir, out_dir, extensions: list[str], category_from_folder: bool,
                videos, clips) -> ScenesPlan:
    """Discover the sources and decide, for each, whether it is new, changed or done.

    `videos` and `clips` are the run's PartStores. Earlier rows of changed sources are removed
    from the journal here, before any work starts.
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    earlier = _earlier_rows(videos.parts_dir)
    by_id = {r["video_id"]: r for r in earlier}
    by_path: dict[str, list[dict]] = {}
    for r in earlier:
        by_path.setdefault(r["source_path"], []).append(r)

    plan, seen, forget = ScenesPlan(), set(), set()
    for source in discover_sources(raw_dir, extensions, skip=[out_dir]):
        vid = source.video_id
        if vid in seen:
            # A link to a file already listed (the id is that of the resolved file): one row.
            log.warning("%s is the same file as one already listed; taken once", source.display)
            continue
        seen.add(vid)
        category = category_of(source, raw_dir) if category_from_folder else None
        before = by_id.get(vid)
        stale = [r for r in by_path.get(source.display, []) if r["video_id"] != vid]
        if before is not None and not stale and before.get(SIGNATURE_COLUMN) == source.signature:
            plan.done += 1
            continue
        change = None
        if before is not None or stale:
            forget.update(r["video_id"] for r in ([before] if before else []) + stale)
            change = _describe(source, before or stale[0])
            plan.changed += 1
            log.warning("%s: %s", source.display, change)
        if source.problem:
            plan.problems.append({**error_row(source, category), SIGNATURE_COLUMN: source.signature,
                                  CHANGE_COLUMN: change})
            continue
        plan.todo.append({"source_path": source.display, "video_id": vid, "category": category,
                          SIGNATURE_COLUMN: source.signature, CHANGE_COLUMN: change})
    if forget:
        forget_videos(forget, videos, clips, out_dir / "clips")
    return plan


def forget_videos(video_ids: set[str], videos, clips, clips_dir: Path) -> None:
    """Remove every row of these videos from both journals, and their clip files.

    Each part is rewritten atomically, clips before videos: a run killed half-way still finds
    the `videos` row, sees the same change again and finishes the job.
    """
    ids = pa.array(sorted(video_ids), pa.string())
    for store in (clips, videos):
        for f in sorted(store.parts_dir.glob("*.parquet")) if store.parts_dir.exists() else []:
            tbl = pq.read_table(f)
            hit = pc.is_in(tbl.column("video_id"), value_set=ids)
            if not pc.any(hit).as_py():
                continue
            store.write(tbl.filter(pc.invert(hit)), f.stem)
    for vid in video_ids:
        shutil.rmtree(clips_dir / vid, ignore_errors=True)
