"""Motion: mean optical-flow magnitude of a clip (OpenCV DIS dense flow).

A text-to-video corpus wants clips that move: stills and slideshows teach a video model nothing
about motion, and clips that are all blur and flashes teach it noise. `motion` is measured on a
few pairs of consecutive frames spread over the clip (first, middle, last by default), each pair
decoded at a fixed analysis size (short side 128 px), so the value reads the same for every
source resolution: pixels per frame at that size. The `filter` stage applies the thresholds
(`min_motion`, default 0.02 px/frame: on the samples a held still and static colour bars measure
0.000-0.001, the slowest moving shots (a corner-logo channel, a slow fractal zoom) 0.06-0.6 and
flickering grain 4-5; `max_motion`, default 20 px/frame, a sixth of the analysis frame per frame).
"""

from __future__ import annotations

import numpy as np

from lavie.curate.frames import FrameStage, decode_size
from lavie.curate.registry import register_stage
from lavie.curate.stage import Resources, StageConfig

ANALYSIS_SHORT_SIDE = 128


class MotionConfig(StageConfig):
    pairs: int = 3  # frame pairs per clip, spread over it
    short_side: int = ANALYSIS_SHORT_SIDE  # analysis size (the thresholds are in its pixels)


def flow_magnitude(a: np.ndarray, b: np.ndarray) -> float:
    """Mean magnitude (px) of the dense optical flow from RGB frame `a` to `b`, `(H, W, 3)` uint8.

    DIS flow (Kroeger et al. 2016, OpenCV's medium preset): Farnebäck reports about 2 px of flow
    between two *identical* frames of flat colour bars, DIS reports 0.
    """
    import cv2

    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(ga, gb, None)  # (H, W, 2)
    return float(np.linalg.norm(flow, axis=-1).mean())


@register_stage("motion")
class MotionStage(FrameStage):
    """Adds `motion` (float64, px/frame at the analysis size) to each surviving clip."""

    Config = MotionConfig
    RESOURCES = Resources(cpus=1.0)
    default_batch_size = 16
    output_columns = ("motion",)

    def __init__(self, config: MotionConfig | None = None):
        super().__init__(config)
        if self.config.pairs < 1:
            raise ValueError(f"motion.pairs must be >= 1, got {self.config.pairs}")
        self.frames = self.config.pairs

    def frame_size(self, width, height):
        return decode_size(width, height, self.config.short_side)

    def frame_offsets(self, num_frames: int) -> list[int]:
        if num_frames < 2:
            raise ValueError("a clip of one frame has no motion")
        starts = np.linspace(0, num_frames - 2, self.config.pairs).round().astype(int)
        return [int(o) for s in starts for o in (s, s + 1)]  # pairs stay adjacent in the list

    def run(self, frames, rows, batch):
        values = []
        for clip in frames:  # (2k, H, W, 3): consecutive pairs
            pairs = [(clip[i], clip[i + 1]) for i in range(0, len(clip) - 1, 2)]
            values.append(float(np.mean([flow_magnitude(a, b) for a, b in pairs])))
        return {"motion": values}
