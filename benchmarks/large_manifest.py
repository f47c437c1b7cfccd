"""Large manifests: the cheap filters against DuckDB, and `report`, over 100k and 1M rows.

A synthetic clips manifest (written in chunks, never held whole) is filtered two ways, each in a
process of its own, timed end to end *including process start* (what a user waits for):

- ours: `lavie-curate filter IN -o OUT --cheap-only` (the vectorised Arrow rules, in-process);
- peer: the `duckdb` CLI-equivalent Python client applying the same predicates (resolution,
  frames, aesthetic floor, caption words, error rows) in SQL and writing the same Parquet
  (`COPY ... TO ... (FORMAT parquet)`), the tool a user would reach for instead.

Then `lavie-curate report` over our output. Prints seconds and rows/s per size, the ratio of our
time to DuckDB's (target <= 2x on 1M rows), whether both kept the same rows, peak RSS of our
filter process and its growth from 100k to 1M rows (target < 2x).

    pip install duckdb   # the peer; not a dependency of the toolkit
    python benchmarks/large_manifest.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lavie.curate.manifest import clip_id_for, conform

CATEGORIES = ["Ads and Commercials", "Animation", "Branded Content", "Comedy", "Documentary",
              "Experimental", "Music", "Narrative", "Sports", "Travel"]


def write_synthetic(path: Path, rows: int, chunk: int = 100_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    writer = None
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        idx = np.arange(start, start + n)
        video = idx // 8
        heights = rng.choice([360, 480, 720, 1080, 2160], size=n, p=[0.15, 0.15, 0.3, 0.3, 0.1])
        frames = rng.integers(8, 600, size=n)
        fps = np.full(n, 25.0)
        words = rng.integers(1, 25, size=n)
        tbl = conform(pa.table({
            "clip_id": [clip_id_for(f"v{v}", int(i), int(i) + 1) for v, i in zip(video, idx)],
            "video_id": [f"v{v}" for v in video],
            "kind": ["video"] * n,
            "source_path": [f"/raw/{CATEGORIES[v % 10]}/video_{v}.mp4" for v in video],
            "start_frame": idx * 0, "end_frame": frames, "num_frames": frames, "fps": fps,
            "start_s": np.zeros(n), "end_s": frames / fps,
            "width": (heights * 16 // 9).astype(np.int32), "height": heights.astype(np.int32),
            "category": [CATEGORIES[v % 10] for v in video],
            "status": np.where(rng.random(n) < 0.01, "error", "ok"),
            "keep": np.ones(n, dtype=bool),
            "aesthetic": rng.normal(5.0, 1.0, size=n),
            "caption": [" ".join(["word"] * int(w)) for w in words],
            "caption_words": words.astype(np.int32),
        }), "clips")
        if writer is None:
            writer = pq.ParquetWriter(path, tbl.schema)
        writer.write_table(tbl)
    writer.close()


OURS = """
import json, resource, sys
from lavie.curate.cli import main
code = main(["filter", sys.argv[1], "-o", sys.argv[2], "--cheap-only", "--no-progress"])
print(json.dumps({"code": code, "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# The same rules as FilterConfig's defaults that a probe-level manifest can trip: short side
# >= 720, frames >= 16 (videos), aesthetic >= 4, caption words >= 3; error rows never kept.
DUCKDB = """
import sys, duckdb
src, dst = sys.argv[1], sys.argv[2]
duckdb.sql(f\"\"\"
COPY (
  SELECT * REPLACE (
    (status <> 'error' AND NOT (
        coalesce(least(width, height) < 720, false)
     OR coalesce(num_frames < 16 AND kind <> 'image', false)
     OR coalesce(aesthetic < 4.0, false)
     OR coalesce(caption_words < 3, false))) AS keep,
    CASE
      WHEN status = 'error' THEN reject_reason
      WHEN least(width, height) < 720 THEN 'resolution: short side ' || least(width, height) || ' < 720'
      WHEN num_frames < 16 AND kind <> 'image' THEN 'frames: ' || num_frames || ' < 16'
      WHEN aesthetic < 4.0 THEN 'aesthetic: ' || round(aesthetic, 2) || ' < 4'
      WHEN caption_words < 3 THEN 'caption_words: ' || caption_words || ' < 3'
    END AS reject_reason)
  FROM read_parquet('{src}')
) TO '{dst}' (FORMAT parquet)
\"\"\")
"""

REPORT = """
import json, sys, time
from lavie.curate.report import build_report
t0 = time.perf_counter()
build_report([sys.argv[1]], ["filtered"], sys.argv[2], thumbnails=False)
print(json.dumps({"report_s": time.perf_counter() - t0}))
"""


def _timed(code: str, *args: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return seconds, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="lavie-bench-large-"))
    results = {}
    for n in sizes:
        manifest = work / f"clips_{n}.parquet"
        write_synthetic(manifest, n)
        ours_s, out = _timed(OURS, str(manifest), str(work / f"ours_{n}"))
        rss = json.loads(out.strip().splitlines()[-1])["maxrss_mib"]
        duck_s, _ = _timed(DUCKDB, str(manifest), str(work / f"duckdb_{n}.parquet"))
        report_s = json.loads(_timed(REPORT, str(work / f"ours_{n}"), str(work / f"report_{n}"))[1]
                              .strip().splitlines()[-1])["report_s"]
        a = pq.read_table(work / f"ours_{n}" / "clips.parquet", columns=["clip_id", "keep"])
        b = pq.read_table(work / f"duckdb_{n}.parquet", columns=["clip_id", "keep"])
        same = a.column("keep").to_pylist() == b.column("keep").to_pylist()
        results[n] = {"ours_s": ours_s, "duckdb_s": duck_s, "rss": rss}
        print(f"{n:>9} rows: lavie-curate filter {ours_s:6.2f} s ({n / ours_s:>9.0f} rows/s), duckdb {duck_s:6.2f} s "
              f"-> ratio {ours_s / duck_s:.2f}x (target <= 2x); same verdicts: {same}; "
              f"report {n / report_s:>9.0f} rows/s; peak RSS {rss:.0f} MiB", flush=True)
    if len(sizes) >= 2:
        a, b = results[sizes[0]], results[sizes[-1]]
        print(f"peak RSS growth {sizes[0]} -> {sizes[-1]} rows: {b['rss'] / a['rss']:.2f}x (target < 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
