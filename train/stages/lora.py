"""`--stage lora`: personalised videos (LaVie §4.4). LoRA adapters (peft, as diffusers trains
them) go on the spatial attention projections of a trained or converted base model; everything
else, the temporal layers included, stays frozen. It trains on an image manifest (each image a
clip of repeated frames that temporal layers never mix) or on a few video clips.

The output folder holds the adapter alone, `pytorch_lora_weights.safetensors` as diffusers'
`save_lora_weights` writes it; `LaVieTextToVideoPipeline.load_lora_weights(folder)` and
`lavie-sample --lora DIR --lora-scale S` apply it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from lavie.model import VideoUNet
from lavie.pipelines import LaVieTextToVideoPipeline, ModelFolderError
from lavie.pipelines.loading import LORA_WEIGHTS

from ..objective import drop_captions, encode_text, noised, to_latents
from .base import unet_class_name
from .contract import DataNeeds, TrainingStage, register_stage

ATTENTION_PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")


def spatial_attention_targets(unet) -> list[str]:
    """Names of the query, key, value and output projections of every spatial attention layer
    (self- and cross-attention) of a video UNet; temporal layers are left out."""
    return [name for name, module in unet.named_modules()
            if isinstance(module, torch.nn.Linear) and name.endswith(tuple("." + p for p in ATTENTION_PROJECTIONS))
            and not unet.is_temporal_parameter(name + ".weight")]


@register_stage
class LoraStage(TrainingStage):
    name = "lora"

    def check_config(self) -> None:
        if self.config.ema.enabled:
            raise ValueError("ema.enabled: stage lora trains small adapters without EMA; set ema.enabled=false")
        if self.config.lora.rank < 1:
            raise ValueError(f"lora.rank={self.config.lora.rank} must be >= 1")
        if self.config.data.cache_latents:
            raise ValueError("data.cache_latents is not available for stage lora")

    def data_needs(self) -> DataNeeds:
        return DataNeeds(images="clips", needs_video=False, cache_latents=False)

    def build_unet(self, unet_dir: Path) -> VideoUNet:
        if unet_class_name(unet_dir) != "VideoUNet":
            raise ModelFolderError(f"{unet_dir}: holds a {unet_class_name(unet_dir)}, but stage lora adapts a trained base model (VideoUNet)")
        unet = VideoUNet.from_pretrained(unet_dir)
        if unet.config.conditioning not in ("none", "context"):
            raise ModelFolderError(f"{unet_dir}: stage lora adapts a base or long-video model, not conditioning={unet.config.conditioning!r}")
        unet.requires_grad_(False)  # temporal and every other layer stay frozen; only the adapters train
        c = self.config.lora
        unet.add_adapter(LoraConfig(r=c.rank, lora_alpha=c.alpha or c.rank, lora_dropout=c.dropout, init_lora_weights="gaussian",
                                    target_modules=spatial_attention_targets(unet)))
        return unet

    def loss(self, unet, models, batch, generator):
        """Denoising loss; clips that came from images are independent frames (`n_images`), so the
        frozen temporal layers see real videos only."""
        kinds = {s.name: s.kind for s in self.config.data.sources}
        x0 = to_latents(batch, "video", models, generator)  # (B, C, T, h, w)
        captions = drop_captions(batch["captions"], self.config.train.text_dropout, generator)
        text = encode_text(models, captions, generator.device, self.weight_dtype)  # (B, L, D)
        noisy, timesteps, target = noised(models, x0, generator)
        is_image = [kinds[name] == "image" and self.config.lora.max_translation == 0 for name in batch["sources"]]
        pred = torch.empty_like(noisy)
        for flag in set(is_image):
            rows = torch.tensor([i for i, f in enumerate(is_image) if f == flag], device=noisy.device)
            n_images = noisy.shape[2] if flag else 0
            pred[rows] = unet(noisy[rows], timesteps[rows], text[rows], n_images=n_images).sample.to(pred.dtype)
        loss = torch.nn.functional.mse_loss(pred.float(), target.float())
        return loss, {"loss_video": loss.detach()}

    def save_frozen(self, models, out_dir: Path) -> None:
        """Nothing: the base model is not copied; the output is the adapter alone."""

    def checkpoint_links(self) -> list[str]:
        return []

    def save_network(self, unet, out_dir: Path) -> None:
        LaVieTextToVideoPipeline.save_lora_weights(out_dir, unet_lora_layers=get_peft_model_state_dict(unet), weight_name=LORA_WEIGHTS,
                                                   unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())

    def load_network(self, unet, in_dir: Path) -> None:
        state = {k.removeprefix("unet."): v for k, v in load_file(in_dir / LORA_WEIGHTS).items()}
        result = set_peft_model_state_dict(unet, state, adapter_name="default")
        if getattr(result, "unexpected_keys", None):
            raise ModelFolderError(f"{in_dir / LORA_WEIGHTS}: adapter weights that do not fit: {result.unexpected_keys[:5]}")

    def export(self, unet, run_dir: Path, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        self.save_network(unet, out)
        return out
