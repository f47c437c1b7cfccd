"""One declared pipeline: the YAML's `stages:` list, run exactly as written.

`run_stages` executes a list of stage entries over one input into one output folder:

1. every stage is resolved from the registry and validated, and `check_available` is asked of
   each before any work: a missing model stops the run (`on_missing: error`) or drops that stage
   with the reason recorded (`on_missing: skip`);
2. the input: a raw video folder (when the first stage is `scenes`, a flat map from videos to
   clip rows) or a clips manifest; what a previous run of the same folder finished is left out;
3. the runner executes the list (in this process when every stage is a cheap vectorised step,
   else as one lazy Ray Dataset), the journal writes each finished block, and the manifests,
   `summary.json` and `config.yaml` are written at the end.

`lavie-curate run` is the whole list; `scenes`, `filter` and `caption` are named slices of it
(`slice_entries`), so every command goes through this one function.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lavie.curate import runner
from lavie.curate.config import CurateConfig, StageEntry, save_curate_config
from lavie.curate.manifest import (
    ORDER_COLUMN,
    STATUS_ERROR,
    conform,
    iter_manifest_batches,
    manifest_files,
    resolve_manifest,
)
from lavie.curate.paths import with_root
from lavie.curate.registry import get_stage
from lavie.curate.resume import RunJournal

SUMMARY_FILE = "summary.json"
log = logging.getLogger(__name__)

# Which stages each named slice of the pipeline takes from the stage list.
SLICES = {
    "scenes": lambda name, seen_caption: name == "scenes",
    "filter": lambda name, seen_caption: name != "scenes" and not seen_caption,
    "caption": lambda name, seen_caption: seen_caption,
}
CAPTION_STAGES = ("caption_metadata", "caption")


class ModelMissing(ValueError):
    """A stage's model is not available here: says which and how to supply it."""


def slice_entries(config: CurateConfig, name: str) -> list[int]:
    """Indices of the stage entries a named slice runs (`scenes`, `filter`, `caption`)."""
    if name not in SLICES:
        raise ValueError(f"unknown slice {name!r}; choose one of {', '.join(SLICES)}")
    out, seen_caption = [], False
    for i, entry in enumerate(config.stages):
        seen_caption = seen_caption or entry.stage in CAPTION_STAGES
        if SLICES[name](entry.stage, seen_caption):
            out.append(i)
    return out


@dataclass
class StageRecord:
    """What became of one stage entry: ran, or skipped and why."""

    index: int
    stage: str
    ran: bool
    why: str | None = None
    placement: dict = field(default_factory=dict)


@dataclass
class RunSummary:
    label: str
    rows: int = 0
    kept: int = 0
    rejected: dict = field(default_factory=dict)
    errors: int = 0
    videos: int = 0
    videos_error: int = 0
    skipped_done: int = 0
    hours_kept: float = 0.0
    seconds: float = 0.0
    where: str = "in-process"
    stages: list = field(default_factory=list)  # a StageRecord per entry
    placement: dict = field(default_factory=dict)  # stage -> the Ray options it ran with

    def line(self) -> str:
        removed = ", ".join(f"{k}: {v}" for k, v in sorted(self.rejected.items())) or "none"
        videos = f"{self.videos} videos ({self.videos_error} errors); " if self.videos else ""
        return (f"{self.label}: {videos}{self.rows} clips, {self.kept} kept; rejected by {removed}; "
                f"{self.errors} errors; {self.hours_kept:.4f} h kept; {self.skipped_done} already done; "
                f"{self.seconds:.1f} s")


def resolve(config: CurateConfig, indices: list[int], out_dir: Path,
            strict: bool = False) -> tuple[list[runner.StagePlan], list[StageRecord]]:
    """The plans of the entries that can run, and a record per entry; ModelMissing stops early
    (for every stage with `strict`: a command that names its stages wants each of them)."""
    plans, records = [], []
    for i in indices:
        entry: StageEntry = config.stages[i]
        cls = get_stage(entry.stage)
        stage_config = config.stage_config(i)
        reason = cls.check_available(stage_config)
        if reason:
            if strict or entry.on_missing == "error":
                raise ModelMissing(f"stage {entry.stage!r}: {reason}")
            records.append(StageRecord(i, entry.stage, False, reason))
            continue
        plans.append(runner.StagePlan(cls, stage_config, entry.workers, entry.batch_size,
                                      out_dir=str(out_dir.resolve()) if cls.name == "scenes" else None))
        records.append(StageRecord(i, entry.stage, True))
    return plans, records


