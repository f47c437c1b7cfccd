"""Stage folders: writing them, and loading a stage from a folder or a hub id.

A stage folder is a diffusers pipeline folder written by `save_pretrained`: `model_index.json`
names the pipeline class (`LaVieTextToVideoPipeline`, `LaVieInterpolationPipeline` or
`LaVieVideoSuperResolutionPipeline`), its components and its sampling recipe; the components sit in
`unet/ vae/ text_encoder/ tokenizer/ scheduler/` (plus `low_res_scheduler/` for super-resolution).
Training, the tiny presets and the checkpoint converter all write them with `save_stage_folder`.

`load_stage` also reads folders of plain diffusers image models: an SD 1.4 folder for the base stage
or the SD x4 upscaler for super-resolution; their image UNet is inflated on load with identity
temporal layers, so frames come out as independent images until the temporal layers are trained.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import diffusers
from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from lavie.model import VideoSRUNet, VideoUNet

from .common import LaVieVideoPipeline
from .interpolation import LaVieInterpolationPipeline
from .super_resolution import LaVieVideoSuperResolutionPipeline
from .text_to_video import LaVieTextToVideoPipeline

logger = logging.getLogger(__name__)

PIPELINES: dict[str, type[LaVieVideoPipeline]] = {
    "base": LaVieTextToVideoPipeline,
    "interp": LaVieInterpolationPipeline,
    "vsr": LaVieVideoSuperResolutionPipeline,
}
# the shim module diffusers' custom-pipeline loader imports for each pipeline class
CUSTOM_PIPELINE_FILES = {
    "LaVieTextToVideoPipeline": "custom_text_to_video.py",
    "LaVieInterpolationPipeline": "custom_interpolation.py",
    "LaVieVideoSuperResolutionPipeline": "custom_super_resolution.py",
}
STAGE_CONDITIONINGS = {("base", "none"), ("base", "context"), ("interp", "interpolation")}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EXAMPLES = {"base": "CompVis/stable-diffusion-v1-4", "interp": "a folder saved by lavie-train --stage interp",
            "vsr": "stabilityai/stable-diffusion-x4-upscaler"}


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing or incomplete."""


# --- writing ----------------------------------------------------------------------------------------


def pipeline_class_for(unet) -> type[LaVieVideoPipeline]:
    """The pipeline that samples with `unet`: super-resolution for a `VideoSRUNet`, interpolation
    for conditioning 'interpolation', text-to-video otherwise (conditioning 'none' or 'context')."""
    if isinstance(unet, VideoSRUNet):
        return LaVieVideoSuperResolutionPipeline
    if unet.config.conditioning == "interpolation":
        return LaVieInterpolationPipeline
    return LaVieTextToVideoPipeline


def stage_pipeline(unet, vae, text_encoder, tokenizer, scheduler, recipe: dict | None = None,
                   low_res_scheduler=None) -> LaVieVideoPipeline:
    """The pipeline of `unet`'s stage around these components. `recipe`: the sampling defaults to
    keep in its config (`num_inference_steps`, `guidance_scale`, `negative_prompt`, `prompt_suffix`; for
    super-resolution also `noise_level`, `chunk_size`, `chunk_overlap`, `max_noise_level`)."""
    cls = pipeline_class_for(unet)
    parts = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
    if cls is LaVieVideoSuperResolutionPipeline:
        if low_res_scheduler is None:
            raise ValueError("a super-resolution stage needs its low_res_scheduler")
        parts["low_res_scheduler"] = low_res_scheduler
    return cls(**parts, **(recipe or {}))


def save_stage_folder(folder: str | Path, unet, vae, text_encoder, tokenizer, scheduler, recipe: dict | None = None,
                      low_res_scheduler=None) -> Path:
    """Write a complete stage folder (`save_pretrained` of the stage's pipeline); returns it.

    It loads with `PipelineClass.from_pretrained(folder)`, `lavie.pipelines.load_stage(folder, stage)`
    and `lavie-sample --base/--interp/--vsr folder`.
    """
    folder = Path(folder)
    stage_pipeline(unet, vae, text_encoder, tokenizer, scheduler, recipe, low_res_scheduler).save_pretrained(folder)
    return folder


def custom_pipeline_file(folder_or_class: str | Path) -> str:
    """The file to pass as `custom_pipeline` so that diffusers' generic loader reads a stage folder:

        DiffusionPipeline.from_pretrained(folder, custom_pipeline=custom_pipeline_file(folder))

    `folder_or_class`: a stage folder (its model_index.json names the class) or a class name.
    """
    name = str(folder_or_class)
    index = Path(folder_or_class) / "model_index.json"
    if index.is_file():
        name = json.loads(index.read_text()).get("_class_name")
    if name not in CUSTOM_PIPELINE_FILES:
        raise ValueError(f"{folder_or_class}: not a LaVie pipeline ({name!r}); choose one of {sorted(CUSTOM_PIPELINE_FILES)}")
    return str(Path(__file__).with_name(CUSTOM_PIPELINE_FILES[name]))


# --- loading ----------------------------------------------------------------------------------------


