"""The frame preprocessing of the paper's UCF-101 FVD (LaVie §4.3): 16 frames of 320x512, each
centre-cropped to 270x270 and resized to 224x224, the input size of I3D.

Other frame sizes keep the paper's proportion: the square crop's side is 270/320 (= 27/32) of
the frame's short side, rounded half up, centred (the top and left offsets rounded down). A
240x320 UCF-101 frame gets a 203x203 crop; a 16x16 frame a 14x14 one. The crop is resized with
bilinear interpolation, antialiased when it shrinks (`torch.nn.functional.interpolate`,
`align_corners=False`), and values go from uint8 [0, 255] to float [-1, 1] as v / 127.5 - 1,
the range the TorchScript I3D takes with `rescale=False`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PAPER_FRAME = (320, 512)  # (H, W) of the sampled videos
PAPER_CROP = 270  # side of the square centre crop of a 320x512 frame
I3D_SIZE = 224


def crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the square centre crop of a `height` x `width` frame."""
    if height < 1 or width < 1:
        raise ValueError(f"frame size {width}x{height} has no pixels")
    short = min(height, width)
    side = max(1, min(short, (short * PAPER_CROP * 2 + PAPER_FRAME[0]) // (2 * PAPER_FRAME[0])))  # round half up, integers only
    return (height - side) // 2, (width - side) // 2, side


def preprocess_video(frames: np.ndarray, size: int = I3D_SIZE) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (3, T, size, size) float32 in [-1, 1]: crop, resize, rescale."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    top, left, side = crop_box(frames.shape[1], frames.shape[2])
    crop = np.ascontiguousarray(frames[:, top : top + side, left : left + side])  # (T, s, s, 3)
    x = torch.from_numpy(crop).permute(0, 3, 1, 2).float()  # (T, 3, s, s)
    if side != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    return (x / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()  # (3, T, size, size)
