"""The models a training stage works with: the trainable network and the frozen parts around it,
loaded from a stage folder (or a diffusers image-model folder) through `from_pretrained`.

Which network a stage trains, and from what, is the stage's business (`lavie.train.stages`);
this file loads what every stage shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from diffusers import AutoencoderKL, DDPMScheduler, SchedulerMixin
from transformers import CLIPTextModel, CLIPTokenizer

from lavie.pipelines import load_scheduler

FROZEN = ("tokenizer", "text_encoder", "vae", "scheduler")


@dataclass
class StageModels:
    unet: object  # the trainable network (a VideoUNet / VideoSRUNet, possibly with LoRA adapters)
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: SchedulerMixin  # the folder's sampling scheduler (saved with checkpoints)
    noise_scheduler: DDPMScheduler  # the training noise schedule
    low_res_scheduler: SchedulerMixin | None = None  # vsr: noise augmentation of the low-resolution frames
    max_noise_level: int = 350
    folder: Path | None = None


def load_frozen(folder: Path, prediction_type: str | None = None) -> dict:
    """Tokenizer, text encoder, VAE, sampling scheduler and the training noise schedule of `folder`."""
    scheduler = load_scheduler(folder / "scheduler")
    if prediction_type is not None:
        scheduler.register_to_config(prediction_type=prediction_type)
    return dict(
        vae=AutoencoderKL.from_pretrained(folder / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        scheduler=scheduler,
        noise_scheduler=DDPMScheduler.from_config(scheduler.config),
    )
