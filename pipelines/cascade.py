"""The LaVie cascade (LaVie §3, Fig. 2): base key frames -> temporal interpolation -> video
super-resolution, each stage optional after the base; a long base video (LaVie §4.4) goes through
interpolation and super-resolution whole, like a short one."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .common import frames_to_tensor
from .interpolation import LaVieInterpolationPipeline
from .super_resolution import LaVieVideoSuperResolutionPipeline
from .text_to_video import LaVieTextToVideoPipeline


@dataclass
class CascadeOptions:
    """Sampling settings of the whole cascade. `None` takes each stage folder's recipe (the
    interpolation and super-resolution steps fall back to `num_inference_steps` when it is set)."""

    negative_prompt: str | None = None
    num_frames: int = 16
    height: int | None = None
    width: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    interp_steps: int | None = None
    interp_factor: int = 4
    vsr_steps: int | None = None
    noise_level: int | None = None
    vsr_chunk_size: int | None = None
    vsr_chunk_overlap: int | None = None
    long_segments: int = 1  # > 1: a long video made recursively (needs a long-video base model)
    num_context: int = 1  # frames each segment continues from (LaVie: 1, the last frame)
    context_guidance_scale: float = 1.0
    seed: int | None = None


class CascadePipeline:
    """Chains a `LaVieTextToVideoPipeline` with an optional `LaVieInterpolationPipeline` and an
    optional `LaVieVideoSuperResolutionPipeline`. Stages exchange decoded frames, so each may bring
    its own VAE (the x4 upscaler's differs from SD's)."""

    def __init__(self, base: LaVieTextToVideoPipeline, interp: LaVieInterpolationPipeline | None = None,
                 vsr: LaVieVideoSuperResolutionPipeline | None = None):
        self.base, self.interp, self.vsr = base, interp, vsr

    @property
    def stages(self) -> list:
        return [s for s in (self.base, self.interp, self.vsr) if s is not None]

    @torch.no_grad()
    def __call__(self, prompt: str, options: CascadeOptions | None = None) -> torch.Tensor:
        """Returns frames (1, 3, T, H, W) in [-1, 1]."""
        o = options or CascadeOptions()
        # one generator per stage, seeded apart, so adding a stage leaves the earlier ones unchanged
        generators = [None if o.seed is None else torch.Generator().manual_seed(o.seed + i) for i in range(3)]

        # 1. base key frames (LaVie §3.1), extended segment by segment for long videos (LaVie §4.4)
        base_kwargs = dict(negative_prompt=o.negative_prompt, num_frames=o.num_frames, height=o.height, width=o.width,
                           num_inference_steps=o.num_inference_steps, guidance_scale=o.guidance_scale,
                           generator=generators[0], output_type="pt")
        if o.long_segments > 1:
            frames = self.base.generate_long(prompt, o.long_segments, o.num_context,
                                             context_guidance_scale=o.context_guidance_scale, **base_kwargs).frames
        else:
            frames = self.base(prompt, **base_kwargs).frames  # (1, T, 3, H, W) in [0, 1]
        video = frames_to_tensor(frames)  # (1, 3, T, H, W) in [-1, 1]

        # 2. temporal interpolation (LaVie §3.2)
        if self.interp is not None:
            frames = self.interp(prompt, video, negative_prompt=o.negative_prompt, factor=o.interp_factor,
                                 num_inference_steps=o.interp_steps or o.num_inference_steps,
                                 guidance_scale=o.guidance_scale, generator=generators[1], output_type="pt").frames
            video = frames_to_tensor(frames)

        # 3. video super-resolution (LaVie §3.3)
        if self.vsr is not None:
            frames = self.vsr(prompt, video, negative_prompt=o.negative_prompt, noise_level=o.noise_level,
                              num_inference_steps=o.vsr_steps or o.num_inference_steps, guidance_scale=o.guidance_scale,
                              chunk_size=o.vsr_chunk_size, chunk_overlap=o.vsr_chunk_overlap, generator=generators[2],
                              output_type="pt").frames
            video = frames_to_tensor(frames)
        return video
