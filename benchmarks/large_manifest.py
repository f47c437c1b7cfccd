"""Large manifests: `filter` (model-free stages) and `report` streamed over 100k and 1M rows.

A synthetic clips manifest (written in chunks, never held whole) goes through the same code as
`lavie-curate filter --no-aesthetic` and `lavie-curate report`, each size in its own process so
that peak RSS is that run's alone (`ru_maxrss` of the child; Ray's worker processes hold only
one block at a time and are not counted). Prints rows/s and peak RSS per size and the growth of
peak RSS from 100k to 1M rows (target: < 2x).

    python benchmarks/large_manifest.py [--sizes 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


CHILD = """
import json, resource, sys, time
from lavie.curate.config import CurateConfig
from lavie.curate.jobs import CHEAP_FILTERS, filter_spec, run_clip_stages
from lavie.curate.report import build_report
manifest, out = sys.argv[1], sys.argv[2]
config = CurateConfig()
t0 = time.perf_counter()
summary = run_clip_stages(manifest, out + "/filtered", [filter_spec(config, CHEAP_FILTERS + ["aesthetic"])],
                          config, "filter", progress=False)
t1 = time.perf_counter()
build_report([out + "/filtered"], ["filtered"], out + "/report")
t2 = time.perf_counter()
print(json.dumps({"filter_s": t1 - t0, "report_s": t2 - t1, "rows": summary.rows, "kept": summary.kept,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


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
        out = work / f"out_{n}"
        proc = subprocess.run([sys.executable, "-c", CHILD, str(manifest), str(out)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[n] = r
        print(f"{n:>9} rows: filter {n / r['filter_s']:>9.0f} rows/s, report {n / r['report_s']:>9.0f} rows/s, "
              f"peak RSS {r['maxrss_mib']:.0f} MiB ({r['kept']} kept)", flush=True)
    if len(sizes) >= 2:
        a, b = results[sizes[0]], results[sizes[-1]]
        print(f"peak RSS growth {sizes[0]} -> {sizes[-1]} rows: {b['maxrss_mib'] / a['maxrss_mib']:.2f}x (target < 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
