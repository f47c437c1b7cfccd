"""Sampling with LaVie's cascade: base -> interpolation -> super-resolution -> mp4.

- `TextToVideoPipeline`, `InterpolationPipeline`, `VideoSuperResolutionPipeline`: one stage each.
- `CascadePipeline` (+ `CascadeOptions`): the stages chained.
- `load_stage(folder_or_hub_id, stage)`: a stage from a diffusers-style pipeline folder.
- `write_mp4`, `write_grid`: output through PyAV and PIL. CLI: `lavie-sample` (`lavie.pipelines.cli`).
"""

# Imported on first use (PEP 562): `lavie-sample --help` and the argument checks answer without
# loading torch, diffusers and transformers.
_EXPORTS = {
    "CascadeOptions": "cascade", "CascadePipeline": "cascade",
    "InterpolationPipeline": "interpolation",
    "ModelFolderError": "loading", "load_stage": "loading", "load_unet": "loading", "resolve_model_dir": "loading",
    "SCHEDULERS": "stage", "StagePipeline": "stage", "make_scheduler": "stage",
    "VideoSuperResolutionPipeline": "super_resolution", "frame_windows": "super_resolution",
    "TextToVideoPipeline": "text_to_video",
    "to_uint8_frames": "video_io", "write_grid": "video_io", "write_mp4": "video_io",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
