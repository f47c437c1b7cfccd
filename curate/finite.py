"""Numbers that are not numbers: the `filter` command rejects rows whose numeric columns hold NaN
or an infinity, with the column and the value as the reason.

This runs on the Arrow table, before rows become numpy batches: there a null and a NaN look the
same, and a null (unknown) value must pass, as every filter lets it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from lavie.curate.manifest import STATUS_ERROR

NUMERIC_COLUMNS = ("width", "height", "num_frames", "fps", "start_frame", "end_frame", "start_s", "end_s",
                   "duration_s", "aesthetic", "category_score")


def reject_non_finite(table: pa.Table, rejudged: frozenset[str] = frozenset()) -> pa.Table:
    """`table` with keep=false and reject_reason "finite: <column> is <value>" on rows still open.

    A row rejected earlier stays as it was, unless its reason's kind is in `rejudged`: the filter
    judges its own earlier verdicts afresh, so those rows count as open here too.
    """
    n = table.num_rows
    bad = None
    columns = [c for c in NUMERIC_COLUMNS if c in table.column_names and pa.types.is_floating(table.schema.field(c).type)]
    for column in columns:
        hit = pc.fill_null(pc.invert(pc.is_finite(table.column(column))), False)
        bad = hit if bad is None else pc.or_(bad, hit)
    if bad is None or not pc.any(bad).as_py():
        return table
    keep = table.column("keep").to_pylist() if "keep" in table.column_names else [None] * n
    reason = table.column("reject_reason").to_pylist() if "reject_reason" in table.column_names else [None] * n
    status = table.column("status").to_pylist() if "status" in table.column_names else [None] * n
    values = {c: table.column(c).to_pylist() for c in columns}
    for i in [i for i, b in enumerate(bad.to_pylist()) if b]:
        kind = (reason[i] or "").split(":", 1)[0].strip()
        if status[i] == STATUS_ERROR or (keep[i] is False and kind not in rejudged):
            continue  # already ruled on: the first verdict stands
        column = next(c for c in columns if values[c][i] is not None and values[c][i] != values[c][i]
                      or values[c][i] in (float("inf"), float("-inf")))
        keep[i], reason[i] = False, f"finite: {column} is {values[column][i]}"
    for name, data, typ in (("keep", keep, pa.bool_()), ("reject_reason", reason, pa.string())):
        array = pa.array(data, typ)
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), pa.field(name, typ), array)
        else:
            table = table.append_column(pa.field(name, typ), array)
    return table
