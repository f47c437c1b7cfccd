"""The runner: the one module that knows Ray, and where every stage is placed.

A run is one stage list over one input. When every stage is a cheap in-process step (the
filters), the driver streams the input through them itself and Ray never starts. A raw folder
split on one machine by stages that hold no model (the scene split) goes to a pool of local
processes (`run_local`), as Ray's start-up would cost more than the work. Otherwise the
whole list becomes *one lazy Ray Dataset*: read -> stage -> stage -> ... -> blocks back to the
driver, which writes them. Each stage is placed from what it declares (`Stage.resources`) and
what the cluster offers (`ray.cluster_resources()`), never from the driver's own hardware:

- a stage that holds a model runs as an actor pool (`concurrency` actors, each loading the model
  once in `setup()`), asking for its GPUs only when the cluster has GPUs;
- every other stage runs as stateless Ray tasks.

`init_ray` starts a local Ray (`ray.init()`), or joins a cluster with `--ray-address` /
`RAY_ADDRESS`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc

from lavie.curate import ray_session, signals
from lavie.curate.manifest import ORDER_COLUMN
from lavie.curate.stage import Resources, Stage, StageConfig

log = logging.getLogger(__name__)
_watcher: ray_session.Watcher | None = None  # reaper of the local Ray this process started


# ----------------------------------------------------------------------------------------------
# Ray start-up


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Start (or join) Ray once per process; returns a short description of where it runs."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "ray (already initialised)"
    runtime_env = {"env_vars": {"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING,
                 log_to_driver=False)
        where = f"ray cluster at {address}"
    else:
        # A local Ray: loopback only, its workers reaped whatever ends this process, and the
        # folders of finished local sessions pruned (lavie.curate.ray_session).
        ray_session.prune_sessions()
        constants = ray._private.ray_constants
        cluster_mode, constants.ENABLE_RAY_CLUSTER = constants.ENABLE_RAY_CLUSTER, False
        try:
            context = ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                               logging_level=logging.WARNING, log_to_driver=False,
                               configure_logging=True)
        finally:
            constants.ENABLE_RAY_CLUSTER = cluster_mode
        global _watcher
        if _watcher is not None:  # a session ended with ray.shutdown() rather than shutdown_ray()
            _watcher.close()
        _watcher = ray_session.Watcher(context.address_info["session_dir"])
        where = f"local ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
    signals.reinstall()  # ray.init replaces the SIGTERM handler
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the CLI draws one bar per run, in rows
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    return where


def cluster_resources() -> dict[str, float]:
    """What the Ray this process is connected to offers, over all its nodes."""
    import ray

    return dict(ray.cluster_resources())


def shutdown_ray() -> None:
    import ray

    global _watcher
    if ray.is_initialized():
        ray.shutdown()
    if _watcher is not None:
        _watcher.close()
        _watcher = None


# ----------------------------------------------------------------------------------------------
# Stages as the runner sees them


@dataclass
class StagePlan:
    """One entry of a run's stage list, resolved: the class, its config, how wide to run it."""

    cls: type[Stage]
    config: StageConfig
    workers: int | None = None  # actors (model stages) or concurrent tasks; None: the runner decides
    batch_size: int | None = None
    out_dir: str | None = None  # the run's output folder, for stages that write files (clips)

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def resources(self) -> Resources:
        return self.cls.resources(self.config)

    def build(self) -> Stage:
        stage = self.cls(self.config, out_dir=self.out_dir) if self.out_dir is not None else self.cls(self.config)
        stage.setup()
        return stage

    @property
    def rows_per_batch(self) -> int:
        return self.batch_size or self.cls.default_batch_size


def needs_ray(plans: list[StagePlan]) -> bool:
    return any(not p.resources.in_process for p in plans)


def runs_locally(plans: list[StagePlan], address: str | None, executor: str = "auto") -> bool:
    """Whether a raw-folder run goes to a pool of processes on this machine instead of Ray.

    `auto` does so when there is no cluster to join (no address, no RAY_ADDRESS) and no stage
    holds a model or asks for a GPU: the scene split of a folder on one machine then starts in
    well under a second, where a local Ray costs several seconds of start-up and shut-down."""
    if executor in ("ray", "local"):
        return executor == "local"
    if address or os.environ.get("RAY_ADDRESS"):
        return False
    return not any(p.resources.holds_model or p.resources.gpus for p in plans)


