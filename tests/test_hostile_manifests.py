"""Hostile manifests: paths that are not files, numbers that are not numbers, markup in names."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lavie.curate.config import CurateConfig
from lavie.curate.pipeline import run_stages, slice_entries
from lavie.curate.manifest import conform, read_manifest, write_manifest
from lavie.curate.report import build_report
from lavie.curate.video import clip_frames


@pytest.mark.timeout(60)
def test_fifo_as_source_path_is_a_decode_failure_not_a_hang(tmp_path):
    from lavie.train.data import ClipGeometry, read_clip

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    row = {"source_path": str(fifo), "clip_path": None, "start_frame": 0, "num_frames": 16, "fps": 25.0,
           "width": 64, "height": 48}
    with pytest.raises(ValueError, match="not a regular file: a FIFO"):
        read_clip(row, ClipGeometry(4, 8.0, 16, 16, "center"), np.random.default_rng(0))
    with pytest.raises(ValueError, match="not a regular file"):
        clip_frames(str(fifo), None, 0, 16, 3)


def test_filter_rejects_nan_and_infinite_numbers_with_a_reason(tmp_path):
    rows = [{"clip_id": f"c{i}", "kind": "video", "source_path": "v.mp4", "status": "ok", "keep": True,
             "width": 1920, "height": 1080, "num_frames": 64, "fps": fps, "start_s": start, "end_s": 2.0}
            for i, (fps, start) in enumerate([(24.0, 0.0), (float("nan"), 0.0), (24.0, float("-inf")), (None, 0.0)])]
    rows.append({**rows[1], "clip_id": "c4", "keep": False, "reject_reason": "frames: 8 < 16"})
    manifest = write_manifest(conform(rows, "clips"), tmp_path / "in" / "clips.parquet", "clips")
    config = CurateConfig()
    cheap = [i for i in slice_entries(config, "filter") if config.stages[i].stage == "filter"]  # no model stages
    run_stages(manifest, tmp_path / "out", config, cheap, "filter", progress=False)
    out = read_manifest(tmp_path / "out").to_pylist()
    assert [r["keep"] for r in out] == [True, False, False, True, False]
    # the last row's old verdict came from a filter rule, which re-filtering judges afresh
    assert [r["reject_reason"] for r in out] == [None, "finite: fps is nan", "finite: start_s is -inf", None,
                                                 "finite: fps is nan"]


def test_report_draws_markup_in_user_strings_as_text(tmp_path):
    rows = [{"clip_id": f"c{i}", "kind": "video", "source_path": f"/raw/{i}.mp4", "status": "ok", "keep": True,
             "width": 1920, "height": 1080, "num_frames": 48, "fps": 24.0, "start_s": 0.0, "end_s": 2.0,
             "category": category} for i, category in enumerate(["$$", "$x^2$", r"\frac{a}{b}", "Travel"])]
    write_manifest(conform(rows, "clips"), tmp_path / "m" / "clips.parquet", "clips")
    build_report([tmp_path / "m"], ["$$ money $$"], tmp_path / "report")
    assert (tmp_path / "report" / "report.html").is_file()
    assert "$x^2$" in (tmp_path / "report" / "stats.json").read_text()


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path, monkeypatch):
    rows = [{"clip_id": "c0", "kind": "video", "source_path": "raw/v.mp4", "clip_path": "clips/c0.mp4",
             "status": "ok"}]
    path = write_manifest(conform(rows, "clips"), tmp_path / "corpus" / "stage" / "clips.parquet", "clips")
    monkeypatch.chdir(tmp_path)  # not where the manifest is
    row = read_manifest(path).to_pylist()[0]
    assert row["source_path"] == str(tmp_path / "corpus" / "stage" / "raw" / "v.mp4")
    assert row["clip_path"] == str(tmp_path / "corpus" / "stage" / "clips" / "c0.mp4")
