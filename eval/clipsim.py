"""CLIPSIM (LaVie §4.3, MSR-VTT; as in GODIVA, NÜWA and Video LDM): for every frame, the cosine
similarity between the CLIP ViT-B/32 embedding of the frame and that of the prompt; the mean over
a video's frames is the video's score and the mean over videos is the set's.

Scale factor: 1. The figure is the plain cosine similarity (LaVie's Table 2 reports 0.2949), not
100 x max(cos, 0) as in CLIPScore. Frames go through the CLIP image processor saved with the model
(ViT-B/32: shortest side resized to 224 with bicubic interpolation, centre crop 224x224, CLIP's
mean and std); prompts through its tokenizer, truncated to its 77 tokens.

The model is a transformers CLIP folder or hub id (`openai/clip-vit-base-patch32`). The trainer's
validation scores its videos with the same `ClipSimilarity`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from .errors import InputError, TooFewVideos
from .videos import VideoSet, read_clip

logger = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
CLIP_SOURCE = (f"pass a local folder of CLIP ViT-B/32 saved by transformers (save_pretrained of {DEFAULT_CLIP}: "
               f"config.json, weights, tokenizer and preprocessor files), or its hub id on a machine that can reach the hub")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SCALE_FACTOR = 1.0


def check_clip_model(spec: str) -> str:
    """A local CLIP folder must hold config.json; a hub id passes (transformers resolves it). InputError otherwise."""
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"CLIP model folder {spec!r} has no config.json: {CLIP_SOURCE}")
        return spec
    if path.exists() or not HUB_ID.match(spec):
        raise InputError(f"CLIP model {spec!r}: no such folder; {CLIP_SOURCE}")
    return spec


class ClipSimilarity:
    """CLIPSIM with a transformers CLIP model, loaded once."""

    def __init__(self, model_name_or_path: str, device="cpu"):
        import torch
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        self.name = str(model_name_or_path)
        self.device = torch.device(device)
        self.model = CLIPModel.from_pretrained(model_name_or_path).eval().to(self.device)
        self.tokenizer = CLIPTokenizer.from_pretrained(model_name_or_path)
        self.processor = CLIPImageProcessor.from_pretrained(model_name_or_path)

    def frame_similarities(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        """frames (T, H, W, 3) uint8 -> (T,) cosine similarities of each frame with the prompt."""
        import torch

        with torch.inference_mode():
            pixels = self.processor(images=list(frames), return_tensors="pt").pixel_values.to(self.device)  # (T, 3, 224, 224)
            tokens = self.tokenizer([prompt], padding=True, max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt").input_ids.to(self.device)
            image = self.model.visual_projection(self.model.vision_model(pixel_values=pixels).pooler_output)  # (T, D)
            text = self.model.text_projection(self.model.text_model(input_ids=tokens).pooler_output)  # (1, D)
            image = image / image.norm(dim=-1, keepdim=True)
            text = text / text.norm(dim=-1, keepdim=True)
            return (image @ text.T)[:, 0].double().cpu().numpy() * SCALE_FACTOR

    def __call__(self, frames: np.ndarray, prompt: str) -> float:
        """The video's CLIPSIM: the mean over its frames."""
        return float(self.frame_similarities(frames, prompt).mean())


def load_clip_similarity(spec: str, device="cpu") -> ClipSimilarity:
    """`ClipSimilarity` or an InputError naming the model and how to supply it."""
    check_clip_model(spec)
    try:
        return ClipSimilarity(spec, device)
    except (OSError, ValueError) as err:
        raise InputError(f"CLIP model {spec!r} could not be loaded ({' '.join(str(err).split())[:300]}); {CLIP_SOURCE}") from None


def compute_clipsim(video_set: VideoSet, scorer: ClipSimilarity, num_frames: int | None = None, max_videos: int | None = None,
                    seed: int = 0, progress: bool = False) -> dict:
    """Mean CLIPSIM over the set's videos (each the mean over its frames), with a score per video.

    Every video needs a prompt (a generated folder's manifest, or a manifest's captions).
    `num_frames=None` scores every frame; otherwise the first `num_frames`.
    """
    from tqdm.auto import tqdm

    video_set = video_set.subset(max_videos, seed)
    missing = [v.key for v in video_set.videos if not v.prompt]
    if missing:
        raise InputError(f"{video_set.spec}: {len(missing)} videos have no prompt (first: {missing[0]}); CLIPSIM needs a folder "
                         f"written by lavie-eval generate or a captioned clips manifest")
    per_video, errors = [], []
    for video in tqdm(video_set.videos, desc="clipsim", disable=not progress):
        try:
            frames = read_clip(video, num_frames, clip_start="first")
        except ValueError as err:
            errors.append({"key": video.key, "error": f"{video.path}: {err}"})
            continue
        sims = scorer.frame_similarities(frames, video.prompt)
        per_video.append({"key": video.key, "prompt": video.prompt, "clipsim": float(sims.mean()), "frames": int(len(sims))})
    if not per_video:
        raise TooFewVideos(f"{video_set.spec}: no readable videos" + (f" (first error: {errors[0]['error']})" if errors else ""))
    scores = np.array([v["clipsim"] for v in per_video])
    return {"clipsim": float(scores.mean()), "clipsim_std": float(scores.std()), "scale_factor": SCALE_FACTOR,
            "videos": len(per_video), "read_errors": len(errors), "unusable_rows": len(video_set.unusable),
            "errors": errors[:20], "per_video": per_video}
