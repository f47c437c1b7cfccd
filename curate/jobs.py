"""Curation jobs: discover inputs, skip what is done, run a stage on Ray, write manifests.

A job's output folder holds the stage's manifests (`videos.parquet`, `clips.parquet`), the config
it ran with (`config.yaml`), a `summary.json`, the clip files (`clips/<video_id>/<clip_id>.mp4`)
and the run journal (`.parts/`). Re-running a job on the same folder resumes it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from lavie.curate import filters, runner
from lavie.curate.config import CurateConfig, save_config
from lavie.curate.finite import reject_non_finite
from lavie.curate.sources import plan_scenes
from lavie.curate.manifest import (
    ORDER_COLUMN,
    STATUS_ERROR,
    PartStore,
    iter_manifest_batches,
)

SUMMARY_FILE = "summary.json"
log = logging.getLogger(__name__)


@dataclass
class ScenesSummary:
    videos: int
    videos_ok: int
    videos_error: int
    clips: int
    clips_rejected: int
    hours: float
    skipped_done: int
    seconds: float

    def line(self) -> str:
        return (
            f"scenes: {self.videos} videos ({self.videos_ok} ok, {self.videos_error} errors), "
            f"{self.clips} clips kept, {self.clips_rejected} rejected, {self.hours:.4f} h of clips; "
            f"{self.skipped_done} videos already done; {self.seconds:.1f} s"
        )


def run_scenes(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: CurateConfig,
    progress: bool = True,
) -> ScenesSummary:
    """Split every video under `raw_dir` into single-scene clips; resumable."""
    started = time.time()
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    videos = PartStore(out_dir, "videos", "video_id")
    clips = PartStore(out_dir, "clips", "clip_id")
    save_config(config, out_dir / "config.yaml")

    # 1. Resume: a video is done when its `videos` part exists. A `clips` part without its
    #    `videos` twin is what a kill between the two writes leaves: drop it, redo the video.
    clips.drop_parts_except(videos.part_names())
    done = videos.done()

    # Sources as found on disk: unreadable ones (link loops, FIFOs, devices, paths too long)
    # become error rows here, changed ones have their earlier rows replaced (lavie.curate.sources).
    plan = plan_scenes(raw_dir, out_dir, config.input.extensions, config.input.category_from_folder,
                       videos, clips)
    if plan.problems:
        videos.write(plan.problems, f"part-{uuid.uuid4().hex}")
    todo = plan.todo
    todo_ids = {r["video_id"] for r in todo}
    skipped = plan.done

    # 2. Run the scenes stage over the videos still to do: one actor per CPU of the Ray this
    #    run is on (a whole cluster, when it joined one), unless `workers` says otherwise.
    if todo:
        runner.init_ray(config.distribution.ray_address, num_cpus=config.distribution.workers)
        workers = config.distribution.workers or runner.cluster_cpus()
        spec = runner.StageSpec(
            name="scenes",
            kwargs=dict(clips_dir=str((out_dir / "clips").resolve()), **asdict(config.scenes)),
            concurrency=min(len(todo), workers),
            batch_size=config.distribution.batch_size,
        )
        bar = tqdm(total=len(todo), unit="video", desc="scenes", disable=not progress)
        try:
            for block in runner.map_stage(pa.Table.from_pylist(todo), spec):
                _write_scenes_block(block, videos, clips)
                bar.update(block.num_rows)
        finally:
            bar.close()
    missing = todo_ids - videos.done()
    if missing:
        raise RuntimeError(f"{len(missing)} videos produced no row; re-run to resume")

    # 3. The stage's manifests, from the journal.
    vt = videos.consolidate(sort_by=["source_path"])
    ct = clips.consolidate(sort_by=["source_path", "start_frame"])
    summary = _summarise(vt, ct, skipped, time.time() - started)
    with open(out_dir / SUMMARY_FILE, "w") as fh:
        json.dump(asdict(summary), fh, indent=2)
    return summary


def _write_scenes_block(block: pa.Table, videos: PartStore, clips: PartStore) -> None:
    """Clips first, then the videos rows under the same part name: the videos part marks done."""
    rows = block.to_pylist()
    clip_rows = []
    for row in rows:
        clip_rows.extend(json.loads(row.pop("clips_json") or "[]"))
    name = f"part-{uuid.uuid4().hex}"
    if clip_rows:
        clips.write(clip_rows, name)
    videos.write(rows, name)


def _summarise(vt: pa.Table, ct: pa.Table, skipped: int, seconds: float) -> ScenesSummary:
    status = vt.column("status").to_pylist()
    keep = ct.column("keep").to_pylist()
    durations = [
        (e - s) for s, e, k in zip(ct.column("start_s").to_pylist(), ct.column("end_s").to_pylist(), keep)
        if k and s is not None and e is not None
    ]
    return ScenesSummary(
        videos=vt.num_rows,
        videos_ok=sum(s != STATUS_ERROR for s in status),
        videos_error=sum(s == STATUS_ERROR for s in status),
        clips=sum(bool(k) for k in keep),
        clips_rejected=sum(not k for k in keep),
        hours=sum(durations) / 3600.0,
        skipped_done=skipped,
        seconds=seconds,
    )



@dataclass
class StageSummary:
    stage: str
    rows: int
    kept: int
    rejected: dict
    errors: int
    skipped_done: int
    seconds: float

    def line(self) -> str:
        removed = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"{self.stage}: {self.rows} clips, {self.kept} kept; rejected by {removed}; "
            f"{self.errors} errors; {self.skipped_done} already done; {self.seconds:.1f} s"
        )


def run_clip_stages(
    in_manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    specs: list[runner.StageSpec],
    config,
    label: str,
    progress: bool = True,
    chunk_rows: int = 200_000,
) -> StageSummary:
    """Run a chain of clip stages over a clips manifest into `out_dir`; resumable by clip id.

    Every input row comes out, in input order, rejected and failed ones included; stages pass
    rows that are not kept through untouched, so expensive models only see survivors. The input
    is streamed `chunk_rows` at a time, so memory stays bounded on manifests of millions of rows.
    """
    import pyarrow.compute as pc

    started = time.time()
    out_dir = Path(out_dir)
    store = PartStore(out_dir, "clips", "clip_id")
    save_config(config, out_dir / "config.yaml")
    done = store.done()
    total = count_rows(in_manifest)
    bar = tqdm(total=total, unit="clip", desc=label, disable=not progress)
    skipped = 0
    offset = 0
    try:
        for chunk in _chunks(in_manifest, chunk_rows):
            chunk = chunk.append_column(ORDER_COLUMN, pa.array(range(offset, offset + chunk.num_rows), pa.int64()))
            offset += chunk.num_rows
            if done:
                todo = chunk.filter(pc.invert(pc.is_in(chunk.column("clip_id"), value_set=pa.array(list(done), pa.string()))))
            else:
                todo = chunk
            skipped += chunk.num_rows - todo.num_rows
            bar.update(chunk.num_rows - todo.num_rows)
            if todo.num_rows == 0:
                continue
            if any(spec.name == "filter" for spec in specs):
                todo = reject_non_finite(todo)  # NaN / inf, told apart from nulls while still Arrow
            written: set[str] = set()
            if specs:
                runner.init_ray(config.distribution.ray_address, num_cpus=config.distribution.workers)
                blocks = runner.map_stages(todo, specs)
            else:
                blocks = iter([todo])
            for block in blocks:
                first = min(block.column(ORDER_COLUMN).to_pylist())
                store.write(block, name=f"part-{first:012d}-{uuid.uuid4().hex[:8]}")
                written.update(block.column("clip_id").to_pylist())
                bar.update(block.num_rows)
            missing = set(todo.column("clip_id").to_pylist()) - written
            if missing:
                raise RuntimeError(f"{len(missing)} clips produced no row; re-run to resume")
    finally:
        bar.close()
    store.consolidate()
    summary = summarise_clips(store.manifest_path, label, skipped, time.time() - started)
    with open(out_dir / SUMMARY_FILE, "w") as fh:
        json.dump(asdict(summary), fh, indent=2)
    return summary


def _chunks(manifest, rows: int):
    """The manifest as tables of about `rows` rows (streamed)."""
    pending, n = [], 0
    for batch in iter_manifest_batches(manifest, "clips", batch_size=min(rows, 65536)):
        pending.append(batch)
        n += batch.num_rows
        if n >= rows:
            yield pa.Table.from_batches(pending)
            pending, n = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def summarise_clips(manifest, label: str, skipped: int, seconds: float) -> StageSummary:
    """Counts of a clips manifest, streamed."""
    rows = kept = errors = 0
    reasons: dict[str, int] = {}
    for batch in iter_manifest_batches(manifest, "clips", columns=["keep", "status", "reject_reason"]):
        keep = batch.column(0).to_pylist()
        status = batch.column(1).to_pylist()
        rows += batch.num_rows
        for k, st, reason in zip(keep, status, batch.column(2).to_pylist()):
            if st == STATUS_ERROR:
                errors += 1
            elif k:
                kept += 1
            elif reason:
                kind = reason.split(":", 1)[0]
                reasons[kind] = reasons.get(kind, 0) + 1
    return StageSummary(stage=label, rows=rows, kept=kept, rejected=reasons, errors=errors,
                        skipped_done=skipped, seconds=seconds)


def count_rows(manifest) -> int:
    """Rows of a clips manifest, from the Parquet footers (files validated first)."""
    from lavie.curate.manifest import manifest_files

    return sum(pq.ParquetFile(f).metadata.num_rows for f in manifest_files(manifest, "clips"))


# ----------------------------------------------------------------------------------------------
# The Vimeo25M recipe (LaVie §4.1): cheap filters first, then the models on the survivors only.

# Captions may already exist (imported corpora), so their length is checked with the cheap ones.
CHEAP_FILTERS = [*filters.CHEAP_FILTERS, "caption_words"]


class ModelMissing(RuntimeError):
    """A stage's model is not available locally: says which and how to supply it."""


