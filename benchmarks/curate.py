"""Throughput of the model-backed curation chain: filter -> clip (aesthetic + category) -> caption.

Measured in one run, on the same generated clips and the same tiny models of the real
architectures (open_clip ViT + the LAION head, a Qwen2.5-VL captioner; built as the tests build
them, loaded through the stages' own code):
  loop     the stage objects called batch by batch in this process (`runner.run_in_process`)
  loop x2  the same in two spawned processes at once, each given half the clips: what two cores
           of this machine give when nothing is shared (two cores of a VM seldom give 2x)
  ray x1   the chain as one lazy Ray Dataset (`runner.run_on_ray`), one actor per model stage
  ray x2   the same with two actors per model stage
Every process runs torch on one thread, so "N workers" means N cores' worth of work; a stage's
actors are started and load their model inside the timed span, as in a real run.

Prints clips per second of each, the 2-worker scaling (target >= 1.7x on a 2-core machine) and
Ray at 1 worker against the loop (target >= 0.8x), and checks that all four agree on which
clips were kept and on their aesthetic scores.

    python benchmarks/curate.py [--clips 160] [--hidden 768] [--tokens 96] [--generate-batch 2]

About 8 minutes on 2 cores. Each Ray stage pays a few seconds to start its actors (a process,
imports, the model load), so the defaults give the captioner enough work per clip (~0.5 s) for
that to be small beside it, as a real VLM's is. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import os

# One thread per process (the driver's loop and each Ray actor), set before torch is imported:
# Ray workers inherit it, so N actors use N cores and nobody oversubscribes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch
from transformers import GenerationConfig

from lavie.curate import runner
from lavie.curate.manifest import STATUS_OK, conform
from lavie.curate.registry import get_stage

# The tiny-model builders live with the tests that pin their behaviour.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_curate_models import make_tiny_clip, make_tiny_head, make_tiny_qwen, write_clip  # noqa: E402

LOW_RES_EVERY = 6  # every 6th clip is 96x54: the resolution filter rejects it before the models


def make_rows(root: Path, count: int, frames: int) -> pa.Table:
    rows = []
    for i in range(count):
        size = (96, 54) if i % LOW_RES_EVERY == LOW_RES_EVERY - 1 else (128, 72)
        path = root / f"clip{i:04d}.mp4"
        write_clip(path, seed=i, frames=frames, size=size)
        rows.append(dict(clip_id=f"clip{i:04d}", kind="video", source_path=str(path), clip_path=str(path),
                         start_frame=0, end_frame=frames, num_frames=frames, fps=24.0, width=size[0],
                         height=size[1], status=STATUS_OK, error=None, keep=True, reject_reason=None,
                         category=None))
    return conform(rows, "clips")


def chain(root: Path, hidden: int, tokens: int, generate_batch: int = 2) -> list[runner.StagePlan]:
    clip = make_tiny_clip(root / "clip")["local_dir"]  # local-dir: loads in any process
    head = make_tiny_head(root)["pth"]
    captioner = make_tiny_qwen(root / "qwen", hidden=hidden, layers=4)
    # A random captioner may end a caption at any step; writing every token keeps the work per
    # clip fixed, as a real model's ~10-word captions roughly do.
    config = GenerationConfig.from_pretrained(captioner)
    config.min_new_tokens = tokens
    config.save_pretrained(captioner)
    plan = lambda name, batch, **args: runner.StagePlan(get_stage(name), get_stage(name).Config(**args),  # noqa: E731
                                                        batch_size=batch)
    return [
        plan("filter", 32, min_short_side=64, min_frames=16),
        plan("clip", 8, head=head, **clip),
        plan("caption", 8, model=captioner, max_new_tokens=tokens, generate_batch=generate_batch),
    ]


def loop(rows: pa.Table, plans: list[runner.StagePlan]) -> pa.Table:
    """The stage objects called batch by batch in this process."""
    torch.set_num_threads(1)
    batches = (rows.slice(i, 32) for i in range(0, rows.num_rows, 32))
    return pa.concat_tables([conform(b, "clips") for b in runner.run_in_process(batches, plans)],
                            promote_options="permissive")


def run_chain(rows: pa.Table, plans: list[runner.StagePlan], workers: int | None,
              processes: int = 1) -> tuple[dict, pa.Table]:
    """The whole chain over the table (None: the plain loop, in `processes` processes that each
    take an equal share); returns the seconds it took."""
    start = time.perf_counter()
    if workers is None and processes == 1:
        blocks = [loop(rows, plans)]
    elif workers is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        share = -(-rows.num_rows // processes)
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            blocks = list(pool.map(loop, [rows.slice(i, share) for i in range(0, rows.num_rows, share)],
                                   [plans] * processes))
    else:
        for p in plans:
            p.workers = workers if p.resources.holds_model else None
        blocks = runner.run_on_ray(rows, plans, rows_per_block=8)
    table = pa.concat_tables([conform(b, "clips") for b in blocks], promote_options="permissive")
    return {"chain": time.perf_counter() - start}, table.sort_by("clip_id")


def summary(table: pa.Table) -> dict:
    kept = [k is True for k in table.column("keep").to_pylist()]
    captions = table.column("caption").to_pylist()
    return {"kept": sum(kept), "captioned": sum(c is not None for c in captions),
            "errors": sum(s != STATUS_OK for s in table.column("status").to_pylist())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=160)
    ap.add_argument("--frames", type=int, default=32, help="frames per generated clip")
    ap.add_argument("--hidden", type=int, default=768, help="hidden size of the tiny captioner")
    ap.add_argument("--tokens", type=int, default=96, help="new tokens per caption")
    ap.add_argument("--generate-batch", type=int, default=2,
                    help="clips captioned together (more: each token's weight reads serve more clips, "
                         "so the work is bound by arithmetic rather than memory)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="lavie-bench-curate-") as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        specs = chain(root / "models", args.hidden, args.tokens, args.generate_batch)
        rows = make_rows(root / "clips", args.clips, args.frames)
        print(f"{args.clips} clips of {args.frames} frames; chain: {' -> '.join(p.name for p in specs)}; "
              f"captioner hidden {args.hidden}, {args.tokens} new tokens, {args.generate_batch} clips per generate")

        results = {}
        results["loop"] = run_chain(rows, specs, None)
        results["loop x2"] = run_chain(rows, specs, None, processes=2)
        runner.init_ray(num_cpus=os.cpu_count())
        try:
            results["ray x1"] = run_chain(rows, specs, 1)
            results["ray x2"] = run_chain(rows, specs, 2)
        finally:
            runner.shutdown_ray()

    totals = {name: sum(seconds.values()) for name, (seconds, _) in results.items()}
    for name, (seconds, table) in results.items():
        stages = "  ".join(f"{k} {v:5.1f} s" for k, v in seconds.items())
        print(f"{name:7s} {totals[name]:6.1f} s  {args.clips / totals[name]:5.2f} clips/s  ({stages})  "
              f"{summary(table)}")
    scaling, overhead = totals["ray x1"] / totals["ray x2"], totals["loop"] / totals["ray x1"]
    ceiling = totals["loop"] / totals["loop x2"]
    print(f"2-worker scaling: {scaling:.2f}x (target >= 1.7x)")
    print(f"this machine's own 2-process scaling (loop x2 / loop): {ceiling:.2f}x; "
          f"Ray reaches {scaling / ceiling:.0%} of it")
    print(f"ray x1 / loop:    {overhead:.2f}x (target >= 0.8x)")
    print(f"load average after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          f"(other work on the machine skews every figure)")

    # The three runs must agree on what they did, not only on how fast.
    ref = results["loop"][1]
    for name in ("loop x2", "ray x1", "ray x2"):
        table = results[name][1]
        assert summary(table) == summary(ref), (name, summary(table), summary(ref))
        for a, b in zip(ref.column("aesthetic").to_pylist(), table.column("aesthetic").to_pylist()):
            assert (a is None and b is None) or abs(a - b) < 1e-4, (name, a, b)


if __name__ == "__main__":
    main()
