"""How a manifest's paths resolve: one rule that lets a corpus folder move as a whole.

The rule. Every manifest file records the folder it was written in, `lavie.root` in its Parquet
metadata (the stage folder: the one holding `<table>.parquet`, also for the run journal under
`.parts/`). A reader takes each path relative to that recorded folder and applies it to the folder
the manifest is in now:

    path now = <folder now> / relpath(path as written, <folder as written>)

When nothing moved the two folders are the same and paths are used as written. When a corpus
folder (raw videos, stage folders, clip files) is moved or copied as a whole, to another mount
point or machine, every path inside it lands in the same place relative to the manifests, so
clips and sources are found again. A path outside the moved folder is found only if it is still at
the place the same relation points to; keep sources inside the corpus folder to move them along.
A relative path (a manifest written by other tools) is relative to the manifest's folder.

The toolkit writes absolute paths, so a manifest read with plain pyarrow still names files that
exist where it was made.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc

ROOT_KEY = b"lavie.root"
PATH_COLUMNS = ("source_path", "clip_path")


def stage_folder(manifest_file: str | os.PathLike) -> str:
    """The folder paths in `manifest_file` are measured from (real path, links resolved)."""
    folder = os.path.dirname(os.path.abspath(manifest_file))
    if os.path.basename(os.path.dirname(folder)) == ".parts":  # <stage>/.parts/<table>/part-*.parquet
        folder = os.path.dirname(os.path.dirname(folder))
    return os.path.realpath(folder)


def with_root(schema_or_table, manifest_file: str | os.PathLike):
    """The schema (or table) with `lavie.root` set to the stage folder of `manifest_file`."""
    meta = dict(schema_or_table.schema.metadata or {}) if isinstance(schema_or_table, pa.Table) \
        else dict(schema_or_table.metadata or {})
    meta[ROOT_KEY] = stage_folder(manifest_file).encode("utf-8", "surrogateescape")
    if isinstance(schema_or_table, pa.Table):
        return schema_or_table.replace_schema_metadata(meta)
    return schema_or_table.with_metadata(meta)


def _resolver(recorded: str | None, current: str):
    def resolve(path: str | None) -> str | None:
        if path is None or path == "":
            return path
        if not os.path.isabs(path):
            return os.path.normpath(os.path.join(current, path))
        if recorded is None or recorded == current:
            return path
        return os.path.normpath(os.path.join(current, os.path.relpath(path, recorded)))

    return resolve


def resolve_paths(data, manifest_file: str | os.PathLike, metadata: dict | None = None):
    """`data` (a Table or RecordBatch read from `manifest_file`) with its paths resolved by the rule."""
    names = [c for c in PATH_COLUMNS if c in data.schema.names]
    if not names:
        return data
    meta = metadata if metadata is not None else (data.schema.metadata or {})
    recorded = meta.get(ROOT_KEY)
    recorded = recorded.decode("utf-8", "surrogateescape") if recorded else None
    current = stage_folder(manifest_file)
    resolve = _resolver(recorded, current)
    for name in names:
        col = data.column(name)
        if recorded is None or recorded == current:  # nothing moved: only relative paths change
            absolute = pc.fill_null(pc.starts_with(col, "/"), True)
            if pc.all(absolute).as_py() is not False:
                continue
        values = col.to_pylist()
        fixed = [resolve(v) for v in values]
        if fixed == values:
            continue
        i = data.schema.get_field_index(name)
        array = pa.array(fixed, type=data.schema.field(name).type)
        if isinstance(data, pa.Table):
            data = data.set_column(i, data.schema.field(name), array)
        else:
            data = pa.RecordBatch.from_arrays(
                [array if j == i else data.column(j) for j in range(data.num_columns)], schema=data.schema)
    return data
