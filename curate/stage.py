"""The curation stage contract: one file, one class, registered by name.

A stage has

- a typed config (`Config`, a pydantic model: typed, defaulted, unknown keys rejected),
- its declared resources (`resources(config)`: CPUs, GPUs, memory, whether it holds a model),
- `check_available(config)`: why the stage cannot run here (a missing model, named with how to
  supply it), or None; the runner asks every stage before any work starts,
- `setup()`: run once inside the worker that runs the stage (model loading goes here),
- `__call__(batch: pa.Table) -> pa.Table`: the batch's rows with the stage's columns added.
  A stage never drops a row: rejected and failed rows come back with their verdict. A `flat`
  stage (scenes, importers) may turn one row into many: one video in, its clip rows out.

Where a stage runs is not its business: the runner (`curate/runner.py`) reads the declared
resources and what the cluster offers and places it (an in-process step, a Ray task, or a Ray
actor pool for a stage that holds a model).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs.

    `gpus` is what the stage asks for *when the cluster offers GPUs*: the runner requests it
    only where `ray.cluster_resources()` has some, so a stage runs on CPUs on a GPU-less cluster
    and on the GPU nodes of a mixed one. `in_process`: a cheap vectorised step the driver runs
    itself when no stage of the run needs Ray.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None  # bytes per worker (Ray's `memory` resource)
    holds_model: bool = False  # an actor pool: the model is loaded once per worker
    in_process: bool = False


class StageConfig(BaseModel):
    """Base of every stage config: typed fields with defaults; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class Stage(ABC):
    """Base class of every curation stage (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    Config: ClassVar[type[StageConfig]] = StageConfig
    flat: ClassVar[bool] = False  # may return more (or fewer) rows than it was given
    default_batch_size: ClassVar[int] = 256
    RESOURCES: ClassVar[Resources] = Resources()

    def __init__(self, config: StageConfig | None = None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def resources(cls, config: StageConfig) -> Resources:
        return cls.RESOURCES

    @classmethod
    def check_available(cls, config: StageConfig) -> str | None:
        """Why this stage cannot run here (which model is missing, how to supply it), or None.

        Looks at files only; loads nothing."""
        return None

    def setup(self) -> None:
        """Load what the stage needs, once per worker."""

    @abstractmethod
    def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with this stage's columns added (or, for a flat stage, its output rows)."""


class ColumnStage(Stage):
    """A stage that works on a dict of numpy arrays and returns the columns it adds.

    `columns(batch)` gets one array per input column and returns `{column: values}` with one
    value per row, in order; the Arrow table is rebuilt around it with each column typed as the
    manifest declares it.
    """

    @abstractmethod
    def columns(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray | list]:
        """One array of values per added column, one value per row, in order."""

    def __call__(self, table: pa.Table) -> pa.Table:
        batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
        return add_columns(table, self.columns(batch), self.name)


def add_columns(table: pa.Table, added: dict, stage: str = "stage") -> pa.Table:
    """`table` with `added` columns set (replaced where they exist), typed as declared."""
    from lavie.curate.manifest import declared_type

    for key, values in added.items():
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            array = values
        else:
            values = values.tolist() if isinstance(values, np.ndarray) else list(values)
            if len(values) != table.num_rows:
                raise RuntimeError(f"stage {stage!r} returned {len(values)} values of {key!r} "
                                   f"for {table.num_rows} rows")
            typ = declared_type(key)
            if typ is None and key in table.column_names and not pa.types.is_null(table.column(key).type):
                typ = table.column(key).type
            if typ is not None and not pa.types.is_floating(typ):
                # numpy turns a nullable integer or text column into floats with NaN for nulls
                values = [None if isinstance(v, float) and v != v else v for v in values]
            array = pa.array(values, type=typ)
        if key in table.column_names:
            table = table.set_column(table.column_names.index(key), key, array)
        else:
            table = table.append_column(key, array)
    return table
