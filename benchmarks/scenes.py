"""Scene-detection throughput on a 1080p video: `lavie-curate scenes` detection vs its peers.

Measured in one run, on the same file:
  ours    lavie.curate.scenes.detect_cuts, one worker (PyAV threaded decode + swscale to the
          detection size + PySceneDetect's AdaptiveDetector)
  stock   the stock CLI with the same detector: `scenedetect -i X detect-adaptive list-scenes`
  ffmpeg  decode only, `ffmpeg -i X -f null -` (the physical limit of decoding the file)

Prints frames per second of each, the two ratios (targets: >= 1.3x stock, >= 0.9x ffmpeg) and
checks that our cut list and the stock CLI's agree within +-1 frame. Each tool runs as its own
process and is timed end to end (process start included), best of --repeat runs.

Two more measurements, each in the same run as its peer:

- accuracy (`--accuracy`): precision, recall and F1 of the adaptive, content and TransNetV2
  detectors on the `lavie-curate samples` set (hard cuts, a dissolve, a fade; the matching rule
  of tests/test_scenes.py), with frames/s of each;
- end to end (`--end-to-end`): `lavie-curate scenes --virtual` on 4 x 20 s 1080p videos against
  the stock `scenedetect` CLI looped over the same files (process start, Ray and all).

    python benchmarks/scenes.py [--frames-per-shot 96] [--shots 10] [--repeat 3] [--accuracy] [--end-to-end]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lavie.curate.samples import SOURCES
from lavie.curate.video import ffmpeg_exe

SHOT_SOURCES = ["testsrc2", "smptehdbars", "gradients", "mandelbrot", "noise_red", "cellauto",
                "noise_green", "testsrc2", "gradients", "smptehdbars"]


def make_video(path: Path, shots: int, frames_per_shot: int) -> list[int]:
    """A 1920x1080 24 fps video of hard-cut shots; returns the true cut frames."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    graph, labels = [], []
    for i in range(shots):
        src = SOURCES[SHOT_SOURCES[i % len(SHOT_SOURCES)]].format(size="1920x1080", rate="24")
        cmd += ["-f", "lavfi", "-i", src]
        graph.append(f"[{i}:v]trim=end_frame={frames_per_shot},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[s{i}]")
        labels.append(f"[s{i}]")
    graph.append(f"{''.join(labels)}concat=n={shots}:v=1:a=0[v]")
    cmd += ["-filter_complex", ";".join(graph), "-map", "[v]", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "20", "-r", "24", str(path)]
    subprocess.run(cmd, check=True)
    return [i * frames_per_shot for i in range(1, shots)]


OURS = """
import json, sys
from fractions import Fraction
from lavie.curate.probe import probe
from lavie.curate.scenes import DetectConfig, detect_cuts
info = probe(sys.argv[1])
cuts, n = detect_cuts(info.source_path, Fraction(info.fps_num, info.fps_den), info.width, info.height, DetectConfig("adaptive"))
print(json.dumps({"cuts": cuts, "frames": n}))
"""


def timed(cmd: list[str], repeat: int, env: dict | None = None) -> tuple[float, str]:
    best, out = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {proc.stderr[-1000:]}")
        if elapsed < best:
            best, out = elapsed, proc.stdout
    return best, out


def stock_cuts(csv_path: Path) -> list[int]:
    with open(csv_path) as fh:
        rows = list(csv.reader(fh))
    header_at = next(i for i, r in enumerate(rows) if r and r[0] == "Scene Number")
    start_col = rows[header_at].index("Start Frame")
    # The CSV numbers frames from 1; ours count from 0.
    return [int(r[start_col]) - 1 for r in rows[header_at + 2:] if r]


ACCURACY = """
import json, sys, time
from fractions import Fraction
from pathlib import Path
from lavie.curate.probe import probe
from lavie.curate.scenes import DetectConfig, detect_cuts
root, detector = Path(sys.argv[1]), sys.argv[2]
truth = json.loads((root / "cuts.json").read_text())
transnet = None
if detector == "transnetv2":
    from lavie.curate.transnet import TransNetV2Detector
    transnet = TransNetV2Detector()
found, frames, t0 = {}, 0, time.perf_counter()
for name in truth:
    info = probe(root / name)
    cuts, n = detect_cuts(info.source_path, Fraction(info.fps_num, info.fps_den), info.width, info.height,
                          DetectConfig(detector), transnet=transnet)
    found[name], frames = cuts, frames + n
print(json.dumps({"found": found, "frames": frames, "seconds": time.perf_counter() - t0}))
"""


def match_cuts(detected, hard, gradual):
    """(tp, fp, fn): a hard cut within +-1 frame; a dissolve/fade [a, b] by any detection in
    [a-1, b+1] (a second detection in the same span is not a false positive)."""
    used, tp, fn = set(), 0, 0
    for cut in hard:
        hit = next((d for d in detected if abs(d - cut) <= 1 and d not in used), None)
        tp, fn = (tp + 1, fn) if hit is not None else (tp, fn + 1)
        if hit is not None:
            used.add(hit)
    for a, b in gradual:
        hits = [d for d in detected if a - 1 <= d <= b + 1 and d not in used]
        tp, fn = (tp + 1, fn) if hits else (tp, fn + 1)
        used.update(hits)
    return tp, sum(1 for d in detected if d not in used), fn


