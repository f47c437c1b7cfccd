"""Training-clip throughput: `lavie.train.data.ClipDataset` against a naive loader, same clips, one run.

  ours    ClipDataset: PyAV seeks to the clip's frame range, decodes only up to its last wanted
          frame, swscale scales each frame straight to the crop's cover size, crop, [-1, 1]
  naive   decode the whole source file with PyAV at full resolution, take the clip's frames,
          torchvision resize + centre crop, [-1, 1]

The clips are virtual clips (source + frame range, as `lavie-curate scenes --virtual` writes
them) over the sample videos (1080p, 720p, 360p, portrait), 16 frames at 8 fps, 320x512. Both
loaders run in this process, one clip at a time, same order. Prints clips/s of each and the
ratio (target >= 2x).

    python benchmarks/dataloader.py [--clips 24] [--size 320x512]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from lavie.curate.manifest import conform, write_manifest
from lavie.curate.probe import probe
from lavie.curate.samples import make_samples
from lavie.train.curriculum import Ticket
from lavie.train.data import ClipDataset, ClipGeometry, frame_offsets, load_source


def virtual_clips(raw: Path, count: int, length: int = 48) -> list[dict]:
    """`count` virtual clip rows spread over the sample videos."""
    videos = sorted(raw.rglob("*.mp4"))
    infos = [(path, probe(path)) for path in videos]
    rows = []
    rng = np.random.default_rng(0)
    while len(rows) < count:
        for path, info in infos:
            frames = int(info.num_frames)
            start = int(rng.integers(0, max(1, frames - length)))
            rows.append({"clip_id": f"{path.stem}-{len(rows)}", "kind": "video", "source_path": str(path), "clip_path": None,
                         "start_frame": start, "end_frame": start + length, "num_frames": length, "fps": float(info.fps),
                         "width": int(info.width), "height": int(info.height), "status": "ok", "keep": True,
                         "caption": "a sample clip"})
    return rows[:count]


def naive_clip(row: dict, geometry: ClipGeometry) -> torch.Tensor:
    """Decode the whole file, keep the clip's frames, resize and crop with torchvision."""
    with av.open(row["source_path"]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    offsets = frame_offsets(row["num_frames"], row["fps"], geometry, np.random.default_rng(0))
    clip = torch.from_numpy(np.stack([frames[row["start_frame"] + o] for o in offsets])).permute(0, 3, 1, 2)  # (T, 3, H, W)
    scale = max(geometry.width / clip.shape[3], geometry.height / clip.shape[2])
    clip = TF.resize(clip, [round(clip.shape[2] * scale), round(clip.shape[3] * scale)], antialias=True)
    clip = TF.center_crop(clip, [geometry.height, geometry.width])
    return clip.permute(1, 0, 2, 3).float().div(127.5).sub(1.0)  # (3, T, H, W)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--size", default="320x512", help="HxW of a training clip")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    geometry = ClipGeometry(num_frames=16, target_fps=8.0, height=height, width=width, crop="center")

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        make_samples(raw)
        rows = virtual_clips(raw, args.clips)
        manifest = write_manifest(conform(rows, "clips"), Path(tmp) / "clips.parquet", "clips")
        source = load_source("clips", manifest, "video")
        dataset = ClipDataset([source], geometry)
        tickets = [Ticket(0, i, 0, "video") for i in range(len(source))]

        dataset.pixels(tickets[0])  # warm-up (imports, codec init) for both
        naive_clip(source.row(0), geometry)

        t0 = time.perf_counter()
        ours = [dataset.pixels(t) for t in tickets]
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = [naive_clip(source.row(t.row), geometry) for t in tickets]
        t_naive = time.perf_counter() - t0

    diff = max((a - b).abs().mean().item() for a, b in zip(ours, theirs))
    print(f"{len(tickets)} clips of 16x{height}x{width} from 1080p/720p/360p/portrait sources, torch threads {torch.get_num_threads()}")
    print(f"ClipDataset (seek + range decode + swscale): {len(tickets) / t_ours:7.2f} clips/s")
    print(f"naive (whole-file decode + torchvision):      {len(tickets) / t_naive:7.2f} clips/s")
    print(f"ratio: {t_naive / t_ours:.2f}x (target >= 2x); mean |difference| of the clips {diff:.3f} (scaler filters differ)")


if __name__ == "__main__":
    main()
