"""Corpus statistics (LaVie App. B, Fig. 8/9): what a manifest holds, and what the filters removed.

`build_report` streams one or more manifests batch by batch, so its memory stays bounded however
many rows there are (only the set of distinct sources grows, with the number of sources), and
writes into its output folder:

- `stats.json`: per manifest the totals, the filter funnel and every distribution as counts;
- one PNG per chart, each comparing the manifests side by side;
- `report.html`: one self-contained page (charts embedded as base64 PNG, no external assets).

The funnel accounts for every row: `kept + sum(removed.values()) + errors == input`. Removed rows
are counted by the kind of their `reject_reason` (the part before ':', e.g. "resolution").
Distributions describe the *kept* clips, so a manifest before filtering and the same manifest
after it differ where the filters bit (every stage keeps all rows, with their verdicts).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lavie.curate.filters import clip_seconds
from lavie.curate.manifest import STATUS_ERROR, iter_manifest_batches, resolve_manifest

# Bins of the distributions. App. B, Fig. 8 shows clip durations and caption word lengths, Fig. 9
# aesthetic scores in three buckets and spatial resolution.
DURATION_EDGES = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, math.inf]
MAX_WORDS = 30  # captions with more words share the last bin ("30+")
AESTHETIC_BUCKETS = ["<4", "4-6", ">6"]  # App. B, Fig. 9(a); 4 and 6 themselves fall in "4-6"
# Short side of the frame (portrait and landscape alike), in the usual "p" names.
RESOLUTION_EDGES = [0, 360, 480, 720, 1080, 1440, 2160]
RESOLUTION_LABELS = ["<360p", "360p", "480p", "720p", "1080p", "1440p", "2160p+"]
# Text area (share of the frame under detected text) and motion (px/frame), over measured clips.
TEXT_EDGES = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, math.inf]
TEXT_LABELS = ["<0.1%", "0.1-0.5%", "0.5-1%", "1-2%", "2-5%", "5-10%", ">10%"]
MOTION_EDGES = [0.0, 0.02, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, math.inf]
MOTION_LABELS = ["<0.02", "0.02-0.1", "0.1-0.5", "0.5-1", "1-2", "2-5", "5-10", "10-20", ">20"]
# LaVie App. B, Fig. 9(a): the published aesthetic buckets (percent of clips), shown beside ours.
PAPER_AESTHETIC = {
    "Vimeo25M (LaVie App. B)": [100.0 - 79.12 - 16.89, 79.12, 16.89],
    "WebVid10M (LaVie App. B)": [100.0 - 72.58 - 7.22, 72.58, 7.22],
}
THUMBS_PER_GROUP = 2
UNKNOWN = "unknown"
NO_CATEGORY = "(none)"
NO_REASON = "unspecified"


def _duration_labels() -> list[str]:
    labels = []
    for lo, hi in zip(DURATION_EDGES[:-1], DURATION_EDGES[1:]):
        labels.append(f"{lo:g}+ s" if math.isinf(hi) else f"{lo:g}-{hi:g} s")
    return labels


DURATION_LABELS = _duration_labels()
WORD_LABELS = [str(i) for i in range(MAX_WORDS)] + [f"{MAX_WORDS}+"]


# ----------------------------------------------------------------------------------------------
# Streaming statistics of one manifest


def _numpy(batch: pa.RecordBatch, name: str) -> np.ndarray | None:
    if name not in batch.schema.names:
        return None
    column = batch.column(name)
    if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        # Nulls become NaN: the counting below skips them.
        return column.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return column.to_numpy(zero_copy_only=False)


def _column(batch: pa.RecordBatch, name: str, typ: pa.DataType) -> pa.Array:
    """A column, or nulls where an earlier stage's manifest does not have it yet."""
    return batch.column(name) if name in batch.schema.names else pa.nulls(batch.num_rows, typ)


def _add_counts(into: dict[str, int], values: pa.Array) -> None:
    for item in pc.value_counts(values).to_pylist():
        into[item["values"]] = into.get(item["values"], 0) + item["counts"]


