"""Sampling with LaVie's cascade: base -> interpolation -> super-resolution -> mp4.

- `TextToVideoPipeline`, `InterpolationPipeline`, `VideoSuperResolutionPipeline`: one stage each.
- `CascadePipeline` (+ `CascadeOptions`): the stages chained.
- `load_stage(folder_or_hub_id, stage)`: a stage from a diffusers-style pipeline folder.
- `write_mp4`, `write_grid`: output through PyAV and PIL. CLI: `lavie-sample` (`lavie.pipelines.cli`).
"""

from .cascade import CascadeOptions, CascadePipeline
from .interpolation import InterpolationPipeline
from .loading import ModelFolderError, load_stage, load_unet, resolve_model_dir
from .stage import SCHEDULERS, StagePipeline, make_scheduler
from .super_resolution import VideoSuperResolutionPipeline, frame_windows
from .text_to_video import TextToVideoPipeline
from .video_io import to_uint8_frames, write_grid, write_mp4

__all__ = [
    "CascadeOptions",
    "CascadePipeline",
    "InterpolationPipeline",
    "ModelFolderError",
    "SCHEDULERS",
    "StagePipeline",
    "TextToVideoPipeline",
    "VideoSuperResolutionPipeline",
    "frame_windows",
    "load_stage",
    "load_unet",
    "make_scheduler",
    "resolve_model_dir",
    "to_uint8_frames",
    "write_grid",
    "write_mp4",
]
