"""The module diffusers' custom-pipeline loader imports for `LaVieInterpolationPipeline` folders:
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=lavie.pipelines.custom_pipeline_file(folder))`."""

from lavie.pipelines.interpolation import LaVieInterpolationPipeline

__all__ = ["LaVieInterpolationPipeline"]