def filter_spec(config: CurateConfig, filters: list[str]) -> runner.StageSpec:
    return runner.StageSpec(
        name="filter", kwargs=config.filter.stage_kwargs(filters),
        concurrency=1, batch_size=4096, num_cpus=0.25,
    )


def _model_spec(name: str, kwargs: dict, section) -> runner.StageSpec:
    gpu = runner.cuda_available()
    return runner.StageSpec(
        name=name, kwargs=kwargs, concurrency=max(1, section.workers),
        batch_size=section.batch_size, num_gpus=1.0 if gpu else 0.0, num_cpus=1.0,
    )


def model_available(name: str, kwargs: dict) -> str | None:
    """Why stage `name` cannot load its model here, or None (checked without loading it)."""
    from lavie.curate.registry import get_stage

    return get_stage(name).check_available(**kwargs)


def aesthetic_specs(config: CurateConfig) -> list[runner.StageSpec]:
    """Aesthetic scoring, the aesthetic threshold, and the zero-shot category for the report."""
    from lavie.curate.config import stage_kwargs

    kwargs = stage_kwargs(config.aesthetic)
    reason = model_available("aesthetic", kwargs)
    if reason:
        raise ModelMissing(reason)
    specs = [_model_spec("aesthetic", kwargs, config.aesthetic), filter_spec(config, ["aesthetic"])]
    if config.aesthetic.category:
        clip_kwargs = {k: kwargs[k] for k in ("clip_model", "clip_pretrained", "frames") if k in kwargs}
        specs.append(_model_spec("category", clip_kwargs, config.aesthetic))
    return specs