class ManifestStats:
    """Counts and histograms of one manifest, accumulated batch by batch."""

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path
        self.rows = self.kept = self.errors = 0
        self.kept_seconds = 0.0
        self.sources: set[str] = set()
        self.removed: dict[str, int] = {}
        self.kinds: dict[str, int] = {}
        self.categories: dict[str, int] = {}
        self.duration = np.zeros(len(DURATION_LABELS), dtype=np.int64)
        self.duration_unknown = 0
        self.words = np.zeros(len(WORD_LABELS), dtype=np.int64)
        self.uncaptioned = 0
        self.aesthetic = np.zeros(len(AESTHETIC_BUCKETS), dtype=np.int64)
        self.unscored = 0
        self.resolution = np.zeros(len(RESOLUTION_LABELS), dtype=np.int64)
        self.resolution_unknown = 0
        self.text = np.zeros(len(TEXT_LABELS), dtype=np.int64)
        self.untexted = 0
        self.motion = np.zeros(len(MOTION_LABELS), dtype=np.int64)
        self.unmoved = 0
        self.detectors: dict[str, int] = {}
        self.error_reasons: dict[str, int] = {}
        # A few clips per category (kept) and per reject reason, for the thumbnail strips.
        self.samples: dict[str, list[dict]] = {}

    def add(self, batch: pa.RecordBatch) -> None:
        n = batch.num_rows
        if n == 0:
            return
        self.rows += n
        source = batch.column("source_path")
        if "video_id" in batch.schema.names:
            source = pc.coalesce(batch.column("video_id"), source)
        self.sources.update(pc.unique(source).to_pylist())

        # 1. The funnel: every row is an error, a rejection with its reason, or kept.
        error = pc.fill_null(pc.equal(batch.column("status"), STATUS_ERROR), False)
        keep = _column(batch, "keep", pa.bool_())
        # keep null (no stage has ruled yet) counts as kept: only an explicit false rejects.
        rejected = pc.and_(pc.invert(error), pc.fill_null(pc.equal(keep, False), False))
        kept = pc.invert(pc.or_(error, rejected))
        self.errors += pc.sum(error).as_py() or 0
        reasons = pc.filter(_column(batch, "reject_reason", pa.string()), rejected)
        if len(reasons):
            kinds = pc.utf8_trim_whitespace(pc.list_element(pc.split_pattern(reasons, ":", max_splits=1), 0))
            kinds = pc.if_else(pc.equal(kinds, ""), None, kinds)
            _add_counts(self.removed, pc.fill_null(kinds, NO_REASON))

        # 2. What the measuring stages saw: every clip they measured, kept or not, so the
        #    charts show where the thresholds cut.
        measured = batch.filter(pc.invert(error))
        self._add_measure(measured, "text_area", TEXT_EDGES, "text", "untexted")
        self._add_measure(measured, "motion", MOTION_EDGES, "motion", "unmoved")
        if "detector" in batch.schema.names:
            _add_counts(self.detectors, pc.fill_null(measured.column("detector"), UNKNOWN))
        errors = pc.filter(_column(batch, "error", pa.string()), error)
        if len(errors):
            _add_counts(self.error_reasons, pc.fill_null(errors, NO_REASON))
        self._add_samples(batch, kept, rejected)

        # 3. Distributions of the kept clips.
        batch = batch.filter(kept)
        if batch.num_rows == 0:
            return
        self.kept += batch.num_rows
        _add_counts(self.kinds, batch.column("kind"))
        _add_counts(self.categories, pc.fill_null(_column(batch, "category", pa.string()), NO_CATEGORY))
        self._add_durations(batch)
        self._add_words(batch)
        self._add_aesthetic(batch)
        self._add_resolution(batch)

    def _add_measure(self, batch, column: str, edges: list[float], into: str, missing: str) -> None:
        values = _numpy(batch, column)
        if values is None:
            setattr(self, missing, getattr(self, missing) + batch.num_rows)
            return
        known = values[~np.isnan(values)]
        setattr(self, missing, getattr(self, missing) + int(len(values) - len(known)))
        getattr(self, into)[:] += np.histogram(known, bins=edges)[0]

    def _add_samples(self, batch, kept, rejected) -> None:
        """Remember the first few clips of each category (kept) and each reject reason."""
        cols = ["clip_id", "source_path", "clip_path", "start_frame", "num_frames", "category", "reject_reason"]
        if any(c not in batch.schema.names for c in cols):
            return
        kinds = pc.utf8_trim_whitespace(pc.list_element(
            pc.split_pattern(pc.fill_null(batch.column("reject_reason"), NO_REASON), ":", max_splits=1), 0))
        for flag, prefix, keys in ((kept, "category", pc.fill_null(batch.column("category"), NO_CATEGORY)),
                                   (rejected, "removed", kinds)):
            for key in pc.unique(pc.filter(keys, flag)).to_pylist():
                group = self.samples.setdefault(f"{prefix}: {key}", [])
                if len(group) >= THUMBS_PER_GROUP:
                    continue
                rows = batch.filter(pc.and_(flag, pc.equal(keys, key))).select(cols).slice(0, THUMBS_PER_GROUP)
                group.extend(rows.to_pylist()[:THUMBS_PER_GROUP - len(group)])

    def _add_durations(self, batch: pa.RecordBatch) -> None:
        # Images have no length: durations and hours are of video clips only.
        is_video = pc.equal(batch.column("kind"), "video").to_numpy(zero_copy_only=False)
        if not is_video.any():
            return
        seconds = clip_seconds(pa.Table.from_batches([batch]))
        seconds = pc.fill_null(pc.cast(seconds, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)[is_video]
        known = seconds[~np.isnan(seconds)]
        self.duration_unknown += int(len(seconds) - len(known))
        self.kept_seconds += float(known.sum())
        self.duration += np.histogram(known, bins=DURATION_EDGES)[0]

    def _add_words(self, batch: pa.RecordBatch) -> None:
        words = _column(batch, "caption_words", pa.int32())
        if "caption" in batch.schema.names:
            counted = pc.list_value_length(pc.utf8_split_whitespace(batch.column("caption")))
            words = pc.coalesce(words.cast(pa.int64()), counted.cast(pa.int64()))
        words = words.cast(pa.float64()).to_numpy(zero_copy_only=False)
        known = words[~np.isnan(words)].astype(np.int64)
        self.uncaptioned += int(len(words) - len(known))
        self.words += np.bincount(np.minimum(known, MAX_WORDS), minlength=MAX_WORDS + 1)

    def _add_aesthetic(self, batch: pa.RecordBatch) -> None:
        score = _numpy(batch, "aesthetic")
        if score is None:
            self.unscored += batch.num_rows
            return
        known = score[~np.isnan(score)]
        self.unscored += int(len(score) - len(known))
        self.aesthetic += [int((known < 4).sum()), int(((known >= 4) & (known <= 6)).sum()), int((known > 6).sum())]

    def _add_resolution(self, batch: pa.RecordBatch) -> None:
        width, height = _numpy(batch, "width"), _numpy(batch, "height")
        if width is None or height is None:
            self.resolution_unknown += batch.num_rows
            return
        short = np.minimum(width, height)  # NaN when either side is unknown
        known = short[~np.isnan(short)]
        self.resolution_unknown += int(len(short) - len(known))
        bins = np.digitize(known, RESOLUTION_EDGES[1:])  # 0 .. len(labels) - 1
        self.resolution += np.bincount(bins, minlength=len(RESOLUTION_LABELS))

    def as_dict(self) -> dict:
        removed = dict(sorted(self.removed.items(), key=lambda kv: (-kv[1], kv[0])))
        return {
            "name": self.name,
            "path": self.path,
            "totals": {
                "sources": len(self.sources),
                "clips": self.rows,
                "kept": self.kept,
                "rejected": sum(removed.values()),
                "errors": self.errors,
                "kept_videos": self.kinds.get("video", 0),
                "kept_images": self.kinds.get("image", 0),
                "hours_kept": self.kept_seconds / 3600.0,
            },
            "funnel": {"input": self.rows, "removed": removed, "errors": self.errors, "kept": self.kept},
            "category": dict(sorted(self.categories.items(), key=lambda kv: (-kv[1], kv[0]))),
            "duration_s": _histogram(DURATION_LABELS, self.duration, self.duration_unknown, DURATION_EDGES),
            "caption_words": _histogram(WORD_LABELS, self.words, self.uncaptioned),
            "aesthetic": _histogram(AESTHETIC_BUCKETS, self.aesthetic, self.unscored),
            "resolution": _histogram(RESOLUTION_LABELS, self.resolution, self.resolution_unknown,
                                     RESOLUTION_EDGES + [math.inf]),
            "text_area": _histogram(TEXT_LABELS, self.text, self.untexted, TEXT_EDGES),
            "motion": _histogram(MOTION_LABELS, self.motion, self.unmoved, MOTION_EDGES),
            "detector": dict(sorted(self.detectors.items())),
            "error_reasons": dict(sorted(self.error_reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        }


def _histogram(labels: list[str], counts: np.ndarray, unknown: int, edges: list[float] | None = None) -> dict:
    total = int(counts.sum())
    out = {
        "labels": labels,
        "counts": [int(c) for c in counts],
        "percent": [100.0 * int(c) / total if total else 0.0 for c in counts],
        UNKNOWN: int(unknown),
    }
    if edges is not None:
        out["edges"] = [None if math.isinf(e) else e for e in edges]
    return out


def manifest_stats(path: str | os.PathLike, name: str | None = None, batch_size: int = 65536,
                   samples: bool = False) -> dict:
    """Statistics of one manifest (a file, a part folder or a stage's output folder), streamed."""
    resolved = resolve_manifest(path, "clips")
    stats = ManifestStats(name or _default_name(Path(path)), str(resolved))
    for batch in iter_manifest_batches(resolved, "clips", batch_size=batch_size):
        stats.add(batch)
    out = stats.as_dict()
    out["sources_table"] = _sources(resolved)
    out["stages"] = _stages(resolved)
    if samples:
        out["samples"] = stats.samples  # a few rows per group, for thumbnails
    return out


def _sources(manifest: Path) -> dict | None:
    """The `videos` table beside a clips manifest: input files, ok, failed with their reasons."""
    videos = manifest.parent / "videos.parquet" if manifest.suffix == ".parquet" else manifest / "videos.parquet"
    if not videos.is_file():
        return None
    import pyarrow.parquet as pq

    tbl = pq.read_table(videos, columns=["source_path", "status", "error", "num_clips"])
    failed = tbl.filter(pc.equal(tbl.column("status"), STATUS_ERROR))
    return {
        "files": tbl.num_rows,
        "ok": tbl.num_rows - failed.num_rows,
        "error": failed.num_rows,
        "clips_kept_by_scenes": int(pc.sum(tbl.column("num_clips")).as_py() or 0),
        "failed": [{"source": os.path.basename(r["source_path"]), "error": r["error"]} for r in failed.to_pylist()],
    }


def _stages(manifest: Path) -> list[dict] | None:
    """Which stages made the manifest, which were skipped and why (its summary.json)."""
    folder = manifest.parent if manifest.suffix == ".parquet" else manifest
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return [{"stage": s.get("stage"), "ran": s.get("ran"), "why": s.get("why")} for s in summary.get("stages", [])]


def _default_name(path: Path) -> str:
    if path.name == "clips.parquet" or (path.is_file() and path.stem.startswith("part-")):
        return path.parent.name
    return path.stem if path.suffix == ".parquet" else path.name


# ----------------------------------------------------------------------------------------------
# Charts


@dataclass
class Chart:
    key: str
    title: str
    xlabel: str


CHARTS = [
    Chart("funnel", "Filter funnel: where the clips went", "clips"),
    Chart("category", "Category distribution (kept clips)", "category"),
    Chart("duration_s", "Clip duration (kept video clips)", "seconds"),
    Chart("caption_words", "Caption length (kept captioned clips)", "words"),
    Chart("aesthetic", "Aesthetic score buckets (kept scored clips)", "LAION aesthetic score"),
    Chart("resolution", "Resolution by short side (kept clips)", "short side"),
    Chart("text_area", "Text area: share of the frame under detected text (measured clips)", "text area"),
    Chart("motion", "Motion: mean optical flow (measured clips)", "px / frame at 128 px"),
    Chart("detector", "Shot detector (clips)", "detector"),
]


def series_names(stats: list[dict], key: str) -> list[str]:
    """One name per value list `_series` returns: the manifests, then any published reference."""
    return [s["name"] for s in stats] + (list(PAPER_AESTHETIC) if key == "aesthetic" else [])


def _series(stats: list[dict], key: str) -> tuple[list[str], list[list[float]], str]:
    """Bar labels, one value list per manifest (then published references), the y-axis label."""
    compare = len(stats) > 1
    if key == "funnel":
        reasons: list[str] = []
        for s in stats:
            reasons += [r for r in s["funnel"]["removed"] if r not in reasons]
        labels = ["input", *[f"removed: {r}" for r in reasons], "errors", "kept"]
        values = [[s["funnel"]["input"], *[s["funnel"]["removed"].get(r, 0) for r in reasons],
                   s["funnel"]["errors"], s["funnel"]["kept"]] for s in stats]
        return labels, values, "clips"
    if key in ("category", "detector"):
        totals: dict[str, float] = {}
        for s in stats:
            whole = max(1, sum(s[key].values()))
            for c, v in s[key].items():
                totals[c] = totals.get(c, 0.0) + v / whole
        labels = sorted(totals, key=lambda c: (-totals[c], c))
        counts = [[s[key].get(c, 0) for c in labels] for s in stats]
    else:
        labels = stats[0][key]["labels"]
        counts = [s[key]["counts"] for s in stats]
    if key == "aesthetic":
        # Beside the paper's published buckets (App. B, Fig. 9a): shares, whatever the count.
        values = [[100.0 * c / sum(row) if sum(row) else 0.0 for c in row] for row in counts]
        return labels, values + list(PAPER_AESTHETIC.values()), "% of scored clips"
    if not compare:
        return labels, counts, "clips"
    # Corpora of different sizes compare by share, as App. B, Fig. 9 does.
    values = [[100.0 * c / sum(row) if sum(row) else 0.0 for c in row] for row in counts]
    return labels, values, "% of counted clips"


def render_chart(stats: list[dict], chart: Chart) -> bytes:
    """One grouped bar chart (one colour per manifest) as PNG bytes.

    Labels and names are user text (categories, folder names): never parsed as mathtext, so a
    `$$` in a category is drawn as it is written.
    """
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        return _render_chart(stats, chart)


def _render_chart(stats: list[dict], chart: Chart) -> bytes:
    from matplotlib.figure import Figure  # Agg canvas, no pyplot state: safe in any process

    labels, values, ylabel = _series(stats, chart.key)
    names = series_names(stats, chart.key)
    horizontal = chart.key in ("funnel", "category", "detector")
    height = max(3.2, 0.32 * len(labels) + 1.2) if horizontal else 3.6
    fig = Figure(figsize=(8.0, height), dpi=96, layout="constrained")
    ax = fig.add_subplot()
    k = len(values)
    width = 0.8 / k
    positions = np.arange(len(labels), dtype=float)
    for i, (name, row) in enumerate(zip(names, values)):
        offset = positions - 0.4 + width * (i + 0.5)
        # Published references are hatched: they are the paper's numbers, not this corpus's.
        style = {"hatch": "//", "alpha": 0.6} if i >= len(stats) else {}
        if horizontal:
            ax.barh(offset, row, height=width, label=name, **style)
        else:
            ax.bar(offset, row, width=width, label=name, **style)
    if horizontal:
        ax.set_yticks(positions, labels)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        rotate = 60 if len(labels) > 12 or max((len(x) for x in labels), default=0) > 6 else 0
        ax.set_xticks(positions, labels, rotation=rotate, ha="right" if rotate else "center", fontsize=8)
        ax.set_xlabel(chart.xlabel)
        ax.set_ylabel(ylabel)
    ax.set_title(chart.title, fontsize=11)
    if k > 1:
        ax.legend(fontsize=8)
    if not any(any(row) for row in values[:len(stats)]):
        ax.text(0.5, 0.5, not_measured(stats, chart.key), ha="center", va="center", transform=ax.transAxes,
                fontsize=9, bbox={"facecolor": "white", "edgecolor": "#999", "alpha": 0.9})
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# The HTML page

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }}
img.chart {{ max-width: 100%; }}
img.thumb {{ height: 72px; margin: 0 0.5em 0.5em 0; border: 1px solid #ccc; }}
td.why {{ text-align: left; max-width: 40em; }}
</style>
</head>
<body data-charts="pending">
<h1>{title}</h1>
<p>Distributions describe kept clips; the funnel counts every row.</p>
<h2>Totals</h2>
{totals}
<h2>Funnel</h2>
{funnel}
{pipeline}
{figures}
{thumbs}
<script>
// Marks each chart as decoded or not, so a headless browser can check the page from its DOM.
window.addEventListener("load", function () {{
  var charts = document.querySelectorAll("img.chart");
  var drawn = 0;
  charts.forEach(function (img) {{
    var ok = img.complete && img.naturalWidth > 0 && img.naturalHeight > 0;
    img.setAttribute("data-drawn", ok ? "yes" : "no");
    if (ok) drawn += 1;
  }});
  document.body.setAttribute("data-charts", drawn + "/" + charts.length);
}});
</script>
</body>
</html>
"""


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            v = f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        elif isinstance(v, int):
            v = f"{v:,}"
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# The column each chart needs, and the stage that writes it.
MEASURED_BY = {"aesthetic": ("aesthetic", "clip"), "caption_words": ("caption", "caption"),
               "text_area": ("text_area", "text_area"), "motion": ("motion", "motion"),
               "detector": ("detector", "scenes")}


def not_measured(stats: list[dict], key: str) -> str:
    """What an empty chart means: a stage that was skipped (and why), or nothing to count."""
    if key in MEASURED_BY:
        _, stage = MEASURED_BY[key]
        for s in stats:
            for record in s.get("stages") or []:
                if record["stage"] == stage and not record["ran"]:
                    return f"not measured here: stage '{stage}' was skipped (why: see Stages)"
            if s.get("stages") is not None and not any(r["stage"] == stage for r in s["stages"]):
                return f"not measured: stage '{stage}' is not in this pipeline"
        return f"not measured: no clip has a value (stage '{stage}' did not run on these clips)"
    return "nothing to count"


def _distribution_table(stats: list[dict], key: str) -> str:
    labels, values, unit = _series(stats, key)
    header = [key] + [f"{name} ({unit})" for name in series_names(stats, key)]
    rows = [[label, *[row[i] for row in values]] for i, label in enumerate(labels)]
    if key not in ("category", "detector"):
        rows.append([UNKNOWN, *[s[key][UNKNOWN] for s in stats], *([""] * (len(values) - len(stats)))])
    return _table(header, rows)


def render_html(stats: list[dict], charts: dict[str, bytes], title: str = "Corpus report",
                thumbs: dict | None = None) -> str:
    names = [s["name"] for s in stats]
    total_keys = ["sources", "clips", "kept", "rejected", "errors", "kept_videos", "kept_images", "hours_kept"]
    totals = _table(["", *names], [[k, *[s["totals"][k] for s in stats]] for k in total_keys])
    funnel_labels, funnel_values, _ = _series(stats, "funnel")
    funnel = _table(["", *names], [[label, *[row[i] for row in funnel_values]]
                                   for i, label in enumerate(funnel_labels)])
    figures = []
    for chart in CHARTS:
        data = base64.b64encode(charts[chart.key]).decode("ascii")
        # The funnel's numbers are the table above; the other charts carry theirs underneath.
        caption = "" if chart.key == "funnel" else (
            f"<figcaption><details><summary>data</summary>{_distribution_table(stats, chart.key)}"
            f"</details></figcaption>")
        figures.append(
            f'<h2>{html.escape(chart.title)}</h2>\n<figure id="chart-{chart.key}">'
            f'<img class="chart" alt="{html.escape(chart.title)}" src="data:image/png;base64,{data}">'
            f"{caption}</figure>"
        )
    return _PAGE.format(title=html.escape(title), totals=totals, funnel=funnel, pipeline=_pipeline_html(stats),
                        figures="\n".join(figures), thumbs=_thumbs_html(stats, thumbs or {}))


def _pipeline_html(stats: list[dict]) -> str:
    """Per manifest: the stages that ran and those skipped (why), the input files and failures."""
    parts = []
    for s in stats:
        name = html.escape(s["name"])
        if s.get("stages"):
            rows = "".join(
                f"<tr><td>{html.escape(str(r['stage']))}</td><td>{'ran' if r['ran'] else 'skipped'}</td>"
                f"<td class=\"why\">{html.escape(r['why'] or '')}</td></tr>" for r in s["stages"])
            parts.append(f"<h2>Stages: {name}</h2><table><thead><tr><th>stage</th><th></th><th>why</th></tr>"
                         f"</thead><tbody>{rows}</tbody></table>")
        src = s.get("sources_table")
        if src:
            failed = "".join(f"<tr><td>{html.escape(f['source'])}</td><td class=\"why\">{html.escape(f['error'] or '')}</td></tr>"
                             for f in src["failed"])
            parts.append(
                f"<h2>Sources: {name}</h2><p>{src['files']} input files: {src['ok']} read and split, "
                f"{src['error']} failed (each is an error row in the funnel above).</p>"
                + (f"<table><thead><tr><th>failed source</th><th>reason</th></tr></thead><tbody>{failed}</tbody></table>"
                   if failed else ""))
    return "\n".join(parts)


def _thumbs_html(stats: list[dict], thumbs: dict[str, dict[str, list[bytes]]]) -> str:
    if not any(thumbs.values()):
        return ""
    parts = ["<h2>Sample clips</h2><p>First, middle and last frame of a few clips per category (kept) "
             "and per reject reason: what each filter removed.</p>"]
    for s in stats:
        groups = thumbs.get(s["name"], {})
        for group, strips in sorted(groups.items()):
            imgs = "".join(f'<img class="thumb" alt="{html.escape(group)}" '
                           f'src="data:image/jpeg;base64,{base64.b64encode(b).decode("ascii")}">' for b in strips)
            parts.append(f"<h3>{html.escape(s['name'])}: {html.escape(group)}</h3><div>{imgs}</div>")
    return "\n".join(parts)


def thumbnail_strip(row: dict, height: int = 72) -> bytes | None:
    """First, middle and last frame of a clip side by side, as JPEG bytes (None: not decodable)."""
    from PIL import Image

    from lavie.curate.video import frame_positions, read_frames

    try:
        n = int(row["num_frames"] or 0)
        path = row["clip_path"] or row["source_path"]
        first = 0 if row["clip_path"] else int(row["start_frame"] or 0)
        frames = read_frames(path, [first + o for o in frame_positions(n, 3)])  # (3, H, W, 3)
    except Exception:  # a clip that cannot be decoded shows no strip; its row says why
        return None
    h, w = frames.shape[1:3]
    size = (max(2, round(w * height / h)), height)
    strip = Image.new("RGB", (size[0] * len(frames), height))
    for i, f in enumerate(frames):
        strip.paste(Image.fromarray(f).resize(size), (i * size[0], 0))
    buf = io.BytesIO()
    strip.save(buf, format="JPEG", quality=80)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Entry point


def build_report(
    manifests: list[str | os.PathLike],
    names: list[str] | None = None,
    out_dir: str | os.PathLike = "report",
    title: str = "Corpus report",
    batch_size: int = 65536,
    thumbnails: bool = True,
) -> dict:
    """Write stats.json, one PNG per chart and report.html for `manifests`, compared side by side.

    Returns the content of stats.json, with `files` naming what was written (relative to out_dir).
    """
    if not manifests:
        raise ValueError("build_report needs at least one manifest")
    if names is not None and len(names) != len(manifests):
        raise ValueError(f"names has {len(names)} entries for {len(manifests)} manifests; give one per manifest")
    if names is None:
        names = _unique_names([_default_name(Path(m)) for m in manifests])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    stats = [manifest_stats(m, n, batch_size=batch_size, samples=thumbnails) for m, n in zip(manifests, names)]
    charts = {chart.key: render_chart(stats, chart) for chart in CHARTS}
    files = {"stats": "stats.json", "html": "report.html"}
    for key, png in charts.items():
        _write_atomic(out_dir / f"{key}.png", png)
        files[key] = f"{key}.png"
    thumbs = {}
    if thumbnails:
        for st in stats:
            groups = {}
            for group, rows in st.get("samples", {}).items():
                strips = [b for b in (thumbnail_strip(r) for r in rows) if b is not None]
                if strips:
                    groups[group] = strips
            thumbs[st["name"]] = groups
    _write_atomic(out_dir / "report.html", render_html(stats, charts, title, thumbs).encode("utf-8"))
    for st in stats:
        st.pop("samples", None)  # decoded into the page; the JSON keeps counts only
    report = {"title": title, "distributions_of": "kept clips", "manifests": stats, "files": files}
    _write_atomic(out_dir / "stats.json", json.dumps(report, indent=2).encode("utf-8"))
    return report


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
