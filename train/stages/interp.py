"""`--stage interp`: temporal interpolation 16 -> 61 frames (LaVie §3.2), initialised from a base
model whose input layer gains zero-initialised channels for the frame-repeated key frames."""

from __future__ import annotations

from pathlib import Path

import torch

from lavie.model import VideoUNet
from lavie.pipelines import ModelFolderError

from ..curriculum import Ticket
from ..data import ClipDataset, ClipGeometry
from ..objective import interp_loss
from .base import unet_class_name
from .contract import DataNeeds, TrainingStage, register_stage


def fixed_clips(dataset: ClipDataset, count: int) -> list[tuple[str, torch.Tensor]]:
    """Centre crops of the first video source's first `count` clips with their captions."""
    fixed = ClipDataset(dataset.sources, ClipGeometry(**{**dataset.geometry.__dict__, "crop": "center"}))
    first = next(i for i, s in enumerate(fixed.sources) if s.kind == "video")
    return [(fixed.sources[first].row(row)["caption"], fixed.pixels(Ticket(first, row, 0, "video")))  # (3, T, H, W)
            for row in range(min(count, len(fixed.sources[first])))]


@register_stage
class InterpStage(TrainingStage):
    name = "interp"

    def check_config(self) -> None:
        if "image" in {s.kind for s in self.config.data.sources}:
            raise ValueError("stage interp trains on videos only: remove the image sources")
        k = self.config.interp.factor
        if k < 1 or (self.config.data.num_frames - 1) % k:
            raise ValueError(f"data.num_frames={self.config.data.num_frames} must be factor*(key frames-1)+1 for interp.factor={k} (e.g. 61 at 4)")

    def data_needs(self) -> DataNeeds:
        return DataNeeds(images="none")

    def build_unet(self, unet_dir: Path) -> VideoUNet:
        if unet_class_name(unet_dir) != "VideoUNet":
            raise ModelFolderError(f"{unet_dir}: holds a {unet_class_name(unet_dir)}, but stage interp starts from a base model (VideoUNet)")
        unet = VideoUNet.from_pretrained(unet_dir)
        if unet.config.conditioning != "interpolation":
            # the interpolation model starts from the base model in the released interpolation
            # layout, extra input channels at zero (LaVie App. C)
            unet = unet.with_layout("interp")
        self.set_trainable(unet)
        return unet

    def loss(self, unet, models, batch, generator):
        return interp_loss(unet, models, batch, generator, self.config.train.text_dropout, self.config.interp.factor, self.weight_dtype)

    def validation_inputs(self, dataset):
        return [(caption, video[:, :: self.config.interp.factor]) for caption, video in fixed_clips(dataset, self.config.validation.num_videos)]

    def sample(self, pipe, prompt, video, generator):
        v = self.config.validation
        frames = pipe(prompt, video[None].to(pipe.device), factor=self.config.interp.factor, num_inference_steps=v.steps,
                      guidance_scale=v.guidance_scale, generator=generator, output_type="pt").frames
        return frames[0].transpose(0, 1) * 2 - 1
