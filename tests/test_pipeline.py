"""The declared pipeline: stage contract, one registry, YAML stage lists, placement, re-filtering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from lavie.curate.config import load_curate_config
from lavie.curate.filters import FilterConfig, filter_table
from lavie.curate.manifest import conform, read_manifest
from lavie.curate.pipeline import ModelMissing, run_stages, slice_entries
from lavie.curate.registry import get_stage, register_stage, stage_names
from lavie.curate.runner import StagePlan, placement
from lavie.curate.stage import ColumnStage, Resources, StageConfig

ROOT = Path(__file__).resolve().parents[1]


# A stage that exists only in this file: registered, listed in a YAML, run by `run_stages`.
class LoudConfig(StageConfig):
    suffix: str = "!"


@register_stage("loud_category")
class LoudCategory(ColumnStage):
    """Adds `loud`: the clip's category in capitals, plus the configured suffix."""

    Config = LoudConfig
    RESOURCES = Resources(cpus=0.5)

    def columns(self, batch):
        return {"loud": [None if c is None else f"{str(c).upper()}{self.config.suffix}" for c in batch["category"]]}


@pytest.fixture
def one_video(tmp_path, samples_dir) -> Path:
    raw = tmp_path / "raw" / "Travel"
    raw.mkdir(parents=True)
    os.symlink(samples_dir / "Travel" / "life_720p_25.mp4", raw / "life.mp4")
    return tmp_path / "raw"


def test_a_stage_from_a_test_file_runs_from_yaml(tmp_path, one_video):
    assert "loud_category" in stage_names() and get_stage("loud_category") is LoudCategory
    yaml_file = tmp_path / "pipeline.yaml"
    yaml_file.write_text(yaml.safe_dump({"stages": [
        {"stage": "scenes", "cut": "virtual"},
        {"stage": "loud_category", "suffix": "?!"},
        {"stage": "filter", "min_short_side": 720},
    ]}))
    config = load_curate_config(yaml_file)
    summary = run_stages(one_video, tmp_path / "out", config, progress=False)
    # Exactly the listed stages ran, in order; the scenes flat map and the test stage ran in the
    # local process pool (no cluster given, no model), which imported this file's stage there.
    assert [s["stage"] for s in summary.stages] == ["scenes", "loud_category", "filter"]
    assert all(s["ran"] for s in summary.stages)
    clips = read_manifest(tmp_path / "out").to_pylist()
    assert clips and {c["loud"] for c in clips} == {"TRAVEL?!"}
    assert summary.rows == len(clips) >= 3 and summary.videos == 1
    assert summary.where.startswith("local processes")
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert [e["stage"] for e in saved["stages"]] == ["scenes", "loud_category", "filter"]


def test_a_missing_model_stops_before_any_work_or_is_skipped(tmp_path, one_video):
    stages = [{"stage": "scenes", "cut": "virtual"},
              {"stage": "caption", "model": str(tmp_path / "no-such-model")}]
    with pytest.raises(ModelMissing, match="no-such-model"):
        run_stages(one_video, tmp_path / "a", load_curate_config(None, settings={"stages": stages}))
    assert not (tmp_path / "a" / "clips.parquet").exists() and not (tmp_path / "a" / ".parts").exists()
    stages[1]["on_missing"] = "skip"
    summary = run_stages(one_video, tmp_path / "b", load_curate_config(None, settings={"stages": stages}),
                         progress=False)
    assert [(s["stage"], s["ran"]) for s in summary.stages] == [("scenes", True), ("caption", False)]
    assert "no-such-model" in summary.stages[1]["why"]
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["stages"][1]["ran"] is False


def test_config_overrides_by_stage_name_and_index_and_unknown_keys():
    config = load_curate_config(None, ["stages.filter.min_frames=8", "stages.0.detector=content",
                                       "filter.min_short_side=1080"])
    filters = [i for i, e in enumerate(config.stages) if e.stage == "filter"]
    assert len(filters) > 1
    assert all(config.stage_config(i).min_frames == 8 and config.stage_config(i).min_short_side == 1080
               for i in filters)
    assert config.stage_config(0).detector == "content"
    with pytest.raises(ValueError, match=r"stages\[0\] \(scenes\): unknown key 'detektor'"):
        load_curate_config(None, ["stages.scenes.detektor=content"])
    with pytest.raises(ValueError, match="detector"):
        load_curate_config(None, ["stages.scenes.detector=histogram"])
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        load_curate_config(None, settings={"stages": [{"stage": "nope"}]})
    # The named slices are parts of the same list.
    assert [config.stages[i].stage for i in slice_entries(config, "scenes")] == ["scenes"]
    assert config.stages[slice_entries(config, "caption")[0]].stage == "caption_metadata"


