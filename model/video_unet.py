"""LaVie's video UNets, inflated from diffusers image UNets, in the layouts of the released models.

`VideoUNet` is the base text-to-video model (LaVie §3.1) and, with input conditioning, the temporal
interpolation model (LaVie §3.2) or a long-video prediction model (LaVie §4.4, Video LDM §3.2).
`VideoSRUNet` is the video super-resolution model inflated from the SD x4 upscaler (LaVie §3.3,
Video LDM §3.4).

Inflation keeps the diffusers `UNet2DConditionModel` whole (any block layout: SD 1.4, the x4
upscaler, or any other config) and swaps modules in place, keeping every image weight under its
image name: each `BasicTransformerBlock` becomes a spatio-temporal block with temporal attention,
each resnet GroupNorm (and `conv_norm_out`) normalises over all frames of a video, and for the VSR
layout each spatial transformer gets a temporal 3D-conv block and each UNet block a temporal module.
`LAYOUTS` names the three released layouts; `lavie.model.convert` loads the released checkpoints.
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
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.utils import BaseOutput

from .temporal import (
    AfterBlock,
    BlockTemporalModule,
    FrameLayout,
    SpatioTemporalTransformerBlock,
    TemporalConvTransformer2DModel,
    VideoGroupNorm,
)

CONDITIONINGS = ("none", "interpolation", "context")
TEMPORAL_ATTENTIONS = ("before_ff", "after_ff")
TEMPORAL_POSITIONS = ("rope_bias", "none")

# The released LaVie networks (Vchitect/LaVie base/, interpolation/, vsr/ models), as constructor options.
LAYOUTS = {
    # §3.1: temporal attention after cross-attention with 32-dim RoPE and a T5 relative bias
    "base": dict(conditioning="none", temporal_attention="before_ff", temporal_position="rope_bias",
                 sparse_causal=False, video_norm=True, temporal_conv=False, temporal_modules=False),
    # §3.2: key-frame latents as 4 more input channels, sparse-causal spatial attention,
    # temporal attention after the feed-forward without position encoding
    "interp": dict(conditioning="interpolation", temporal_attention="after_ff", temporal_position="none",
                   sparse_causal=True, video_norm=True, temporal_conv=False, temporal_modules=False),
    # §3.3: base-style temporal attention, a 3D-conv block before every spatial transformer and a
    # temporal module after every down, mid and up block
    "vsr": dict(conditioning="none", temporal_attention="before_ff", temporal_position="rope_bias",
                sparse_causal=False, video_norm=True, temporal_conv=True, temporal_modules=True),
}
TEMPORAL_MODULE_NAMES = ("down_temporal_blocks", "mid_temporal_block", "up_temporal_blocks")


@dataclass
class VideoUNetOutput(BaseOutput):
    sample: torch.Tensor  # (B, C, T, H, W)


class VideoUNet(ModelMixin, ConfigMixin, PeftAdapterMixin):
    r"""A diffusers image UNet inflated to video with temporal layers.

    Build one from an image UNet with `VideoUNet.from_unet2d(unet2d, layout="base", **options)`; save
    and load with `save_pretrained` / `from_pretrained`. The config keeps the image UNet's config in
    `unet2d_config`, so a saved folder rebuilds without the original image model. The defaults are
    the released base model's layout.

    Parameters:
        unet2d_config (`dict`): config of the diffusers `UNet2DConditionModel` being inflated.
        conditioning (`str`, defaults to `"none"`): extra input channels concatenated to the noisy
            latents, whose weights start at zero. `"none"`: a plain text-to-video model.
            `"interpolation"`: the frame-repeated key-frame latents, `C` channels (LaVie §3.2, see
            `interpolation_conditioning`). `"context"`: masked latents of the first S context frames
            and their mask, `C + 1` channels (Video LDM §3.2, see `context_conditioning`).
        temporal_attention (`str`, defaults to `"before_ff"`): where the temporal attention sits in
            each transformer block: after the cross-attention (`"before_ff"`, base and VSR) or after
            the feed-forward (`"after_ff"`, interpolation).
        temporal_position (`str`, defaults to `"rope_bias"`): frame positions in the temporal
            attention: rotary encoding on the first `rope_dim` channels of each head plus a learned
            T5 relative-position bias (`"rope_bias"`), or none (`"none"`).
        sparse_causal (`bool`, defaults to `False`): spatial self-attention over the first and the
            previous frame (interpolation model).
        video_norm (`bool`, defaults to `True`): resnet GroupNorms and `conv_norm_out` take their
            statistics over all frames of a video, as the released models; `False` keeps per-frame norms.
        temporal_conv (`bool`, defaults to `False`): a temporal 3D-conv residual block before every
            spatial transformer (Video LDM §3.1; the VSR model, LaVie §3.3).
        temporal_modules (`bool`, defaults to `False`): a temporal module (temporal conv + resnet +
            zero-initialised output conv) after every down, mid and up block (the VSR model).
        alpha_merge (`bool`, defaults to `False`): blend every temporal attention's input and output
            as `alpha*x + (1-alpha)*mixed`, alpha learned per layer (Video LDM §3.1).
        alpha_init (`float`, defaults to 0.5): initial alpha of the learned merge.
        rope_dim (`int`, defaults to 32), rope_theta (`float`, defaults to 10000.0): rotary encoding.
        rel_pos_buckets (`int`, defaults to 32), rel_pos_max_distance (`int`, defaults to 32): the
            relative-position bias.

    Forward inputs: `sample` (B, C, T, H, W); `timestep` scalar or (B,); `encoder_hidden_states`
    either (B, L, D), one prompt per video shared by its frames, or (B, T, L, D), one prompt per
    frame, which is how the `n_images` image frames of joint image-video training carry their own
    captions; `n_images`: the last `n_images` frames along T are independent images that no temporal
    layer mixes with the video; `cond` (B, cond_channels, T, H, W) when `conditioning != "none"`;
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
        temporal_attention: str = "before_ff",
        temporal_position: str = "rope_bias",
        sparse_causal: bool = False,
        video_norm: bool = True,
        temporal_conv: bool = False,
        temporal_modules: bool = False,
        alpha_merge: bool = False,
        alpha_init: float = 0.5,
        rope_dim: int = 32,
        rope_theta: float = 10000.0,
        rel_pos_buckets: int = 32,
        rel_pos_max_distance: int = 32,
    ):
        super().__init__()
        self._build(_constructor_options(locals()))

    def _build(self, options: dict) -> None:
        # Not part of __init__ so that a subclass with its own registered config builds the same
        # network without registering its config twice.
        if options.get("unet2d_config") is None:
            raise ValueError("unet2d_config is required: build with VideoUNet.from_unet2d(unet2d) or from_pretrained(folder)")
        for key, choices in (("conditioning", CONDITIONINGS), ("temporal_attention", TEMPORAL_ATTENTIONS), ("temporal_position", TEMPORAL_POSITIONS)):
            if options[key] not in choices:
                raise ValueError(f"{key}={options[key]!r}: choose one of {choices}")

        # 1. the spatial network: the diffusers image UNet, frames folded into its batch
        self.unet2d = UNet2DConditionModel.from_config(_clean_config(options["unet2d_config"]))
        self.layout = FrameLayout()

        # 2. input conditioning channels, zero-initialised so they start ignored (LaVie §3.2, App. C)
        latent_channels = self.unet2d.config.out_channels
        self.cond_channels = {"none": 0, "interpolation": latent_channels, "context": latent_channels + 1}[options["conditioning"]]
        if self.cond_channels:
            conv = self.unet2d.conv_in
            wide = nn.Conv2d(conv.in_channels + self.cond_channels, conv.out_channels, conv.kernel_size, padding=conv.padding)
            nn.init.zeros_(wide.weight)
            nn.init.zeros_(wide.bias)
            self.unet2d.conv_in = wide

        # 3. temporal layers inside the image UNet (in-place swaps, image weight names kept)
        self._inflate(options)

        # 4. temporal modules after every down, mid and up block (the VSR layout)
        if options["temporal_modules"]:
            temb_channels = self.unet2d.time_embedding.linear_2.out_features
            blocks = {"down_temporal_blocks": self.unet2d.down_blocks, "up_temporal_blocks": self.unet2d.up_blocks}
            for name, unet_blocks in blocks.items():
                modules = nn.ModuleList(BlockTemporalModule(_block_channels(b), temb_channels, self.layout) for b in unet_blocks)
                setattr(self, name, modules)
                for block, module in zip(unet_blocks, modules):
                    block.register_forward_hook(AfterBlock(module))
            self.mid_temporal_block = BlockTemporalModule(_block_channels(self.unet2d.mid_block), temb_channels, self.layout)
            self.unet2d.mid_block.register_forward_hook(AfterBlock(self.mid_temporal_block))

    def _inflate(self, options: dict) -> None:
        position = options["temporal_position"] == "rope_bias"
        block_options = dict(
            temporal_after_ff=options["temporal_attention"] == "after_ff",
            rope_dim=options["rope_dim"] if position else 0, rope_theta=options["rope_theta"],
            rel_pos_buckets=options["rel_pos_buckets"] if position else 0, rel_pos_max_distance=options["rel_pos_max_distance"],
            sparse_causal=options["sparse_causal"], alpha_merge=options["alpha_merge"], alpha_init=options["alpha_init"],
        )
        inflated = 0
        for module in list(self.unet2d.modules()):
            if options["video_norm"] and isinstance(module, ResnetBlock2D):
                module.norm1 = VideoGroupNorm(module.norm1, self.layout)
                module.norm2 = VideoGroupNorm(module.norm2, self.layout)
            if not isinstance(module, nn.ModuleList):
                continue
            for index, child in enumerate(module):
                if options["temporal_conv"] and isinstance(child, Transformer2DModel):
                    child = module[index] = TemporalConvTransformer2DModel.from_transformer(child, self.layout)
                if isinstance(child, Transformer2DModel):
                    for k, block in enumerate(child.transformer_blocks):
                        if isinstance(block, BasicTransformerBlock):
                            child.transformer_blocks[k] = SpatioTemporalTransformerBlock(block, self.layout, **block_options)
                            inflated += 1
        if options["video_norm"]:
            self.unet2d.conv_norm_out = VideoGroupNorm(self.unet2d.conv_norm_out, self.layout)
        if not inflated:
            raise ValueError("the image UNet has no transformer blocks to extend with temporal attention")

    # --- building from image models -----------------------------------------------------------

    @classmethod
    def from_unet2d(cls, unet2d: UNet2DConditionModel, layout: str | None = None, **options) -> "VideoUNet":
        """Inflate a diffusers `UNet2DConditionModel` and copy its weights (any block layout).

        `layout` picks one of the released layouts in `LAYOUTS` (`"base"`, `"interp"`, `"vsr"`);
        `options` are the constructor's and override it. Every temporal layer starts as the identity,
        so on a video whose frames are all equal the result computes what `unet2d` computes per frame.
        """
        model = cls(unet2d_config=dict(unet2d.config), **{**layout_options(layout), **options})
        model.load_spatial_state_dict(unet2d.state_dict())
        return _match_placement(model, unet2d)

    def load_spatial_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load an image UNet's weights into the spatial layers; temporal layers keep their init.
        The image weights keep their names under `unet2d.`; new input channels start at zero."""
        mapped = {"unet2d." + key: value for key, value in state_dict.items()}
        if self.cond_channels:
            w = mapped["unet2d.conv_in.weight"]  # (C0, C_in, k, k)
            mapped["unet2d.conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], self.cond_channels, *w.shape[2:])], dim=1)
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if unexpected or any(not self.is_temporal_parameter(k) for k in missing):
            raise ValueError(f"image UNet weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def with_layout(self, layout: str | None = None, **options) -> "VideoUNet":
        """A copy of this model with another layout or options, e.g. an interpolation model
        initialised from a trained base model (LaVie App. C): `base.with_layout("interp")`. Every
        weight both networks have is copied; new input channels and new temporal layers start at
        their initialisation, and layers the new layout lacks (the base's position bias) are dropped."""
        model = type(self).from_config(_clean_config(self.config), **{**layout_options(layout), **options})
        state = self.state_dict()
        w = state["unet2d.conv_in.weight"][:, : self.unet2d.config.in_channels]
        extra = model.cond_channels
        state["unet2d.conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1) if extra else w
        own = model.state_dict()
        kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in kept]
        if any(not model.is_temporal_parameter(k) for k in missing):
            raise ValueError(f"cannot change layout: spatial weights {missing[:5]} have no counterpart")
        model.load_state_dict(kept, strict=False)
        return _match_placement(model, self)

    def with_conditioning(self, conditioning: str) -> "VideoUNet":
        """A copy of this model with another input conditioning; the new input channels start at zero."""
        return self.with_layout(conditioning=conditioning)

    # --- training helpers ---------------------------------------------------------------------

    @staticmethod
    def is_temporal_parameter(name: str) -> bool:
        """Whether a parameter belongs to a temporal layer (new in the video model)."""
        return any(part.startswith("temporal_") or part in TEMPORAL_MODULE_NAMES or part == "merge" for part in name.split("."))

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
        if self.config.temporal_modules:
            # the block-level temporal modules read the time (+ noise level) embedding the UNet computes
            emb = self.unet2d.time_embedding(self.unet2d.get_time_embed(x, timestep))  # (B*T, D)
            class_emb = self.unet2d.get_class_embed(x, class_labels)
            self.layout.temb = emb if class_emb is None else emb + class_emb

        # 4. the inflated UNet
        out = self.unet2d(x, timestep, context, class_labels=class_labels).sample  # (B*T, C_out, H, W)
        self.layout.temb = None  # read only during this forward; do not keep its graph alive

        # 5. frames back out of the batch
        out = out.unflatten(0, (b, t)).transpose(1, 2)  # (B, C_out, T, H, W)
        return VideoUNetOutput(sample=out) if return_dict else (out,)


class VideoSRUNet(VideoUNet):
    r"""The video super-resolution UNet: the SD x4 upscaler UNet inflated in the released VSR
    layout (`LAYOUTS["vsr"]`), spatial layers frozen (LaVie §3.3, App. C; Video LDM §3.4).

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
        temporal_attention: str = "before_ff",
        temporal_position: str = "rope_bias",
        sparse_causal: bool = False,
        video_norm: bool = True,
        temporal_conv: bool = True,
        temporal_modules: bool = True,
        alpha_merge: bool = False,
        alpha_init: float = 0.5,
        rope_dim: int = 32,
        rope_theta: float = 10000.0,
        rel_pos_buckets: int = 32,
        rel_pos_max_distance: int = 32,
    ):
        ModelMixin.__init__(self)
        self._build(_constructor_options(locals()))
        if self.unet2d.config.num_class_embeds is None and self.unet2d.config.class_embed_type is None:
            raise ValueError("VideoSRUNet needs an upscaler UNet with a noise-level class embedding (num_class_embeds)")
        self.freeze_spatial()

    @classmethod
    def from_unet2d(cls, unet2d: UNet2DConditionModel, layout: str | None = "vsr", **options) -> "VideoSRUNet":
        return super().from_unet2d(unet2d, layout, **options)

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


def _constructor_options(arguments: dict) -> dict:
    # the constructor's arguments, as `_build` takes them
    return {k: v for k, v in arguments.items() if k not in ("self", "__class__")}


def layout_options(layout: str | None) -> dict:
    """The constructor options of a released layout (`LAYOUTS`); `None` gives no options."""
    if layout is None:
        return {}
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: choose one of {tuple(LAYOUTS)}")
    return dict(LAYOUTS[layout])


def _block_channels(block: nn.Module) -> int:
    # the channels a diffusers down/mid/up block outputs: those of its last resnet
    return block.resnets[-1].out_channels


def _match_placement(model: ModelMixin, like: ModelMixin) -> ModelMixin:
    model = model.to(like.device)
    return model if like.dtype == model.dtype else model.to(like.dtype)


def _clean_config(config: dict) -> dict:
    # saved configs carry bookkeeping keys (_class_name, _diffusers_version, ...) that from_config ignores
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}