def accuracy() -> None:
    from lavie.curate.samples import make_samples

    root = Path(tempfile.mkdtemp(prefix="lavie-bench-acc-"))
    truth = make_samples(root)
    print(f"detector accuracy on the samples ({len(truth)} videos, "
          f"{sum(len(t['cuts']) + len(t['gradual']) for t in truth.values())} transitions):")
    for detector in ("adaptive", "content", "transnetv2"):
        _, out = timed([sys.executable, "-c", ACCURACY, str(root), detector], 1)
        r = json.loads(out.strip().splitlines()[-1])
        tp = fp = fn = 0
        for name, t in truth.items():
            a, b, c = match_cuts(r["found"][name], t["cuts"], t["gradual"])
            tp, fp, fn = tp + a, fp + b, fn + c
        p, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
        f1 = 2 * p * rec / max(1e-9, p + rec)
        print(f"  {detector:10s} precision {p:.2f} recall {rec:.2f} F1 {f1:.2f}  "
              f"{r['frames'] / r['seconds']:7.1f} frames/s (detection, model load excluded)")


def end_to_end(repeat: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="lavie-bench-e2e-"))
    raw = work / "raw"
    raw.mkdir()
    for i in range(4):
        make_video(raw / f"v{i}.mp4", 4, 120)  # 4 shots x 5 s at 24 fps = 20 s of 1080p
    bindir = Path(sys.executable).parent
    t_ours, _ = timed([str(bindir / "lavie-curate"), "scenes", str(raw), "-o", str(work / "out"), "--virtual",
                       "--no-progress"], 1)
    t_stock = 0.0
    for i in range(4):
        t, _ = timed([str(bindir / "scenedetect"), "-q", "-i", str(raw / f"v{i}.mp4"), "-o", str(work),
                      "detect-adaptive", "list-scenes", "-f", f"stock{i}.csv"], 1)
        t_stock += t
    print(f"end to end, 4 x 20 s 1080p: lavie-curate scenes --virtual {t_ours:.1f} s, scenedetect CLI looped "
          f"{t_stock:.1f} s -> speed ratio {t_stock / t_ours:.2f}x (target >= 1.0x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--frames-per-shot", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--video", type=Path, help="use this video instead of generating one")
    ap.add_argument("--accuracy", action="store_true", help="also: detector precision/recall/F1 on the samples")
    ap.add_argument("--end-to-end", action="store_true", help="also: scenes --virtual vs the looped stock CLI")
    ap.add_argument("--only", choices=["accuracy", "end-to-end"], help="run only this measurement")
    args = ap.parse_args()
    if args.accuracy or args.only == "accuracy":
        accuracy()
    if args.end_to_end or args.only == "end-to-end":
        end_to_end(args.repeat)
    if args.only:
        return 0

    work = Path(tempfile.mkdtemp(prefix="lavie-bench-scenes-"))
    video = args.video or work / "bench_1080p.mp4"
    truth = None
    if args.video is None:
        print(f"generating {args.shots} x {args.frames_per_shot} frames of 1920x1080 ...", flush=True)
        truth = make_video(video, args.shots, args.frames_per_shot)
    bindir = Path(sys.executable).parent
    scenedetect = str(bindir / "scenedetect")

    t_ours, out = timed([sys.executable, "-c", OURS, str(video)], args.repeat)
    ours = json.loads(out)
    frames = ours["frames"]
    t_stock, _ = timed([scenedetect, "-q", "-i", str(video), "-o", str(work), "detect-adaptive",
                        "list-scenes", "-f", "stock.csv"], args.repeat)
    t_ffmpeg, _ = timed([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(video),
                         "-f", "null", "-"], args.repeat)
    stock = stock_cuts(work / "stock.csv")

    fps = {name: frames / t for name, t in [("ours", t_ours), ("stock", t_stock), ("ffmpeg", t_ffmpeg)]}
    agree = len(stock) == len(ours["cuts"]) and all(abs(a - b) <= 1 for a, b in zip(stock, ours["cuts"]))
    print(f"video: {video.name}, {frames} frames 1920x1080, cpus={os.cpu_count()}")
    print(f"  lavie-curate detection : {fps['ours']:8.1f} frames/s  ({t_ours:.2f} s)")
    print(f"  scenedetect CLI        : {fps['stock']:8.1f} frames/s  ({t_stock:.2f} s)")
    print(f"  ffmpeg decode only     : {fps['ffmpeg']:8.1f} frames/s  ({t_ffmpeg:.2f} s)")
    print(f"ratio vs scenedetect CLI : {fps['ours'] / fps['stock']:.2f}x  (target >= 1.3x)")
    print(f"ratio vs ffmpeg decode   : {fps['ours'] / fps['ffmpeg']:.2f}x  (target >= 0.9x)")
    print(f"cuts ours  : {ours['cuts']}")
    print(f"cuts stock : {stock}")
    if truth is not None:
        print(f"cuts truth : {truth}")
    print(f"cut lists agree within +-1 frame: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
