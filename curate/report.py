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

        # 2. Distributions of the kept clips.
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

    def _add_durations(self, batch: pa.RecordBatch) -> None:
        # Images have no length: durations and hours are of video clips only.
        is_video = pc.equal(batch.column("kind"), "video").to_numpy(zero_copy_only=False)
        if not is_video.any():
            return
        columns = {c: _numpy(batch, c) for c in ("start_s", "end_s", "num_frames", "fps")}
        seconds = clip_seconds({k: v for k, v in columns.items() if v is not None}, batch.num_rows)[is_video]
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


def manifest_stats(path: str | os.PathLike, name: str | None = None, batch_size: int = 65536) -> dict:
    """Statistics of one manifest (a file, a part folder or a stage's output folder), streamed."""
    resolved = resolve_manifest(path, "clips")
    stats = ManifestStats(name or _default_name(Path(path)), str(resolved))
    for batch in iter_manifest_batches(resolved, "clips", batch_size=batch_size):
        stats.add(batch)
    return stats.as_dict()


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
]


def _series(stats: list[dict], key: str) -> tuple[list[str], list[list[float]], str]:
    """Bar labels, one value list per manifest, and the y-axis label."""
    compare = len(stats) > 1
    if key == "funnel":
        reasons: list[str] = []
        for s in stats:
            reasons += [r for r in s["funnel"]["removed"] if r not in reasons]
        labels = ["input", *[f"removed: {r}" for r in reasons], "errors", "kept"]
        values = [[s["funnel"]["input"], *[s["funnel"]["removed"].get(r, 0) for r in reasons],
                   s["funnel"]["errors"], s["funnel"]["kept"]] for s in stats]
        return labels, values, "clips"
    if key == "category":
        totals: dict[str, float] = {}
        for s in stats:
            kept = max(1, s["totals"]["kept"])
            for c, v in s["category"].items():
                totals[c] = totals.get(c, 0.0) + v / kept
        labels = sorted(totals, key=lambda c: (-totals[c], c))
        counts = [[s["category"].get(c, 0) for c in labels] for s in stats]
    else:
        labels = stats[0][key]["labels"]
        counts = [s[key]["counts"] for s in stats]
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
    horizontal = chart.key in ("funnel", "category")
    height = max(3.2, 0.32 * len(labels) + 1.2) if horizontal else 3.6
    fig = Figure(figsize=(8.0, height), dpi=96, layout="constrained")
    ax = fig.add_subplot()
    k = len(stats)
    width = 0.8 / k
    positions = np.arange(len(labels), dtype=float)
    for i, (s, row) in enumerate(zip(stats, values)):
        offset = positions - 0.4 + width * (i + 0.5)
        if horizontal:
            ax.barh(offset, row, height=width, label=s["name"])
        else:
            ax.bar(offset, row, width=width, label=s["name"])
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
    if not any(any(row) for row in values):
        ax.text(0.5, 0.5, "nothing to count", ha="center", va="center", transform=ax.transAxes)
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
</style>
</head>
<body data-charts="pending">
<h1>{title}</h1>
<p>Distributions describe kept clips; the funnel counts every row.</p>
<h2>Totals</h2>
{totals}
<h2>Funnel</h2>
{funnel}
{figures}
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


def _distribution_table(stats: list[dict], key: str) -> str:
    labels, values, unit = _series(stats, key)
    header = [key] + [f"{s['name']} ({unit})" for s in stats]
    rows = [[label, *[row[i] for row in values]] for i, label in enumerate(labels)]
    if key != "category":
        rows.append([UNKNOWN, *[s[key][UNKNOWN] for s in stats]])
    return _table(header, rows)


def render_html(stats: list[dict], charts: dict[str, bytes], title: str = "Corpus report") -> str:
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
    return _PAGE.format(title=html.escape(title), totals=totals, funnel=funnel, figures="\n".join(figures))


# ----------------------------------------------------------------------------------------------
# Entry point


def build_report(
    manifests: list[str | os.PathLike],
    names: list[str] | None = None,
    out_dir: str | os.PathLike = "report",
    title: str = "Corpus report",
    batch_size: int = 65536,
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

    stats = [manifest_stats(m, n, batch_size=batch_size) for m, n in zip(manifests, names)]
    charts = {chart.key: render_chart(stats, chart) for chart in CHARTS}
    files = {"stats": "stats.json", "html": "report.html"}
    for key, png in charts.items():
        _write_atomic(out_dir / f"{key}.png", png)
        files[key] = f"{key}.png"
    _write_atomic(out_dir / "report.html", render_html(stats, charts, title).encode("utf-8"))
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