def test_curate_yaml_is_the_default_pipeline_spelled_out():
    shipped, default = load_curate_config(ROOT / "configs" / "curate.yaml"), load_curate_config()

    def resolved(config):
        return [(e.stage, e.on_missing, e.workers, e.batch_size, config.stage_config(i).model_dump())
                for i, e in enumerate(config.stages)]

    assert resolved(shipped) == resolved(default)
    assert shipped.input == default.input and shipped.distribution == default.distribution
    text = (ROOT / "configs" / "curate.yaml").read_text()
    # Every key of every stage's config is written down with its default.
    for i, entry in enumerate(shipped.stages):
        if entry.stage != "filter":
            for key in get_stage(entry.stage).Config.model_fields:
                assert f"{key}:" in text, (entry.stage, key)
    for key in FilterConfig.model_fields:
        assert f"{key}:" in text, key


def test_gpus_are_asked_for_from_what_the_cluster_offers(monkeypatch):
    import torch

    # The driver's own CUDA plays no part, either way.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    clip = StagePlan(get_stage("clip"), get_stage("clip").Config())
    assert "num_gpus" not in placement(clip, {"CPU": 8.0})
    assert placement(clip, {"CPU": 8.0})["concurrency"] == 1
    on_gpus = placement(clip, {"CPU": 8.0, "GPU": 2.0})
    assert on_gpus["num_gpus"] == 1.0 and on_gpus["concurrency"] == 2
    assert placement(StagePlan(clip.cls, clip.config, workers=3), {"GPU": 2.0})["concurrency"] == 3
    filt = StagePlan(get_stage("filter"), FilterConfig())
    assert "num_gpus" not in placement(filt, {"CPU": 8.0, "GPU": 2.0})
    motion = StagePlan(get_stage("motion"), get_stage("motion").Config())
    assert not motion.resources.holds_model and "concurrency" not in placement(motion, {"CPU": 4.0})


def test_model_pools_are_fitted_beside_the_tasks_that_feed_them():
    from lavie.curate.runner import placements, pools

    filt = StagePlan(get_stage("filter"), FilterConfig())
    clip = StagePlan(get_stage("clip"), get_stage("clip").Config())
    caption = StagePlan(get_stage("caption"), get_stage("caption").Config())
    # Room to spare: every request as declared; the two model stages in a row share one pool.
    roomy = placements([filt, clip, caption], {"CPU": 8.0})
    assert [o["num_cpus"] for o in roomy] == [0.25, 1.0, 1.0]
    assert [[p.name for p in group] for group, _ in pools([filt, clip, caption], roomy)] == [["filter"], ["clip", "caption"]]
    # Two 1-CPU pools on 2 CPUs would leave the filter's tasks none.
    plans = [filt, clip, filt, caption]
    tight = placements(plans, {"CPU": 2.0}, reads=True)
    assert len(pools(plans, tight)) == 4
    assert tight[0]["num_cpus"] == 0.25 and tight[1]["num_cpus"] == tight[3]["num_cpus"] == 0.875
    assert [tight[1]["concurrency"], tight[3]["concurrency"]] == [1, 1]
    # A task asking for a whole CPU on a 1-CPU cluster gets half, the actor the other half.
    scenes = StagePlan(get_stage("scenes"), get_stage("scenes").Config())
    one = placements([scenes, clip], {"CPU": 1.0})
    assert one[0]["num_cpus"] == 0.5 and one[1]["num_cpus"] == 0.5
    # GPU actors are fitted on CPUs too; their GPU requests are untouched.
    plans = [scenes, clip, filt, caption]
    on_gpus = placements(plans, {"CPU": 2.0, "GPU": 1.0})
    assert [on_gpus[1]["num_gpus"], on_gpus[3]["num_gpus"]] == [1.0, 1.0]
    assert on_gpus[0]["num_cpus"] + on_gpus[1]["num_cpus"] + on_gpus[3]["num_cpus"] <= 2.0


def _rows(**columns) -> pa.Table:
    n = len(next(iter(columns.values())))
    base = {"clip_id": [f"c{i}" for i in range(n)], "kind": ["video"] * n, "source_path": ["/x.mp4"] * n,
            "status": ["ok"] * n}
    return conform(pa.table({**base, **columns}), "clips")


