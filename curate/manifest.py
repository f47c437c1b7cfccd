"""The manifest: one Parquet dataset per stage output, one row per video, clip or image.

The schema is defined here once. Every stage *adds* columns to the rows it receives and never
drops a row: a rejected or failed clip keeps its row, with its reason, so a report can say why.
Writes are atomic (temp file + rename), and rows are keyed by ``clip_id`` (``video_id`` for the
``videos`` table), so a re-run skips what is done and a killed run resumes without duplicates.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from lavie.curate.paths import resolve_paths, with_root

SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = b"lavie.schema_version"
TABLE_KEY = b"lavie.table"

STATUS_OK = "ok"
STATUS_ERROR = "error"

# Columns of the `videos` table (one row per discovered source file).
VIDEO_FIELDS = [
    pa.field("video_id", pa.string(), nullable=False),
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("size_bytes", pa.int64()),
    pa.field("duration_s", pa.float64()),
    pa.field("num_frames", pa.int64()),
    pa.field("fps", pa.float64()),
    pa.field("fps_num", pa.int64()),
    pa.field("fps_den", pa.int64()),
    pa.field("width", pa.int32()),  # display size, rotation applied
    pa.field("height", pa.int32()),
    pa.field("rotation", pa.int32()),
    pa.field("codec", pa.string()),
    pa.field("pix_fmt", pa.string()),
    pa.field("has_audio", pa.bool_()),
    pa.field("vfr", pa.bool_()),
    pa.field("category", pa.string()),
    pa.field("num_scenes", pa.int32()),
    pa.field("num_clips", pa.int32()),
    pa.field("num_pieces", pa.int32()),  # clip rows of the video: kept and rejected scene pieces
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
]

# Columns of the `clips` table (one row per single-scene clip, or per image for image sources).
CLIP_FIELDS = [
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("video_id", pa.string()),
    pa.field("kind", pa.string(), nullable=False),  # "video" | "image"
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("clip_path", pa.string()),  # null: virtual clip (source + frame range)
    pa.field("clip_index", pa.int32()),
    pa.field("start_frame", pa.int64()),
    pa.field("end_frame", pa.int64()),  # exclusive
    pa.field("num_frames", pa.int64()),
    pa.field("fps", pa.float64()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("codec", pa.string()),
    pa.field("category", pa.string()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("keep", pa.bool_()),
    pa.field("reject_reason", pa.string()),
]

# Columns later stages add. They may be absent from a manifest written by an earlier stage, but
# where present they must have these types.
OPTIONAL_FIELDS = [
    pa.field("aesthetic", pa.float64()),
    pa.field("caption", pa.string()),
    pa.field("caption_words", pa.int32()),
    pa.field("category_score", pa.float64()),
    pa.field("detector", pa.string()),  # the shot detector that cut the clip
    pa.field("text_area", pa.float64()),  # fraction of the frame covered by detected text
    pa.field("motion", pa.float64()),  # mean optical-flow magnitude, px/frame at analysis size
    pa.field("caption_source", pa.string()),  # where the caption came from (model or metadata)
]

VIDEO_SCHEMA = pa.schema(VIDEO_FIELDS)
CLIP_SCHEMA = pa.schema(CLIP_FIELDS)
TABLES = {"videos": VIDEO_SCHEMA, "clips": CLIP_SCHEMA}
_OPTIONAL = {f.name: f for f in OPTIONAL_FIELDS}


def declared_type(name: str) -> pa.DataType | None:
    """The type a manifest column is declared with in any table, or None for stage extras."""
    for schema in (CLIP_SCHEMA, VIDEO_SCHEMA):
        if name in schema.names:
            return schema.field(name).type
    return _OPTIONAL[name].type if name in _OPTIONAL else None


class ManifestError(ValueError):
    """A manifest that cannot be read as the schema says: names the file and the column."""


class OutputError(OSError):
    """A manifest that could not be written (disk full, folder gone or read-only).

    Names the file and the cause. The write was atomic, so every part finished before it is
    whole and no half-written file is taken as done: freeing space and re-running resumes.
    """

    def __init__(self, path: str | os.PathLike, cause: OSError):
        reason = cause.strerror or " ".join(str(cause).split()) or type(cause).__name__
        code = cause.errno or _errno_in(str(cause)) or errno.EIO
        super().__init__(code, f"cannot write {path}: {reason}")
        self.filename = str(path)
        self.cause = cause

    def __str__(self) -> str:
        return f"{self.strerror}; finished parts are kept, re-run to resume"


def _errno_in(text: str) -> int | None:
    """Arrow reports an I/O failure as text ('... [errno 28] No space left on device')."""
    for code, name in ((errno.ENOSPC, "No space left"), (errno.EROFS, "Read-only"),
                       (errno.EACCES, "Permission denied"), (errno.EDQUOT, "quota")):
        if name in text:
            return code
    return None


@contextmanager
def _atomic_output(final: Path, tmp: Path):
    """Around a temp-file write: on failure, remove the temp file and raise OutputError."""
    try:
        yield
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # the folder itself is gone or read-only; clean_partials removes it on resume
        if isinstance(exc, OutputError):
            raise
        raise OutputError(final, exc) from exc


def video_id_for(path: str | os.PathLike, size_bytes: int | None) -> str:
    """Stable id of a source file: its resolved path and size (content may be huge to hash)."""
    key = f"{Path(path).resolve()}|{size_bytes}"
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def clip_id_for(video_id: str, start_frame: int, end_frame: int) -> str:
    """Stable id of a clip: source identity + frame range."""
    return hashlib.sha1(f"{video_id}:{start_frame}:{end_frame}".encode()).hexdigest()[:20]


def schema_for(table: str) -> pa.Schema:
    if table not in TABLES:
        raise ValueError(f"unknown manifest table {table!r}; choose one of {sorted(TABLES)}")
    return TABLES[table]


def conform(rows: list[dict] | pa.Table, table: str) -> pa.Table:
    """Rows (dicts or a table) as a table in the schema's column order, extra columns after.

    Missing schema columns become nulls; extra columns (stage outputs) are kept with their own
    types, except the known optional ones, which are cast to their declared type.
    """
    schema = schema_for(table)
    if isinstance(rows, pa.Table):
        tbl = rows
    else:
        names = list(schema.names)
        for row in rows:
            for key in row:
                if key not in names:
                    names.append(key)
        columns = {name: [row.get(name) for row in rows] for name in names}
        arrays, fields = [], []
        for name, values in columns.items():
            field = schema.field(name) if name in schema.names else _OPTIONAL.get(name)
            typ = field.type if field is not None else None
            arrays.append(pa.array(values, type=typ))
            fields.append(pa.field(name, arrays[-1].type))
        tbl = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    out_arrays, out_fields = [], []
    for field in schema:
        if field.name in tbl.column_names:
            col = tbl.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
        else:
            col = pa.nulls(tbl.num_rows, type=field.type)
        out_arrays.append(col)
        out_fields.append(pa.field(field.name, field.type))
    for name in tbl.column_names:
        if name in schema.names:
            continue
        col = tbl.column(name)
        if name in _OPTIONAL and col.type != _OPTIONAL[name].type:
            col = col.cast(_OPTIONAL[name].type)
        out_arrays.append(col)
        out_fields.append(pa.field(name, col.type))
    meta = {SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(), TABLE_KEY: table.encode()}
    return pa.Table.from_arrays(out_arrays, schema=pa.schema(out_fields, metadata=meta))


def validate(tbl_schema: pa.Schema, table: str, where: str = "manifest") -> None:
    """Raise ManifestError naming every missing or mistyped column."""
    expected = schema_for(table)
    problems = []
    for field in expected:
        if field.name not in tbl_schema.names:
            if not field.nullable:
                problems.append(f"missing column {field.name!r} ({field.type})")
            continue
        got = tbl_schema.field(field.name).type
        if not _compatible(got, field.type):
            problems.append(f"column {field.name!r} has type {got}, expected {field.type}")
    for name, field in _OPTIONAL.items():
        if name in tbl_schema.names and not _compatible(tbl_schema.field(name).type, field.type):
            problems.append(
                f"column {name!r} has type {tbl_schema.field(name).type}, expected {field.type}"
            )
    if problems:
        raise ManifestError(f"{where} is not a valid {table!r} manifest: " + "; ".join(problems))


def _compatible(got: pa.DataType, want: pa.DataType) -> bool:
    if got == want or pa.types.is_null(got):
        return True
    if pa.types.is_integer(want):
        return pa.types.is_integer(got)
    if pa.types.is_floating(want):
        return pa.types.is_floating(got) or pa.types.is_integer(got)
    if pa.types.is_string(want):
        return pa.types.is_string(got) or pa.types.is_large_string(got)
    return False


def resolve_manifest(path: str | os.PathLike, table: str = "clips") -> Path:
    """A stage's output folder stands for its `<table>.parquet`; a file or part folder for itself."""
    path = Path(path)
    if path.is_dir() and (path / f"{table}.parquet").is_file():
        return path / f"{table}.parquet"
    return path


