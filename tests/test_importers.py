"""WebVid-style CSV and LAION-style Parquet imports into valid manifests."""

from __future__ import annotations

import csv
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lavie.curate.filters import FilterConfig, FilterStage
from lavie.curate.importers import import_laion, import_webvid, parse_duration
from lavie.curate.manifest import read_manifest
from lavie.curate.report import manifest_stats
from lavie.curate.video import ffmpeg_exe


def tiny_video(path, frames: int = 12, size: str = "64x48", rate: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate={rate}", "-frames:v", str(frames), "-c:v", "libx264",
         "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )


def write_csv(path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def webvid(tmp_path):
    root = tmp_path / "videos"
    tiny_video(root / "001_100" / "1066674.mp4")
    tiny_video(root / "002_200" / "31353427.mp4", frames=20, size="96x64")
    csv_path = tmp_path / "results_2M_val.csv"
    # The real WebVid-10M column order; ids look numeric, captions contain commas.
    write_csv(csv_path, ["videoid", "contentUrl", "duration", "page_dir", "name"], [
        [1066674, "https://example.org/1066674.mp4", "PT00H00M11S", "001_100", "Aerial shot, winter forest"],
        [31353427, "https://example.org/31353427.mp4", "PT01M02.5S", "002_200", "Dog"],
        [99999, "https://example.org/99999.mp4", "PT00H00M07S", "003_300", "A missing video of a lake"],
    ])
    return csv_path, root


def test_webvid_round_trip(tmp_path, webvid):
    csv_path, root = webvid
    summary = import_webvid(csv_path, tmp_path / "webvid", video_root=root)
    assert summary.rows == 3 and summary.errors == 1 and summary.duplicates == 0
    assert summary.path == str(tmp_path / "webvid" / "clips.parquet")

    tbl = read_manifest(tmp_path / "webvid")  # validates the schema
    rows = {r["source_key"]: r for r in tbl.to_pylist()}
    assert set(rows) == {"1066674", "31353427", "99999"}
    first = rows["1066674"]
    assert first["kind"] == "video" and first["status"] == "ok" and first["keep"] is True
    assert first["source_path"] == str(root / "001_100" / "1066674.mp4")
    assert first["caption"] == "Aerial shot, winter forest" and first["caption_words"] == 4
    assert first["start_s"] == 0.0 and first["end_s"] == 11.0
    assert first["url"] == "https://example.org/1066674.mp4"
    assert first["fps"] is None and first["num_frames"] is None  # not probed: an import is cheap
    assert rows["31353427"]["end_s"] == 62.5 and rows["31353427"]["caption_words"] == 1

    missing = rows["99999"]
    assert missing["status"] == "error" and missing["keep"] is False
    assert missing["error"] == f"video file not found: {root / '003_300' / '99999.mp4'}"
    assert missing["caption"] == "A missing video of a lake"

    # The id is the corpus's own: the same table imported from elsewhere keeps its clip_ids.
    moved = tmp_path / "moved"
    root.rename(moved)
    again = read_manifest(import_webvid(csv_path, tmp_path / "again.parquet", video_root=moved).path)
    assert sorted(again.column("clip_id").to_pylist()) == sorted(tbl.column("clip_id").to_pylist())
    assert len(set(tbl.column("clip_id").to_pylist())) == 3


def test_webvid_path_column_probe_and_duplicates(tmp_path):
    tiny_video(tmp_path / "clips" / "a.mp4", frames=12)
    csv_path = tmp_path / "list.csv"
    write_csv(csv_path, ["videoid", "name", "path", "duration"], [
        ["a", "a cat on a sofa", "clips/a.mp4", "0.5"],
        ["a", "a cat on a sofa", "clips/a.mp4", "0.5"],
        ["b", "nothing here", str(tmp_path / "clips" / "b.mp4"), ""],
    ])
    summary = import_webvid(csv_path, tmp_path / "out", probe=True)
    assert (summary.rows, summary.errors, summary.duplicates) == (2, 1, 1)
    rows = {r["source_key"]: r for r in read_manifest(tmp_path / "out").to_pylist()}
    a = rows["a"]
    assert a["source_path"] == str(tmp_path / "clips" / "a.mp4")  # relative: beside the CSV
    assert (a["width"], a["height"], a["fps"], a["num_frames"]) == (64, 48, 24.0, 12)
    assert (a["start_frame"], a["end_frame"]) == (0, 12) and a["end_s"] == pytest.approx(0.5)
    assert rows["b"]["status"] == "error" and "b.mp4" in rows["b"]["error"]


def test_webvid_needs_a_way_to_the_files(tmp_path):
    csv_path = tmp_path / "x.csv"
    write_csv(csv_path, ["videoid", "name", "page_dir"], [["1", "a b c", "p"]])
    with pytest.raises(ValueError, match="pass video_root"):
        import_webvid(csv_path, tmp_path / "out")
    write_csv(csv_path, ["name", "page_dir"], [["a b c", "p"]])
    with pytest.raises(ValueError, match="no video id column"):
        import_webvid(csv_path, tmp_path / "out", video_root=tmp_path)


def test_parse_duration():
    assert parse_duration("PT00H00M11S") == 11.0
    assert parse_duration("PT1H2M3S") == 3723.0
    assert parse_duration("P1DT1S") == 86401.0
    assert parse_duration("12.5") == 12.5 and parse_duration(3) == 3.0
    assert parse_duration("soon") is None and parse_duration("P") is None and parse_duration(None) is None


def laion_images(root) -> None:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1280, 800), (10, 120, 200)).save(root / "000000000.jpg")
    Image.new("RGB", (512, 384), (200, 120, 10)).save(root / "000000001.jpg")


