"""Captions from metadata a corpus already carries: titles, descriptions, shot lists, alt-text.

Real sources come with text about them. This stage reads it from a *sidecar* beside each source
video, or from one metadata table for the whole corpus, and gives each clip the text of the time
range it lies in:

- `<video>.txt` beside `<video>.mp4`: one caption for the whole video;
- `<video>.csv` beside it, or the corpus table `metadata` (CSV or Parquet), with columns
  `start_s,end_s,caption` (the corpus table also `source`: the video's path, relative to the
  table's folder): a caption per time range. A clip takes the range that covers most of it, if
  that is at least `min_overlap` of the clip's length.

`caption_source` records where each caption came from (`metadata:<file>`), next to the VLM's
`model:<id>`. Clips that already have a caption keep it unless `overwrite` is set.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from lavie.curate.filters import count_words
from lavie.curate.manifest import STATUS_ERROR
from lavie.curate.registry import register_stage
from lavie.curate.stage import ColumnStage, Resources, StageConfig


class MetadataCaptionConfig(StageConfig):
    metadata: str | None = None  # corpus table (CSV/Parquet: source,start_s,end_s,caption); null: sidecars only
    sidecars: bool = True  # look for <video>.txt / <video>.csv beside each source
    min_overlap: float = 0.5  # share of the clip a range must cover
    overwrite: bool = False


def _read_ranges(path: Path) -> list[tuple[float | None, float | None, str]]:
    """(start_s, end_s, caption) rows of a sidecar CSV (the source column, if any, is ignored)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return [(_float(r.get("start_s")), _float(r.get("end_s")), (r.get("caption") or "").strip())
                for r in csv.DictReader(fh)]


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def best_range(ranges, start: float | None, end: float | None, min_overlap: float) -> str | None:
    """The caption of the range covering most of [start, end), or None below `min_overlap`."""
    if start is None or end is None or end <= start:
        whole = [c for a, b, c in ranges if a is None and b is None and c]
        return whole[0] if whole else None
    best, best_cover = None, 0.0
    for a, b, caption in ranges:
        if not caption:
            continue
        a = start if a is None else a
        b = end if b is None else b
        cover = max(0.0, min(b, end) - max(a, start)) / (end - start)
        if cover > best_cover:
            best, best_cover = caption, cover
    return best if best_cover >= min_overlap else None


@register_stage("caption_metadata")
class MetadataCaptionStage(ColumnStage):
    """Adds `caption`, `caption_words` and `caption_source` from sidecar or corpus metadata."""

    Config = MetadataCaptionConfig
    RESOURCES = Resources(cpus=0.25, in_process=True)
    default_batch_size = 4096

    def __init__(self, config: MetadataCaptionConfig | None = None):
        super().__init__(config)
        self._sidecars: dict[str, tuple[list, str] | None] = {}
        self._table: dict[str, list] | None = None
        self._table_name = ""

    @classmethod
    def check_available(cls, config: MetadataCaptionConfig) -> str | None:
        if config.metadata and not os.path.isfile(config.metadata):
            return f"caption_metadata.metadata: no such file {config.metadata}"
        return None

    def setup(self) -> None:
        if self.config.metadata and self._table is None:
            self._table = self._load_table(Path(self.config.metadata))

    def _load_table(self, path: Path) -> dict[str, list]:
        """The corpus table grouped by resolved source path."""
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        else:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        self._table_name = path.name
        grouped: dict[str, list] = {}
        for r in rows:
            source = str(r.get("source") or "")
            if not source:
                continue
            full = Path(source) if Path(source).is_absolute() else path.parent / source
            grouped.setdefault(os.path.normpath(full), []).append(
                (_float(r.get("start_s")), _float(r.get("end_s")), str(r.get("caption") or "").strip()))
        return grouped

    def _sidecar(self, source: str) -> tuple[list, str] | None:
        if source not in self._sidecars:
            found = None
            stem = Path(source).with_suffix("")
            txt, table = stem.with_suffix(".txt"), stem.with_suffix(".csv")
            try:
                if table.is_file():
                    found = (_read_ranges(table), table.name)
                elif txt.is_file():
                    found = ([(None, None, txt.read_text(encoding="utf-8").strip())], txt.name)
            except (OSError, UnicodeDecodeError, csv.Error):
                found = None  # unreadable metadata is no metadata: the VLM may still caption
            self._sidecars[source] = found
        return self._sidecars[source]

    def columns(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        self.setup()
        n = len(batch["clip_id"])
        get = lambda name: batch[name] if name in batch else np.full(n, None, dtype=object)  # noqa: E731
        caption, words, source = list(get("caption")), list(get("caption_words")), list(get("caption_source"))
        status, keep = get("status"), get("keep")
        for i in range(n):
            has = caption[i] is not None and not (isinstance(caption[i], float) and np.isnan(caption[i]))
            rejected = keep[i] is not None and not bool(keep[i])
            if status[i] == STATUS_ERROR or rejected or (has and not self.config.overwrite):
                continue
            path = str(batch["source_path"][i])
            start = _float(batch["start_s"][i]) if "start_s" in batch else None
            end = _float(batch["end_s"][i]) if "end_s" in batch else None
            found = None
            if self._table is not None and os.path.normpath(path) in self._table:
                text = best_range(self._table[os.path.normpath(path)], start, end, self.config.min_overlap)
                found = (text, self._table_name) if text else None
            if found is None and self.config.sidecars:
                sidecar = self._sidecar(path)
                if sidecar is not None:
                    text = best_range(sidecar[0], start, end, self.config.min_overlap)
                    found = (text, sidecar[1]) if text else None
            if found is not None:
                caption[i], words[i], source[i] = found[0], count_words(found[0]), f"metadata:{found[1]}"
        return {"caption": caption, "caption_words": words, "caption_source": source}
