"""Existing corpora as manifests of our schema, so the trainer can mix them with a curated one.

LaVie trains on WebVid10M and LAION-5B before Vimeo25M is ramped in (LaVie §4.1, App. C): a
WebVid-style CSV becomes a `clips` manifest of whole videos (`kind="video"`), a LAION-style
Parquet one of images (`kind="image"`, one frame). An import is cheap: it reads the table and
checks that each local file exists, nothing more; `probe=True` also opens every file to fill
in frame rate, frame count and size. A row whose local file is missing stays, as an error row
with the reason, like every other failure in a manifest.

Rows are keyed by the corpus's own identity (the WebVid `videoid`, the LAION `url`), so a
re-import of the same table gives the same `clip_id`s wherever the files live.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lavie.curate.filters import count_words
from lavie.curate.manifest import (
    STATUS_ERROR,
    STATUS_OK,
    ManifestError,
    clip_id_for,
    conform,
    dedupe,
    write_manifest,
)
from lavie.curate.probe import probe as probe_file

# Accepted spellings of each field, first match wins. The real WebVid-10M CSV has
# `videoid,contentUrl,duration,page_dir,name`; img2dataset/LAION parquet files use
# `url,caption,width,height` or the upper-case `URL,TEXT,WIDTH,HEIGHT,AESTHETIC_SCORE`.
WEBVID_FIELDS = {
    "id": ("videoid", "video_id", "id"),
    "caption": ("name", "caption", "text"),
    "page_dir": ("page_dir",),
    "path": ("path", "local_path"),
    "duration": ("duration",),
    "url": ("contentUrl", "url"),
}
LAION_FIELDS = {
    "path": ("path", "local_path", "filepath"),
    "url": ("url", "URL"),
    "caption": ("caption", "TEXT", "text"),
    "width": ("width", "WIDTH"),
    "height": ("height", "HEIGHT"),
    "aesthetic": ("aesthetic", "AESTHETIC_SCORE", "aesthetic_score"),
}
# Whole-source rows have no frame range until probed; the id must not depend on probing.
WHOLE = (0, -1)
EXTRA_COLUMNS = {"url": pa.string(), "source_key": pa.string()}


@dataclass
class ImportSummary:
    path: str
    rows: int
    errors: int
    duplicates: int

    def line(self) -> str:
        return (f"import: {self.rows} rows ({self.rows - self.errors} ok, {self.errors} errors), "
                f"{self.duplicates} duplicate ids dropped -> {self.path}")


def _pick(columns: list[str], fields: dict[str, tuple[str, ...]]) -> dict[str, str | None]:
    """Map each field to the first of its spellings present in `columns`."""
    return {field: next((c for c in names if c in columns), None) for field, names in fields.items()}


def _source_id(corpus: str, key: str) -> str:
    return hashlib.sha1(f"{corpus}:{key}".encode("utf-8", "surrogateescape")).hexdigest()[:16]


_ISO_DURATION = re.compile(r"^P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(value) -> float | None:
    """Seconds from WebVid's ISO 8601 durations ("PT00H00M11S") or a plain number."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    match = _ISO_DURATION.match(text.upper())
    if not match or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def _local(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else root / path


def _caption_fields(caption) -> dict:
    if caption is None:
        return {"caption": None, "caption_words": None}
    caption = str(caption).strip()
    return {"caption": caption, "caption_words": count_words(caption)}


def _number(value) -> float | None:
    """A finite number, or None for anything else (blank, text, NaN, infinity)."""
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# Pixel sizes outside this range are not sizes (corrupt metadata): kept as unknown.
_MAX_SIDE = 2**31 - 1


def _side(value) -> int | None:
    number = _number(value)
    return int(number) if number is not None and 0 < number <= _MAX_SIDE else None


def _apply_probe(row: dict, path: Path, image: bool) -> None:
    info = probe_file(path)
    if not info.ok:
        row.update(status=STATUS_ERROR, error=info.error, keep=False)
        return
    row.update(width=info.width, height=info.height, codec=info.codec)
    if not image:
        row.update(fps=info.fps, num_frames=info.num_frames, start_frame=0, end_frame=info.num_frames,
                   start_s=0.0, end_s=info.duration_s)


def _output_path(out: str | os.PathLike) -> Path:
    """A `.parquet` path is the manifest; any other path is a folder holding `clips.parquet`."""
    out = Path(out)
    return out if out.suffix == ".parquet" else out / "clips.parquet"


def _write(tables: list[pa.Table], out: str | os.PathLike) -> ImportSummary:
    tbl = pa.concat_tables(tables) if tables else conform([], "clips")
    rows = tbl.num_rows
    tbl = dedupe(tbl, "clip_id")
    path = write_manifest(tbl, _output_path(out), "clips")
    errors = sum(s == STATUS_ERROR for s in tbl.column("status").to_pylist())
    return ImportSummary(str(path), tbl.num_rows, errors, rows - tbl.num_rows)


def _table(rows: list[dict]) -> pa.Table:
    tbl = conform(rows, "clips")
    # Typed even when a batch has no value at all, so batches concatenate.
    for name, typ in EXTRA_COLUMNS.items():
        if name in tbl.column_names and tbl.schema.field(name).type != typ:
            index = tbl.column_names.index(name)
            tbl = tbl.set_column(index, pa.field(name, typ), tbl.column(name).cast(typ))
    return tbl


# ----------------------------------------------------------------------------------------------
# WebVid


def _csv_batches(csv_path: Path, batch_rows: int) -> Iterator[pa.RecordBatch]:
    # Every field is read as text: WebVid ids look numeric but are names, and a number column
    # inferred from the first block would break on a later odd value.
    header = pacsv.open_csv(csv_path).schema.names
    convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                   strings_can_be_null=True)
    reader = pacsv.open_csv(csv_path, convert_options=convert,
                            read_options=pacsv.ReadOptions(block_size=1 << 22))
    for batch in reader:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def import_webvid(
    csv_path: str | os.PathLike,
    out: str | os.PathLike,
    video_root: str | os.PathLike | None = None,
    probe: bool = False,
    batch_rows: int = 65536,
) -> ImportSummary:
    """A WebVid-style CSV as a `clips` manifest of whole videos; returns what was written.

    The local file of a row is its `path` column (relative paths are under `video_root`, else
    beside the CSV) or `<video_root>/<page_dir>/<videoid>.mp4`.
    """
    csv_path = Path(csv_path)
    columns = pacsv.open_csv(csv_path).schema.names
    col = _pick(columns, WEBVID_FIELDS)
    if col["id"] is None:
        raise ValueError(f"{csv_path} has no video id column; expected one of {WEBVID_FIELDS['id']}")
    if col["path"] is None and video_root is None:
        raise ValueError(
            f"{csv_path} has no 'path' column: pass video_root (videos at "
            "<video_root>/<page_dir>/<videoid>.mp4) or add a 'path' column")
    # Absolute: a manifest's relative paths are relative to its own folder (lavie.curate.paths).
    root = (Path(video_root) if video_root is not None else csv_path.parent).absolute()

    tables = []
    for batch in _csv_batches(csv_path, batch_rows):
        values = {field: (batch.column(name).to_pylist() if name else [None] * batch.num_rows)
                  for field, name in col.items()}
        rows = [_webvid_row({f: values[f][i] for f in values}, root, probe) for i in range(batch.num_rows)]
        tables.append(_table(rows))
    return _write(tables, out)


