"""`lavie-curate filter / caption / report / run`: the recipe end to end, resume, missing models."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from lavie.curate.cli import main as curate_main
from lavie.curate.config import CurateConfig, load_config
from lavie.curate.jobs import CHEAP_FILTERS, filter_spec, run_clip_stages, run_recipe
from lavie.curate.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_curate_yaml_documents_every_key_with_its_default():
    assert dataclasses.asdict(load_config(CurateConfig, ROOT / "configs" / "curate.yaml")) == dataclasses.asdict(CurateConfig())


def test_recipe_without_models_runs_every_other_stage(tmp_path, samples_dir):
    config = load_config(CurateConfig, None, ["scenes.cut=virtual", "aesthetic.head=/nowhere/head.pth",
                                               "caption.model=/nowhere/vlm"])
    lines: list[str] = []
    result = run_recipe(samples_dir, tmp_path, config, progress=False, log=lines.append)
    assert set(result.stages) == {"scenes", "filtered"}
    assert "/nowhere/head.pth" in result.skipped["aesthetic"]
    assert "/nowhere/vlm" in result.skipped["captioned"]
    assert any(line.startswith("aesthetic: skipped") for line in lines)

    filtered = read_manifest(tmp_path / "filtered").to_pylist()
    scenes = read_manifest(tmp_path / "scenes").to_pylist()
    assert [r["clip_id"] for r in filtered] == [r["clip_id"] for r in scenes]  # no row lost, order kept
    reasons = {}
    for r in filtered:
        if not r["keep"]:
            reasons.setdefault(r["reject_reason"].split(":")[0], []).append(Path(r["source_path"]).name)
    # The 640x360 video's three clips and the small bad-input clips fail the 720p floor; the
    # 10-frame shot was rejected by scenes for its length and keeps that first reason.
    assert sorted(reasons["resolution"]) == sorted(
        ["bars_360p_30.mp4"] * 3 + ["rotated.mp4", "vfr.mp4", "clip with spaces – ñandú 日本.mp4"])
    assert reasons["frames"] == ["bars_360p_30.mp4"]
    kept = {Path(r["source_path"]).name for r in filtered if r["keep"]}
    assert kept == {"mandel_1080p_24.mp4", "life_720p_25.mp4", "portrait_ntsc.mp4"}  # portrait: short side 720

    stats = json.loads((result.report / "stats.json").read_text())
    assert (result.report / "report.html").exists()
    funnel = {m["name"]: m["funnel"] for m in stats["manifests"]}
    assert funnel["filtered"] == {"input": len(scenes), "removed": {"frames": 1, "resolution": 6},
                                  "errors": 0, "kept": len(kept_rows(filtered))}

    # Re-running resumes: every stage finds its rows done.
    again = run_recipe(samples_dir, tmp_path, config, progress=False, log=lambda _: None)
    assert all(s.skipped_done == (s.videos if hasattr(s, "videos") else s.rows) for s in again.summaries)


def kept_rows(rows):
    return [r for r in rows if r["keep"] and r["status"] == "ok"]


def test_clip_stage_resumes_at_row_level(tmp_path, scenes_out):
    config = CurateConfig()
    spec = filter_spec(config, CHEAP_FILTERS)
    spec.batch_size = 4  # several parts, so that some can be lost
    full = run_clip_stages(scenes_out, tmp_path / "a", [spec], config, "filter", progress=False)
    parts = sorted((tmp_path / "a" / ".parts" / "clips").glob("*.parquet"))
    assert len(parts) >= 3
    # A run that died after writing only some parts (and before its manifest).
    partial = tmp_path / "b"
    (partial / ".parts" / "clips").mkdir(parents=True)
    kept_parts = parts[: len(parts) // 2]
    for p in kept_parts:
        shutil.copy(p, partial / ".parts" / "clips" / p.name)
    resumed = run_clip_stages(scenes_out, partial, [spec], config, "filter", progress=False)
    assert resumed.skipped_done == sum(pq.ParquetFile(p).metadata.num_rows for p in kept_parts)
    assert pq.read_table(partial / "clips.parquet").equals(pq.read_table(tmp_path / "a" / "clips.parquet"))
    assert resumed.kept == full.kept and resumed.rows == full.rows


def test_filter_cli_names_a_missing_aesthetic_model(tmp_path, scenes_out, capsys):
    code = curate_main(["filter", str(scenes_out), "-o", str(tmp_path), "--set", "aesthetic.head=/no/such/head.pth"])
    assert code == 2
    err = capsys.readouterr().err
    assert "/no/such/head.pth" in err and "--no-aesthetic" in err and len(err.strip().splitlines()) == 1


def test_caption_cli_names_a_missing_model(tmp_path, scenes_out, capsys):
    assert curate_main(["caption", str(scenes_out), "-o", str(tmp_path), "--model", "/no/such/vlm"]) == 2
    err = capsys.readouterr().err
    assert "/no/such/vlm" in err and len(err.strip().splitlines()) == 1


def test_filter_cli_cheap_only(tmp_path, scenes_out, capsys):
    assert curate_main(["filter", str(scenes_out), "-o", str(tmp_path), "--no-aesthetic", "--no-progress",
                        "--min-short-side", "360"]) == 0
    out = capsys.readouterr().out
    rows = read_manifest(tmp_path).to_pylist()
    small = [r for r in rows if not r["keep"] and r["reject_reason"].startswith("resolution")]
    assert {Path(r["source_path"]).name for r in small} == {"rotated.mp4", "vfr.mp4", "clip with spaces – ñandú 日本.mp4"}
    assert "filter:" in out and "resolution: 3" in out


def test_report_cli_compares_manifests(tmp_path, scenes_out):
    assert curate_main(["report", str(scenes_out), str(scenes_out), "--names", "a,b", "-o", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").exists() and (tmp_path / "stats.json").exists()
    assert curate_main(["report", str(scenes_out), "--names", "a,b", "-o", str(tmp_path)]) == 2


def test_missing_manifest_is_a_usage_error(tmp_path, capsys):
    assert curate_main(["filter", str(tmp_path / "none"), "-o", str(tmp_path / "o"), "--no-aesthetic"]) == 2
    assert "does not exist" in capsys.readouterr().err
