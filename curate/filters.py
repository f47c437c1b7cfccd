"""Cheap clip filters (LaVie §4.1): resolution, aspect ratio, length, aesthetic score, caption length.

Each filter is a small class registered by name. It looks at a batch's columns and returns, per
row, the reason it rejects that row (``"resolution: short side 360 < 720"``) or None. The
``filter`` stage applies a list of them, first reason wins, to the rows still kept: a row that an
earlier stage already rejected, or that failed (status error), passes through untouched, so its
first reason is the one the report counts. A rejected row is never dropped: it keeps its place
with ``keep=false`` and its ``reject_reason``, whose part before ':' names the filter.

A filter judges only what a row measures: a missing size, score or caption leaves that filter
silent for the row (captions and aesthetic scores appear only after their stages have run).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lavie.curate.manifest import STATUS_ERROR
from lavie.curate.registry import register_stage

# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class FilterConfig:
    """Thresholds of the filters; None turns a filter off."""

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
    min_caption_words: int | None = 3  # LaVie §4.1: captions with fewer than three words dropped

    def __post_init__(self) -> None:
        for key in ("min_short_side", "min_frames", "min_caption_words"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise ValueError(f"filter.{key} must be >= 0 or null (off), got {value!r}")
        for low, high in (("min_aspect", "max_aspect"), ("min_seconds", "max_seconds")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"filter.{low} ({lo}) is larger than filter.{high} ({hi})")
        for key in ("min_aspect", "max_aspect"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"filter.{key} must be > 0 or null (off), got {value!r}")

    def stage_kwargs(self, filters: list[str] | None = None) -> dict:
        """Keyword arguments of the `filter` stage; `filters` picks which filters run (all: None)."""
        return {**dataclasses.asdict(self), "filters": filters}


# ----------------------------------------------------------------------------------------------
# The filters


_FILTERS: dict[str, type[Filter]] = {}


def register_filter(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in _FILTERS:
            raise ValueError(f"filter {name!r} is registered twice")
        cls.name = name
        _FILTERS[name] = cls
        return cls

    return wrap


# What a run applies before any model: the rules that need only probe data. The aesthetic rule
# runs after scoring and the caption rule after captioning, so models see only survivors.
CHEAP_FILTERS = ("resolution", "aspect", "frames", "duration")


def filter_names() -> list[str]:
    """Registered filters in the order the stage applies them (cheapest, most decisive first)."""
    return list(_FILTERS)


def _floats(batch: dict[str, np.ndarray], column: str) -> np.ndarray | None:
    """A column as float64 with NaN for nulls, or None when the batch lacks it."""
    if column not in batch:
        return None
    values = batch[column]
    if values.dtype.kind in "fiu":
        return values.astype(np.float64)
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _kinds(batch: dict[str, np.ndarray], n: int) -> np.ndarray:
    if "kind" not in batch:
        return np.full(n, "video", dtype=object)
    return np.asarray(batch["kind"], dtype=object)


class Filter(ABC):
    """One rule. `keys` are the FilterConfig fields it reads; all None: the filter is off."""

    name: str = ""
    keys: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ("video", "image")  # which `kind` of row the rule applies to

    def __init__(self, **thresholds):
        for key, value in thresholds.items():
            setattr(self, key, value)

    @classmethod
    def from_config(cls, config: dict) -> Filter | None:
        thresholds = {key: config.get(key) for key in cls.keys}
        if all(v is None for v in thresholds.values()):
            return None
        return cls(**thresholds)

    @abstractmethod
    def reasons(self, batch: dict[str, np.ndarray], n: int) -> list[str | None]:
        """Per row: why the row fails this rule, or None."""


def _fmt(value: float) -> str:
    return f"{value:.4g}"


@register_filter("resolution")
class ResolutionFilter(Filter):
    """Short side >= min_short_side: min(width, height), so a portrait 720x1280 is 720p."""

    keys = ("min_short_side",)

    def reasons(self, batch, n):
        width, height = _floats(batch, "width"), _floats(batch, "height")
        if width is None or height is None:
            return [None] * n
        short = np.fmin(width, height)  # NaN only when both sides are unknown
        short[np.isnan(width) | np.isnan(height)] = np.nan
        return [f"resolution: short side {int(s)} < {self.min_short_side}"
                if s == s and s < self.min_short_side else None for s in short]


@register_filter("aspect")
class AspectFilter(Filter):
    """width / height inside [min_aspect, max_aspect] (either end may be open)."""

    keys = ("min_aspect", "max_aspect")

    def reasons(self, batch, n):
        width, height = _floats(batch, "width"), _floats(batch, "height")
        if width is None or height is None:
            return [None] * n
        with np.errstate(divide="ignore", invalid="ignore"):
            aspect = width / height
        return range_reasons("aspect", aspect, self.min_aspect, self.max_aspect, "{:.3f}")


def range_reasons(kind: str, values: np.ndarray, low: float | None, high: float | None,
                  fmt: str, unit: str = "") -> list[str | None]:
    """Reasons for values outside [low, high] (None: open side); unknown values pass."""
    lo = -np.inf if low is None else low
    hi = np.inf if high is None else high
    out = []
    for v in values:
        if not np.isfinite(v) or lo <= v <= hi:
            out.append(None)
        elif v < lo:
            out.append(f"{kind}: {fmt.format(v)}{unit} < {_fmt(lo)}{unit}")
        else:
            out.append(f"{kind}: {fmt.format(v)}{unit} > {_fmt(hi)}{unit}")
    return out


@register_filter("frames")
class FramesFilter(Filter):
    """num_frames >= min_frames; the wording matches the scenes stage's own length rule."""

    keys = ("min_frames",)
    kinds = ("video",)  # an image is one frame by definition

    def reasons(self, batch, n):
        frames = _floats(batch, "num_frames")
        if frames is None:
            return [None] * n
        return [f"frames: {int(f)} < {self.min_frames}" if f == f and f < self.min_frames else None
                for f in frames]


