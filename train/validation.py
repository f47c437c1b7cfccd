"""Validation during training: fixed inputs sampled through `lavie.pipelines` into mp4s, scored
with CLIPSIM, the mean CLIP text-frame similarity LaVie reports on MSR-VTT (§4.2, ViT-B/32)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lavie.eval.clipsim import ClipSimilarity  # the CLIPSIM of lavie-eval, one implementation
from lavie.pipelines import to_uint8_frames, write_mp4

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


@torch.no_grad()
def run_validation(stage, models: StageModels, unet, inputs: list[tuple[str, torch.Tensor | None]], out_dir: Path,
                   config, device, scorer: ClipSimilarity | None) -> dict:
    """Sample every (prompt, input video) with the stage's pipeline into `out_dir/NN.mp4`; returns
    {"clipsim": ...} when scored. `inputs` come from the stage's `validation_inputs`."""
    was_training = unet.training
    flags = [p.requires_grad for p in unet.parameters()]
    pipe = stage.pipeline(models, unet)
    pipe.set_progress_bar_config(disable=True)
    unet.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = []
    fps = config.fps * (stage.config.interp.factor if stage.name == "interp" else 1)
    try:
        for i, (prompt, video) in enumerate(inputs):
            generator = torch.Generator().manual_seed(config.seed + i)
            frames = to_uint8_frames(stage.sample(pipe, prompt, video, generator))  # (T, H, W, 3)
            write_mp4(frames, out_dir / f"{i:02d}.mp4", fps=fps)
            if scorer is not None:
                scores.append(scorer(frames, prompt))
    finally:
        unet.train(was_training)
        for p, flag in zip(unet.parameters(), flags):
            p.requires_grad_(flag)
    return {"clipsim": float(np.mean(scores))} if scores else {}
