"""`--stage vsr`: video super-resolution (LaVie §3.3, Video LDM §3.4), the SD x4 upscaler with
temporal layers inserted and its spatial layers frozen, trained on patches; images become clips."""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn.functional as F
from diffusers import UNet2DConditionModel

from lavie.model import VideoSRUNet
from lavie.pipelines import ModelFolderError, load_scheduler

from ..models import FROZEN
from ..objective import vsr_loss
from .base import inflation_options, unet_class_name
from .contract import DataNeeds, TrainingStage, register_stage
from .interp import fixed_clips


@register_stage
class VSRStage(TrainingStage):
    name = "vsr"
    preset = "vsr"
    components = ("unet", *FROZEN, "low_res_scheduler")

    def check_config(self) -> None:
        d = self.config.data
        if d.cache_latents:
            raise ValueError("data.cache_latents is not available for stage vsr: it trains on pixels and their low-resolution copies")
        if d.height % self.config.vsr.scale or d.width % self.config.vsr.scale:
            raise ValueError(f"data.height and data.width must be multiples of vsr.scale={self.config.vsr.scale}")

    def data_needs(self) -> DataNeeds:
        return DataNeeds(images="clips", needs_video=False, cache_latents=False)

    def load_models(self, folder: Path):
        models = super().load_models(folder)
        models.low_res_scheduler = load_scheduler(folder / "low_res_scheduler")
        index = folder / "model_index.json"
        level = json.loads(index.read_text()).get("max_noise_level", 350) if index.is_file() else 350
        models.max_noise_level = self.config.vsr.max_noise_level if self.config.vsr.max_noise_level is not None else level
        return models

    def recipe(self, models) -> dict:
        return {**super().recipe(models), "max_noise_level": models.max_noise_level}

    def build_unet(self, unet_dir: Path) -> VideoSRUNet:
        class_name = unet_class_name(unet_dir)
        if class_name == "VideoSRUNet":
            unet = VideoSRUNet.from_pretrained(unet_dir)
        elif class_name == "UNet2DConditionModel":
            # the x4 upscaler in the released VSR layout: temporal attention, 3D convolutions and
            # temporal modules inserted (LaVie §3.3)
            unet = VideoSRUNet.from_unet2d(UNet2DConditionModel.from_pretrained(unet_dir), layout="vsr", **inflation_options(self.config))
        else:
            raise ModelFolderError(f"{unet_dir}: holds a {class_name}; stage vsr needs the x4 upscaler UNet or a VideoSRUNet")
        self.set_trainable(unet)
        return unet

    def loss(self, unet, models, batch, generator):
        return vsr_loss(unet, models, batch, generator, self.config.train.text_dropout, self.config.vsr.scale, self.weight_dtype)

    def validation_inputs(self, dataset):
        return fixed_clips(dataset, self.config.validation.num_videos)

    def sample(self, pipe, prompt, video, generator):
        v = self.config.validation
        low = F.interpolate(video.transpose(0, 1), scale_factor=1 / self.config.vsr.scale, mode="bicubic", antialias=True)
        low = low.transpose(0, 1)[None].clamp(-1, 1)  # (1, 3, T, h, w)
        frames = pipe(prompt, low.to(pipe.device), num_inference_steps=v.steps, guidance_scale=v.guidance_scale,
                      generator=generator, output_type="pt").frames
        return frames[0].transpose(0, 1) * 2 - 1

