"""The statistics report: buckets on hand-made rows, the funnel, side-by-side manifests, streaming."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from lavie.curate import report as report_mod
from lavie.curate.manifest import conform, write_manifest
from lavie.curate.report import CHARTS, build_report, manifest_stats


def clip(i: int, **values) -> dict:
    row = {"clip_id": f"c{i}", "video_id": f"v{i // 2}", "kind": "video", "source_path": f"/raw/{i // 2}.mp4",
           "status": "ok", "keep": True, "width": 1920, "height": 1080, "num_frames": 48, "fps": 24.0,
           "start_s": 0.0, "end_s": 2.0, "category": "Travel"}
    row.update(values)
    return row


@pytest.fixture
def bucket_rows(tmp_path):
    rows = [
        clip(0, aesthetic=3.9, width=640, height=360, caption="a red car", start_s=0.0, end_s=0.5),
        clip(1, aesthetic=4.0, width=720, height=1280, caption="sunset", caption_words=None, end_s=1.5),
        clip(2, aesthetic=5.5, width=1920, height=1080, caption_words=12, end_s=12.0, category="Sports"),
        clip(3, aesthetic=6.0, width=3840, height=2160, caption=" ".join(["word"] * 41), end_s=75.0),
        clip(4, aesthetic=6.1, width=320, height=240, category=None, start_s=None, end_s=None,
             num_frames=120, fps=24.0),
        clip(5, aesthetic=None, width=None, height=None, start_s=None, end_s=None, fps=None),
        clip(6, kind="image", num_frames=1, fps=None, start_s=None, end_s=None, aesthetic=7.5,
             width=1024, height=768, caption="a painting of a fox", video_id="img6", source_path="/img/6.jpg"),
        # Not kept: counted in the funnel, never in the distributions.
        clip(7, keep=False, reject_reason="resolution: short side 360 < 720", aesthetic=1.0, width=640, height=360),
        clip(8, status="error", error="decode failed", keep=False, aesthetic=1.0),
    ]
    path = tmp_path / "buckets" / "clips.parquet"
    write_manifest(conform(rows, "clips"), path, "clips")
    return path


def test_buckets_on_hand_made_rows(bucket_rows):
    stats = manifest_stats(bucket_rows)
    assert stats["name"] == "buckets"
    assert stats["totals"] == {
        "sources": 6, "clips": 9, "kept": 7, "rejected": 1, "errors": 1,
        "kept_videos": 6, "kept_images": 1,
        "hours_kept": pytest.approx((0.5 + 1.5 + 12.0 + 75.0 + 5.0) / 3600),
    }
    # App. B, Fig. 9(a): <4, 4-6 (both ends included), >6.
    assert stats["aesthetic"]["counts"] == [1, 3, 2]
    assert stats["aesthetic"]["unknown"] == 1
    assert stats["aesthetic"]["percent"] == pytest.approx([100 / 6, 50.0, 100 / 3])
    res = dict(zip(stats["resolution"]["labels"], stats["resolution"]["counts"]))
    assert res == {"<360p": 1, "360p": 1, "480p": 0, "720p": 2, "1080p": 1, "1440p": 0, "2160p+": 1}
    assert stats["resolution"]["unknown"] == 1
    dur = dict(zip(stats["duration_s"]["labels"], stats["duration_s"]["counts"]))
    # Images have no duration; the row with no times and no fps is unknown.
    assert dur["0-1 s"] == 1 and dur["1-2 s"] == 1 and dur["10-15 s"] == 1 and dur["60+ s"] == 1
    assert dur["5-7.5 s"] == 1 and sum(dur.values()) == 5 and stats["duration_s"]["unknown"] == 1
    words = dict(zip(stats["caption_words"]["labels"], stats["caption_words"]["counts"]))
    assert words["3"] == 1 and words["1"] == 1 and words["12"] == 1 and words["30+"] == 1 and words["5"] == 1
    assert sum(words.values()) == 5 and stats["caption_words"]["unknown"] == 2
    assert stats["category"] == {"Travel": 5, "(none)": 1, "Sports": 1}
    assert stats["funnel"] == {"input": 9, "removed": {"resolution": 1}, "errors": 1, "kept": 7}


def funnel_rows(n: int, seed: int) -> list[dict]:
    reasons = ["resolution: short side 360 < 720", "frames: 9 < 16", "caption_words: 2 < 3",
               "aesthetic: 3.10 < 4", None, ""]
    rows = []
    for i in range(n):
        r = (i * 7 + seed) % 11
        if r < 6:
            rows.append(clip(i, keep=False, reject_reason=reasons[r]))
        elif r == 6:
            rows.append(clip(i, status="error", error="probe failed", keep=False))
        elif r == 7:
            rows.append(clip(i, status="error", error="probe failed", keep=None, reject_reason="frames: 3 < 16"))
        elif r == 8:
            rows.append(clip(i, keep=None))  # no verdict yet: counts as kept
        else:
            rows.append(clip(i, caption="a cat sits on a mat"))
    return rows


def test_funnel_adds_up_and_streams(tmp_path, monkeypatch):
    path = tmp_path / "run" / "clips.parquet"
    write_manifest(conform(funnel_rows(101, seed=3), "clips"), path, "clips")

    seen = []
    real = report_mod.iter_manifest_batches

    def spy(*args, **kwargs):
        for batch in real(*args, **kwargs):
            assert batch.num_rows <= kwargs["batch_size"]
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(report_mod, "iter_manifest_batches", spy)
    out = build_report([path], None, tmp_path / "report", batch_size=8)
    assert len(seen) >= 13 and sum(seen) == 101

    on_disk = json.loads((tmp_path / "report" / "stats.json").read_text())
    assert on_disk == json.loads(json.dumps(out))
    funnel = on_disk["manifests"][0]["funnel"]
    assert funnel["input"] == 101
    assert funnel["kept"] + sum(funnel["removed"].values()) + funnel["errors"] == funnel["input"]
    expected_errors = sum(1 for i in range(101) if (i * 7 + 3) % 11 in (6, 7))
    assert funnel["errors"] == expected_errors
    assert set(funnel["removed"]) == {"resolution", "frames", "caption_words", "aesthetic", "unspecified"}
    # An empty or missing reason is "unspecified": the funnel never loses a rejected row.
    assert funnel["removed"]["unspecified"] == sum(1 for i in range(101) if (i * 7 + 3) % 11 in (4, 5))
    # Streaming in small batches gives the same numbers as one big batch.
    whole = manifest_stats(path, batch_size=100_000)
    assert whole == {**on_disk["manifests"][0], "path": whole["path"]}


def test_two_manifests_side_by_side(tmp_path, bucket_rows):
    before = tmp_path / "scenes"
    after = tmp_path / "filtered"
    write_manifest(conform(funnel_rows(40, seed=0), "clips"), before / "clips.parquet", "clips")
    write_manifest(conform(funnel_rows(25, seed=5), "clips"), after / "part-00000.parquet", "clips")
    out = build_report([before, after, bucket_rows], ["WebVid-style", "Vimeo-style", "hand"], tmp_path / "cmp")

    assert [m["name"] for m in out["manifests"]] == ["WebVid-style", "Vimeo-style", "hand"]
    assert [m["funnel"]["input"] for m in out["manifests"]] == [40, 25, 9]
    for m in out["manifests"]:
        f = m["funnel"]
        assert f["kept"] + sum(f["removed"].values()) + f["errors"] == f["input"]

    report_dir = tmp_path / "cmp"
    for chart in CHARTS:
        png = report_dir / out["files"][chart.key]
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
    page = (report_dir / "report.html").read_text()
    assert len(re.findall(r'<img class="chart"[^>]*src="data:image/png;base64,', page)) == len(CHARTS)
    # Self-contained: no address other than the embedded data.
    assert not re.search(r'(src|href)="(?!data:)', page)
    # The totals table names every manifest, in order, with its kept count.
    header = re.search(r"<h2>Totals</h2>\s*<table><thead><tr>(.*?)</tr>", page).group(1)
    assert re.findall(r"<th>(.*?)</th>", header) == ["", "WebVid-style", "Vimeo-style", "hand"]
    kept_row = re.search(r"<tr><td>kept</td>(.*?)</tr>", page).group(1)
    assert re.findall(r"<td>(.*?)</td>", kept_row) == [str(m["totals"]["kept"]) for m in out["manifests"]]


def test_bad_arguments(tmp_path, bucket_rows):
    with pytest.raises(ValueError, match="names has 1 entries for 2 manifests"):
        build_report([bucket_rows, bucket_rows], ["only one"], tmp_path / "r")
    with pytest.raises(ValueError, match="at least one manifest"):
        build_report([], None, tmp_path / "r")
    out = build_report([bucket_rows, bucket_rows], None, tmp_path / "same")
    assert [m["name"] for m in out["manifests"]] == ["buckets", "buckets (2)"]
