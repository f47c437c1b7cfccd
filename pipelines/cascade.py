"""The LaVie cascade (LaVie §3, Fig. 2): base key frames -> temporal interpolation -> video
super-resolution, each stage optional after the base."""

from dataclasses import dataclass

import torch

from .interpolation import InterpolationPipeline
from .stage import StagePipeline
from .super_resolution import VideoSuperResolutionPipeline
from .text_to_video import TextToVideoPipeline


@dataclass
class CascadeOptions:
    """Sampling settings of the whole cascade; `None` steps reuse `num_inference_steps`."""

    negative_prompt: str | None = None
    num_frames: int = 16
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    interp_steps: int | None = None
    interp_factor: int = 4
    vsr_steps: int | None = None
    noise_level: int = 50
    vsr_window: int = 8
    vsr_overlap: int = 2
    num_windows: int = 1  # > 1: extend the base video autoregressively (needs a context model)
    num_context: int = 2
    context_guidance_scale: float = 1.0
    seed: int | None = None


class CascadePipeline:
    """Chains a `TextToVideoPipeline` with an optional `InterpolationPipeline` and an optional
    `VideoSuperResolutionPipeline`. Stages exchange decoded frames, so each may bring its own VAE
    (the x4 upscaler's differs from SD's)."""

    def __init__(self, base: TextToVideoPipeline, interp: InterpolationPipeline | None = None,
                 vsr: VideoSuperResolutionPipeline | None = None):
        self.base, self.interp, self.vsr = base, interp, vsr

    @property
    def stages(self) -> list[StagePipeline]:
        return [s for s in (self.base, self.interp, self.vsr) if s is not None]

    @torch.no_grad()
    def __call__(self, prompt: str, options: CascadeOptions | None = None) -> torch.Tensor:
        """Returns frames (1, 3, T, H, W) in [-1, 1]."""
        o = options or CascadeOptions()
        # one generator per stage, seeded apart, so adding a stage leaves the earlier ones unchanged
        generators = [None if o.seed is None else torch.Generator().manual_seed(o.seed + i) for i in range(3)]

        # 1. base key frames (LaVie §3.1), extended window by window for long videos (LaVie §4.4)
        base_kwargs = dict(negative_prompt=o.negative_prompt, num_frames=o.num_frames, height=o.height, width=o.width,
                           num_inference_steps=o.num_inference_steps, guidance_scale=o.guidance_scale,
                           generator=generators[0])
        if o.num_windows > 1:
            video = self.base.generate_long(prompt, o.num_windows, o.num_context,
                                            context_guidance_scale=o.context_guidance_scale, **base_kwargs)
        else:
            video = self.base(prompt, **base_kwargs)  # (1, 3, T, H, W)

        # 2. temporal interpolation (LaVie §3.2)
        if self.interp is not None:
            video = self.interp(prompt, video, negative_prompt=o.negative_prompt, factor=o.interp_factor,
                                num_inference_steps=o.interp_steps or o.num_inference_steps,
                                guidance_scale=o.guidance_scale, generator=generators[1])

        # 3. video super-resolution (LaVie §3.3)
        if self.vsr is not None:
            video = self.vsr(prompt, video, negative_prompt=o.negative_prompt, noise_level=o.noise_level,
                             num_inference_steps=o.vsr_steps or o.num_inference_steps, guidance_scale=o.guidance_scale,
                             window=o.vsr_window, overlap=o.vsr_overlap, generator=generators[2])
        return video
