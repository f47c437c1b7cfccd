"""`--stage base`: the text-to-video model (LaVie §3.1), an SD 1.4 image UNet inflated to video,
trained on joint image-video batches: loss = L_video + alpha * L_image (Eq. 3)."""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import UNet2DConditionModel

from lavie.model import VideoUNet
from lavie.pipelines import ModelFolderError

from ..objective import base_loss
from .contract import TrainingStage, register_stage


def unet_class_name(unet_dir: Path) -> str | None:
    return json.loads((unet_dir / "config.json").read_text()).get("_class_name")


def inflation_options(config) -> dict:
    """The Video LDM options `model.*` adds to a released layout when an image UNet is inflated."""
    return {"alpha_merge": config.model.alpha_merge, **({"temporal_conv": True} if config.model.temporal_conv else {})}


@register_stage
class BaseStage(TrainingStage):
    name = "base"

    def check_config(self) -> None:
        kinds = {s.kind for s in self.config.data.sources}
        if self.config.data.n_images > 0 and "image" not in kinds:
            raise ValueError(f"data.n_images={self.config.data.n_images} needs an image source; set data.n_images=0 for video-only training")

    def build_unet(self, unet_dir: Path) -> VideoUNet:
        class_name = unet_class_name(unet_dir)
        if class_name == "UNet2DConditionModel":
            # the SD 1.4 image UNet inflated with identity temporal layers in the released base
            # layout (LaVie §3.1, App. C), plus the Video LDM options the config switches on
            unet = VideoUNet.from_unet2d(UNet2DConditionModel.from_pretrained(unet_dir), layout="base", **inflation_options(self.config))
        elif class_name == "VideoUNet":
            unet = VideoUNet.from_pretrained(unet_dir)
            if unet.config.conditioning != "none":
                raise ModelFolderError(f"{unet_dir}: a model with conditioning={unet.config.conditioning!r} cannot be trained as stage base")
        else:
            raise ModelFolderError(f"{unet_dir}: holds a {class_name}, which stage base cannot train")
        self.set_trainable(unet)
        return unet

    def loss(self, unet, models, batch, generator):
        t = self.config.train
        return base_loss(unet, models, batch, generator, t.text_dropout, t.image_loss_weight, self.weight_dtype)
