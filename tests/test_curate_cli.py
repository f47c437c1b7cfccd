"""`lavie-curate` end to end on the generated samples: the pipeline, its slices, resume, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from lavie.curate.cli import main as curate_main
from lavie.curate.manifest import read_manifest

# The default pipeline made light for the test machine: fewer frames per clip for the model-free
# measuring stages, virtual clips.
LIGHT = ["--set", "stages.scenes.cut=virtual", "--set", "stages.motion.pairs=1",
         "--set", "stages.text_area.frames=1", "--set", "stages.text_area.short_side=480"]


def test_run_executes_the_stage_list_and_reports_it(tmp_path, samples_dir, capsys):
    out = tmp_path / "curated"
    assert curate_main(["run", str(samples_dir), "-o", str(out), "--no-progress", *LIGHT,
                        "--set", "stages.clip.head=/nowhere/head.pth"]) == 0
    printed = capsys.readouterr().out
    assert "not run: clip: " in printed and "/nowhere/head.pth" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == [
        "scenes", "filter", "motion", "text_area", "filter", "clip", "filter", "caption_metadata", "caption", "filter"]
    assert [s["stage"] for s in summary["stages"] if not s["ran"]] == ["clip", "caption"]

    clips = read_manifest(out).to_pylist()
    videos = read_manifest(out, "videos").to_pylist()
    # Every failed source is an error row among the clips, with its reason: the funnel counts it.
    failed = [v for v in videos if v["status"] == "error"]
    assert len(failed) == 5 and summary["videos_error"] == 5
    assert sorted(c["source_path"] for c in clips if c["status"] == "error") == sorted(v["source_path"] for v in failed)
    kept = [c for c in clips if c["keep"]]
    # Kept clips are captioned from their sources' metadata, and say so.
    assert kept and all(c["caption"] and c["caption_source"].startswith("metadata:") for c in kept)
    reasons = {c["reject_reason"].split(":")[0] for c in clips if c["status"] == "ok" and not c["keep"]}
    assert {"resolution", "scene_length", "motion", "text"} <= reasons

    stats = json.loads((out / "report" / "stats.json").read_text())["manifests"][0]
    assert stats["funnel"]["errors"] == 5 and stats["sources_table"]["error"] == 5
    page = (out / "report" / "report.html").read_text()
    assert "Stages: curated" in page and "skipped" in page and "/nowhere/head.pth" in page
    assert "zero_bytes.mp4" in page and 'class="thumb"' in page
    assert "Vimeo25M (LaVie App. B)" in page
    assert "bad" not in stats["category"]

    # A second run finds every video done and leaves the manifests as they were.
    before = pq.read_table(out / "clips.parquet")
    assert curate_main(["run", str(samples_dir), "-o", str(out), "--no-progress", *LIGHT,
                        "--set", "stages.clip.head=/nowhere/head.pth"]) == 0
    assert json.loads((out / "summary.json").read_text())["skipped_done"] == len(videos)
    assert pq.read_table(out / "clips.parquet").equals(before)


def test_a_ray_slice_resumes_at_row_level(tmp_path, scenes_out):
    # The cheap filters alone run in-process; with the motion stage the slice runs on Ray,
    # journaled part by part.
    cmd = ["filter", str(scenes_out), "--no-aesthetic", "--no-progress", "--set", "stages.motion.pairs=1",
           "--set", "stages.motion.batch_size=4", "--set", "stages.filter.batch_size=4",
           "--set", "stages.text_area.batch_size=4", "--set", "stages.text_area.frames=1",
           "--set", "stages.text_area.short_side=240"]
    assert curate_main([cmd[0], cmd[1], "-o", str(tmp_path / "a"), *cmd[2:]]) == 0
    parts = sorted((tmp_path / "a" / ".parts" / "clips").glob("*.parquet"))
    assert len(parts) >= 3
    # A run that died after writing only some parts (and before its manifest).
    partial = tmp_path / "b"
    (partial / ".parts" / "clips").mkdir(parents=True)
    for p in parts[: len(parts) // 2]:
        shutil.copy(p, partial / ".parts" / "clips" / p.name)
    assert curate_main([cmd[0], cmd[1], "-o", str(partial), *cmd[2:]]) == 0
    done = sum(pq.ParquetFile(p).metadata.num_rows for p in parts[: len(parts) // 2])
    assert json.loads((partial / "summary.json").read_text())["skipped_done"] == done
    full, resumed = pq.read_table(tmp_path / "a" / "clips.parquet"), pq.read_table(partial / "clips.parquet")
    assert resumed.column("clip_id").to_pylist() == full.column("clip_id").to_pylist()
    assert resumed.equals(full)


def test_filter_cli_names_a_missing_clip_model(tmp_path, scenes_out, capsys):
    code = curate_main(["filter", str(scenes_out), "-o", str(tmp_path), "--set", "stages.clip.head=/no/such/head.pth"])
    assert code == 2
    err = capsys.readouterr().err
    assert "/no/such/head.pth" in err and "--no-aesthetic" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "clips.parquet").exists()


def test_caption_cli_names_a_missing_model(tmp_path, scenes_out, capsys):
    assert curate_main(["caption", str(scenes_out), "-o", str(tmp_path), "--model", "/no/such/vlm"]) == 2
    err = capsys.readouterr().err
    assert "/no/such/vlm" in err and "--metadata-only" in err and len(err.strip().splitlines()) == 1


def test_caption_cli_metadata_only(tmp_path, scenes_out, capsys):
    assert curate_main(["caption", str(scenes_out), "-o", str(tmp_path), "--metadata-only", "--no-progress"]) == 0
    rows = [r for r in read_manifest(tmp_path).to_pylist() if r["keep"]]
    assert rows and all(r["caption_source"].startswith("metadata:") and r["caption_words"] >= 3 for r in rows)


def test_filter_cli_cheap_only(tmp_path, scenes_out, capsys):
    assert curate_main(["filter", str(scenes_out), "-o", str(tmp_path), "--cheap-only", "--no-progress",
                        "--min-short-side", "360"]) == 0
    out = capsys.readouterr().out
    rows = read_manifest(tmp_path).to_pylist()
    small = [r for r in rows if not r["keep"] and (r["reject_reason"] or "").startswith("resolution")]
    assert {Path(r["source_path"]).name for r in small} == {"rotated.mp4", "vfr.mp4", "clip with spaces – ñandú 日本.mp4"}
    assert "filter:" in out and "resolution: 3" in out


def test_report_cli_compares_manifests(tmp_path, scenes_out):
    assert curate_main(["report", str(scenes_out), str(scenes_out), "--names", "a,b", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists() and (tmp_path / "stats.json").exists()
    assert curate_main(["report", str(scenes_out), "--names", "a,b", "-o", str(tmp_path)]) == 2


def test_missing_manifest_is_a_usage_error(tmp_path, capsys):
    assert curate_main(["filter", str(tmp_path / "none"), "-o", str(tmp_path / "o"), "--cheap-only"]) == 2
    assert "does not exist" in capsys.readouterr().err
