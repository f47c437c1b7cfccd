"""Writing sampled videos: mp4 through PyAV, and a PNG grid of frames."""

import math
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 8, codec: str = "libx264", crf: int = 18) -> Path:
    """Encode (T, H, W, 3) uint8 frames as H.264 in an mp4 (yuv420p, so H and W must be even)."""
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 with yuv420p needs an even frame size, got {w}x{h}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())  # flush the encoder
    return path


def write_grid(frames: np.ndarray, path: str | Path, columns: int = 8) -> Path:
    """All (T, H, W, 3) uint8 frames tiled row by row into one PNG."""
    t, h, w, _ = frames.shape
    columns = min(columns, t)
    rows = math.ceil(t / columns)
    grid = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = frame
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
