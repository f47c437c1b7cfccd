"""The module diffusers' custom-pipeline loader imports for `LaVieVideoSuperResolutionPipeline` folders:
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=lavie.pipelines.custom_pipeline_file(folder))`."""

from lavie.pipelines.super_resolution import LaVieVideoSuperResolutionPipeline

__all__ = ["LaVieVideoSuperResolutionPipeline"]
