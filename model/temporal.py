"""Temporal layers that turn a diffusers image UNet into a video UNet.

Read bottom-up: the frame layout shared by every temporal layer -> rotary temporal self-attention
-> the spatio-temporal transformer block (LaVie §3.1) -> the spatio-temporal resnet block
(Video LDM §3.1). Spatial layers see every frame as an independent image, `(B*T, ...)`; temporal
layers reshape to `(B, T, ...)`, mix along T, and reshape back.

Joint image-video fine-tuning (LaVie §3.1, Fig. 3c): the last `n_images` frames of each sample are
independent images riding along T. Temporal layers skip them entirely, so for those frames the
network is exactly the image model.
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.resnet import AlphaBlender, TemporalResnetBlock


@dataclass
class FrameLayout:
    """How the `B*T` batch of the spatial layers folds back into videos.

    One instance is shared by all temporal layers of a model; `VideoUNet.forward` sets it before the
    spatial UNet runs, because diffusers' blocks call resnets and transformer blocks with a fixed
    signature that has no place for the frame count. Under gradient checkpointing the recomputation
    in backward reads it again, so run backward before the next forward with another frame count.
    """

    num_frames: int = 1
    n_images: int = 0

    @property
    def n_video(self) -> int:
        return self.num_frames - self.n_images


def split_video_images(x: torch.Tensor, layout: FrameLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*T, ...) -> video frames (B, Tv, ...) and image frames (B, Ti, ...)."""
    x = x.unflatten(0, (-1, layout.num_frames))  # (B, T, ...)
    return x[:, : layout.n_video], x[:, layout.n_video :]


def join_video_images(video: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Inverse of `split_video_images`: (B, Tv, ...), (B, Ti, ...) -> (B*T, ...)."""
    if images.shape[1] > 0:
        video = torch.cat([video, images], dim=1)
    return video.flatten(0, 1)


class TemporalAttention(nn.Module):
    """Self-attention along T at every spatial position, with rotary positions (LaVie §3.1).

    RoPE encodes relative frame offsets, so a model trained on 16 frames is not tied to absolute
    positions when the interpolation stage runs it on 61. The output projection starts at zero so
    the inflated network equals the image network at initialisation.
    """

    def __init__(self, dim: int, num_heads: int, rope_theta: float = 10000.0):
        super().__init__()
        if dim % num_heads != 0 or (dim // num_heads) % 2 != 0:
            raise ValueError(f"temporal attention needs dim ({dim}) divisible by num_heads ({num_heads}) into an even head size")
        self.num_heads = num_heads
        self.rope_theta = rope_theta
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, T, C) with N = batch * spatial positions; returns the residual update
        n, t, c = x.shape
        h = self.norm(x)
        q, k, v = (proj(h).view(n, t, self.num_heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v))  # (N, nh, T, hd)
        rope = get_1d_rotary_pos_embed(q.shape[-1], t, theta=self.rope_theta, use_real=True)  # cos, sin: (T, hd)
        q = apply_rotary_emb(q, rope, use_real=True, sequence_dim=2)
        k = apply_rotary_emb(k, rope, use_real=True, sequence_dim=2)
        y = F.scaled_dot_product_attention(q, k, v)  # (N, nh, T, hd)
        y = y.transpose(1, 2).reshape(n, t, c)  # (N, T, C)
        return self.to_out(y)


class SpatioTemporalTransformerBlock(nn.Module):
    """A diffusers `BasicTransformerBlock` followed by temporal self-attention: LaVie's
    ST-Transformer (§3.1, Fig. 3b). With `alpha_merge`, the spatial and temporal results are mixed
    as `alpha*spatial + (1-alpha)*temporal` with a learned alpha (Video LDM §3.1).
    """

    def __init__(self, spatial: nn.Module, dim: int, num_heads: int, layout: FrameLayout,
                 rope_theta: float = 10000.0, alpha_merge: bool = False, alpha_init: float = 0.5):
        super().__init__()
        self.spatial = spatial
        self.temporal = TemporalAttention(dim, num_heads, rope_theta)
        self.merge = AlphaBlender(alpha=_logit(alpha_init), merge_strategy="learned") if alpha_merge else None
        self.layout = layout

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        # diffusers calls the block positionally under gradient checkpointing and by keyword
        # otherwise, so everything is passed through untouched
        x = self.spatial(hidden_states, *args, **kwargs)  # (B*T, HW, C)
        video, images = split_video_images(x, self.layout)  # (B, Tv, HW, C), (B, Ti, HW, C)
        if video.shape[1] > 1:
            b, t, hw, c = video.shape
            seq = video.permute(0, 2, 1, 3).reshape(b * hw, t, c)  # (B*HW, Tv, C)
            mixed = seq + self.temporal(seq)
            mixed = mixed.view(b, hw, t, c).permute(0, 2, 1, 3)  # (B, Tv, HW, C)
            video = self.merge(video, mixed) if self.merge is not None else mixed
        return join_video_images(video, images)  # (B*T, HW, C)


class SpatioTemporalResnetBlock(nn.Module):
    """A diffusers `ResnetBlock2D` followed by a residual block of (3, 1, 1) convolutions over time
    (Video LDM §3.1 "residual blocks based on 3D convolutions"; LaVie §3.3 "3D convolutional
    layer" of the VSR model). Its last convolution starts at zero so the block starts as identity.
    """

    def __init__(self, spatial: nn.Module, layout: FrameLayout, alpha_merge: bool = False, alpha_init: float = 0.5):
        super().__init__()
        channels = spatial.out_channels
        temb_channels = spatial.time_emb_proj.in_features if spatial.time_emb_proj is not None else None
        if channels % 32 != 0:
            raise ValueError(f"temporal conv blocks use GroupNorm(32): channel count {channels} must be a multiple of 32")
        self.spatial = spatial
        self.temporal = TemporalResnetBlock(channels, channels, temb_channels=temb_channels, eps=1e-6)
        nn.init.zeros_(self.temporal.conv2.weight)
        nn.init.zeros_(self.temporal.conv2.bias)
        self.merge = AlphaBlender(alpha=_logit(alpha_init), merge_strategy="learned") if alpha_merge else None
        self.layout = layout

    def forward(self, input_tensor: torch.Tensor, temb: torch.Tensor | None = None, *args, **kwargs) -> torch.Tensor:
        x = self.spatial(input_tensor, temb, *args, **kwargs)  # (B*T, C, H, W)
        video, images = split_video_images(x, self.layout)  # (B, Tv, C, H, W), (B, Ti, C, H, W)
        if video.shape[1] > 1:
            video_temb = None
            if temb is not None and self.temporal.time_emb_proj is not None:
                video_temb = split_video_images(temb, self.layout)[0]  # (B, Tv, D)
            mixed = self.temporal(video.transpose(1, 2), video_temb).transpose(1, 2)  # (B, Tv, C, H, W)
            video = self.merge(video, mixed) if self.merge is not None else mixed
        return join_video_images(video, images)  # (B*T, C, H, W)


def _logit(alpha: float) -> float:
    # AlphaBlender's "learned" strategy stores alpha as a logit and applies a sigmoid
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha_init must lie in (0, 1), got {alpha}")
    return float(torch.logit(torch.tensor(alpha)))
