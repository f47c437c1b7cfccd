"""Burned-in text and watermarks: the share of a frame covered by detected text (PP-OCR).

Vimeo25M is described as watermark-free (LaVie §4.1), and WebVid's watermark is the reason
LaVie fine-tunes on it last (App. C). `text_area` is the fraction of the frame inside the text
boxes that PP-OCR's text detector (the DB detector of PP-OCRv4, shipped with its trained weights
in the `rapidocr-onnxruntime` wheel and run by onnxruntime) finds, the maximum over a few frames
spread over the clip (first, middle, last): a caption shown for part of a clip still counts.
Only detection runs: nothing is read, so any script or a logo's lettering counts.

Frames are decoded at a short side of 736 px, the size PP-OCR's detector scales to anyway.
The `filter` stage rejects clips above `max_text_area` (default 0.005). Measured on the samples
(`lavie-curate samples`, 720p): clean shots 0 to 0.0012 (the fractal's edges), a corner channel
logo about 0.01, a subtitle line 0.033; the test pattern's small frame counter 0.001 to 0.02
depending on the size of the frame.
"""

from __future__ import annotations

import os

import numpy as np

from lavie.curate.frames import FrameStage, decode_size
from lavie.curate.registry import register_stage
from lavie.curate.stage import Resources, StageConfig


class TextAreaConfig(StageConfig):
    frames: int = 3  # frames per clip, spread over it; the clip's value is the max
    short_side: int = 736  # frames are decoded at this short side (never upscaled) for detection
    box_threshold: float = 0.5  # PP-OCR's detection box score floor
    threads: int = 1  # onnxruntime intra-op threads per worker


def rapidocr_unavailable() -> str | None:
    """Why the PP-OCR detector cannot load here, or None; loads nothing."""
    try:
        import rapidocr_onnxruntime
    except ImportError:
        return ("the text_area stage needs the rapidocr-onnxruntime package (its wheel ships the "
                "PP-OCR detection weights): pip install rapidocr-onnxruntime")
    model = os.path.join(os.path.dirname(rapidocr_onnxruntime.__file__), "models", "ch_PP-OCRv4_det_infer.onnx")
    if not os.path.isfile(model):
        return f"PP-OCR text detection weights not found at {model}; reinstall rapidocr-onnxruntime"
    return None


class TextDetector:
    """PP-OCRv4 text detection with the package's own pre- and post-processing."""

    def __init__(self, box_threshold: float = 0.5, threads: int = 1):
        from rapidocr_onnxruntime.ch_ppocr_det import TextDetector as _Detector
        from rapidocr_onnxruntime.main import DEFAULT_CFG_PATH, read_yaml, update_model_path

        reason = rapidocr_unavailable()
        if reason:
            raise FileNotFoundError(reason)
        config = update_model_path(read_yaml(str(DEFAULT_CFG_PATH)))["Det"]
        config.update(box_thresh=box_threshold, intra_op_num_threads=threads, inter_op_num_threads=1)
        self.detector = _Detector(config)

    def area(self, rgb: np.ndarray) -> float:
        """Fraction of `rgb` `(H, W, 3)` covered by text boxes (their union)."""
        import cv2

        h, w = rgb.shape[:2]
        boxes, _ = self.detector(np.ascontiguousarray(rgb[..., ::-1]))  # the detector takes BGR
        if boxes is None or len(boxes) == 0:
            return 0.0
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [np.round(b).astype(np.int32) for b in boxes], 1)
        return float(mask.mean())


@register_stage("text_area")
class TextAreaStage(FrameStage):
    """Adds `text_area` (float64, 0..1) to each surviving clip."""

    Config = TextAreaConfig
    RESOURCES = Resources(cpus=1.0, holds_model=True)
    default_batch_size = 16
    output_columns = ("text_area",)

    def __init__(self, config: TextAreaConfig | None = None):
        super().__init__(config)
        self.frames = self.config.frames
        self.detector = None

    @classmethod
    def check_available(cls, config: TextAreaConfig) -> str | None:
        return rapidocr_unavailable()

    def setup(self) -> None:
        self.detector = TextDetector(self.config.box_threshold, self.config.threads)

    def frame_size(self, width, height):
        return decode_size(width, height, self.config.short_side)

    def run(self, frames, rows, batch):
        if self.detector is None:
            self.setup()
        return {"text_area": [max(self.detector.area(f) for f in clip) for clip in frames]}