def placement(plan: StagePlan, cluster: dict[str, float]) -> dict:
    """Ray options of a stage: its declared resources, GPUs only where the cluster has them."""
    res = plan.resources
    gpus_offered = float(cluster.get("GPU", 0.0))
    options: dict = {"num_cpus": res.cpus}
    if res.gpus and gpus_offered > 0:
        options["num_gpus"] = res.gpus
    if res.memory:
        options["memory"] = res.memory
    if res.holds_model:
        if plan.workers:
            size = plan.workers
        elif options.get("num_gpus"):
            size = max(1, int(gpus_offered // res.gpus))  # one actor per GPU the cluster offers
        else:
            size = 1
        options["concurrency"] = size
        # Spread a pool over the nodes that fit it. A scheduling strategy of its own also keeps
        # Ray Data from fusing the cheap task before it into the pool, which would run that
        # task (the scenes flat map, say) only as wide as the pool.
        options["scheduling_strategy"] = "SPREAD"
    elif plan.workers:
        options["concurrency"] = plan.workers
    return options


READ_CPUS = 0.25  # a task reading one piece of a manifest (Parquet decoding; light)
MAX_BLOCK_ROWS = 1024  # rows per block of a manifest read, at most
MODEL_TASKS_IN_FLIGHT = 2  # batches handed to one model actor at a time (running + next)


def placements(plans: list[StagePlan], cluster: dict[str, float], reads: bool = False) -> list[dict]:
    """`placement` of every stage of one run, with the CPU requests fitted to the cluster.

    Every actor of a model stage's pool holds its CPUs for the whole run. Pools that asked for
    every CPU of the cluster (two model stages on a 2-CPU machine) would leave none for the tasks
    that feed them (reads, the scene split, the cheap filters), and the run would wait forever.
    So when the pools and the largest task do not fit together, the actors' requests are scaled
    down to leave room for that task (and a task asking for more than half the cluster is
    trimmed to half). Actors then share cores, which costs nothing when they are GPU-bound and
    little when each runs one thread; the pool sizes stay as asked."""
    options = [placement(p, cluster) for p in plans]
    total = float(cluster.get("CPU", 0.0))
    actors = [o for p, o in zip(plans, options) if p.resources.holds_model]
    tasks = [o for p, o in zip(plans, options) if not p.resources.holds_model]
    held = sum(o["num_cpus"] * o["concurrency"] for group, o in pools(plans, options) if group[0].resources.holds_model)
    widest = max([o["num_cpus"] for o in tasks] + ([READ_CPUS] if reads else []), default=0.0)
    if total <= 0 or not actors or held + widest <= total:
        return options
    reserve = min(widest, total / 2)
    share = (total - reserve) / held
    for o in actors:
        o["num_cpus"] = math.floor(o["num_cpus"] * share * 1e4) / 1e4  # Ray's resource grain
    for o in tasks:
        o["num_cpus"] = min(o["num_cpus"], reserve)
    return options


def pools(plans: list[StagePlan], options: list[dict]) -> list[tuple[list[StagePlan], dict]]:
    """The run's stages as Ray operators: model stages that follow each other with the same
    options (resources, pool size) share one actor pool, each actor loading all of their models.

    The CLIP scorer and the captioner of a default run then live in one process per worker
    instead of two: half the processes to start and import torch in, no idle actor holding a
    core's share while the other stage works, and no hand-over of each block between them."""
    out: list[tuple[list[StagePlan], dict]] = []
    for plan, opts in zip(plans, options):
        if out and plan.resources.holds_model and out[-1][0][-1].resources.holds_model and out[-1][1] == opts:
            out[-1][0].append(plan)
        else:
            out.append(([plan], opts))
    return out


def block_rows(plans: list[StagePlan], total: int, cluster: dict[str, float]) -> int:
    """Rows per block of a manifest read on Ray.

    A block is the unit Ray Data shares out: a model pool hands each block whole to one actor,
    and Ray Data merges what a task returns into one block, so a manifest read a row group
    (up to 128k rows) at a time would give one actor the whole of a small run. Blocks are sized
    so that every worker gets several (four per CPU or actor), never below the smallest batch
    of a stage that runs on Ray, and at most `MAX_BLOCK_ROWS`."""
    on_ray = [p for p in plans if not p.resources.in_process] or plans
    smallest = min((p.rows_per_batch for p in on_ray), default=MAX_BLOCK_ROWS)
    width = max([int(cluster.get("CPU", 1))] + [p.workers or 1 for p in plans])
    return max(1, smallest, min(MAX_BLOCK_ROWS, -(-total // (4 * width))))


def _pickle_by_value(cls: type) -> None:
    """A stage defined outside an installed package (a test file, a notebook) travels with its
    code, so Ray workers need not import its module."""
    module = sys.modules.get(cls.__module__)
    if module is None or cls.__module__.startswith("lavie."):
        return
    import ray.cloudpickle as cloudpickle

    try:
        cloudpickle.register_pickle_by_value(module)
    except ValueError:  # pragma: no cover - __main__ and the like are already by value
        pass


def _in_batches(stage: Stage, table: pa.Table, step: int) -> pa.Table:
    if table.num_rows <= step:
        return stage(table)
    parts = [stage(table.slice(i, step)) for i in range(0, table.num_rows, step)]
    return pa.concat_tables(parts, promote_options="permissive")


class _StageActor:
    """Model stages inside their actor: built (models loaded) once, then called per batch, each
    stage on batches of its own size."""

    def __init__(self, plans: list[StagePlan]):
        self.stages = [(p.build(), p.rows_per_batch) for p in plans]

    def __call__(self, table: pa.Table) -> pa.Table:
        for stage, step in self.stages:
            table = _in_batches(stage, table, step)
        return table


def _stage_task(table: pa.Table, plan: StagePlan) -> pa.Table:
    """A cheap stage as a stateless task over one whole block, a batch at a time (building the
    stage costs nothing). One block in, one block out: the blocks keep the size the source gave
    them, which is what shares the model stages' work out evenly (see `block_rows`)."""
    return _in_batches(plan.build(), table, plan.rows_per_batch)


# ----------------------------------------------------------------------------------------------
# A pool of processes on this machine (no Ray)

_local_stages: list[Stage] | None = None  # the stages, built once inside each pool worker


def _local_init(driver: int, plans: bytes) -> None:
    import pickle
    import signal

    global _local_stages
    try:  # whatever ends the driver (SIGKILL included) ends its workers too (Linux: PR_SET_PDEATHSIG)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != driver:  # the driver died before the line above: nobody is left to serve
        os._exit(1)
    # Ctrl-C reaches the whole group: the driver decides. The worker was started with SIGINT
    # blocked (_submit), so one that came while it started is dropped here, not raised.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # Unpickled only now (it imports the stages' modules): the window before the line above
    # guards the worker stays short.
    _local_stages = [p.build() for p in pickle.loads(plans)]


def _local_call(table: pa.Table) -> pa.Table:
    for stage in _local_stages:
        table = stage(table)
    return table


class PoolStartError(RuntimeError):
    """The local pool's worker processes die as they start: no file is to blame."""


def _ping() -> bool:
    return True


def _submit(pool, fn, *args):
    """`pool.submit`, with SIGINT blocked while it may start a worker: the worker inherits the
    mask, so a Ctrl-C during its start-up cannot print a traceback from it."""
    import signal

    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return pool.submit(fn, *args)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _local_pool(plans: list[StagePlan], size: int):
    import concurrent.futures as cf
    import multiprocessing as mp
    import pickle

    # spawn: the driver holds Arrow's threads, which a forked child must not inherit
    return cf.ProcessPoolExecutor(size, mp_context=mp.get_context("spawn"), initializer=_local_init,
                                  initargs=(os.getpid(), pickle.dumps(plans)))


def _close_pool(pool, wait: bool = False) -> None:
    if wait:
        pool.shutdown(wait=True)
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    for proc in processes:
        proc.join(5)


def run_local(
    source: pa.Table,
    plans: list[StagePlan],
    workers: int | None = None,
    on_crash=None,
) -> Iterator[pa.Table]:
    """The stage list over `source`, one row per call, in a pool of `workers` processes here.

    Finished rows come back as they finish. A worker that dies (a decoder that crashes, the OOM
    killer) loses nothing: the rows it and its siblings were running are run again, each alone
    in a fresh process; one that kills that process too is handed to `on_crash(row)` (the
    caller records it as an error) instead of stopping the run.
    """
    import concurrent.futures as cf
    from collections import deque

    n = source.num_rows
    if n == 0:
        return
    workers = max(1, min(workers or os.cpu_count() or 1, n))
    todo = deque(range(n))
    running: dict = {}
    pool = _local_pool(plans, workers)
    clean = False
    try:
        while todo or running:
            while todo and len(running) < 2 * workers:
                i = todo.popleft()
                running[_submit(pool, _local_call, source.slice(i, 1))] = i
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            suspects = []
            for future in done:
                i = running.pop(future)
                try:
                    result = future.result()
                except cf.process.BrokenProcessPool:
                    suspects.append(i)
                    continue
                yield result
            if not suspects:
                continue
            suspects.extend(running.values())
            running.clear()
            _close_pool(pool)
            for i in sorted(suspects):
                row = source.slice(i, 1)
                log.warning("a worker process died; running %s again on its own",
                            row.column("source_path")[0].as_py() if "source_path" in row.column_names else f"row {i}")
                solo = _local_pool(plans, 1)
                try:
                    try:  # a worker that cannot even start is not the file's fault
                        _submit(solo, _ping).result()
                    except cf.process.BrokenProcessPool:
                        raise PoolStartError(
                            "the local worker processes die as they start (their error is printed above); "
                            "a script that runs curation must guard its entry point with "
                            "'if __name__ == \"__main__\":', or run with --executor ray") from None
                    yield _submit(solo, _local_call, row).result()
                except cf.process.BrokenProcessPool:
                    if on_crash is None:
                        raise
                    on_crash(row.to_pylist()[0])
                finally:
                    _close_pool(solo)
            pool = _local_pool(plans, workers)
        clean = True
    finally:
        _close_pool(pool, wait=clean)


# ----------------------------------------------------------------------------------------------
# Inputs


@functools.lru_cache(maxsize=1)
def _row_group(path: str, group: int, mtime_ns: int, size: int) -> tuple[pa.Table, dict]:
    """One row group of a Parquet file and the file's schema metadata, kept for the next read.

    A row group (up to 128k rows) is cut into many blocks, and a read worker mostly gets them one
    after the other: it decodes the group once instead of once per block. The file's change time
    and size are part of the key, so a file rewritten between runs is read afresh."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    return pf.read_row_group(group), pf.schema_arrow.metadata or {}


class ManifestSource:
    """A clips manifest as a lazy Ray datasource: one read task per block of a Parquet row group.

    Each row gets `_order`, its index in the manifest (from the footers, known before any read),
    and rows whose key is in `done` (a resumed run) are left out where they are read, so the
    driver never holds the manifest.
    """

    def __init__(self, files: list[str], done: set[str] | None, key: str = "clip_id"):
        import pyarrow.parquet as pq

        self.groups = []  # (file, row group, index of its first row in the manifest, rows)
        offset = 0
        for f in files:
            meta = pq.ParquetFile(f).metadata
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                self.groups.append((str(f), g, offset, rows))
                offset += rows
        self.total = offset
        self.done = done or set()
        self.key = key

    def read_piece(self, piece, done_ref) -> pa.Table:
        import ray

        from lavie.curate.manifest import check_values, conform
        from lavie.curate.paths import resolve_paths

        f, group, first, rows, skip = piece
        stat = os.stat(f)
        table, metadata = _row_group(f, group, stat.st_mtime_ns, stat.st_size)
        if skip or rows < table.num_rows:
            table = table.slice(skip, rows)
        check_values(table, "clips", where=f)
        table = resolve_paths(table, f, metadata)  # the manifest path rule
        table = conform(table, "clips")
        table = table.append_column(ORDER_COLUMN, pa.array(range(first, first + rows), pa.int64()))
        done = ray.get(done_ref) if done_ref is not None else None
        if done:
            table = table.filter(pc.invert(pc.is_in(table.column(self.key), value_set=done)))
        return table

    def pieces(self, rows_per_block: int) -> list[tuple]:
        """(file, row group, first row index, rows, rows skipped in the group) per read task."""
        step = max(1, rows_per_block)
        return [(f, g, first + k, min(step, rows - k), k)
                for f, g, first, rows in self.groups for k in range(0, rows, step)]

    def dataset(self, rows_per_block: int = MAX_BLOCK_ROWS):
        import ray
        from ray.data.block import BlockMetadata
        from ray.data.datasource import Datasource, ReadTask

        done_ref = ray.put(pa.array(sorted(self.done), pa.string())) if self.done else None
        source, pieces = self, self.pieces(rows_per_block)

        class _Source(Datasource):
            def estimate_inmemory_data_size(self):
                return None

            def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
                tasks = []
                for piece in pieces:
                    meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(piece[0],))
                    tasks.append(ReadTask(lambda p=piece: [source.read_piece(p, done_ref)], meta))
                return tasks

        return ray.data.read_datasource(_Source(), override_num_blocks=max(1, len(pieces)),
                                        num_cpus=READ_CPUS)


# ----------------------------------------------------------------------------------------------
# Execution


def run_in_process(batches: Iterator[pa.Table], plans: list[StagePlan]) -> Iterator[pa.Table]:
    """The stages over the batches in this process, one batch after the other (no Ray)."""
    stages = [p.build() for p in plans]
    for batch in batches:
        for stage in stages:
            batch = stage(batch)
        yield batch


@dataclass
class RayRun:
    """Where a run's stages went: filled while the run builds its dataset (for the summary)."""

    where: str = ""
    options: dict = field(default_factory=dict)


def run_on_ray(
    source: pa.Table | ManifestSource,
    plans: list[StagePlan],
    address: str | None = None,
    num_cpus: int | None = None,
    rows_per_block: int | None = None,
    info: RayRun | None = None,
) -> Iterator[pa.Table]:
    """The stage list as one lazy Ray Dataset over `source`; finished blocks in input order."""
    import ray

    where = init_ray(address, num_cpus=num_cpus)
    cluster = cluster_resources()
    if isinstance(source, ManifestSource):
        if source.total == 0:
            return
        ds = source.dataset(block_rows(plans, source.total, cluster))
    else:
        if source.num_rows == 0:
            return
        step = max(1, rows_per_block or plans[0].rows_per_batch)
        ds = ray.data.from_arrow([source.slice(i, step) for i in range(0, source.num_rows, step)])
    # Blocks leave in input order: each written part then covers one contiguous range of input
    # rows, which is what lets the streamed consolidation restore the input's order.
    ds.context.execution_options.preserve_order = True
    if info is not None:
        info.where = where
    options = placements(plans, cluster, reads=isinstance(source, ManifestSource))
    for group, options in pools(plans, options):
        plan = group[0]
        for member in group:
            _pickle_by_value(member.cls)
            if info is not None:
                info.options[member.name] = dict(options)
        options = dict(options)
        common = dict(batch_format="pyarrow", zero_copy_batch=True)
        size = options.pop("concurrency", None)
        if plan.resources.holds_model:
            # Ray Data restarts an actor that dies (preemption, OOM) and re-runs its batch;
            # outputs are keyed by clip/video id, so a retry writes the same rows.
            # A model batch takes seconds: one queued behind the running one hides the hand-over,
            # and more would pile work on the actor that started first while the others load
            # their models, leaving them idle at the end of the run.
            pool = ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=MODEL_TASKS_IN_FLIGHT)
            ds = ds.map_batches(_StageActor, fn_constructor_kwargs={"plans": group}, compute=pool,
                                batch_size=plan.rows_per_batch, **common, **options)
        else:
            compute = ray.data.TaskPoolStrategy(size=size) if size else None
            ds = ds.map_batches(_stage_task, fn_kwargs={"plan": plan}, compute=compute, batch_size=None,
                                **common, **options)
    try:
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            yield block
    except ray.exceptions.RayTaskError as exc:
        # A bad manifest found by a read task, a bad stage configuration: the error itself, not
        # the worker's traceback, so the CLI reports it in one line.
        if isinstance(exc.cause, (ValueError, OSError)):
            raise exc.cause from None
        raise
