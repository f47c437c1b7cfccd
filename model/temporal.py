"""Temporal layers that turn a diffusers image UNet into LaVie's video UNets.

Read bottom-up: the frame layout shared by every temporal layer -> video GroupNorm -> relative
position bias and partial rotary encoding -> temporal self-attention -> sparse-causal spatial
attention (interpolation model) -> the spatio-temporal transformer block (LaVie §3.1, Fig. 3b)
-> temporal 3D-conv blocks and the block-level temporal module of the VSR model (LaVie §3.3).

Spatial layers see every frame as an independent image, `(B*T, ...)`; temporal layers reshape to
`(B, T, ...)`, mix along T, and reshape back. Each layer computes what the corresponding layer of
the released LaVie networks computes, so their checkpoints convert (`lavie.model.convert`).

Joint image-video fine-tuning (LaVie §3.1, Fig. 3c): the last `n_images` frames of each sample are
independent images riding along T. No temporal layer mixes them with the video frames: temporal
attention and temporal convolutions skip them, and the video GroupNorm normalises them one by one.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from diffusers.models.resnet import AlphaBlender, ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel


@dataclass
class FrameLayout:
    """How the `B*T` batch of the spatial layers folds back into videos.

    One instance is shared by all temporal layers of a model; `VideoUNet.forward` sets it before the
    spatial UNet runs, because diffusers' blocks call resnets and transformer blocks with a fixed
    signature that has no place for the frame count. Under gradient checkpointing the recomputation
    in backward reads it again, so run backward before the next forward with another frame count.
    `temb` holds the per-frame time (+ noise level) embedding for the block-level temporal modules.
    """

    num_frames: int = 1
    n_images: int = 0
    temb: torch.Tensor | None = None  # (B*T, D)

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


class VideoGroupNormFunction(torch.autograd.Function):
    """GroupNorm over (C/G, T, H, W) of a frame-major video (B, T, C, H, W), without transposing it.

    Forward: ATen's per-frame group norm gives each frame's normalised values and statistics in one
    pass; the video statistics follow from the law of total variance (frames hold equal counts), and
    one fused scale-and-shift per (frame, channel) turns per-frame into per-video normalisation. A
    generic reduction over the non-adjacent dims (T, C/G, H, W) is several times slower on CPU.
    Backward: the analytic GroupNorm gradient from per-channel sums of dy and dy*x, so only the input
    is kept, as for `F.group_norm`.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, groups: int, eps: float):
        b, t, c, h, w = x.shape
        frames = x.reshape(b * t, c, h * w)
        y, frame_mean, frame_rstd = torch.native_group_norm(frames, None, None, b * t, c, h * w, groups, eps)  # y: (B*T, C, HW)
        frame_mean = frame_mean.view(b, t, groups)
        frame_rstd = frame_rstd.view(b, t, groups)
        mean = frame_mean.mean(1, keepdim=True)  # (B, 1, G)
        # variance + eps of the video: mean over frames of (frame variance + eps) + spread of the frame means
        rstd = (frame_rstd.pow(-2) + (frame_mean - mean).square()).mean(1, keepdim=True).rsqrt()  # (B, 1, G)
        scale = (rstd / frame_rstd).repeat_interleave(c // groups, dim=-1)  # (B, T, C)
        shift = ((frame_mean - mean) * rstd).repeat_interleave(c // groups, dim=-1)
        if weight is not None:
            scale = scale * weight
            shift = torch.addcmul(bias, shift, weight)
        y = y.view(b, t, c, h * w)
        out = torch.addcmul(shift[..., None], y, scale[..., None], out=y)  # in place over y
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return out.view(b, t, c, h, w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, mean, rstd = ctx.saved_tensors
        b, t, c, h, w = x.shape
        groups, per_group = ctx.groups, c // ctx.groups
        n = t * per_group * h * w  # elements per group of a video
        x = x.reshape(b, t, c, h * w)
        grad = grad.reshape(b, t, c, h * w)
        sum_dy = grad.sum(dim=(1, 3))  # (B, C)
        sum_dy_x = torch.linalg.vecdot(grad, x).sum(1)  # (B, C)
        mean_c = mean.view(b, groups, 1).expand(-1, -1, per_group).reshape(b, c)  # (B, C)
        rstd_c = rstd.view(b, groups, 1).expand(-1, -1, per_group).reshape(b, c)
        sum_dy_xhat = rstd_c * (sum_dy_x - mean_c * sum_dy)  # (B, C): sum of dy * normalised x
        grad_weight = sum_dy_xhat.sum(0) if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy.sum(0) if weight is not None and ctx.needs_input_grad[2] else None
        if not ctx.needs_input_grad[0]:
            return None, grad_weight, grad_bias, None, None
        gain = weight.expand(b, c) if weight is not None else torch.ones_like(rstd_c)  # (B, C)
        # dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = weight * dy, means over the group,
        # written as dy * a + x * k + s with per-(video, channel) coefficients a, k, s
        mean_g = (gain * sum_dy).view(b, groups, per_group).sum(-1) / n  # (B, G)
        mean_g_xhat = (gain * sum_dy_xhat).view(b, groups, per_group).sum(-1) / n
        r, m = rstd.view(b, groups), mean.view(b, groups)
        k = -r * r * mean_g_xhat  # (B, G)
        s = -k * m - r * mean_g
        a = (rstd_c * gain)[:, None, :, None]  # (B, 1, C, 1)
        k = k.repeat_interleave(per_group, dim=-1)[:, None, :, None]
        s = s.repeat_interleave(per_group, dim=-1)[:, None, :, None]
        grad_x = torch.addcmul(s, grad, a).addcmul_(x, k)  # (B, T, C, HW)
        return grad_x.view(b, t, c, h, w), grad_weight, grad_bias, None, None


class VideoGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics span all frames of a video, as LaVie's resnets normalise the 5-D
    tensor (B, C, T, H, W). Image frames of joint training are normalised one by one, exactly as the
    image model does, so they never share statistics with the video. Built from a 2-D GroupNorm,
    whose parameters it takes over under the same names.
    """

    def __init__(self, norm: nn.GroupNorm, layout: FrameLayout):
        super().__init__(norm.num_groups, norm.num_channels, norm.eps, norm.affine)
        self.weight, self.bias = norm.weight, norm.bias
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout.n_video <= 1:
            return super().forward(x)
        video, images = split_video_images(x, self.layout)  # (B, Tv, C, H, W), (B, Ti, C, H, W)
        video = self.video_norm(video)
        if images.shape[1] > 0:
            images = super().forward(images.flatten(0, 1)).unflatten(0, images.shape[:2])
        return join_video_images(video, images)  # (B*T, C, H, W)

    def video_norm(self, video: torch.Tensor) -> torch.Tensor:
        x = video.float() if video.dtype in (torch.float16, torch.bfloat16) else video
        weight, bias = (self.weight.to(x.dtype), self.bias.to(x.dtype)) if self.affine else (None, None)
        return VideoGroupNormFunction.apply(x, weight, bias, self.num_groups, self.eps)  # (B, T, C, H, W)


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 32) -> torch.Tensor:
    """T5's bidirectional relative-position buckets: half the buckets per direction (a key before
    the query, offset < 0, uses the upper half), exact for offsets below `num_buckets // 4`, then
    logarithmic up to `max_distance`, beyond which offsets share the last bucket."""
    n = -relative_position
    half = num_buckets // 2
    bucket = (n < 0).long() * half
    n = n.abs()
    max_exact = half // 2
    log_ratio = torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (log_ratio * (half - max_exact)).long()).clamp(max=half - 1)
    return bucket + torch.where(n < max_exact, n, large)


class RelativePositionBias(nn.Module):
    """A learned bias per head and relative-offset bucket, added to the attention scores of the
    temporal attention (LaVie §3.1 with the released model's T5 buckets)."""

    def __init__(self, heads: int, num_buckets: int = 32, max_distance: int = 32):
        super().__init__()
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def forward(self, num_frames: int, device: torch.device) -> torch.Tensor:
        position = torch.arange(num_frames, device=device)
        offset = position[None, :] - position[:, None]  # (T_query, T_key): key - query
        buckets = relative_position_bucket(offset, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1)  # (heads, T, T)


def apply_partial_rope(x: torch.Tensor, rope_dim: int, theta: float = 10000.0) -> torch.Tensor:
    """Rotate the first `rope_dim` channels of every head by the frame index, in interleaved pairs
    (channels 2i, 2i+1 by angle t * theta^(-2i/rope_dim)); the other channels pass through.

    x: (..., T, head_dim). LaVie shares one 32-dim rotary table between all blocks, so heads of
    80 or 160 channels keep most channels unrotated. The pairs are read as complex numbers and the
    whole head is multiplied by unit phases (1 beyond `rope_dim`, which leaves those channels exact):
    one pass over any strided layout, where rotating a slice and concatenating takes several.
    """
    if rope_dim > x.shape[-1]:
        raise ValueError(f"rotary dim {rope_dim} exceeds the head size {x.shape[-1]}")
    t, head_dim = x.shape[-2:]
    span = head_dim - head_dim % 2  # channels read as pairs; an odd head keeps its last channel
    phases = get_1d_rotary_pos_embed(rope_dim, t, theta=theta, use_real=False)  # (T, rope_dim / 2) complex
    if rope_dim < span:
        phases = torch.cat([phases, phases.new_ones(t, (span - rope_dim) // 2)], dim=-1)  # (T, span / 2)
    real = x[..., :span].float()
    if real.storage_offset() % 2 or any(stride % 2 for stride in real.stride()[:-1]):
        real = real.contiguous()  # complex views need even strides (an odd head, an odd slice)
    pairs = torch.view_as_complex(real.unflatten(-1, (-1, 2)))  # (..., T, span / 2)
    rotated = torch.view_as_real(pairs * phases.to(x.device)).flatten(-2).to(x.dtype)  # (..., T, span)
    return rotated if span == head_dim else torch.cat([rotated, x[..., span:]], dim=-1)


class TemporalAttention(nn.Module):
    """Self-attention along T at every spatial position (LaVie §3.1).

    With `rope_dim > 0`, rotary frame positions on the first `rope_dim` channels of each head; with
    `rel_pos_buckets > 0`, a learned T5 relative-position bias on the scores: the base and VSR
    models use both, the interpolation model neither. The output projection starts at zero so the
    inflated network equals the image network at initialisation.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, rope_dim: int = 32, rope_theta: float = 10000.0,
                 rel_pos_buckets: int = 32, rel_pos_max_distance: int = 32):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.rope_dim = rope_dim
        self.rope_theta = rope_theta
        if rope_dim and (rope_dim % 2 or rope_dim > head_dim):
            raise ValueError(f"rope_dim={rope_dim} must be even and at most the head size {head_dim}")
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        nn.init.zeros_(self.to_out[0].weight)
        nn.init.zeros_(self.to_out[0].bias)
        self.rel_pos_bias = RelativePositionBias(heads, rel_pos_buckets, rel_pos_max_distance) if rel_pos_buckets else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, N, C) with N spatial positions, attended along T; returns the residual update.
        # Heads go to (B, N, heads, T, d) as views, so the video is never transposed as a whole.
        q, k, v = (proj(x).unflatten(-1, (self.heads, -1)).permute(0, 2, 3, 1, 4) for proj in (self.to_q, self.to_k, self.to_v))
        if self.rope_dim:
            q = apply_partial_rope(q, self.rope_dim, self.rope_theta)
            k = apply_partial_rope(k, self.rope_dim, self.rope_theta)
        bias = None
        if self.rel_pos_bias is not None:
            bias = self.rel_pos_bias(x.shape[1], x.device).to(q.dtype)  # (heads, T, T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, N, heads, T, d)
        y = y.permute(0, 3, 1, 2, 4).flatten(3)  # (B, T, N, heads * d)
        return self.to_out[1](self.to_out[0](y))


class SparseCausalAttnProcessor:
    """Spatial self-attention in which every frame attends to the tokens of the first frame and of
    the previous frame (the released interpolation model's spatial attention). Image frames of
    joint training attend to themselves. A diffusers attention processor, so the attention module
    and its weight names stay the image model's.
    """

    def __init__(self, layout: FrameLayout):
        self.layout = layout

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("sparse-causal attention is a self-attention without mask")
        residual = hidden_states
        t, tv = self.layout.num_frames, self.layout.n_video
        # key/value frame of each frame: the first and the previous video frame; images use their own
        index = torch.arange(t, device=hidden_states.device)
        first = torch.where(index < tv, torch.zeros_like(index), index)
        previous = torch.where(index < tv, (index - 1).clamp(min=0), index)

        q = attn.to_q(hidden_states)  # (B*T, L, C)
        k = attn.to_k(hidden_states).unflatten(0, (-1, t))  # (B, T, L, C)
        v = attn.to_v(hidden_states).unflatten(0, (-1, t))
        k = torch.cat([k[:, first], k[:, previous]], dim=2).flatten(0, 1)  # (B*T, 2L, C)
        v = torch.cat([v[:, first], v[:, previous]], dim=2).flatten(0, 1)
        q, k, v = (x.unflatten(-1, (attn.heads, -1)).transpose(1, 2) for x in (q, k, v))  # (B*T, h, L|2L, d)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B*T, L, C)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class SpatioTemporalTransformerBlock(nn.Module):
    """LaVie's ST-Transformer block (§3.1, Fig. 3b): a diffusers `BasicTransformerBlock` whose
    submodules it takes over under their own names (`norm1, attn1, norm2, attn2, norm3, ff`), with a
    temporal self-attention and its LayerNorm (`temporal_norm`, `temporal_attn`) inserted after the
    cross-attention, before the feed-forward (`temporal_after_ff=False`: base and VSR models) or
    after the feed-forward (`True`: interpolation model). With `alpha_merge`, the block's input and
    its temporally mixed output are blended as `alpha*x + (1-alpha)*mixed` (Video LDM §3.1).
    """

    def __init__(self, block: BasicTransformerBlock, layout: FrameLayout, temporal_after_ff: bool = False,
                 rope_dim: int = 32, rope_theta: float = 10000.0, rel_pos_buckets: int = 32,
                 rel_pos_max_distance: int = 32, sparse_causal: bool = False, alpha_merge: bool = False,
                 alpha_init: float = 0.5):
        super().__init__()
        if block.norm_type != "layer_norm" or block.pos_embed is not None or block._chunk_size is not None:
            raise ValueError(f"only layer-norm transformer blocks without positional embedding inflate, got norm_type={block.norm_type!r}")
        self.only_cross_attention = block.only_cross_attention
        self.norm1, self.attn1, self.norm2, self.attn2, self.norm3, self.ff = block.norm1, block.attn1, block.norm2, block.attn2, block.norm3, block.ff
        dim = block.norm1.normalized_shape[0]
        heads = block.attn1.heads
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = TemporalAttention(dim, heads, block.attn1.inner_dim // heads, rope_dim, rope_theta, rel_pos_buckets, rel_pos_max_distance)
        self.merge = AlphaBlender(alpha=_logit(alpha_init), merge_strategy="learned") if alpha_merge else None
        self.temporal_after_ff = temporal_after_ff
        self.layout = layout
        if sparse_causal:
            if block.only_cross_attention:
                raise ValueError("sparse-causal attention replaces a self-attention; this block's attn1 is a cross-attention")
            self.attn1.set_processor(SparseCausalAttnProcessor(layout))

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, encoder_hidden_states=None,
                encoder_attention_mask=None, timestep=None, cross_attention_kwargs=None, class_labels=None,
                added_cond_kwargs=None) -> torch.Tensor:
        # the signature is BasicTransformerBlock's: diffusers calls it positionally under gradient checkpointing
        extra = cross_attention_kwargs or {}
        x = hidden_states  # (B*T, HW, C)
        context = encoder_hidden_states if self.only_cross_attention else None
        x = x + self.attn1(self.norm1(x), encoder_hidden_states=context, attention_mask=attention_mask, **extra)
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), encoder_hidden_states=encoder_hidden_states, attention_mask=encoder_attention_mask, **extra)
        if not self.temporal_after_ff:
            x = self.temporal(x)
        x = x + self.ff(self.norm3(x))
        return self.temporal(x) if self.temporal_after_ff else x

    def temporal(self, x: torch.Tensor) -> torch.Tensor:
        video, images = split_video_images(x, self.layout)  # (B, Tv, HW, C), (B, Ti, HW, C)
        if video.shape[1] > 0:
            mixed = video + self.temporal_attn(self.temporal_norm(video))  # attention along Tv at every position
            video = self.merge(video, mixed) if self.merge is not None else mixed
        return join_video_images(video, images)  # (B*T, HW, C)


class TemporalConvBlock(nn.Module):
    """A residual block of (k, 1, 1) convolutions over time (Video LDM §3.1 "residual blocks based
    on 3D convolutions"; the released VSR model's 3D-conv blocks): GroupNorm over the video, SiLU,
    conv (k, 1, 1), optional time embedding, GroupNorm, SiLU, conv (3, 1, 1). With `zero_init` the
    last convolution starts at zero so the block starts as the identity.

    forward: x (B, C, T, H, W), temb (B, D) or None -> (B, C, T, H, W).
    """

    def __init__(self, channels: int, kernel_size: int = 3, temb_channels: int | None = None, groups: int = 32,
                 eps: float = 1e-6, zero_init: bool = True):
        super().__init__()
        if channels % groups:
            raise ValueError(f"temporal conv blocks use GroupNorm({groups}): channel count {channels} must be a multiple of {groups}")
        self.norm1 = nn.GroupNorm(groups, channels, eps)
        self.conv1 = nn.Conv3d(channels, channels, (kernel_size, 1, 1), padding=((kernel_size - 1) // 2, 0, 0))
        self.time_emb_proj = nn.Linear(temb_channels, channels) if temb_channels else None
        self.norm2 = nn.GroupNorm(groups, channels, eps)
        self.conv2 = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        if self.time_emb_proj is not None and temb is not None:
            h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


def video_apply(x: torch.Tensor, layout: FrameLayout, fn) -> torch.Tensor:
    """Apply `fn` to the video frames of a `(B*T, C, H, W)` batch as a `(B, C, Tv, H, W)` video;
    image frames pass through."""
    video, images = split_video_images(x, layout)  # (B, Tv, C, H, W)
    if video.shape[1] > 0:
        video = fn(video.transpose(1, 2)).transpose(1, 2)
    return join_video_images(video, images)


class TemporalConvTransformer2DModel(Transformer2DModel):
    """A diffusers `Transformer2DModel` with a temporal 3D-conv block (`temporal_conv`) applied to
    its input: the released VSR model's transformers, where the spatial transformer's residual
    starts after the temporal convolution. Build with `from_transformer`; the spatial weights keep
    their names."""

    @classmethod
    def from_transformer(cls, transformer: Transformer2DModel, layout: FrameLayout) -> "TemporalConvTransformer2DModel":
        model = cls(**{k: v for k, v in transformer.config.items() if not k.startswith("_")})
        model.load_state_dict(transformer.state_dict(), assign=True)
        model.temporal_conv = TemporalConvBlock(transformer.config.in_channels)
        model.layout = layout
        return model.to(transformer.device)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        hidden_states = video_apply(hidden_states, self.layout, self.temporal_conv)  # (B*T, C, H, W)
        return super().forward(hidden_states, *args, **kwargs)


class BlockTemporalModule(nn.Module):
    """The released VSR model's temporal module after each down, mid and up block: a (5, 1, 1)
    temporal conv block and a 3x3 resnet over the video (both with the time embedding), then a
    zero-initialised 1x1 convolution whose output is added to the block's output.

    forward: x (B*T, C, H, W), temb (B*T, D) -> (B*T, C, H, W); image frames pass through.
    """

    def __init__(self, channels: int, temb_channels: int, layout: FrameLayout):
        super().__init__()
        self.layout = layout
        self.video_layout = FrameLayout()  # the resnet sees the video frames alone
        self.temporal_conv = TemporalConvBlock(channels, kernel_size=5, temb_channels=temb_channels, zero_init=False)
        self.spatial_resnet = ResnetBlock2D(in_channels=channels, out_channels=channels, temb_channels=temb_channels, groups=32, eps=1e-6)
        for name in ("norm1", "norm2"):
            setattr(self.spatial_resnet, name, VideoGroupNorm(getattr(self.spatial_resnet, name), self.video_layout))
        self.shift_conv = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.shift_conv.weight)
        nn.init.zeros_(self.shift_conv.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        video, images = split_video_images(x, self.layout)  # (B, Tv, C, H, W)
        if video.shape[1] == 0:
            return x
        b, t = video.shape[:2]
        self.video_layout.num_frames = t
        video_temb = split_video_images(temb, self.layout)[0]  # (B, Tv, D)
        h = self.temporal_conv(video.transpose(1, 2), video_temb[:, 0]).transpose(1, 2).flatten(0, 1)  # (B*Tv, C, H, W)
        h = self.spatial_resnet(h, video_temb.flatten(0, 1))
        video = video + self.shift_conv(h).unflatten(0, (b, t))
        return join_video_images(video, images)


class AfterBlock:
    """Forward hook that runs a `BlockTemporalModule` on the output of a diffusers UNet block (the
    hidden states only: the skip connections a down block returns stay as they are)."""

    def __init__(self, module: BlockTemporalModule):
        self.module = module

    def __call__(self, block, args, output):
        temb = self.module.layout.temb
        if isinstance(output, tuple):  # down blocks: (hidden_states, skip connections)
            return (self.module(output[0], temb),) + output[1:]
        return self.module(output, temb)


def _logit(alpha: float) -> float:
    # AlphaBlender's "learned" strategy stores alpha as a logit and applies a sigmoid
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha_init must lie in (0, 1), got {alpha}")
    return float(torch.logit(torch.tensor(alpha)))
