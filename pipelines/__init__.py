"""Sampling with LaVie's cascade: base -> interpolation -> super-resolution -> mp4.

- `LaVieTextToVideoPipeline`, `LaVieInterpolationPipeline`, `LaVieVideoSuperResolutionPipeline`:
  diffusers `DiffusionPipeline`s, one per stage, loaded from stage folders with `from_pretrained`.
- `save_stage_folder(folder, unet, vae, text_encoder, tokenizer, scheduler, recipe)`: write one.
- `CascadePipeline` (+ `CascadeOptions`): the stages chained.
- `load_stage(folder_or_hub_id, stage)`: a stage from a stage folder or a diffusers image-model folder.
- `write_mp4`, `write_grid`: output through PyAV and PIL. CLI: `lavie-sample` (`lavie.pipelines.cli`).
"""

from .cascade import CascadeOptions, CascadePipeline
from .common import (
    SCHEDULERS,
    LaVieVideoPipeline,
    LaVieVideoPipelineOutput,
    encode_video,
    frames_to_tensor,
    make_scheduler,
    posterior_chunks,
)
from .interpolation import LaVieInterpolationPipeline
from .loading import (
    PIPELINES,
    ModelFolderError,
    apply_lora,
    custom_pipeline_file,
    load_scheduler,
    load_stage,
    load_unet,
    pipeline_class_for,
    resolve_model_dir,
    save_stage_folder,
    stage_pipeline,
)
from .super_resolution import LaVieVideoSuperResolutionPipeline, frame_windows
from .text_to_video import LaVieTextToVideoPipeline
from .video_io import to_uint8_frames, write_grid, write_mp4

__all__ = [
    "CascadeOptions",
    "CascadePipeline",
    "LaVieInterpolationPipeline",
    "LaVieTextToVideoPipeline",
    "LaVieVideoPipeline",
    "LaVieVideoPipelineOutput",
    "LaVieVideoSuperResolutionPipeline",
    "ModelFolderError",
    "apply_lora",
    "PIPELINES",
    "SCHEDULERS",
    "custom_pipeline_file",
    "encode_video",
    "frame_windows",
    "frames_to_tensor",
    "load_scheduler",
    "load_stage",
    "load_unet",
    "make_scheduler",
    "pipeline_class_for",
    "posterior_chunks",
    "resolve_model_dir",
    "save_stage_folder",
    "stage_pipeline",
    "to_uint8_frames",
    "write_grid",
    "write_mp4",
]
