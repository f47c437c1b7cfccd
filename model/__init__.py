"""LaVie's cascaded video latent diffusion networks, built on diffusers.

- `VideoUNet`: base text-to-video model (LaVie §3.1), interpolation model (§3.2) and long-video
  prediction model (Video LDM §3.2), inflated from a diffusers `UNet2DConditionModel`.
- `VideoSRUNet`: video super-resolution model inflated from the SD x4 upscaler UNet (LaVie §3.3).
- `interpolation_conditioning`, `context_conditioning`: the inputs of the conditioned models.
- `lavie.model.tiny.build_tiny_components`: tiny random pipeline folders for tests and the demo.
"""

from .conditioning import context_conditioning, interpolated_length, interpolation_conditioning
from .temporal import FrameLayout, TemporalAttention
from .video_unet import VideoSRUNet, VideoUNet, VideoUNetOutput

__all__ = [
    "FrameLayout",
    "TemporalAttention",
    "VideoSRUNet",
    "VideoUNet",
    "VideoUNetOutput",
    "context_conditioning",
    "interpolated_length",
    "interpolation_conditioning",
]
