"""What a run takes in: discovery of the source videos under a raw folder.

`discover` lists the video files; `video_rows` turns them into the rows the scenes stage maps
over (one per distinct file, with its stable `video_id` and folder category), leaving out the
videos a resumed run has already done.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa

from lavie.curate.manifest import ORDER_COLUMN, video_id_for

log = logging.getLogger(__name__)


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


def video_rows(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, extensions: list[str],
               category_from_folder: bool, done: set[str]) -> tuple[pa.Table, int]:
    """The videos still to do as scenes-stage input rows (with `_order`), and how many were done."""
    raw_dir = Path(raw_dir)
    files = discover(raw_dir, extensions, skip=[Path(out_dir)])
    todo, seen = [], set()
    for index, path in enumerate(files):
        vid = video_id_for(path, _size(path))
        if vid in seen:
            # A link to a file already listed (the id is that of the resolved file): one row.
            log.warning("%s is the same file as one already listed; taken once", path)
            continue
        seen.add(vid)
        if vid in done:
            continue
        category = category_of(path, raw_dir) if category_from_folder else None
        todo.append({"source_path": str(path), "video_id": vid, "category": category, ORDER_COLUMN: index})
    schema = pa.schema([("source_path", pa.string()), ("video_id", pa.string()), ("category", pa.string()),
                        (ORDER_COLUMN, pa.int64())])
    return pa.Table.from_pylist(todo, schema=schema), len(seen) - len(todo)
