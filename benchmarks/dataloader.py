"""Training-clip throughput: `lavie.train.data.ClipDataset` against the loaders a user would pick
instead, on the same clips, in one run.

  ours        ClipDataset: PyAV seeks to the clip's frame range, decodes only up to its last
              wanted frame, swscale scales each frame straight to the crop's cover size, crop, [-1, 1]
  torchcodec  torchcodec's `VideoDecoder` (the decoder a PyTorch user picks), its default exact
              seek mode, frame-index access (`get_frames_at`) of the same frames, resized and
              cropped by the decoder itself (`transforms=[Resize, CenterCrop]`), [-1, 1];
              `torchcodec-approx` the same in approximate seek mode (no index scan on opening)
  naive       decode the whole source file with PyAV at full resolution, take the clip's frames,
              torchvision resize + centre crop, [-1, 1]

The clips are virtual clips (source + frame range, as `lavie-curate scenes --virtual` writes
them) over the sample videos (1080p, 720p, 360p, portrait), 16 frames at 8 fps, 320x512. All
loaders run in this process, clip by clip in turn, one decoding thread each. Prints
clips/s of each and the ratios (targets: >= 2x naive, >= 1.0x torchcodec).

torchcodec is optional: `pip install torchcodec` (it needs FFmpeg 4-8 shared libraries, e.g.
Debian's libavcodec59 / libavformat59 / libavfilter8 / libavdevice59 / libswscale6). Without it
its row says why.

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
from lavie.train.curriculum import Ticket
from lavie.train.data import ClipDataset, ClipGeometry, cover_size, frame_offsets, load_source


def virtual_clips(raw: Path, count: int, length: int = 48) -> list[dict]:
    """`count` virtual clip rows spread over the videos under `raw`."""
    videos = sorted(raw.rglob("*.mp4"))
    infos = [(path, probe(path)) for path in videos]
    rows = []
    rng = np.random.default_rng(0)
    while len(rows) < count:
        for path, info in infos:
            frames = int(info.num_frames)
            span = min(length, frames)
            start = int(rng.integers(0, max(1, frames - span)))
            rows.append({"clip_id": f"{path.stem}-{len(rows)}", "kind": "video", "source_path": str(path), "clip_path": None,
                         "start_frame": start, "end_frame": start + span, "num_frames": span, "fps": float(info.fps),
                         "width": int(info.width), "height": int(info.height), "status": "ok", "keep": True,
                         "caption": "a sample clip"})
    return rows[:count]


def write_clip_manifest(rows: list[dict], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_manifest(conform(rows, "clips"), folder / "clips.parquet", "clips")


def tickets(source) -> list[Ticket]:
    return [Ticket(0, i, 0, "video") for i in range(len(source))]


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


def torchcodec_unavailable() -> str | None:
    """Why torchcodec cannot decode here, or None."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401  (loads its FFmpeg libraries)
    except Exception as err:  # ImportError, or its core library failing to find FFmpeg
        return f"torchcodec not usable: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
    return None


def torchcodec_clip(row: dict, geometry: ClipGeometry, seek_mode: str = "exact") -> torch.Tensor:
    """The same frames through torchcodec: frame indices, decoder-side resize and crop. "exact"
    (its default) scans the file's index on opening; "approximate" trusts the header."""
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import CenterCrop, Resize

    w, h = cover_size(row["width"], row["height"], geometry.width, geometry.height)
    decoder = VideoDecoder(row["source_path"], seek_mode=seek_mode, num_ffmpeg_threads=1,
                           transforms=[Resize((h, w)), CenterCrop((geometry.height, geometry.width))])
    offsets = frame_offsets(row["num_frames"], row["fps"], geometry, np.random.default_rng(0))
    frames = decoder.get_frames_at([int(row["start_frame"]) + o for o in offsets]).data  # (T, 3, H, W) uint8
    return frames.permute(1, 0, 2, 3).float().div(127.5).sub(1.0)  # (3, T, H, W)


def compare(raw: Path, clips: int, size: tuple[int, int], num_frames: int = 16, scratch: Path | None = None,
            naive: bool = True) -> dict:
    """Clips/s of ClipDataset, torchcodec and (optionally) the naive loader on the same virtual
    clips over the videos under `raw`. Returns {"rows": [...], "notes": [...]}."""
    height, width = size
    geometry = ClipGeometry(num_frames=num_frames, target_fps=8.0, height=height, width=width, crop="center")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(scratch or tmp)
        rows = virtual_clips(raw, clips, length=max(48, 3 * num_frames))
        source = load_source("clips", write_clip_manifest(rows, folder), "video")
        dataset = ClipDataset([source], geometry)
        plain_rows = [source.row(t.row) for t in tickets(source)]
        loaders = {"ClipDataset": lambda i: dataset.pixels(tickets(source)[i])}
        missing = torchcodec_unavailable()
        if missing is None:
            loaders["torchcodec"] = lambda i: torchcodec_clip(plain_rows[i], geometry)
            loaders["torchcodec-approx"] = lambda i: torchcodec_clip(plain_rows[i], geometry, "approximate")
        if naive:
            loaders["naive"] = lambda i: naive_clip(plain_rows[i], geometry)
        for load in loaders.values():
            load(0)  # warm-up: imports, codec init
        # clip by clip, the loaders in turn: a busy machine slows them alike
        seconds, outputs = dict.fromkeys(loaders, 0.0), {name: [] for name in loaders}
        for i in range(len(plain_rows)):
            for name, load in loaders.items():
                t0 = time.perf_counter()
                outputs[name].append(load(i))
                seconds[name] += time.perf_counter() - t0
    n = len(plain_rows)
    table = [{"loader": name, "clips": n, "clips/s": round(n / s, 2), "ours/peer": round(s / seconds["ClipDataset"], 2)}
             for name, s in seconds.items()]
    notes = [f"{n} clips of {num_frames}x{height}x{width}, one decoding thread per loader, torch threads {torch.get_num_threads()}"]
    for name in loaders:
        if name != "ClipDataset":
            diff = max((a - b).abs().mean().item() for a, b in zip(outputs["ClipDataset"], outputs[name]))
            notes.append(f"mean |ClipDataset - {name}| {diff:.3f} (scaler filters differ)")
    if missing:
        table.append({"loader": "torchcodec", "clips": 0, "clips/s": None, "ours/peer": None})
        notes.append(missing)
    return {"rows": table, "notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--size", default="320x512", help="HxW of a training clip")
    args = parser.parse_args()
    height, width = map(int, args.size.split("x"))
    from lavie.curate.samples import make_samples

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        make_samples(raw)
        result = compare(raw, args.clips, (height, width), scratch=Path(tmp) / "manifest")
    print("sources: 1080p/720p/360p/portrait sample videos")
    for row in result["rows"]:
        rate = "unavailable" if row["clips/s"] is None else f"{row['clips/s']:7.2f} clips/s"
        ratio = "" if row["loader"] == "ClipDataset" or row["ours/peer"] is None else f"   ClipDataset / {row['loader']}: {row['ours/peer']:.2f}x"
        print(f"{row['loader']:<18} {rate}{ratio}")
    for note in result["notes"]:
        print(f"  {note}")
    print("targets: >= 2x naive, >= 1.0x torchcodec")


if __name__ == "__main__":
    main()