def _webvid_row(record: dict, root: Path, probe: bool) -> dict:
    key = str(record["id"]).strip()
    if record["path"]:
        path = _local(record["path"], root)
    elif record["page_dir"]:
        path = root / str(record["page_dir"]) / f"{key}.mp4"
    else:
        path = root / f"{key}.mp4"
    video_id = _source_id("webvid", key)
    duration = parse_duration(record["duration"])
    row = {
        "clip_id": clip_id_for(video_id, *WHOLE), "video_id": video_id, "kind": "video",
        "source_path": str(path), "clip_path": None, "clip_index": 0,
        "start_s": 0.0 if duration is not None else None, "end_s": duration,
        "status": STATUS_OK, "error": None, "keep": True, "reject_reason": None,
        **_caption_fields(record["caption"]), "url": record["url"], "source_key": key,
    }
    if not path.is_file():
        row.update(status=STATUS_ERROR, keep=False, error=f"video file not found: {path}")
    elif probe:
        _apply_probe(row, path, image=False)
    return row


# ----------------------------------------------------------------------------------------------
# LAION


def import_laion(
    parquet_path: str | os.PathLike,
    out: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    probe: bool = False,
    batch_rows: int = 65536,
) -> ImportSummary:
    """A LAION-style image Parquet as a `clips` manifest of images; returns what was written.

    The local file of a row is its `path` column, relative paths under `image_root` (else
    beside the Parquet file). Size and aesthetic score come from the table when it has them.
    """
    parquet_path = Path(parquet_path)
    try:
        source = pq.ParquetFile(parquet_path)
    except (pa.ArrowException, OSError) as exc:
        raise ManifestError(f"{parquet_path} is not a readable Parquet file: {' '.join(str(exc).split())}") from None
    col = _pick(source.schema_arrow.names, LAION_FIELDS)
    if col["path"] is None:
        raise ValueError(f"{parquet_path} has no local path column; expected one of {LAION_FIELDS['path']}")
    root = (Path(image_root) if image_root is not None else parquet_path.parent).absolute()
    wanted = sorted({name for name in col.values() if name})

    tables = []
    for batch in source.iter_batches(batch_size=batch_rows, columns=wanted):
        try:
            values = {field: (batch.column(name).to_pylist() if name else [None] * batch.num_rows)
                      for field, name in col.items()}
        except (UnicodeDecodeError, pa.ArrowException) as exc:
            raise ManifestError(f"{parquet_path}: a column could not be read as text or numbers: {exc}") from None
        rows = [_laion_row({f: values[f][i] for f in values}, root, probe) for i in range(batch.num_rows)]
        tables.append(_table(rows))
    return _write(tables, out)


def _laion_row(record: dict, root: Path, probe: bool) -> dict:
    path = _local(str(record["path"]), root) if record["path"] else None
    key = record["url"] or (str(path.resolve()) if path else "")
    image_id = _source_id("laion", key)
    width, height = _side(record["width"]), _side(record["height"])
    row = {
        "clip_id": clip_id_for(image_id, 0, 1), "video_id": image_id, "kind": "image",
        "source_path": str(path) if path else "", "clip_path": None, "clip_index": 0,
        "start_frame": 0, "end_frame": 1, "num_frames": 1,
        "width": width, "height": height,
        "aesthetic": _number(record["aesthetic"]),
        "status": STATUS_OK, "error": None, "keep": True, "reject_reason": None,
        **_caption_fields(record["caption"]), "url": record["url"], "source_key": key,
    }
    if path is None:
        row.update(status=STATUS_ERROR, keep=False, error="row has no local image path")
    elif not path.is_file():
        row.update(status=STATUS_ERROR, keep=False, error=f"image file not found: {path}")
    elif probe:
        _apply_probe(row, path, image=True)
    return row
