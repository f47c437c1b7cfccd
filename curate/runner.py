"""The Ray runner: the one module that knows Ray.

It turns a list of manifest rows into a Ray Dataset, maps a registered stage over it with
`map_batches` (class stages run as an actor pool: the stage, and any model it loads, is built once
per actor), and hands finished blocks back to the caller, who writes them atomically. `ray.init()`
starts a local Ray by default; an address (`--ray-address` or `RAY_ADDRESS`) joins a cluster.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa

from lavie.curate import ray_session, signals
from lavie.curate.registry import get_stage

log = logging.getLogger(__name__)
_watcher: ray_session.Watcher | None = None  # reaper of the local Ray this process started


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Start (or join) Ray once per process; returns a short description of where it runs."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "ray (already initialised)"
    # Workers must import this package the way the driver does, also on a cluster started from
    # another directory.
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
    ctx.enable_progress_bars = False  # the CLI draws one bar per stage, in rows
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    return where


def cluster_cpus() -> int:
    """CPUs the Ray this process is connected to offers, over all its nodes."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def shutdown_ray() -> None:
    import ray

    global _watcher
    if ray.is_initialized():
        ray.shutdown()
    if _watcher is not None:
        _watcher.close()
        _watcher = None


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


@dataclass
class StageSpec:
    """How to run one stage: its registered name, its config, and its Ray resources."""

    name: str
    kwargs: dict
    concurrency: int = 1
    batch_size: int = 16
    num_gpus: float = 0.0
    num_cpus: float = 1.0


class _StageActor:
    """Builds the stage once, then converts Arrow blocks to the stage's numpy batches and back.

    Stages speak `dict[str, np.ndarray]`; Arrow on both sides keeps nulls and strings intact
    between workers and the driver.
    """

    def __init__(self, name: str, kwargs: dict):
        self.stage = get_stage(name)(**kwargs)

    def __call__(self, table: pa.Table) -> pa.Table:
        batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
        added = self.stage(batch)
        out = {c: table.column(c) for c in table.column_names}
        for key, values in added.items():
            values = values.tolist() if isinstance(values, np.ndarray) else list(values)
            if len(values) != table.num_rows:
                raise RuntimeError(
                    f"stage {self.stage.__class__.__name__} returned {len(values)} values of "
                    f"{key!r} for {table.num_rows} rows"
                )
            # Typed as the manifest declares (or as the column came in), so a block where a
            # column happens to be all null still lines up with the others.
            out[key] = pa.array(values, type=_column_type(key, table))
        return pa.table(out)


def _column_type(name: str, table: pa.Table) -> pa.DataType | None:
    from lavie.curate.manifest import declared_type

    declared = declared_type(name)
    if declared is not None:
        return declared
    if name in table.column_names and not pa.types.is_null(table.column(name).type):
        return table.column(name).type
    return None


def map_stages(rows: pa.Table, specs: list[StageSpec], rows_per_block: int | None = None) -> Iterator[pa.Table]:
    """Run `specs` in a chain over `rows` on Ray, yielding finished blocks (in any order).

    The chain is one lazy Ray Data pipeline: a block leaves the cheap stages and goes straight
    on to the model stages, so every stage runs at once on different blocks.
    """
    import ray

    if rows.num_rows == 0 or not specs:
        return
    if rows_per_block is None:
        rows_per_block = specs[0].batch_size
    # Blocks are cut on the driver (a materialised dataset needs no read tasks), so every CPU
    # can go to the stages' actors.
    num_blocks = max(1, min(rows.num_rows, -(-rows.num_rows // rows_per_block)))
    step = -(-rows.num_rows // num_blocks)
    ds = ray.data.from_arrow([rows.slice(i, step) for i in range(0, rows.num_rows, step)])
    # Blocks must leave in input order: each written part then covers one contiguous range of
    # input rows, which is what lets the streamed consolidation restore the input's order.
    ds.context.execution_options.preserve_order = True
    for spec in specs:
        ds = ds.map_batches(
            _StageActor,
            fn_constructor_kwargs={"name": spec.name, "kwargs": spec.kwargs},
            batch_size=spec.batch_size,
            batch_format="pyarrow",
            # A fixed pool: each actor builds the stage (and loads its model) once. Ray Data
            # restarts an actor that dies (preemption, OOM) and re-runs its batch; stage
            # outputs are keyed by clip/video id, so a retry writes the same rows.
            compute=ray.data.ActorPoolStrategy(size=spec.concurrency),
            num_gpus=spec.num_gpus or None,
            num_cpus=spec.num_cpus,
        )
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        yield block


def map_stage(rows: pa.Table, spec: StageSpec, rows_per_block: int | None = None) -> Iterator[pa.Table]:
    """One stage over `rows` on Ray (see `map_stages`)."""
    yield from map_stages(rows, [spec], rows_per_block)


def run_local(rows: pa.Table, spec: StageSpec | list[StageSpec]) -> Iterator[pa.Table]:
    """The same stages over the same rows in this process, batch by batch (no Ray)."""
    specs = spec if isinstance(spec, list) else [spec]
    actors = [_StageActor(s.name, s.kwargs) for s in specs]
    for start in range(0, rows.num_rows, specs[0].batch_size):
        block = rows.slice(start, specs[0].batch_size)
        for actor in actors:
            block = actor(block)
        yield block
