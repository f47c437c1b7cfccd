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


# A rule: (name, keys it reads from the config, function(table, config) -> (fails, reason)).
# `fails` is a boolean array (null: silent), `reason` the text for failing rows.
Rule = Callable[[pa.Table, FilterConfig], tuple]


def _resolution(t, c):
    short = pc.min_element_wise(_col(t, "width"), _col(t, "height"), skip_nulls=False)
    return pc.less(short, c.min_short_side), _reason("resolution: short side ", _text(short),
                                                     f" < {c.min_short_side}")


def _range(kind: str, values, low, high, digits: int, unit: str = ""):
    fails_low = pc.less(values, low) if low is not None else None
    fails_high = pc.greater(values, high) if high is not None else None
    shown = _text(values, digits)
    low_reason = _reason(f"{kind}: ", shown, f"{unit} < {low:g}{unit}") if low is not None else None
    high_reason = _reason(f"{kind}: ", shown, f"{unit} > {high:g}{unit}") if high is not None else None
    if fails_high is None:
        return fails_low, low_reason
    if fails_low is None:
        return fails_high, high_reason
    return pc.or_(fails_low, fails_high), pc.if_else(fails_low, low_reason, high_reason)


def _aspect(t, c):
    aspect = pc.divide(_col(t, "width"), pc.if_else(pc.greater(_col(t, "height"), 0), _col(t, "height"), None))
    return _range("aspect", aspect, c.min_aspect, c.max_aspect, 3)


def _frames(t, c):
    frames = _col(t, "num_frames")
    fails = pc.and_(pc.less(frames, c.min_frames), _is_video(t))  # an image is one frame
    return fails, _reason("frames: ", _text(frames), f" < {c.min_frames}")


def _duration(t, c):
    fails, reason = _range("duration", clip_seconds(t), c.min_seconds, c.max_seconds, 2, " s")
    return pc.and_(fails, _is_video(t)), reason


def _aesthetic(t, c):
    score = _col(t, "aesthetic")
    return pc.less(score, c.min_aesthetic), _reason("aesthetic: ", _text(score, 2), f" < {c.min_aesthetic:g}")


def _text_area(t, c):
    area = _col(t, "text_area")
    return pc.greater(area, c.max_text_area), _reason("text: ", _text(area, 3),
                                                      f" of the frame > {c.max_text_area:g}")


def _motion(t, c):
    motion = _col(t, "motion")
    fails, reason = _range("motion", motion, c.min_motion, c.max_motion, 2, " px")
    # Say which end: a still or slideshow, or motion too wild to learn from.
    static = pc.less(motion, c.min_motion) if c.min_motion is not None else pa.array([False] * t.num_rows)
    suffix = pc.if_else(pc.fill_null(static, False), " (static)", " (extreme)")
    return pc.and_(fails, _is_video(t)), _reason(reason, suffix)


def _caption_words(t, c):
    words = _col(t, "caption_words")
    if "caption" in t.column_names:
        counted = pc.list_value_length(pc.utf8_split_whitespace(_col(t, "caption", pa.string())))
        words = pc.coalesce(words, pc.cast(counted, pa.float64()))
    return pc.less(words, c.min_caption_words), _reason("caption_words: ", _text(words),
                                                        f" < {c.min_caption_words}")


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


def filter_table(table: pa.Table, config: FilterConfig) -> pa.Table:
    """`keep` and `reject_reason` recomputed for every row that has not failed (see module doc)."""
    n = table.num_rows
    status = _col(table, "status", pa.string())
    error = pc.fill_null(pc.equal(status, STATUS_ERROR), False)
    old_keep = _col(table, "keep", pa.bool_())
    old_reason = _col(table, "reject_reason", pa.string())
    old_kind = pc.utf8_trim_whitespace(pc.list_element(pc.split_pattern(old_reason, ":", max_splits=1), 0))
    # Rows another stage rejected keep that verdict; rows this stage judged are judged afresh.
    foreign = pc.and_(pc.fill_null(pc.equal(old_keep, False), False),
                      pc.fill_null(pc.invert(pc.is_in(old_kind, value_set=pa.array(list(RULES)))), True))
    judged = pc.invert(pc.or_(error, foreign))

    keep = pa.array([True] * n)
    reason = pa.nulls(n, pa.string())
    for name, (keys, rule) in RULES.items():
        if all(getattr(config, k) is None for k in keys):
            continue
        fails, why = rule(table, config)
        # First failing rule wins: only rows still kept can be rejected by a later rule.
        hit = pc.and_(pc.fill_null(fails, False), keep)
        keep = pc.and_(keep, pc.invert(hit))
        reason = pc.if_else(hit, why, reason)
    keep = pc.if_else(judged, keep, old_keep)
    reason = pc.if_else(judged, reason, old_reason)
    # An error row is never kept, whatever it said before.
    keep = pc.if_else(error, False, keep)
    return add_columns(table, {"keep": keep, "reject_reason": reason}, "filter")


@register_stage("filter")
class FilterStage(Stage):
    """Judge rows against the thresholds; adds (recomputes) `keep` and `reject_reason`."""

    Config = FilterConfig
    RESOURCES = Resources(cpus=0.25, in_process=True)
    default_batch_size = 65536

    def __call__(self, batch: pa.Table) -> pa.Table:
        return filter_table(batch, self.config)


def count_words(caption: str) -> int:
    return len(caption.split())