def run_stages(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: CurateConfig,
    indices: list[int] | None = None,
    label: str = "run",
    progress: bool = True,
    strict: bool = False,
) -> RunSummary:
    """Run stage entries `indices` (all: None) of `config` over `source` into `out_dir`."""
    started = time.time()
    out_dir = Path(out_dir)
    indices = list(range(len(config.stages))) if indices is None else indices
    plans, records = resolve(config, indices, out_dir, strict)
    from_raw = bool(plans) and plans[0].cls.flat and plans[0].name == "scenes"
    if any(p.name == "scenes" for p in plans[1:]):
        raise ValueError("the scenes stage must come first in the stage list")
    # A bad manifest is one error before any output or progress.
    files = None if from_raw else [str(f) for f in manifest_files(source, "clips")]
    save_curate_config(config, out_dir / "config.yaml")
    summary = RunSummary(label=label)

    bar = _progress(progress, label)
    tallied = False
    try:
        if from_raw:
            _run_from_raw(Path(source), out_dir, config, plans, summary, bar)
        elif plans and runner.needs_ray(plans):
            _run_manifest_on_ray(files, out_dir, config, plans, summary, bar)
        else:
            _run_manifest_in_process(source, out_dir, plans, bar, summary)
            tallied = True
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.time() - started
    for r in records:
        r.placement = summary.placement.get(r.stage, {})
    summary.stages = [asdict(r) for r in records]
    _count(out_dir, summary, clips=not tallied)
    _write_json(out_dir / SUMMARY_FILE, asdict(summary))
    return summary


