"""The module diffusers' custom-pipeline loader imports for `LaVieTextToVideoPipeline` folders:
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=lavie.pipelines.custom_pipeline_file(folder))`."""

from lavie.pipelines.text_to_video import LaVieTextToVideoPipeline

__all__ = ["LaVieTextToVideoPipeline"]