def test_laion_round_trip_upper_case(tmp_path):
    images = tmp_path / "images"
    laion_images(images)
    table = pa.table({
        "URL": ["https://example.org/a.jpg", "https://example.org/b.jpg", "https://example.org/c.jpg"],
        "TEXT": ["a watercolor painting of a harbour at dusk", "logo", "a photo of a red fox"],
        "WIDTH": [1280.0, 512.0, None],
        "HEIGHT": [800.0, 384.0, None],
        "AESTHETIC_SCORE": [6.4, 3.1, None],
        "path": ["000000000.jpg", "000000001.jpg", "000000002.jpg"],
        "similarity": [0.31, 0.29, 0.33],
    })
    src = tmp_path / "laion.parquet"
    pq.write_table(table, src)
    summary = import_laion(src, tmp_path / "laion", image_root=images)
    assert (summary.rows, summary.errors) == (3, 1)

    tbl = read_manifest(tmp_path / "laion")
    rows = {r["url"]: r for r in tbl.to_pylist()}
    a = rows["https://example.org/a.jpg"]
    assert a["kind"] == "image" and a["num_frames"] == 1 and a["fps"] is None
    assert (a["width"], a["height"], a["aesthetic"]) == (1280, 800, 6.4)
    assert a["caption_words"] == 8 and a["source_path"] == str(images / "000000000.jpg")
    c = rows["https://example.org/c.jpg"]
    assert c["status"] == "error" and c["error"] == f"image file not found: {images / '000000002.jpg'}"

    # The imported rows go through the same filters and report as curated clips.
    out = FilterStage(FilterConfig())(tbl)
    verdict = dict(zip(tbl.column("url").to_pylist(), out.column("reject_reason").to_pylist()))
    assert verdict == {
        "https://example.org/a.jpg": None,  # one frame, but images are not held to a length
        "https://example.org/b.jpg": "resolution: short side 384 < 720",
        "https://example.org/c.jpg": None,  # an error row keeps its status, not a reason
    }
    stats = manifest_stats(tmp_path / "laion")
    assert stats["funnel"] == {"input": 3, "removed": {}, "errors": 1, "kept": 2}
    assert stats["totals"]["kept_images"] == 2 and stats["aesthetic"]["counts"] == [1, 0, 1]


def test_laion_lower_case_probe(tmp_path):
    laion_images(tmp_path)
    pq.write_table(pa.table({
        "url": ["u0", "u1"], "caption": ["harbour", None],
        "path": [str(tmp_path / "000000000.jpg"), "000000001.jpg"],
    }), tmp_path / "part.parquet")
    summary = import_laion(tmp_path / "part.parquet", tmp_path / "m.parquet", probe=True)
    assert (summary.rows, summary.errors) == (2, 0)
    rows = {r["url"]: r for r in read_manifest(tmp_path / "m.parquet").to_pylist()}
    assert (rows["u0"]["width"], rows["u0"]["height"]) == (1280, 800)
    assert (rows["u1"]["width"], rows["u1"]["height"]) == (512, 384)
    assert rows["u1"]["caption"] is None and rows["u1"]["caption_words"] is None
    pq.write_table(pa.table({"url": ["u"], "caption": ["x y z"]}), tmp_path / "nopath.parquet")
    with pytest.raises(ValueError, match="no local path column"):
        import_laion(tmp_path / "nopath.parquet", tmp_path / "n")