def caption_specs(config: CurateConfig) -> list[runner.StageSpec]:
    """VLM captions, then the caption-length filter (LaVie §4.1: fewer than three words out)."""
    from lavie.curate.config import stage_kwargs

    kwargs = stage_kwargs(config.caption)
    reason = model_available("caption", kwargs)
    if reason:
        raise ModelMissing(reason)
    return [_model_spec("caption", kwargs, config.caption), filter_spec(config, ["caption_words"])]


@dataclass
class RunResult:
    stages: dict  # stage -> output folder
    summaries: list
    skipped: dict  # stage -> why it did not run (a missing model)
    report: Path | None


def run_recipe(raw_dir, out_dir, config: CurateConfig, progress: bool = True, log=print) -> RunResult:
    """scenes -> cheap filters -> aesthetic (+category) -> captions -> caption filter -> report.

    Each stage keeps its manifest in its own folder under `out_dir` and resumes when re-run. A
    stage whose model is missing is skipped with the reason (which model, how to supply it), and
    the stages that need no model still run.
    """
    out_dir = Path(out_dir)
    stages, summaries, skipped = {}, [], {}
    save_config(config, out_dir / "config.yaml")

    stages["scenes"] = out_dir / "scenes"
    summary = run_scenes(raw_dir, stages["scenes"], config, progress)
    summaries.append(summary)
    log(summary.line())

    current = stages["scenes"]
    steps = [("filtered", lambda: [filter_spec(config, CHEAP_FILTERS)], True)]
    steps.append(("aesthetic", lambda: aesthetic_specs(config), config.aesthetic.enabled))
    steps.append(("captioned", lambda: caption_specs(config), config.caption.enabled))
    for name, make_specs, enabled in steps:
        if not enabled:
            skipped[name] = "disabled in the config"
            continue
        try:
            specs = make_specs()
        except ModelMissing as exc:
            skipped[name] = str(exc)
            log(f"{name}: skipped: {exc}")
            continue
        stages[name] = out_dir / name
        summary = run_clip_stages(current, stages[name], specs, config, name, progress)
        summaries.append(summary)
        log(summary.line())
        current = stages[name]

    report = None
    if config.report.enabled:
        from lavie.curate.report import build_report

        report = out_dir / "report"
        names = list(stages)
        build_report([stages[n] for n in names], names, report)
        log(f"report: {report / 'report.html'}")
    return RunResult(stages, summaries, skipped, report)
