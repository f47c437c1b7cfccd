"""Generated Parquet files, good and broken, fed to every manifest reader.

A broken manifest (a missing or mistyped column, nulls in a required column, text that is not
UTF-8, bytes paths, an empty or truncated file, bytes that are not Parquet) must come back as a
validation error that names the problem: `ManifestError` from the library, one line and exit 2
from the CLI. A good one, huge strings and odd numbers included, must read.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lavie.curate import importers
from lavie.curate.cli import main as curate_main
from lavie.curate.manifest import CLIP_FIELDS, OPTIONAL_FIELDS, ManifestError, conform, iter_manifest_batches, read_manifest
from lavie.curate.report import build_report
from lavie.train.data import load_source

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REQUIRED = [f.name for f in CLIP_FIELDS if not f.nullable]
FIELDS = {f.name: f for f in CLIP_FIELDS + OPTIONAL_FIELDS}
TEXT_COLUMNS = [n for n, f in FIELDS.items() if pa.types.is_string(f.type)]
UNREADABLE = "is not a readable Parquet file"

# Text Arrow can hold (no lone surrogates: those are what a bytes path decodes to, below).
text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
int32 = st.integers(-(2**31), 2**31 - 1)
number = st.floats(allow_nan=True, allow_infinity=True)


@st.composite
def clip_rows(draw, n: int) -> pa.Table:
    """`n` rows of a valid clips manifest with arbitrary values (odd numbers included)."""
    rows = []
    for _ in range(n):
        rows.append({
            "clip_id": draw(text), "video_id": draw(st.none() | text), "kind": draw(st.sampled_from(["video", "image"])),
            "source_path": draw(text), "clip_path": draw(st.none() | text), "clip_index": draw(st.none() | int32),
            "start_frame": draw(st.none() | st.integers(-10, 10**6)), "end_frame": draw(st.none() | st.integers(-10, 10**6)),
            "num_frames": draw(st.none() | st.integers(-10, 10**6)), "fps": draw(st.none() | number),
            "start_s": draw(st.none() | number), "end_s": draw(st.none() | number),
            "width": draw(st.none() | int32), "height": draw(st.none() | int32), "codec": draw(st.none() | text),
            "category": draw(st.none() | text), "status": draw(st.sampled_from(["ok", "error"])),
            "error": draw(st.none() | text), "keep": draw(st.none() | st.booleans()),
            "reject_reason": draw(st.none() | text), "aesthetic": draw(st.none() | number),
            "caption": draw(st.none() | text), "caption_words": draw(st.none() | st.integers(0, 2**31 - 1)),
            "category_score": draw(st.none() | number),
        })
    return conform(rows, "clips") if rows else conform([], "clips").append_column("caption", pa.array([], pa.string()))


def _replace(tbl: pa.Table, name: str, array: pa.Array) -> pa.Table:
    return tbl.set_column(tbl.column_names.index(name), pa.field(name, array.type), array)


def _wrong_type(typ: pa.DataType, n: int, draw) -> pa.Array:
    """A column of a type the schema does not accept in place of `typ`."""
    if pa.types.is_string(typ):
        choices = [pa.array(range(n), pa.int64()), pa.array([b"x"] * n, pa.binary()),
                   pa.array([[1]] * n, pa.list_(pa.int64())), pa.array([1.5] * n)]
    elif pa.types.is_integer(typ):
        choices = [pa.array(["7"] * n), pa.array([1.5] * n), pa.array([True] * n)]
    elif pa.types.is_floating(typ):
        choices = [pa.array(["1.5"] * n), pa.array([True] * n), pa.array([b"\x00"] * n, pa.binary())]
    else:  # bool
        choices = [pa.array(["true"] * n), pa.array([1] * n, pa.int64())]
    return draw(st.sampled_from(choices))


@st.composite
def manifest_files(draw) -> tuple[bytes, str | None]:
    """(Parquet bytes, None) for a good manifest, or (bytes, what the error must name)."""
    case = draw(st.sampled_from(["good", "huge", "drop", "retype", "null", "not-utf8", "bytes-path",
                                 "empty", "junk", "truncated"]))
    tbl = draw(clip_rows(draw(st.integers(1, 4))))
    expect = None
    if case == "huge":
        size = draw(st.integers(100_000, 2_000_000))
        expect = None
        tbl = _replace(tbl, draw(st.sampled_from(["caption", "source_path", "error"])),
                       pa.array([draw(st.sampled_from("aé日")) * size] * tbl.num_rows))
    elif case == "drop":
        name = draw(st.sampled_from(REQUIRED))
        tbl, expect = tbl.drop([name]), repr(name)
    elif case == "retype":
        name = draw(st.sampled_from(sorted(FIELDS)))
        tbl, expect = _replace(tbl, name, _wrong_type(FIELDS[name].type, tbl.num_rows, draw)), repr(name)
    elif case == "null":
        name = draw(st.sampled_from(REQUIRED))
        values = tbl.column(name).to_pylist()
        values[draw(st.integers(0, len(values) - 1))] = None
        tbl, expect = _replace(tbl, name, pa.array(values, pa.string())), repr(name)
    elif case in ("not-utf8", "bytes-path"):
        # A bytes path as Python sees it from a non-UTF-8 file system: surrogate escapes, whose
        # bytes are not UTF-8. Stored as Arrow strings (unchecked) or as a binary column.
        name = draw(st.sampled_from(TEXT_COLUMNS if case == "not-utf8" else ["source_path", "clip_path"]))
        raw = os.fsencode("/videos/" + draw(text) + "\udcff" + draw(text) + ".mp4")
        array = pa.array([raw] * tbl.num_rows, pa.binary())
        tbl, expect = _replace(tbl, name, array.view(pa.string()) if case == "not-utf8" else array), repr(name)
    buf = io.BytesIO()
    pq.write_table(tbl, buf)
    data = buf.getvalue()
    if case == "empty":
        data, expect = b"", UNREADABLE
    elif case == "junk":
        data, expect = draw(st.binary(min_size=1, max_size=200)), UNREADABLE
    elif case == "truncated":
        data, expect = data[: draw(st.integers(0, len(data) - 1))], UNREADABLE
    return data, expect


def _one_line_error(code: int, err: str, expect: str | None) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("lavie-curate "), err
    assert "Traceback" not in err
    if expect:
        assert expect in lines[0], lines[0]


@FUZZ
@given(case=manifest_files())
def test_every_reader_names_the_problem(case):
    data, expect = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "clips.parquet"
        path.write_bytes(data)
        rows = None
        readers = {
            "read_manifest": lambda: read_manifest(path).num_rows,
            "iter_manifest_batches": lambda: sum(b.num_rows for b in iter_manifest_batches(path, batch_size=2)),
            "folder of parts": lambda: read_manifest(tmp).num_rows,
            "build_report": lambda: build_report([path], None, tmp / "report") and None,
            "train load_source": lambda: load_source("fuzz", path, "video") and None,
        }
        for name, read in readers.items():
            if expect is None:
                got = read()
                if isinstance(got, int):
                    rows = got if rows is None else rows
                    assert got == rows, name
            else:
                with pytest.raises(ManifestError) as info:
                    read()
                assert str(path) in str(info.value), name
                assert expect in str(info.value), (name, str(info.value))
        if expect is None:
            assert rows == pq.ParquetFile(path).metadata.num_rows
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = curate_main(["report", str(path), "-o", str(tmp / "cli-report")])
        if expect is None:
            assert code == 0, err.getvalue()
            assert (tmp / "cli-report" / "stats.json").is_file()
        else:
            _one_line_error(code, err.getvalue(), expect)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=manifest_files().filter(lambda c: c[1] is not None))
def test_filter_cli_rejects_broken_manifests_in_one_line(case):
    data, expect = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.parquet"
        path.write_bytes(data)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = curate_main(["filter", str(path), "-o", str(Path(tmp) / "out"), "--no-aesthetic", "--no-progress"])
        _one_line_error(code, err.getvalue(), None)
        assert expect.strip("'") in err.getvalue() or "Parquet" in err.getvalue(), err.getvalue()
        assert not (Path(tmp) / "out" / "clips.parquet").exists()


@FUZZ
@given(data=st.one_of(st.just(b""), st.binary(min_size=1, max_size=300),
                      st.binary(max_size=40).map(lambda b: b"PAR1" + b + b"PAR1")))
def test_laion_import_of_a_file_that_is_not_parquet_is_one_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "laion.parquet"
        path.write_bytes(data)
        with pytest.raises((ValueError, OSError)):
            importers.import_laion(path, Path(tmp) / "out")
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = curate_main(["import", "laion", str(path), "-o", str(Path(tmp) / "cli")])
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert code != 0 and len(lines) == 1 and lines[0].startswith("lavie-curate import: error:"), err.getvalue()
        assert not (Path(tmp) / "cli" / "clips.parquet").exists()
