"""What a run takes in: the source videos under a raw folder, as rows for the scenes stage.

Discovery (`lavie.curate.discover`: links, loops, odd names, special files) and the decision of
what is new, changed or done (`lavie.curate.sources.plan_scenes`) live in their own modules;
`video_rows` turns their plan into the rows the scenes stage maps over.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa

from lavie.curate.manifest import ORDER_COLUMN
from lavie.curate.sources import plan_scenes

log = logging.getLogger(__name__)


def video_rows(raw_dir: str | os.PathLike, out_dir: str | os.PathLike, extensions: list[str],
               category_from_folder: bool, videos, clips) -> tuple[pa.Table, list[dict], int]:
    """The videos still to do as scenes-stage input rows (with `_order`), the `videos` error rows
    of sources known bad without opening them, and how many sources were already done.

    `videos` and `clips` are the run's part stores: a changed source's earlier rows leave them.
    """
    plan = plan_scenes(raw_dir, out_dir, extensions, category_from_folder, videos, clips)
    todo = [{**row, ORDER_COLUMN: index} for index, row in enumerate(plan.todo)]
    schema = pa.schema([("source_path", pa.string()), ("video_id", pa.string()), ("category", pa.string()),
                        ("source_signature", pa.string()), ("source_change", pa.string()),
                        (ORDER_COLUMN, pa.int64())])
    return pa.Table.from_pylist(todo, schema=schema), plan.problems, plan.done
