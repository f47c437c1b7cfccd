"""The networks a stage trains and the frozen parts around them, loaded from a model folder.

| stage  | `model.pretrained`                                | trained network                                  |
|--------|---------------------------------------------------|--------------------------------------------------|
| base   | SD 1.4 layout (image UNet) or a base checkpoint   | `VideoUNet.from_unet2d` (LaVie §3.1), or resumed  |
| interp | a base checkpoint                                 | its `with_conditioning("interpolation")` (§3.2)  |
| vsr    | the SD x4 upscaler or a vsr checkpoint            | `VideoSRUNet.from_unet2d`, spatial frozen (§3.3) |

`model.tiny: true` builds the stage's tiny random folder (`lavie.model.tiny`) and loads it the same
way. Folders load through diffusers / transformers `from_pretrained`; hub ids resolve through
`lavie.pipelines.resolve_model_dir`, which names the model and how to supply it when it is missing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import diffusers
from diffusers import AutoencoderKL, DDPMScheduler, SchedulerMixin, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from lavie.model import VideoSRUNet, VideoUNet
from lavie.model.tiny import build_tiny_components
from lavie.pipelines import ModelFolderError, resolve_model_dir

from .config import TrainConfig

logger = logging.getLogger(__name__)

FROZEN = ("tokenizer", "text_encoder", "vae", "scheduler")


@dataclass
class StageModels:
    unet: VideoUNet
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    scheduler: SchedulerMixin  # the folder's sampling scheduler (saved with checkpoints)
    noise_scheduler: DDPMScheduler  # the training noise schedule
    low_res_scheduler: SchedulerMixin | None = None  # vsr: noise augmentation of the low-resolution frames
    max_noise_level: int = 350
    folder: Path | None = None


def load_scheduler(folder: Path) -> SchedulerMixin:
    config_file = folder / "scheduler_config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{folder}: no scheduler_config.json")
    name = json.loads(config_file.read_text()).get("_class_name")
    cls = getattr(diffusers, str(name), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, SchedulerMixin):
        raise ModelFolderError(f"{config_file}: unknown scheduler class {name!r}")
    return cls.from_pretrained(folder)


def model_folder(config: TrainConfig, scratch: Path) -> Path:
    """The folder the stage starts from: `model.pretrained`, or a tiny one built in `scratch`."""
    if config.model.tiny:
        folder = scratch / f"tiny-{config.stage}"
        if not (folder / "model_index.json").is_file():
            build_tiny_components(folder, stage=config.stage, seed=config.seed)
        return folder
    folder = resolve_model_dir(config.model.pretrained, config.stage)
    needed = ["unet", *FROZEN] + (["low_res_scheduler"] if config.stage == "vsr" else [])
    missing = [n for n in needed if not (folder / n).is_dir()]
    if missing:
        raise ModelFolderError(f"{config.stage} model folder {folder} lacks {', '.join(m + '/' for m in missing)}")
    return folder


def load_trainable_unet(folder: Path, config: TrainConfig) -> VideoUNet:
    unet_dir = folder / "unet"
    class_name = json.loads((unet_dir / "config.json").read_text()).get("_class_name")
    # the released layouts (lavie.model.LAYOUTS) plus the Video LDM options the config switches on
    options = {"alpha_merge": config.model.alpha_merge, **({"temporal_conv": True} if config.model.temporal_conv else {})}
    stage = config.stage
    if stage == "vsr":
        if class_name == "VideoSRUNet":
            unet = VideoSRUNet.from_pretrained(unet_dir)
        elif class_name == "UNet2DConditionModel":
            # the x4 upscaler with temporal attention and 3D convolutions inserted (LaVie §3.3)
            unet = VideoSRUNet.from_unet2d(UNet2DConditionModel.from_pretrained(unet_dir), layout="vsr", **options)
        else:
            raise ModelFolderError(f"{unet_dir}: holds a {class_name}; stage vsr needs the x4 upscaler UNet or a VideoSRUNet")
    elif class_name == "UNet2DConditionModel" and stage == "base":
        # the SD 1.4 image UNet inflated with identity temporal layers (LaVie §3.1, App. C)
        unet = VideoUNet.from_unet2d(UNet2DConditionModel.from_pretrained(unet_dir), layout="base", **options)
    elif class_name == "VideoUNet":
        unet = VideoUNet.from_pretrained(unet_dir)
        want = "interpolation" if stage == "interp" else unet.config.conditioning
        if stage == "base" and want == "interpolation":
            raise ModelFolderError(f"{unet_dir}: an interpolation model cannot be trained as stage base")
        if unet.config.conditioning != want:
            # the interpolation model starts from the base model in the released interpolation
            # layout, extra input channels at zero (LaVie App. C)
            unet = unet.with_layout("interp")
    else:
        raise ModelFolderError(f"{unet_dir}: holds a {class_name}, which stage {stage} cannot train")

    if config.model.train_spatial:
        unet.requires_grad_(True)
    else:
        unet.freeze_spatial()  # temporal layers only (Video LDM §3.1, Eq. 2)
    return unet


def load_stage_models(config: TrainConfig, scratch: Path) -> StageModels:
    folder = model_folder(config, scratch)
    scheduler = load_scheduler(folder / "scheduler")
    if config.train.prediction_type is not None:
        scheduler.register_to_config(prediction_type=config.train.prediction_type)
    models = StageModels(
        unet=load_trainable_unet(folder, config),
        vae=AutoencoderKL.from_pretrained(folder / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"),
        scheduler=scheduler,
        noise_scheduler=DDPMScheduler.from_config(scheduler.config),
        folder=folder,
    )
    if config.stage == "vsr":
        models.low_res_scheduler = load_scheduler(folder / "low_res_scheduler")
        index = folder / "model_index.json"
        level = json.loads(index.read_text()).get("max_noise_level", 350) if index.is_file() else 350
        models.max_noise_level = config.vsr.max_noise_level if config.vsr.max_noise_level is not None else level
    for frozen in (models.vae, models.text_encoder):
        frozen.requires_grad_(False).eval()
    return models


def save_frozen(models: StageModels, stage: str, out_dir: Path) -> None:
    """The components training never changes, saved once per run; checkpoints link to them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = {"tokenizer": models.tokenizer, "text_encoder": models.text_encoder, "vae": models.vae, "scheduler": models.scheduler}
    if models.low_res_scheduler is not None:
        parts["low_res_scheduler"] = models.low_res_scheduler
    for name, part in parts.items():
        part.save_pretrained(out_dir / name)
    unet_cls = type(models.unet).__name__
    index = {"_class_name": f"LaVie{stage.capitalize()}Stage", "stage": stage,
             "tokenizer": ["transformers", "CLIPTokenizer"], "text_encoder": ["transformers", "CLIPTextModel"],
             "vae": ["diffusers", "AutoencoderKL"], "unet": ["lavie.model", unet_cls],
             **{n: ["diffusers", type(p).__name__] for n, p in parts.items() if n.endswith("scheduler")}}
    if stage == "vsr":
        index["max_noise_level"] = models.max_noise_level
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