def _progress(progress: bool, label: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(unit="row", desc=label)


def _run_from_raw(raw_dir: Path, out_dir: Path, config: CurateConfig, plans, summary: RunSummary, bar) -> None:
    from lavie.curate.jobs import video_rows

    journal = RunJournal(out_dir, videos=True)
    journal.done_videos()  # also drops the clips parts a kill left without their videos twin
    todo, problems, summary.skipped_done = video_rows(raw_dir, out_dir, config.input.extensions,
                                                      config.input.category_from_folder,
                                                      journal.videos, journal.clips)
    if problems:
        journal.write_failed_sources(problems)
    if todo.num_rows:
        dist = config.distribution
        local = runner.runs_locally(plans, dist.ray_address, dist.executor)
        if local:
            workers = max(1, min(dist.workers or os.cpu_count() or 1, todo.num_rows))

            def crashed(row: dict) -> None:  # a source that kills its worker process, twice
                journal.write_failed_sources([{
                    "video_id": row["video_id"], "source_path": row["source_path"], "category": row["category"],
                    "status": STATUS_ERROR, "num_scenes": None, "num_clips": None,
                    "error": "the worker process died while reading this file (twice); the file is "
                             "probably damaged in a way that crashes the decoder",
                    **{k: row.get(k) for k in ("source_signature", "source_change")}}])
                if bar is not None:
                    bar.update(1)

            blocks = runner.run_local(todo, plans, workers, on_crash=crashed)
            summary.where = f"local processes ({workers})"
            summary.placement = {p.name: {"num_cpus": p.resources.cpus, "processes": workers} for p in plans}
        else:
            info = runner.RayRun()
            blocks = runner.run_on_ray(todo, plans, dist.ray_address, num_cpus=dist.workers,
                                       rows_per_block=1, info=info)
        for block in blocks:
            n = journal.write(block)
            if bar is not None:
                bar.update(n)
        if not local:
            summary.where = info.where
            summary.placement = info.options
    journal.finish()


def _run_manifest_on_ray(files: list[str], out_dir: Path, config: CurateConfig, plans, summary: RunSummary,
                         bar) -> None:
    journal = RunJournal(out_dir, videos=False)
    done = journal.done_clips()
    summary.skipped_done = len(done)
    info = runner.RayRun()
    blocks = runner.run_on_ray(runner.ManifestSource(files, done), plans, config.distribution.ray_address,
                               num_cpus=config.distribution.workers, info=info)
    for block in blocks:
        n = journal.write(block)
        if bar is not None:
            bar.update(n)
    summary.where = info.where
    summary.placement = info.options
    journal.finish()


def _run_manifest_in_process(source, out_dir: Path, plans, bar, summary: RunSummary) -> None:
    """Cheap stages streamed through this process straight into the manifest (no journal: the
    whole pass costs less than resuming one would save; the file appears whole or not at all).

    Reading, the stages and writing overlap: a thread reads ahead and another encodes the
    Parquet output (both release the GIL in Arrow), while this thread runs the stages and
    tallies the funnel counts of what it hands to the writer."""
    import uuid

    from lavie.curate.manifest import OutputError

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "clips.parquet"
    tmp = out_dir / f".clips.{uuid.uuid4().hex}.tmp"
    # A filter right after an identical filter changes nothing (its verdicts are a function of
    # the columns, which it does not touch): one pass does for a run of them.
    plans = [p for i, p in enumerate(plans)
             if not (i and p.cls is plans[i - 1].cls and p.name == "filter" and p.config == plans[i - 1].config)]
    batches = (pa.Table.from_batches([b])
               for b in _read_ahead(iter_manifest_batches(source, "clips", batch_size=1 << 17)))
    writer = _ThreadedWriter(tmp, final)
    try:
        for table in runner.run_in_process(batches, plans):
            table = conform(table, "clips")
            writer.write(table)
            _tally(table, summary)
            if bar is not None:
                bar.update(table.num_rows)
        if not writer.started:
            writer.write(conform([], "clips"))
        writer.close()
        os.replace(tmp, final)
    except OSError as exc:
        raise OutputError(final, exc) from exc
    finally:
        writer.abort()
        tmp.unlink(missing_ok=True)


def _read_ahead(items, depth: int = 2):
    """`items` produced by a thread `depth` ahead of the consumer; its exceptions re-raised here."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((item, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put((None, exc))
            return
        q.put((done, None))

    thread = threading.Thread(target=produce, name="lavie-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


class _ThreadedWriter:
    """A Parquet writer fed through a bounded queue and encoding in a thread of its own.

    The first table fixes the schema (with the manifest's root recorded, lavie.curate.paths);
    later tables are cast to it. A failure in the thread is raised at the next write or close."""

    def __init__(self, tmp: Path, final: Path, depth: int = 2):
        import queue
        import threading

        self.tmp, self.final = tmp, final
        self.started = False
        self.schema = None
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lavie-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        writer = None
        try:
            while (table := self._queue.get()) is not None:
                if writer is None:
                    writer = pq.ParquetWriter(self.tmp, self.schema)
                writer.write_table(table)
        except BaseException as exc:
            self._error = exc
            while self._queue.get() is not None:  # drain, so no write() blocks; close() reports it
                pass
        finally:
            if writer is not None:
                try:
                    writer.close()
                except BaseException as exc:
                    self._error = self._error or exc

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, table: pa.Table) -> None:
        self._check()
        if self.schema is None:
            self.schema = with_root(table.schema, self.final)
        elif not table.schema.equals(self.schema):
            table = table.cast(self.schema)
        self.started = True
        self._queue.put(table)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._check()

    def abort(self) -> None:
        """Stop the thread whatever happened (a no-op after close)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


def _tally(t: pa.Table, summary: RunSummary) -> None:
    """Add one clips table's rows to the summary's funnel counts."""
    from lavie.curate.filters import clip_seconds

    error = pc.fill_null(pc.equal(t.column("status"), STATUS_ERROR), False)
    keep = pc.fill_null(t.column("keep"), True)
    kept = pc.and_(pc.invert(error), keep)
    rejected = pc.and_(pc.invert(error), pc.invert(keep))
    summary.rows += t.num_rows
    summary.errors += pc.sum(error).as_py() or 0
    summary.kept += pc.sum(kept).as_py() or 0
    seconds = pc.filter(clip_seconds(t), kept)
    summary.hours_kept += (pc.sum(seconds).as_py() or 0.0) / 3600.0
    reasons = pc.filter(t.column("reject_reason"), rejected)
    if len(reasons):  # counted per distinct reason first: far fewer than rows
        for item in pc.value_counts(reasons).to_pylist():
            kind = "unspecified" if item["values"] is None else item["values"].split(":", 1)[0]
            summary.rejected[kind] = summary.rejected.get(kind, 0) + item["counts"]


def _count(out_dir: Path, summary: RunSummary, clips: bool = True) -> None:
    """Counts of the written manifests, streamed (the funnel of summary.json); `clips=False`
    when the run already tallied its clips rows as it wrote them."""
    if clips:
        for batch in iter_manifest_batches(out_dir, "clips", columns=None):
            _tally(pa.Table.from_batches([batch]), summary)
    videos = out_dir / "videos.parquet"
    if videos.is_file():
        status = pq.read_table(videos, columns=["status"]).column("status")
        summary.videos = len(status)
        summary.videos_error = pc.sum(pc.equal(status, STATUS_ERROR)).as_py() or 0


def _write_json(path: Path, values: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values, indent=2, default=str))
    os.replace(tmp, path)


def read_summary(manifest: str | os.PathLike) -> dict | None:
    """The summary.json beside a manifest, if there is one."""
    folder = resolve_manifest(manifest, "clips")
    folder = folder.parent if folder.suffix == ".parquet" else folder
    path = folder / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
