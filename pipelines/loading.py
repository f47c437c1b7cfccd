"""Loading a stage from a model folder: a local folder laid out like a diffusers pipeline
(`unet/ vae/ text_encoder/ tokenizer/ scheduler/`, plus `low_res_scheduler/` for super-resolution)
or a Hugging Face hub id of one.

The UNet folder holds either a trained LaVie model (`VideoUNet` / `VideoSRUNet`) or a plain
diffusers image UNet: an SD 1.4 folder for the base stage or the SD x4 upscaler for the
super-resolution stage, inflated on load with identity temporal layers, so frames come out as
independent images until the temporal layers are trained.
"""

import json
import logging
import re
from pathlib import Path

import diffusers
from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from lavie.model import VideoSRUNet, VideoUNet

from .interpolation import InterpolationPipeline
from .stage import StagePipeline
from .super_resolution import VideoSuperResolutionPipeline
from .text_to_video import TextToVideoPipeline

logger = logging.getLogger(__name__)

STAGES = {"base": TextToVideoPipeline, "interp": InterpolationPipeline, "vsr": VideoSuperResolutionPipeline}
STAGE_CONDITIONINGS = {("base", "none"), ("base", "context"), ("interp", "interpolation")}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EXAMPLES = {"base": "CompVis/stable-diffusion-v1-4", "interp": "a folder saved by lavie-train --stage interp",
            "vsr": "stabilityai/stable-diffusion-x4-upscaler"}


class ModelFolderError(FileNotFoundError):
    """A model folder that is missing or incomplete."""


def resolve_model_dir(spec: str | Path, stage: str) -> Path:
    """A local folder as is; a hub id through the Hugging Face cache (downloading when online)."""
    path = Path(spec)
    if path.is_dir():
        return path
    how = (f"pass a local folder laid out like a diffusers pipeline (unet/ vae/ text_encoder/ tokenizer/ scheduler/), "
           f"e.g. built by lavie.model.tiny.build_tiny_components(dir, stage={stage!r}) or saved by lavie-train, "
           f"or a Hugging Face hub id ({EXAMPLES[stage]})")
    if path.exists() or not HUB_ID.match(str(spec)):
        raise ModelFolderError(f"{stage} model {str(spec)!r}: no such folder; {how}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(spec)))
    except Exception as err:  # offline, unknown repo, gated repo: all end the same way for the user
        raise ModelFolderError(f"{stage} model {str(spec)!r}: not a local folder, and the hub id could not be fetched ({err}); {how}") from err


def load_stage(spec: str | Path, stage: str) -> StagePipeline:
    """The pipeline of `stage` ("base", "interp" or "vsr") with its components from `spec`."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: choose one of {sorted(STAGES)}")
    folder = resolve_model_dir(spec, stage)
    needed = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"] + (["low_res_scheduler"] if stage == "vsr" else [])
    missing = [name for name in needed if not (folder / name).is_dir()]
    if missing:
        raise ModelFolderError(f"{stage} model folder {str(folder)!r} lacks {', '.join(n + '/' for n in missing)}: "
                               f"it must hold {', '.join(n + '/' for n in needed)} like a diffusers pipeline folder")

    components = {
        "tokenizer": CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder"),
        "vae": AutoencoderKL.from_pretrained(folder / "vae"),
        "unet": load_unet(folder / "unet", stage),
        "scheduler": _load_scheduler(folder / "scheduler"),
    }
    if stage == "vsr":
        components["low_res_scheduler"] = _load_scheduler(folder / "low_res_scheduler")
        index = folder / "model_index.json"
        if index.is_file():
            components["max_noise_level"] = json.loads(index.read_text()).get("max_noise_level", 350)
    return STAGES[stage](**components)


def load_unet(folder: Path, stage: str) -> VideoUNet:
    """A stage's video UNet; a diffusers image UNet is inflated (base and vsr only)."""
    config = json.loads((folder / "config.json").read_text())
    class_name = config.get("_class_name")
    conditioning = config.get("conditioning", "none")
    if class_name == "VideoUNet" and (stage, conditioning) in STAGE_CONDITIONINGS:
        return VideoUNet.from_pretrained(folder)
    if class_name == "VideoSRUNet" and stage == "vsr":
        return VideoSRUNet.from_pretrained(folder)
    if class_name == "UNet2DConditionModel" and stage in ("base", "vsr"):
        logger.warning("%s: inflating the image UNet in %s; its temporal layers are untrained, so frames are independent images",
                       stage, folder)
        video_cls = VideoSRUNet if stage == "vsr" else VideoUNet
        return video_cls.from_unet2d(UNet2DConditionModel.from_pretrained(folder))
    if class_name == "VideoUNet":
        class_name = f"VideoUNet with conditioning={conditioning!r}"
    expected = {"base": "VideoUNet (conditioning 'none' or 'context') or UNet2DConditionModel", "interp": "VideoUNet (conditioning='interpolation')",
                "vsr": "VideoSRUNet or the x4 upscaler's UNet2DConditionModel"}[stage]
    raise ModelFolderError(f"{folder}: holds a {class_name}, but the {stage} stage needs a {expected}")


def _load_scheduler(folder: Path):
    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{folder}: no scheduler_config.json")
    name = json.loads(config_file.read_text()).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None or not issubclass(cls, SchedulerMixin):
        raise ModelFolderError(f"{config_file}: unknown scheduler class {name!r}")
    return cls.from_pretrained(folder)
