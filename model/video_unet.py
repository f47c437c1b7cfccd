"""LaVie's video UNets, inflated from diffusers image UNets.

`VideoUNet` is the base text-to-video model (LaVie §3.1) and, with input conditioning, the temporal
interpolation model (LaVie §3.2) or a long-video prediction model (Video LDM §3.2, LaVie §4.4).
`VideoSRUNet` is the video super-resolution model inflated from the SD x4 upscaler (LaVie §3.3,
Video LDM §3.4).

Inflation keeps the diffusers `UNet2DConditionModel` whole (any block layout: SD 1.4, the x4
upscaler, or any other config) and swaps, in place, each `BasicTransformerBlock` for a
spatio-temporal transformer block and, optionally, each `ResnetBlock2D` for a spatio-temporal
resnet block. The spatial weights keep their role; every temporal layer starts as the identity,
so at initialisation the video model is the image model applied frame by frame.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.utils import BaseOutput

from .temporal import FrameLayout, SpatioTemporalResnetBlock, SpatioTemporalTransformerBlock

CONDITIONINGS = ("none", "interpolation", "context")


@dataclass
class VideoUNetOutput(BaseOutput):
    sample: torch.Tensor  # (B, C, T, H, W)


class VideoUNet(ModelMixin, ConfigMixin, PeftAdapterMixin):
    r"""A diffusers image UNet inflated to video with temporal layers.

    Build one from an image UNet with `VideoUNet.from_unet2d(unet2d, **options)`; save and load with
    `save_pretrained` / `from_pretrained`. The config keeps the image UNet's config in
    `unet2d_config`, so a saved folder rebuilds without the original image model.

    Parameters:
        unet2d_config (`dict`): config of the diffusers `UNet2DConditionModel` being inflated.
        conditioning (`str`, defaults to `"none"`): extra input channels concatenated to the noisy
            latents. `"none"`: a plain text-to-video model. `"interpolation"`: frame-repeated low-fps
            latents and a key-frame mask (LaVie §3.2, see `interpolation_conditioning`).
            `"context"`: masked latents of the first S context frames and their mask
            (Video LDM §3.2, see `context_conditioning`). Both add `latent channels + 1` input
            channels whose weights start at zero.
        temporal_conv (`bool`, defaults to `False`): add a temporal 3D-conv residual block after
            every spatial resnet block (Video LDM §3.1; used by the VSR model, LaVie §3.3).
        alpha_merge (`bool`, defaults to `False`): mix every temporal layer's output with its input
            as `alpha*spatial + (1-alpha)*temporal`, alpha learned per layer (Video LDM §3.1).
        alpha_init (`float`, defaults to 0.5): initial alpha of the learned merge.
        rope_theta (`float`, defaults to 10000.0): base of the rotary frame positions.

    Forward inputs: `sample` (B, C, T, H, W); `timestep` scalar or (B,); `encoder_hidden_states`
    either (B, L, D), one prompt per video shared by its frames, or (B, T, L, D), one prompt per
    frame, which is how the `n_images` image frames of joint image-video training carry their own
    captions; `n_images`: the last `n_images` frames along T are independent images that temporal
    layers never mix; `cond` (B, cond_channels, T, H, W) when `conditioning != "none"`;
    `class_labels` (B,) for image UNets with a class embedding (the x4 upscaler's noise level).

    LoRA adapters (peft) attach, save and load through diffusers' `PeftAdapterMixin`
    (`add_adapter`, `load_lora_adapter`, `set_adapters`), as on diffusers' own UNets.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        unet2d_config: dict | None = None,
        conditioning: str = "none",
        temporal_conv: bool = False,
        alpha_merge: bool = False,
        alpha_init: float = 0.5,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        self._build(unet2d_config, conditioning, temporal_conv, alpha_merge, alpha_init, rope_theta)

    def _build(self, unet2d_config, conditioning, temporal_conv, alpha_merge, alpha_init, rope_theta) -> None:
        # Not part of __init__ so that a subclass with its own registered config builds the same
        # network without registering its config twice.
        if unet2d_config is None:
            raise ValueError("unet2d_config is required: build with VideoUNet.from_unet2d(unet2d) or from_pretrained(folder)")
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning={conditioning!r}: choose one of {CONDITIONINGS}")

        # 1. the spatial network: the diffusers image UNet, frames folded into its batch
        self.unet2d = UNet2DConditionModel.from_config(_clean_config(unet2d_config))

        # 2. input conditioning channels, zero-initialised so they start ignored (LaVie §3.2, App. C)
        self.cond_channels = 0 if conditioning == "none" else self.unet2d.config.out_channels + 1
        if self.cond_channels:
            conv = self.unet2d.conv_in
            wide = nn.Conv2d(conv.in_channels + self.cond_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
            nn.init.zeros_(wide.weight)
            nn.init.zeros_(wide.bias)
            self.unet2d.conv_in = wide

        # 3. temporal layers after each spatial transformer block (LaVie §3.1) and resnet block (Video LDM §3.1)
        self.layout = FrameLayout()
        self.inflated_paths = self._inflate(temporal_conv, alpha_merge, alpha_init, rope_theta)

    def _inflate(self, temporal_conv: bool, alpha_merge: bool, alpha_init: float, rope_theta: float) -> list[str]:
        paths = []
        for name, module in list(self.unet2d.named_modules()):
            for child_name, child in list(module.named_children()):
                if not isinstance(module, nn.ModuleList):
                    continue
                if isinstance(child, BasicTransformerBlock):
                    dim = child.norm1.normalized_shape[0]
                    wrapped = SpatioTemporalTransformerBlock(child, dim, child.attn1.heads, self.layout, rope_theta, alpha_merge, alpha_init)
                elif temporal_conv and isinstance(child, ResnetBlock2D):
                    wrapped = SpatioTemporalResnetBlock(child, self.layout, alpha_merge, alpha_init)
                else:
                    continue
                module[int(child_name)] = wrapped
                paths.append(f"unet2d.{name}.{child_name}")
        if not paths:
            raise ValueError("the image UNet has no transformer blocks to extend with temporal attention")
        return paths

    # --- building from image models -----------------------------------------------------------

    @classmethod
    def from_unet2d(cls, unet2d: UNet2DConditionModel, **options) -> "VideoUNet":
        """Inflate a diffusers `UNet2DConditionModel` and copy its weights (any block layout).

        `options` are the constructor's: `conditioning`, `temporal_conv`, `alpha_merge`,
        `alpha_init`, `rope_theta`. The result computes, frame by frame, what `unet2d` computes.
        """
        model = cls(unet2d_config=dict(unet2d.config), **options)
        model.load_spatial_state_dict(unet2d.state_dict())
        return _match_placement(model, unet2d)

    def load_spatial_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load an image UNet's weights into the spatial layers; temporal layers keep their init."""
        mapped = {}
        for key, value in state_dict.items():
            key = "unet2d." + key
            for path in self.inflated_paths:
                if key.startswith(path + "."):
                    key = path + ".spatial." + key[len(path) + 1 :]
                    break
            mapped[key] = value
        if self.cond_channels:
            w = mapped["unet2d.conv_in.weight"]  # (C0, C_in, k, k): the extra input channels start at zero
            mapped["unet2d.conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], self.cond_channels, *w.shape[2:])], dim=1)
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if unexpected or any(not self.is_temporal_parameter(k) for k in missing):
            raise ValueError(f"image UNet weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def with_conditioning(self, conditioning: str) -> "VideoUNet":
        """A copy of this model with another input conditioning, e.g. an interpolation model
        initialised from a trained base model (LaVie App. C). The new input channels start at zero."""
        model = type(self).from_config(_clean_config(self.config), conditioning=conditioning)
        state = self.state_dict()
        w = state["unet2d.conv_in.weight"][:, : self.unet2d.config.in_channels]
        extra = model.cond_channels
        state["unet2d.conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1) if extra else w
        model.load_state_dict(state)
        return _match_placement(model, self)

    # --- training helpers ---------------------------------------------------------------------

    @staticmethod
    def is_temporal_parameter(name: str) -> bool:
        return ".temporal." in name or ".merge." in name

    def freeze_spatial(self) -> None:
        """Train only the temporal layers (Video LDM §3.1, Eq. 2). A conditioned model keeps its
        input convolution trainable too: its conditioning channels are new."""
        for name, param in self.named_parameters():
            trainable = self.is_temporal_parameter(name) or (self.cond_channels > 0 and name.startswith("unet2d.conv_in."))
            param.requires_grad_(trainable)

    def temporal_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if self.is_temporal_parameter(n)]

    # --- forward -------------------------------------------------------------------------------

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        n_images: int = 0,
        cond: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> VideoUNetOutput | tuple:
        b, _, t, h, w = sample.shape
        if not 0 <= n_images <= t:
            raise ValueError(f"n_images={n_images} must lie in [0, {t}]")

        # 1. the frame layout every temporal layer folds back into
        self.layout.num_frames = t
        self.layout.n_images = n_images

        # 2. input conditioning channels (LaVie §3.2, Video LDM §3.2)
        if self.cond_channels:
            if cond is None or cond.shape[1] != self.cond_channels:
                raise ValueError(f"this model (conditioning={self.config.conditioning!r}) needs cond of shape (B, {self.cond_channels}, T, H, W)")
            sample = torch.cat([sample, cond.to(sample.dtype)], dim=1)  # (B, C + cond_channels, T, H, W)
        elif cond is not None:
            raise ValueError("cond given to a model built with conditioning='none'")

        # 3. frames into the batch: spatial layers see (B*T, C, H, W)
        x = sample.transpose(1, 2).flatten(0, 1)  # (B*T, C, H, W)
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.reshape(1).expand(b) if timestep.numel() == 1 else timestep  # (B,)
        timestep = timestep.repeat_interleave(t)  # (B*T,)
        if encoder_hidden_states.ndim == 3:
            context = encoder_hidden_states.repeat_interleave(t, dim=0)  # (B*T, L, D)
        elif encoder_hidden_states.ndim == 4 and encoder_hidden_states.shape[1] == t:
            context = encoder_hidden_states.flatten(0, 1)  # (B*T, L, D)
        else:
            raise ValueError(f"encoder_hidden_states must be (B, L, D) or (B, T={t}, L, D), got {tuple(encoder_hidden_states.shape)}")
        if class_labels is not None:
            class_labels = class_labels.repeat_interleave(t)  # (B*T,)

        # 4. the inflated UNet
        out = self.unet2d(x, timestep, context, class_labels=class_labels).sample  # (B*T, C_out, H, W)

        # 5. frames back out of the batch
        out = out.unflatten(0, (b, t)).transpose(1, 2)  # (B, C_out, T, H, W)
        return VideoUNetOutput(sample=out) if return_dict else (out,)


class VideoSRUNet(VideoUNet):
    r"""The video super-resolution UNet: the SD x4 upscaler UNet with temporal attention and
    temporal 3D-conv layers inserted, spatial layers frozen (LaVie §3.3, App. C; Video LDM §3.4).

    The upscaler is fully convolutional with attention over positions, so a model trained on
    patches runs on full frames of any size. `freeze_spatial()` runs at construction; call
    `requires_grad_(True)` to train everything instead.

    Forward inputs: `sample` (B, 4, T, H, W) noisy latents; `timestep`; `encoder_hidden_states`
    (B, L, D) or (B, T, L, D); `low_res` (B, 3, T, H, W) the noised low-resolution frames in [-1, 1],
    same H, W as the latents; `noise_level` (B,) integer noise level applied to `low_res`.
    """

    @register_to_config
    def __init__(
        self,
        unet2d_config: dict | None = None,
        conditioning: str = "none",
        temporal_conv: bool = True,
        alpha_merge: bool = False,
        alpha_init: float = 0.5,
        rope_theta: float = 10000.0,
    ):
        ModelMixin.__init__(self)
        self._build(unet2d_config, conditioning, temporal_conv, alpha_merge, alpha_init, rope_theta)
        if self.unet2d.config.num_class_embeds is None and self.unet2d.config.class_embed_type is None:
            raise ValueError("VideoSRUNet needs an upscaler UNet with a noise-level class embedding (num_class_embeds)")
        self.freeze_spatial()

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        low_res: torch.Tensor,
        noise_level: torch.Tensor,
        n_images: int = 0,
        return_dict: bool = True,
    ) -> VideoUNetOutput | tuple:
        # the upscaler reads the low-resolution frames concatenated to its latents (LaVie §3.3)
        x = torch.cat([sample, low_res.to(sample.dtype)], dim=1)  # (B, 4 + 3, T, H, W)
        noise_level = torch.as_tensor(noise_level, device=sample.device).long()
        noise_level = noise_level.expand(sample.shape[0]) if noise_level.ndim == 0 else noise_level
        return super().forward(x, timestep, encoder_hidden_states, n_images=n_images, class_labels=noise_level, return_dict=return_dict)


def _match_placement(model: ModelMixin, like: ModelMixin) -> ModelMixin:
    model = model.to(like.device)
    return model if like.dtype == model.dtype else model.to(like.dtype)


def _clean_config(config: dict) -> dict:
    # saved configs carry bookkeeping keys (_class_name, _diffusers_version, ...) that from_config ignores
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}
