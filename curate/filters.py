"""Clip filters as vectorised Arrow expressions (LaVie §4.1, App. B).

The `filter` stage judges every row that has not failed: resolution (short side), aspect ratio,
length in frames and seconds, and every measurement an earlier stage wrote (aesthetic score,
text area, motion, caption words). Each rule is one `pyarrow.compute` expression over whole
columns; no row is looked at in Python, so a million rows filter in well under a second.

A rule whose threshold is null is off, and a rule whose column a row lacks (not captioned, not
scored yet) is silent for that row. The first failing rule names the row's `reject_reason`,
`"<rule>: <why>"` (e.g. ``"resolution: short side 360 < 720"``).

Verdicts are *recomputed*: re-filtering a filtered manifest with new thresholds clears the
reasons this stage gives and judges again, so a user tuning thresholds never goes back to an
earlier stage's output. Reasons other stages gave (``scene_length`` from the scenes stage) and
error rows are left as they are.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import model_validator

from lavie.curate.manifest import STATUS_ERROR
from lavie.curate.registry import register_stage
from lavie.curate.stage import Resources, Stage, StageConfig, add_columns


class FilterConfig(StageConfig):
    """Thresholds of the rules; null turns a rule off."""

    min_short_side: int | None = 720  # LaVie §4.1/App. B: Vimeo25M is high-resolution (> 720p)
    min_aspect: float | None = None  # width / height, e.g. 1.0 keeps landscape and square only
    max_aspect: float | None = None
    min_frames: int | None = 16  # LaVie §4.1: segments with fewer than 16 frames are excluded
    min_seconds: float | None = None
    max_seconds: float | None = None
    # LAION aesthetic predictor score. App. B, Fig. 9(a) buckets scores <4 / 4-6 / >6: 96.0% of
    # Vimeo25M scores at least 4 (79.12% in 4-6, 16.89% above 6) against 79.8% of WebVid10M, so
    # the floor that separates the curated corpus from the web corpus is the lowest bucket's edge.
    min_aesthetic: float | None = 4.0
    # Fraction of the frame covered by detected text (max over sampled frames); Vimeo25M is
    # watermark-free. 0.005 lies between the samples' clean shots (at most 0.0012) and a corner
    # channel logo (about 0.01), see `curate/text.py`.
    max_text_area: float | None = 0.005
    # Mean optical-flow magnitude in pixels per frame at the motion stage's analysis size
    # (`curate/motion.py`): below min_motion a clip is a still or a slideshow; above max_motion
    # it is mostly blur and flashes.
    min_motion: float | None = 0.02
    max_motion: float | None = 20.0
    min_caption_words: int | None = 3  # LaVie §4.1: captions with fewer than three words dropped

    @model_validator(mode="after")
    def _check(self) -> FilterConfig:
        for key in ("min_short_side", "min_frames", "min_caption_words"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"filter.{key} must be >= 0 or null (off), got {value!r}")
        for low, high in (("min_aspect", "max_aspect"), ("min_seconds", "max_seconds"),
                          ("min_motion", "max_motion")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"filter.{low} ({lo}) is larger than filter.{high} ({hi})")
        for key in ("min_aspect", "max_aspect"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"filter.{key} must be > 0 or null (off), got {value!r}")
        return self


# ----------------------------------------------------------------------------------------------
# Columns as Arrow arrays


def _col(table: pa.Table, name: str, typ: pa.DataType = pa.float64()) -> pa.ChunkedArray | pa.Array:
    """A column cast to `typ`, or all nulls when the table lacks it (the rule stays silent)."""
    if name not in table.column_names:
        return pa.nulls(table.num_rows, typ)
    col = table.column(name)
    return col if col.type == typ else col.cast(typ)


def _text(values, digits: int | None = None):
    """Numbers as text for a reason: integers as integers, others rounded to `digits`."""
    if digits is None:
        return pc.cast(pc.cast(values, pa.int64()), pa.string())
    return pc.cast(pc.round(values, digits), pa.string())


def _array(values) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _reason(*parts):
    return pc.binary_join_element_wise(*parts, "")


def clip_seconds(table: pa.Table):
    """Clip duration: end_s - start_s (exact for variable frame rate), else num_frames / fps."""
    span = pc.subtract(_col(table, "end_s"), _col(table, "start_s"))
    fps = _col(table, "fps")
    by_rate = pc.if_else(pc.greater(fps, 0), pc.divide(_col(table, "num_frames"), fps), None)
    return pc.coalesce(span, by_rate)


def _is_video(table: pa.Table):
    if "kind" not in table.column_names:
        return pa.array([True] * table.num_rows)
    return pc.fill_null(pc.not_equal(table.column("kind"), "image"), True)


# A rule: function(table, config) -> (fails, why). `fails` is a boolean array over the table
# (null: silent); `why(rows)` gives the reason text of `rows`, a table of failing rows only, so
# text is built for the rejected rows alone.
Rule = Callable[[pa.Table, FilterConfig], tuple]


def _short_side(t):
    return pc.min_element_wise(_col(t, "width"), _col(t, "height"), skip_nulls=False)


def _resolution(t, c):
    return (pc.less(_short_side(t), c.min_short_side),
            lambda r: _reason("resolution: short side ", _text(_short_side(r)), f" < {c.min_short_side}"))


def _range(kind: str, values_of, t, low, high, digits: int, unit: str = "", suffix=None):
    """Outside [low, high] (either end open); `values_of(table)` computes the value."""
    values = values_of(t)
    fails_low = pc.less(values, low) if low is not None else None
    fails_high = pc.greater(values, high) if high is not None else None
    fails = fails_low if fails_high is None else fails_high if fails_low is None else pc.or_(fails_low, fails_high)

    def why(rows):
        v = values_of(rows)
        shown = _text(v, digits)
        lo = _reason(f"{kind}: ", shown, f"{unit} < {low:g}{unit}{suffix[0] if suffix else ''}") if low is not None else None
        hi = _reason(f"{kind}: ", shown, f"{unit} > {high:g}{unit}{suffix[1] if suffix else ''}") if high is not None else None
        if hi is None or lo is None:
            return lo if hi is None else hi
        return pc.if_else(pc.fill_null(pc.less(v, low), False), lo, hi)

    return fails, why


def _aspect_of(t):
    height = _col(t, "height")
    return pc.divide(_col(t, "width"), pc.if_else(pc.greater(height, 0), height, None))


def _aspect(t, c):
    return _range("aspect", _aspect_of, t, c.min_aspect, c.max_aspect, 3)


def _frames(t, c):
    fails = pc.and_(pc.less(_col(t, "num_frames"), c.min_frames), _is_video(t))  # an image is one frame
    return fails, lambda r: _reason("frames: ", _text(_col(r, "num_frames")), f" < {c.min_frames}")


def _duration(t, c):
    fails, why = _range("duration", clip_seconds, t, c.min_seconds, c.max_seconds, 2, " s")
    return pc.and_(fails, _is_video(t)), why


def _aesthetic(t, c):
    return (pc.less(_col(t, "aesthetic"), c.min_aesthetic),
            lambda r: _reason("aesthetic: ", _text(_col(r, "aesthetic"), 2), f" < {c.min_aesthetic:g}"))


def _text_area(t, c):
    return (pc.greater(_col(t, "text_area"), c.max_text_area),
            lambda r: _reason("text: ", _text(_col(r, "text_area"), 3), f" of the frame > {c.max_text_area:g}"))


def _motion(t, c):
    # Say which end: a still or slideshow, or motion too wild to learn from.
    fails, why = _range("motion", lambda x: _col(x, "motion"), t, c.min_motion, c.max_motion, 2, " px",
                        suffix=(" (static)", " (extreme)"))
    return pc.and_(fails, _is_video(t)), why


def _words(t):
    """Caption words: the column, else counted from the caption (only where the column is null)."""
    words = _col(t, "caption_words")
    if "caption" in t.column_names:
        missing = _array(pc.and_(pc.is_null(words), pc.is_valid(t.column("caption"))))
        if pc.any(missing).as_py():
            captions = pc.filter(_col(t, "caption", pa.string()), missing)
            counted = pc.cast(pc.list_value_length(pc.utf8_split_whitespace(captions)), pa.float64())
            words = pc.replace_with_mask(_array(words), missing, _array(counted))
    return words


def _caption_words(t, c):
    return (pc.less(_words(t), c.min_caption_words),
            lambda r: _reason("caption_words: ", _text(_words(r)), f" < {c.min_caption_words}"))


# In the order they are applied: cheapest and most decisive first. Names are reason kinds.
RULES: dict[str, tuple[tuple[str, ...], Rule]] = {
    "resolution": (("min_short_side",), _resolution),
    "aspect": (("min_aspect", "max_aspect"), _aspect),
    "frames": (("min_frames",), _frames),
    "duration": (("min_seconds", "max_seconds"), _duration),
    "motion": (("min_motion", "max_motion"), _motion),
    "text": (("max_text_area",), _text_area),
    "aesthetic": (("min_aesthetic",), _aesthetic),
    "caption_words": (("min_caption_words",), _caption_words),
}

# Which rules can say anything about a table: those whose columns it has.
RULE_COLUMNS = {"resolution": ("width", "height"), "aspect": ("width", "height"), "frames": ("num_frames",),
                "duration": ("start_s", "num_frames"), "motion": ("motion",), "text": ("text_area",),
                "aesthetic": ("aesthetic",), "caption_words": ("caption_words", "caption")}
# Further columns a rule's reason text may read (clip_seconds: the span, else frames over rate).
REASON_COLUMNS = ("end_s", "fps", "kind")


def filter_table(table: pa.Table, config: FilterConfig) -> pa.Table:
    """`keep` and `reject_reason` recomputed for every row that has not failed (see module doc)."""
    n = table.num_rows
    error = pc.fill_null(pc.equal(_col(table, "status", pa.string()), STATUS_ERROR), False)
    old_keep = _col(table, "keep", pa.bool_())
    old_reason = _col(table, "reject_reason", pa.string())
    # Rows another stage rejected keep that verdict; rows this stage judged are judged afresh.
    rejected = pc.fill_null(pc.equal(old_keep, False), False)
    foreign = pa.array([False] * n)
    if pc.any(rejected).as_py():
        kind = pc.list_element(pc.split_pattern(pc.fill_null(old_reason, ""), ":", max_splits=1), 0)
        ours = pc.is_in(pc.utf8_trim_whitespace(kind), value_set=pa.array(list(RULES)))
        foreign = pc.and_(rejected, pc.invert(ours))
    judged = pc.invert(pc.or_(error, foreign))

    keep = judged
    pieces = []  # (row positions, reason texts) per rule that rejected rows
    for name, (keys, rule) in RULES.items():
        if all(getattr(config, k) is None for k in keys):
            continue
        if not any(col in table.column_names for col in RULE_COLUMNS[name]):
            continue
        fails, why = rule(table, config)
        # First failing rule wins: only rows still kept can be rejected by a later rule.
        hit = pc.and_(pc.fill_null(fails, False), keep)
        if not pc.any(hit).as_py():
            continue
        keep = pc.and_(keep, pc.invert(hit))
        # The reason text is built from the failing rows of the columns the rule reads alone.
        needed = [col for col in table.column_names if col in RULE_COLUMNS[name] or col in REASON_COLUMNS]
        pieces.append((pc.indices_nonzero(hit), why(table.select(needed).filter(hit))))
    unjudged = pc.invert(judged)
    if pc.any(unjudged).as_py():  # errors and other stages' verdicts keep their reason
        pieces.append((pc.indices_nonzero(unjudged), pc.filter(old_reason, unjudged)))
    keep = pc.if_else(judged, keep, pc.if_else(error, False, old_keep))
    return add_columns(table, {"keep": keep, "reject_reason": _scatter(n, pieces)}, "filter")


def _scatter(n: int, pieces: list) -> pa.Array:
    """A string column of `n` rows: each piece's texts at its row positions, null elsewhere
    (one gather, instead of rewriting the whole column once per rule)."""
    if not pieces:
        return pa.nulls(n, pa.string())
    texts = pa.concat_arrays([_array(pc.cast(t, pa.string())) for _, t in pieces])
    source = np.full(n, -1, dtype=np.int64)
    start = 0
    for rows, t in pieces:
        source[rows.to_numpy()] = np.arange(start, start + len(t))
        start += len(t)
    return texts.take(pa.array(source, mask=source < 0))


@register_stage("filter")
class FilterStage(Stage):
    """Judge rows against the thresholds; adds (recomputes) `keep` and `reject_reason`."""

    Config = FilterConfig
    RESOURCES = Resources(cpus=0.25, in_process=True)
    default_batch_size = 65536

    def __call__(self, batch: pa.Table) -> pa.Table:
        from lavie.curate.finite import reject_non_finite

        # NaN and infinities are not values to compare: their rows are rejected first, with the
        # column named (lavie.curate.finite); a null, an unknown, passes as every rule lets it.
        return filter_table(reject_non_finite(batch, frozenset(RULES) | {"finite"}), self.config)


def count_words(caption: str) -> int:
    return len(caption.split())