def clip_seconds(batch: dict[str, np.ndarray], n: int) -> np.ndarray:
    """Clip duration: end_s - start_s (exact for variable frame rate), else num_frames / fps."""
    start, end = _floats(batch, "start_s"), _floats(batch, "end_s")
    frames, fps = _floats(batch, "num_frames"), _floats(batch, "fps")
    seconds = np.full(n, np.nan)
    if frames is not None and fps is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            seconds = np.where(fps > 0, frames / fps, np.nan)
    if start is not None and end is not None:
        span = end - start
        seconds = np.where(np.isnan(span), seconds, span)
    return seconds


@register_filter("duration")
class DurationFilter(Filter):
    """Clip length in seconds inside [min_seconds, max_seconds]."""

    keys = ("min_seconds", "max_seconds")
    kinds = ("video",)

    def reasons(self, batch, n):
        return range_reasons("duration", clip_seconds(batch, n), self.min_seconds, self.max_seconds, "{:.2f}", " s")


@register_filter("aesthetic")
class AestheticFilter(Filter):
    """LAION aesthetic score >= min_aesthetic, where the aesthetic stage has scored the row."""

    keys = ("min_aesthetic",)

    def reasons(self, batch, n):
        score = _floats(batch, "aesthetic")
        if score is None:
            return [None] * n
        return [f"aesthetic: {s:.2f} < {_fmt(self.min_aesthetic)}" if s == s and s < self.min_aesthetic
                else None for s in score]


def count_words(caption: str) -> int:
    return len(caption.split())


@register_filter("caption_words")
class CaptionWordsFilter(Filter):
    """At least min_caption_words words (LaVie §4.1: fewer than three words are filtered out)."""

    keys = ("min_caption_words",)

    def reasons(self, batch, n):
        words = _floats(batch, "caption_words")
        if words is None:
            words = np.full(n, np.nan)
        captions = batch.get("caption")
        out = []
        for i in range(n):
            w = words[i]
            if w != w and captions is not None and captions[i] is not None:
                w = count_words(str(captions[i]))
            out.append(f"caption_words: {int(w)} < {self.min_caption_words}"
                       if w == w and w < self.min_caption_words else None)
        return out


# ----------------------------------------------------------------------------------------------
# The stage


@register_stage("filter")
class FilterStage:
    """Apply the configured filters to the kept rows; returns `keep` and `reject_reason`.

    Keyword arguments are FilterConfig's fields plus `filters`, the names of the filters to run
    (None: every registered one whose threshold is set). A run uses the list to put the cheap
    filters before the models and the caption filter after captioning.
    """

    def __init__(self, filters: list[str] | None = None, **thresholds):
        config = FilterConfig(**thresholds)  # validates and fills defaults
        if filters is None:
            filters = filter_names()
        unknown = [f for f in filters if f not in _FILTERS]
        if unknown:
            raise ValueError(f"unknown filter {unknown[0]!r}; choose from {', '.join(filter_names())}")
        values = dataclasses.asdict(config)
        built = (_FILTERS[name].from_config(values) for name in filters)
        self.filters = [f for f in built if f is not None]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(next(iter(batch.values()))) if batch else 0
        keep = [None if k is None else bool(k) for k in batch.get("keep", [None] * n)]
        reason = list(batch.get("reject_reason", [None] * n))
        status = list(batch.get("status", [None] * n))
        # Only rows nobody has ruled on yet are judged; the others keep their first verdict.
        open_rows = np.array([s != STATUS_ERROR and k is not False for s, k in zip(status, keep)], dtype=bool)
        kinds = _kinds(batch, n)
        for i in np.flatnonzero(open_rows):
            keep[i], reason[i] = True, None
        for flt in self.filters:
            applies = open_rows & np.isin(kinds, flt.kinds)
            if not applies.any():
                continue
            for i, why in enumerate(flt.reasons(batch, n)):
                if why is not None and applies[i]:
                    keep[i], reason[i] = False, why
                    open_rows[i] = False
                    applies[i] = False
        return {"keep": np.array(keep, dtype=object), "reject_reason": np.array(reason, dtype=object)}