def test_refiltering_recomputes_the_filters_reasons():
    rows = _rows(width=[1280, 640, 1920, 1920, 1280, 1920], height=[720, 360, 1080, 1080, 720, 1080],
                 num_frames=[40, 40, 10, 40, 40, 40], fps=[25.0] * 6,
                 keep=[None, None, False, None, None, None],
                 reject_reason=[None, None, "scene_length: 10 frames < 16", None, None, None],
                 aesthetic=[5.0, 5.0, 5.0, 3.5, None, 6.5],
                 text_area=[0.0, 0.0, 0.0, 0.0, 0.03, 0.0],
                 motion=[1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    rows = rows.set_column(rows.column_names.index("status"), "status",
                           pa.array(["ok", "ok", "ok", "ok", "ok", "error"]))
    first = filter_table(rows, FilterConfig())
    assert first.column("reject_reason").to_pylist() == [
        None, "resolution: short side 360 < 720", "scene_length: 10 frames < 16",
        "aesthetic: 3.5 < 4", "text: 0.03 of the frame > 0.005", None]
    assert first.column("keep").to_pylist() == [True, False, False, False, False, False]
    # New thresholds on the filtered table: the filter's own verdicts are judged afresh, the
    # scene split's and the error row's stay.
    again = filter_table(first, FilterConfig(min_short_side=360, min_aesthetic=3.0, max_text_area=0.05,
                                             min_motion=2.0))
    assert again.column("reject_reason").to_pylist() == [
        "motion: 1 px < 2 px (static)", "motion: 1 px < 2 px (static)", "scene_length: 10 frames < 16",
        "motion: 1 px < 2 px (static)", "motion: 1 px < 2 px (static)", None]
    loose = filter_table(first, FilterConfig(min_short_side=None, min_aesthetic=None, max_text_area=None))
    assert loose.column("keep").to_pylist() == [True, True, False, True, True, False]


def test_cheap_filter_command_starts_without_torch_or_ray(tmp_path, scenes_out):
    """`filter --cheap-only` and `report` run in-process: no torch, transformers or Ray imported."""
    script = f"""
import sys
from lavie.curate.cli import main
assert main(["filter", {str(scenes_out)!r}, "-o", {str(tmp_path / 'f')!r}, "--cheap-only", "--no-progress",
             "--set", "filter.min_short_side=360"]) == 0
assert main(["report", {str(tmp_path / 'f')!r}, "-o", {str(tmp_path / 'r')!r}]) == 0
heavy = sorted(m for m in ("torch", "transformers", "ray", "open_clip") if m in sys.modules)
print("HEAVY", heavy)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout
    filtered = pq.read_table(tmp_path / "f" / "clips.parquet")
    before = pq.read_table(scenes_out / "clips.parquet")
    assert filtered.column("clip_id").to_pylist() == before.column("clip_id").to_pylist()
    reasons = [r for r in filtered.column("reject_reason").to_pylist() if r]
    assert not any(r.startswith("resolution: short side 360") for r in reasons)  # 360p now passes
    assert any(r.startswith("resolution: short side 192") for r in reasons)  # the rotated phone clip
    assert np.sum(filtered.column("keep").to_numpy(zero_copy_only=False)) > 0


class CrashConfig(StageConfig):
    pass


@register_stage("crash_on_marked")
class CrashOnMarked(ColumnStage):
    """Kills its own process on rows whose source_path says "crash" (a decoder that segfaults)."""

    Config = CrashConfig
    RESOURCES = Resources(cpus=1.0)

    def columns(self, batch):
        if any("crash" in p for p in batch["source_path"]):
            os.kill(os.getpid(), 9)
        return {"seen_by": [os.getpid()] * len(batch["source_path"])}


def test_local_pool_survives_a_worker_that_dies_and_hands_over_the_culprit():
    from lavie.curate.runner import run_local

    paths = [f"/v/{i}.mp4" for i in range(7)] + ["/v/crash.mp4"] + [f"/v/{i}.mp4" for i in range(7, 10)]
    source = pa.table({"source_path": paths, "_order": list(range(len(paths)))})
    crashed = []
    plan = StagePlan(CrashOnMarked, CrashConfig())
    out = list(run_local(source, [plan], workers=2, on_crash=crashed.append))
    done = sorted(r for t in out for r in t.column("_order").to_pylist())
    assert done == [i for i in range(len(paths)) if i != 7]  # every other row once, none twice
    assert [r["source_path"] for r in crashed] == ["/v/crash.mp4"]
    assert len({p for t in out for p in t.column("seen_by").to_pylist()}) >= 2  # more than one process


def test_scenes_without_a_cluster_runs_in_local_processes_and_never_imports_ray(tmp_path, one_video):
    script = f"""
import json, sys
from lavie.curate.cli import main
assert main(["scenes", {str(one_video)!r}, "-o", {str(tmp_path / 'out')!r}, "--virtual", "--no-progress"]) == 0
print("RAY", "ray" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RAY False" in out.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["where"].startswith("local processes") and summary["videos"] == 1
    forced = subprocess.run([sys.executable, "-m", "lavie.curate.cli", "scenes", str(one_video), "-o",
                             str(tmp_path / "ray"), "--virtual", "--no-progress", "--executor", "ray"],
                            capture_output=True, text=True, timeout=300, env=env)
    assert forced.returncode == 0, forced.stderr[-2000:]
    again = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert again["where"].startswith("local ray")
    rows = lambda d: sorted(pq.read_table(d / "clips.parquet").drop(["clip_path"]).to_pylist(), key=lambda r: r["clip_id"])
    assert rows(tmp_path / "out") == rows(tmp_path / "ray")


def test_local_pool_that_cannot_start_is_one_error_not_rows_blamed_on_files(tmp_path, one_video):
    """Workers that die as they start (here: a script read from stdin, which spawned workers
    cannot re-import) are the run's problem, not the videos': one line, exit 1, no error rows."""
    script = (f"import sys\nfrom lavie.curate.cli import main\n"
              f"sys.exit(main(['scenes', {str(one_video)!r}, '-o', {str(tmp_path / 'out')!r}, '--virtual', "
              f"'--no-progress']))\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("lavie-curate scenes: error: the local worker processes die as they start")
    assert "--executor ray" in last
    assert not (tmp_path / "out" / "videos.parquet").exists()
