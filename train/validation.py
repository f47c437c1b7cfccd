"""Validation during training: fixed inputs sampled through `lavie.pipelines` into mp4s, scored
with CLIPSIM, the mean CLIP text-frame similarity LaVie reports on MSR-VTT (§4.2, ViT-B/32)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lavie.eval.clipsim import ClipSimilarity  # the CLIPSIM of lavie-eval, one implementation
from lavie.pipelines import InterpolationPipeline, TextToVideoPipeline, VideoSuperResolutionPipeline, to_uint8_frames, write_mp4

from .models import StageModels

logger = logging.getLogger(__name__)


def load_clip_similarity(spec: str | None, device) -> ClipSimilarity | None:
    """The CLIPSIM scorer, or None with one clear log line when the weights are not available."""
    if not spec:
        logger.info("CLIPSIM off: validation.clip_model is null")
        return None
    try:
        return ClipSimilarity(spec, device)
    except (OSError, ValueError) as err:
        logger.warning("CLIPSIM skipped: CLIP model %r is not available (%s); set validation.clip_model to a local "
                       "folder of CLIP ViT-B/32 (openai/clip-vit-base-patch32) to score validation videos",
                       spec, str(err).splitlines()[0])
        return None


def stage_pipeline(stage: str, models: StageModels, unet):
    """A sampling pipeline around the training components (the UNet in its current weights)."""
    parts = dict(tokenizer=models.tokenizer, text_encoder=models.text_encoder, vae=models.vae, unet=unet,
                 scheduler=type(models.scheduler).from_config(models.scheduler.config))
    if stage == "base":
        return TextToVideoPipeline(**parts)
    if stage == "interp":
        return InterpolationPipeline(**parts)
    return VideoSuperResolutionPipeline(**parts, low_res_scheduler=models.low_res_scheduler, max_noise_level=models.max_noise_level)


@torch.no_grad()
def run_validation(stage: str, models: StageModels, unet, inputs: list[tuple[str, torch.Tensor | None]], out_dir: Path,
                   config, device, scorer: ClipSimilarity | None, scale: int = 4, factor: int = 4) -> dict:
    """Sample every (prompt, input video) into `out_dir/NN.mp4`; returns {"clipsim": ...} when scored.

    `inputs`: for base, (prompt, None); for interp, (caption, key frames (3, T, H, W)); for vsr,
    (caption, high-resolution frames (3, T, H, W)) that are downscaled by `scale` first.
    """
    was_training = unet.training
    flags = [p.requires_grad for p in unet.parameters()]
    pipe = stage_pipeline(stage, models, unet)  # sets eval + requires_grad(False); restored below
    pipe.device = torch.device(device)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = []
    try:
        for i, (prompt, video) in enumerate(inputs):
            generator = torch.Generator().manual_seed(config.seed + i)
            common = dict(num_inference_steps=config.steps, guidance_scale=config.guidance_scale, generator=generator)
            if stage == "base":
                out = pipe(prompt, num_frames=config.num_frames, **common)
            elif stage == "interp":
                out = pipe(prompt, video[None].to(device), factor=factor, **common)
            else:
                low = torch.nn.functional.interpolate(video.transpose(0, 1), scale_factor=1 / scale, mode="bicubic", antialias=True)
                out = pipe(prompt, low.transpose(0, 1)[None].clamp(-1, 1).to(device), **common)
            frames = to_uint8_frames(out[0])  # (T, H, W, 3)
            write_mp4(frames, out_dir / f"{i:02d}.mp4", fps=config.fps * (factor if stage == "interp" else 1))
            if scorer is not None:
                scores.append(scorer(frames, prompt))
    finally:
        unet.train(was_training)
        for p, flag in zip(unet.parameters(), flags):
            p.requires_grad_(flag)
    return {"clipsim": float(np.mean(scores))} if scores else {}
