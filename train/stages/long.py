"""`--stage long`: LaVie's long-video model (§4.4). The base model gains zero-initialised input
channels that carry the first frame's latents (and a mask marking it), and is fine-tuned on
curated clips; at sampling, the last frame of each segment conditions the next, so the video
grows recursively (`lavie-sample --long K`).

`long.num_context` picks how many leading frames condition the model: `[1]` is LaVie's variant;
`[0, 1, 2]` is Video LDM's prediction model (§3.2), whose S = 0 draws train context guidance.
"""

from __future__ import annotations

from pathlib import Path

from lavie.model import VideoUNet
from lavie.pipelines import ModelFolderError

from ..objective import long_loss
from .base import unet_class_name
from .contract import DataNeeds, TrainingStage, register_stage


@register_stage
class LongStage(TrainingStage):
    name = "long"

    def check_config(self) -> None:
        contexts = self.config.long.num_context
        if not contexts or any(s not in (0, 1, 2) for s in contexts) or max(contexts) == 0:
            raise ValueError(f"long.num_context={contexts}: list context-frame counts from 0, 1, 2 with at least one above 0 "
                             f"([1] for LaVie's first-frame model)")
        if self.config.data.num_frames <= max(contexts):
            raise ValueError(f"data.num_frames={self.config.data.num_frames} must exceed the context frames {max(contexts)}")
        if "image" in {s.kind for s in self.config.data.sources}:
            raise ValueError("stage long trains on videos only: remove the image sources")

    def data_needs(self) -> DataNeeds:
        return DataNeeds(images="none")

    def build_unet(self, unet_dir: Path) -> VideoUNet:
        if unet_class_name(unet_dir) != "VideoUNet":
            raise ModelFolderError(f"{unet_dir}: holds a {unet_class_name(unet_dir)}, but stage long starts from a base model (VideoUNet)")
        unet = VideoUNet.from_pretrained(unet_dir)
        if unet.config.conditioning == "none":
            unet = unet.with_conditioning("context")  # the first frame's input channels start at zero (LaVie §4.4)
        elif unet.config.conditioning != "context":
            raise ModelFolderError(f"{unet_dir}: a model with conditioning={unet.config.conditioning!r} cannot be trained as stage long")
        self.set_trainable(unet)
        return unet

    def loss(self, unet, models, batch, generator):
        return long_loss(unet, models, batch, generator, self.config.train.text_dropout, self.config.long.num_context, self.weight_dtype)

    def sample(self, pipe, prompt, video, generator):
        v = self.config.validation
        frames = pipe.generate_long(prompt, self.config.long.validation_segments, max(self.config.long.num_context),
                                    num_frames=v.num_frames, num_inference_steps=v.steps, guidance_scale=v.guidance_scale,
                                    generator=generator, output_type="pt").frames
        return frames[0].transpose(0, 1) * 2 - 1
