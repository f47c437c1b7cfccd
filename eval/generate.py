"""Sampling a prompt set into an evaluation folder, sharded and resumable.

The folder holds
  generate.json    the run's settings (prompt file and its hash, seed, models, sampling options);
                   a re-run must match them, so one folder never mixes two models or recipes
  videos/<id>.mp4  one file per item, written to a temp name and renamed when complete
  parts/rank-<i>.jsonl  the rows process i finished, appended one line per video
  manifest.jsonl   every row, one per item in prompt order: the prompt -> file manifest

Items go to processes round robin (item k to process k mod N). A row is appended only after its
video is renamed into place, and an item counts as done when its row says ok and its file exists,
so a killed run loses at most the videos in flight and a re-run samples only what is missing.
File names are the items' ids, so a video can be rewritten but never duplicated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

from .errors import InputError
from .prompts import EvalItem

logger = logging.getLogger(__name__)

SETTINGS_FILE = "generate.json"
MANIFEST_FILE = "manifest.jsonl"
PARTS_DIR = "parts"
VIDEOS_DIR = "videos"
TEMP_MARK = ".partial"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_settings(out_dir: str | Path, settings: dict) -> dict:
    """Record `settings` in `out_dir/generate.json`, or check that the recorded ones match."""
    out_dir = Path(out_dir)
    path = out_dir / SETTINGS_FILE
    if path.is_file():
        try:
            recorded = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"{path} is not valid JSON ({err}); it records how the folder's videos were sampled") from None
        changed = [k for k in sorted(set(recorded) | set(settings)) if recorded.get(k) != settings.get(k)]
        if changed and read_rows(out_dir):  # a folder without videos yet takes the new settings
            k = changed[0]
            raise InputError(f"{out_dir} holds videos sampled with {k}={recorded.get(k)!r}, not {settings.get(k)!r}; "
                             f"re-run with the same settings to resume, or write to another folder")
        if not changed:
            return recorded
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return settings


def read_settings(out_dir: str | Path) -> dict | None:
    path = Path(out_dir) / SETTINGS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill: its video is sampled again
            continue
        if isinstance(row, dict) and "video_id" in row:
            rows.append(row)
    return rows


def read_rows(out_dir: str | Path) -> list[dict]:
    """Every row of the folder, one per video id, in prompt order. Of several rows of one video
    (a failed try, then a good one, maybe by another process) an ok row wins, then the latest."""
    out_dir = Path(out_dir)
    files = [out_dir / MANIFEST_FILE] + sorted((out_dir / PARTS_DIR).glob("rank-*.jsonl"))
    rank = lambda row: (row.get("status") == "ok", row.get("finished", 0.0))  # noqa: E731
    by_id: dict[str, dict] = {}
    for f in files:
        if f.is_file():
            for row in _read_jsonl(f):
                seen = by_id.get(row["video_id"])
                if seen is None or rank(row) >= rank(seen):
                    by_id[row["video_id"]] = row
    return sorted(by_id.values(), key=lambda r: (r.get("prompt_index", 0), r.get("sample", 0), r["video_id"]))


def finished_ids(out_dir: str | Path) -> set[str]:
    out_dir = Path(out_dir)
    return {r["video_id"] for r in read_rows(out_dir) if r.get("status") == "ok" and (out_dir / r["file"]).is_file()}


def _repair_part(path: Path) -> None:
    """Cut a line torn by a kill, so the next row starts on a line of its own."""
    if path.is_file() and path.stat().st_size:
        data = path.read_bytes()
        if not data.endswith(b"\n"):
            with open(path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)


def _append_row(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def clean_partials(out_dir: str | Path) -> int:
    """Remove videos left half-written by a killed run; returns how many."""
    stale = list((Path(out_dir) / VIDEOS_DIR).glob(f"*{TEMP_MARK}.mp4"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def write_manifest(out_dir: str | Path) -> Path:
    """Consolidate every process's rows into manifest.jsonl (atomic)."""
    out_dir = Path(out_dir)
    rows = read_rows(out_dir)
    path = out_dir / MANIFEST_FILE
    _write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def run_generate(items: list[EvalItem], out_dir: str | Path, sample: Callable, write_video: Callable, fps: int,
                 crf: int = 18, process_index: int = 0, num_processes: int = 1, barrier: Callable[[], None] | None = None,
                 progress: bool = True) -> dict:
    """Sample this process's share of `items` that are not done yet into `out_dir`.

    `sample(prompt, seed)` returns (T, H, W, 3) uint8 frames; `write_video(frames, path, fps, crf)`
    writes them. A video whose sampling raises becomes a row with status "error" and its reason,
    and the run goes on; a ValueError (a setting no prompt can satisfy) stops the run.
    Returns counts: items, done before, sampled now, errors now.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    barrier = barrier or (lambda: None)
    videos_dir, parts_dir = out_dir / VIDEOS_DIR, out_dir / PARTS_DIR
    videos_dir.mkdir(parents=True, exist_ok=True)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if process_index == 0:
        removed = clean_partials(out_dir)
        if removed:
            logger.info("removed %d half-written videos of an interrupted run", removed)
    barrier()  # no process writes before stale files are gone
    part = parts_dir / f"rank-{process_index}.jsonl"
    _repair_part(part)

    done = finished_ids(out_dir)
    mine = [it for k, it in enumerate(items) if k % num_processes == process_index and it.video_id not in done]
    counts = {"items": len(items), "done_before": len(done & {it.video_id for it in items}), "sampled": 0, "errors": 0}
    for item in tqdm(mine, desc=f"generate [{process_index + 1}/{num_processes}]", disable=not progress):
        final = videos_dir / f"{item.video_id}.mp4"
        row = {"video_id": item.video_id, "prompt": item.prompt, "prompt_index": item.prompt_index, "sample": item.sample,
               "seed": item.seed, "source": item.source, "file": f"{VIDEOS_DIR}/{final.name}", "process": process_index}
        start = time.perf_counter()
        try:
            frames = sample(item.prompt, item.seed)  # (T, H, W, 3)
        except ValueError:
            raise
        except Exception as err:  # one failed prompt (out of memory, a numerical failure) is a row, not a crash
            logger.warning("%s: sampling failed: %s", item.video_id, err)
            _append_row(part, {**row, "status": "error", "error": f"{type(err).__name__}: {' '.join(str(err).split())}",
                               "finished": time.time()})
            counts["errors"] += 1
            continue
        tmp = videos_dir / f"{item.video_id}.{process_index}{TEMP_MARK}.mp4"
        write_video(frames, tmp, fps, crf)
        os.replace(tmp, final)
        t, h, w = frames.shape[:3]
        _append_row(part, {**row, "status": "ok", "error": None, "num_frames": int(t), "height": int(h), "width": int(w),
                           "fps": fps, "seconds": round(time.perf_counter() - start, 3), "finished": time.time()})
        counts["sampled"] += 1
    barrier()
    if process_index == 0:
        write_manifest(out_dir)
    return counts