def _parquet_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.exists():
        raise ManifestError(f"manifest {path} does not exist")
    # Hidden files and folders are temp files and run journals, never part of the manifest.
    return sorted(
        p for p in path.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _checked_schema(f: Path, table: str) -> pa.Schema:
    """The file's schema, validated against `table`'s; any unreadable file is a ManifestError."""
    try:
        schema = pq.read_schema(f)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ManifestError(f"{f} is not a readable Parquet file: {_one_line(exc)}") from None
    validate(schema, table, where=str(f))
    return schema


def manifest_files(path: str | os.PathLike, table: str = "clips") -> list[Path]:
    """The Parquet files of a manifest, each schema-checked (ManifestError names a bad one)."""
    files = _parquet_files(resolve_manifest(path, table))
    for f in files:
        _checked_schema(f, table)
    return files


def check_values(tbl: pa.Table | pa.RecordBatch, table: str, where: str = "manifest") -> None:
    """Raise ManifestError for what a schema cannot say: nulls in required columns, bad UTF-8."""
    schema = schema_for(table)
    problems = []
    for name in tbl.schema.names:
        col = tbl.column(name)
        if name in schema.names and not schema.field(name).nullable and col.null_count:
            problems.append(f"column {name!r} has {col.null_count} null values (required)")
        typ = tbl.schema.field(name).type
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
            try:
                for chunk in chunks:
                    chunk.validate(full=True)
            except pa.ArrowInvalid as exc:
                problems.append(f"column {name!r} holds text that is not valid UTF-8 ({_one_line(exc)})")
    if problems:
        raise ManifestError(f"{where} is not a valid {table!r} manifest: " + "; ".join(problems))


def read_manifest(path: str | os.PathLike, table: str = "clips", columns: list[str] | None = None) -> pa.Table:
    """Read a manifest file or directory of Parquet parts, validated and conformed to the schema."""
    path = resolve_manifest(path, table)
    files = _parquet_files(path)
    if not files:
        return conform([], table)
    parts = []
    for f in files:
        _checked_schema(f, table)
        try:
            tbl = pq.read_table(f, columns=columns)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ManifestError(f"{f} could not be read: {_one_line(exc)}") from None
        check_values(tbl, table, where=str(f))
        tbl = resolve_paths(tbl, f)
        parts.append(conform(tbl, table) if columns is None else tbl)
    return pa.concat_tables(parts, promote_options="permissive")


def iter_manifest_batches(
    path: str | os.PathLike, table: str = "clips", batch_size: int = 65536, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a manifest in record batches of about `batch_size` rows (a row group of up to twice
    that comes whole), so memory stays bounded for very large manifests.

    Files are read one after the other, each validated first; without `columns`, every batch
    comes conformed to the schema (so parts written by different stages line up).
    """
    for f in manifest_files(path, table):
        try:
            pf = pq.ParquetFile(f)
            meta = pf.schema_arrow.metadata or {}
            for batch in _file_batches(pf, batch_size, columns):
                check_values(batch, table, where=str(f))
                batch = resolve_paths(batch, f, meta)
                if columns is None:
                    yield from conform(pa.Table.from_batches([batch]), table).to_batches()
                else:
                    yield batch
        except (pa.ArrowException, OSError) as exc:
            raise ManifestError(f"{f} could not be read: {_one_line(exc)}") from None


def _file_batches(pf: pq.ParquetFile, batch_size: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """The file's record batches: a row group at most twice `batch_size` long is read whole (all
    its columns decoded in parallel, faster than slicing it), a longer one in slices."""
    for i in range(pf.num_row_groups):
        if pf.metadata.row_group(i).num_rows <= 2 * batch_size:
            yield from pf.read_row_group(i, columns=columns).combine_chunks().to_batches()
        else:
            yield from pf.iter_batches(batch_size=batch_size, row_groups=[i], columns=columns)


def write_part(rows: list[dict] | pa.Table, out_dir: str | os.PathLike, table: str, name: str) -> Path:
    """Write one part file atomically: a reader sees the whole part or nothing.

    A failed write (disk full, folder gone or read-only) leaves no file behind and raises
    OutputError naming the file and the cause.
    """
    out_dir = Path(out_dir)
    final = out_dir / f"{name}.parquet"
    tbl = with_root(conform(rows, table), final)  # the folder paths are measured from (lavie.curate.paths)
    tmp = out_dir / f".{name}.{uuid.uuid4().hex}.tmp"
    with _atomic_output(final, tmp):
        out_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(tbl, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    return final


def write_manifest(rows: list[dict] | pa.Table, path: str | os.PathLike, table: str) -> Path:
    """Write a whole manifest as one Parquet file, atomically."""
    path = Path(path)
    if path.suffix != ".parquet":
        return write_part(rows, path, table, "part-00000")
    return write_part(rows, path.parent, table, path.stem)


def clean_partials(out_dir: str | os.PathLike) -> int:
    """Remove temp files a killed run left behind; returns how many."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return 0
    n = 0
    for tmp in out_dir.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def done_keys(path: str | os.PathLike, key: str) -> set[str]:
    """Keys already written to a manifest directory (for resume)."""
    path = Path(path)
    if not path.exists():
        return set()
    keys: set[str] = set()
    for f in _parquet_files(path):
        keys.update(pq.read_table(f, columns=[key]).column(key).to_pylist())
    return keys


def dedupe(tbl: pa.Table, key: str) -> pa.Table:
    """Keep the last row of each key (a resumed run may have re-written a part)."""
    keys = tbl.column(key).to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    if len(last) == len(keys):
        return tbl
    return tbl.take(pa.array(sorted(last.values()), pa.int64()))


ORDER_COLUMN = "_order"  # input row index, carried through stages so outputs keep input order


def _align(tbl: pa.Table, schema: pa.Schema) -> pa.Table:
    """`tbl` in `schema`'s columns and types: missing columns as nulls, extra ones dropped."""
    arrays = []
    for field in schema:
        if field.name in tbl.column_names:
            arrays.append(tbl.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(tbl.num_rows, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class PartStore:
    """A manifest being written: atomic part files under `<out>/.parts/<table>/`.

    Parts are the run's journal: a part appears whole or not at all, so the keys found in them
    are exactly the finished rows, and a killed run resumes from there. `consolidate` writes the
    stage's manifest (`<out>/<table>.parquet`) from all parts, one row per key.
    """

    def __init__(self, out_dir: str | os.PathLike, table: str, key: str):
        self.out_dir = Path(out_dir)
        self.table = table
        self.key = key
        self.parts_dir = self.out_dir / ".parts" / table
        schema_for(table)

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / f"{self.table}.parquet"

    def part_names(self) -> set[str]:
        if not self.parts_dir.exists():
            return set()
        return {p.stem for p in self.parts_dir.glob("*.parquet")}

    def done(self) -> set[str]:
        clean_partials(self.parts_dir)
        return done_keys(self.parts_dir, self.key)

    def write(self, rows: list[dict] | pa.Table, name: str | None = None) -> Path:
        return write_part(rows, self.parts_dir, self.table, name or f"part-{uuid.uuid4().hex}")

    def drop_parts_except(self, names: set[str]) -> int:
        """Remove parts whose name is not in `names` (orphans of a killed run), and temp files."""
        clean_partials(self.parts_dir)
        n = 0
        for name in self.part_names() - names:
            (self.parts_dir / f"{name}.parquet").unlink(missing_ok=True)
            n += 1
        return n

    def consolidate(self, sort_by: list[str] | None = None) -> pa.Table | int:
        """Write `<out>/<table>.parquet` from the parts, one row per key.

        With `sort_by`, in memory, sorted (small tables: videos, a source's clips); returns the
        table. Without, streamed part by part in part-name order, each part in its `_order`
        (the input row index stages carry): the input's order comes back in bounded memory;
        returns the row count.
        """
        if sort_by is not None:
            tbl = read_manifest(self.parts_dir, self.table) if self.parts_dir.exists() else conform([], self.table)
            tbl = dedupe(tbl, self.key)
            if tbl.num_rows:
                tbl = tbl.sort_by([(c, "ascending") for c in sort_by])
            write_manifest(tbl, self.manifest_path, self.table)
            return tbl
        files = _parquet_files(self.parts_dir) if self.parts_dir.exists() else []
        for stale in self.out_dir.glob(f".{self.table}.*.tmp"):  # left by a killed consolidation
            stale.unlink(missing_ok=True)
        tmp = self.out_dir / f".{self.table}.{uuid.uuid4().hex}.tmp"
        with _atomic_output(self.manifest_path, tmp):
            rows = self._write_consolidated(files, tmp)
            os.replace(tmp, self.manifest_path)
        return rows

    def _union_schema(self, files: list[Path]) -> pa.Schema:
        """Every column any part has (parts of a resumed run may come from a longer stage chain),
        typed as declared, else as the first part that gives it a non-null type."""
        fields: dict[str, pa.DataType] = {f.name: f.type for f in conform([], self.table).schema}
        for f in files:
            for field in pq.read_schema(f):
                if field.name == ORDER_COLUMN:
                    continue
                known = fields.get(field.name)
                if known is None or pa.types.is_null(known):
                    fields[field.name] = declared_type(field.name) or field.type
        return with_root(pa.schema([pa.field(name, typ) for name, typ in fields.items()],
                                   metadata=conform([], self.table).schema.metadata), self.manifest_path)

    def _write_consolidated(self, files: list[Path], tmp: Path) -> int:
        seen: set[str] = set()
        writer = None
        rows = 0
        schema = self._union_schema(files)
        try:
            for f in files:
                tbl = conform(pq.read_table(f), self.table)
                if ORDER_COLUMN in tbl.column_names:
                    tbl = tbl.sort_by(ORDER_COLUMN).drop([ORDER_COLUMN])
                keys = tbl.column(self.key).to_pylist()
                fresh = [i for i, k in enumerate(keys) if k not in seen]
                seen.update(keys)
                if len(fresh) != len(keys):
                    # Typed indices: a duplicated part leaves none, and an untyped empty list
                    # has no `take` kernel.
                    tbl = tbl.take(pa.array(fresh, pa.int64()))
                if writer is None:
                    writer = pq.ParquetWriter(tmp, schema)
                if tbl.schema != schema:
                    tbl = _align(tbl, schema)
                writer.write_table(tbl)
                rows += tbl.num_rows
            if writer is None:
                writer = pq.ParquetWriter(tmp, with_root(conform([], self.table).schema, self.manifest_path))
        finally:
            if writer is not None:
                writer.close()
        return rows
