"""A folder of captioned images as an image source: `NAME.jpg` next to `NAME.txt`, the usual
layout of a personalisation set (LaVie §4.4). Light on purpose: `lavie-train` checks sources with
it before torch loads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from lavie.curate.manifest import conform

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def is_image_folder(path: str | Path) -> bool:
    """A plain folder of images (no Parquet manifest inside)."""
    path = Path(path)
    return path.is_dir() and not any(path.rglob("*.parquet")) and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())


def image_folder_table(folder: str | Path) -> pa.Table:
    """A folder of captioned images, `NAME.jpg` next to `NAME.txt` (the layout of personalisation
    sets), as image rows of a clips manifest; an image without a caption file has no caption."""
    rows = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        caption = path.with_suffix(".txt")
        rows.append({"clip_id": hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16], "kind": "image",
                     "source_path": str(path.resolve()), "clip_path": None, "start_frame": 0, "end_frame": 1, "num_frames": 1,
                     "status": "ok", "keep": True, "caption": caption.read_text().strip() if caption.is_file() else None})
    return conform(rows, "clips")