def resolve_model_dir(spec: str | Path, stage: str) -> Path:
    """A local folder as is; a hub id through the Hugging Face cache (downloading when online)."""
    path = Path(spec)
    if path.is_dir():
        return path
    how = (f"pass a local folder laid out like a diffusers pipeline (unet/ vae/ text_encoder/ tokenizer/ scheduler/), "
           f"e.g. built by lavie.model.tiny.build_tiny_components(dir, stage={stage!r}) or saved by lavie-train, "
           f"or a Hugging Face hub id ({EXAMPLES.get(stage, EXAMPLES['base'])})")
    if path.exists() or not HUB_ID.match(str(spec)):
        raise ModelFolderError(f"{stage} model {str(spec)!r}: no such folder; {how}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(spec)))
    except Exception as err:  # offline, unknown repo, gated repo: all end the same way for the user
        raise ModelFolderError(f"{stage} model {str(spec)!r}: not a local folder, and the hub id could not be fetched ({err}); {how}") from err


def needed_components(stage: str) -> list[str]:
    return ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] + (["low_res_scheduler"] if stage == "vsr" else [])


def load_stage(spec: str | Path, stage: str) -> LaVieVideoPipeline:
    """The pipeline of `stage` ("base", "interp" or "vsr") from a stage folder, a diffusers image
    model folder (SD 1.4 for base, the x4 upscaler for vsr) or a hub id of either."""
    if stage not in PIPELINES:
        raise ValueError(f"stage={stage!r}: choose one of {sorted(PIPELINES)}")
    folder = resolve_model_dir(spec, stage)
    needed = needed_components(stage)
    missing = [name for name in needed if not (folder / name).is_dir()]
    if missing:
        raise ModelFolderError(f"{stage} model folder {str(folder)!r} lacks {', '.join(n + '/' for n in missing)}: "
                               f"it must hold {', '.join(n + '/' for n in needed)} like a diffusers pipeline folder")
    cls = PIPELINES[stage]
    index_file = folder / "model_index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {}
    if index.get("_class_name") in CUSTOM_PIPELINE_FILES and check_unet_class(folder / "unet", stage) != "UNet2DConditionModel":
        return cls.from_pretrained(folder)

    # a diffusers image-model folder: components one by one, the image UNet inflated
    components = {
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder"),
        "vae": AutoencoderKL.from_pretrained(folder / "vae"),
        "unet": load_unet(folder / "unet", stage),
        "scheduler": load_scheduler(folder / "scheduler"),
    }
    if stage == "vsr":
        components["low_res_scheduler"] = load_scheduler(folder / "low_res_scheduler")
        components["max_noise_level"] = index.get("max_noise_level", 350)
    return cls(**components)


def check_unet_class(folder: Path, stage: str) -> str:
    """The UNet class of a stage's `unet/` folder; a ModelFolderError when that stage cannot use it."""
    config = json.loads((folder / "config.json").read_text())
    class_name = config.get("_class_name")
    conditioning = config.get("conditioning", "none")
    if class_name == "VideoUNet" and (stage, conditioning) in STAGE_CONDITIONINGS:
        return class_name
    if class_name == "VideoSRUNet" and stage == "vsr":
        return class_name
    if class_name == "UNet2DConditionModel" and stage in ("base", "vsr"):
        return class_name
    if class_name == "VideoUNet":
        class_name = f"VideoUNet with conditioning={conditioning!r}"
    expected = {"base": "VideoUNet (conditioning 'none' or 'context') or UNet2DConditionModel", "interp": "VideoUNet (conditioning='interpolation')",
                "vsr": "VideoSRUNet or the x4 upscaler's UNet2DConditionModel"}[stage]
    raise ModelFolderError(f"{folder}: holds a {class_name}, but the {stage} stage needs a {expected}")


def load_unet(folder: Path, stage: str) -> VideoUNet:
    """A stage's video UNet; a diffusers image UNet is inflated (base and vsr only)."""
    class_name = check_unet_class(folder, stage)
    if class_name == "UNet2DConditionModel":
        logger.warning("%s: inflating the image UNet in %s; its temporal layers are untrained, so frames are independent images",
                       stage, folder)
        video_cls = VideoSRUNet if stage == "vsr" else VideoUNet
        return video_cls.from_unet2d(UNet2DConditionModel.from_pretrained(folder))
    return (VideoSRUNet if class_name == "VideoSRUNet" else VideoUNet).from_pretrained(folder)


def load_scheduler(folder: Path) -> SchedulerMixin:
    """The diffusers scheduler saved in `folder` (its class named in scheduler_config.json)."""
    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{folder}: no scheduler_config.json")
    name = json.loads(config_file.read_text()).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, SchedulerMixin):
        raise ModelFolderError(f"{config_file}: unknown scheduler class {name!r}")
    return cls.from_pretrained(folder)


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def apply_lora(pipe: LaVieTextToVideoPipeline, folder: str | Path, scale: float = 1.0, adapter_name: str = "lora") -> None:
    """Load a LoRA adapter saved by `lavie-train --stage lora` into the base pipeline's UNet and
    weight it by `scale` (0: the base model's output), the way diffusers applies LoRA weights."""
    folder = Path(folder)
    if not (folder / LORA_WEIGHTS).is_file():
        raise ModelFolderError(f"LoRA folder {str(folder)!r} has no {LORA_WEIGHTS}: pass the output folder of lavie-train --stage lora "
                               f"(its final/ or a checkpoint)")
    pipe.load_lora_weights(folder, weight_name=LORA_WEIGHTS, adapter_name=adapter_name)
    pipe.set_adapters(adapter_name, adapter_weights=scale)
