"""Sampling with LaVie's cascade: base -> interpolation -> super-resolution -> mp4.

- `LaVieTextToVideoPipeline`, `LaVieInterpolationPipeline`, `LaVieVideoSuperResolutionPipeline`:
  diffusers `DiffusionPipeline`s, one per stage, loaded from stage folders with `from_pretrained`.
- `save_stage_folder(folder, unet, vae, text_encoder, tokenizer, scheduler, recipe)`: write one.
- `CascadePipeline` (+ `CascadeOptions`): the stages chained.
- `load_stage(folder_or_hub_id, stage)`: a stage from a stage folder or a diffusers image-model folder.
- `write_mp4`, `write_grid`: output through PyAV and PIL. CLI: `lavie-sample` (`lavie.pipelines.cli`).
"""

# Imported on first use (PEP 562): `lavie-sample --help` and the argument checks answer without
# loading torch, diffusers and transformers.
_EXPORTS = {
    "CascadeOptions": "cascade", "CascadePipeline": "cascade",
    "SCHEDULERS": "common", "LaVieVideoPipeline": "common", "LaVieVideoPipelineOutput": "common", "encode_video": "common",
    "frames_to_tensor": "common", "make_scheduler": "common", "posterior_chunks": "common",
    "LaVieInterpolationPipeline": "interpolation",
    "PIPELINES": "loading", "ModelFolderError": "loading", "apply_lora": "loading", "custom_pipeline_file": "loading",
    "load_scheduler": "loading", "load_stage": "loading", "load_unet": "loading", "pipeline_class_for": "loading",
    "resolve_model_dir": "loading", "save_stage_folder": "loading", "stage_pipeline": "loading",
    "LaVieVideoSuperResolutionPipeline": "super_resolution", "frame_windows": "super_resolution",
    "LaVieTextToVideoPipeline": "text_to_video",
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
