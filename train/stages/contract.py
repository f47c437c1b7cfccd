"""The training-stage contract and its registry.

A stage is one class in `train/stages/<name>.py`, registered by name with `@register_stage`. The
training loop (`train/loop.py`) knows no stage by name: it asks the stage

- `check_config()`: stage-specific config checks, a ValueError naming the key;
- `data_needs()`: which sources it reads and how images enter (`DataNeeds`);
- `model_folder(scratch)` / `load_models(folder)`: its models from a folder or hub id (or the tiny preset);
- `loss(unet, models, batch, generator)`: its objective, one signature for every stage;
- `validation_inputs(dataset)` / `sample(pipe, prompt, video, generator)`: what validation samples;
- `pipeline(models, unet)`: its sampling pipeline;
- `save_network` / `load_network` / `export(...)`: what its checkpoints and output folder hold.

The defaults here are those of the base text-to-video stage; a stage overrides what differs.
"""

from __future__ import annotations

import abc
import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from lavie.model.tiny import build_tiny_components
from lavie.pipelines import ModelFolderError, pipeline_class_for, resolve_model_dir, stage_pipeline

from ..models import FROZEN, StageModels, load_frozen
from ..objective import drop_captions, encode_text

IMAGE_MODES = ("joint", "clips", "none")

# built-in stages, imported on first use; tests and plug-ins add theirs with @register_stage
BUILTIN = {"base": "lavie.train.stages.base", "interp": "lavie.train.stages.interp", "vsr": "lavie.train.stages.vsr",
           "long": "lavie.train.stages.long", "lora": "lavie.train.stages.lora"}
_REGISTRY: dict[str, type[TrainingStage]] = {}


@dataclass(frozen=True)
class DataNeeds:
    """What a stage reads from the curriculum sources.

    images: `"joint"`: image sources ride along every clip as `n_images` extra frames (LaVie §3.1);
        `"clips"`: image sources become clips by a random walk of the crop (LaVie App. C);
        `"none"`: video sources only.
    n_images: images per clip in joint training.
    needs_video: at least one video source is required.
    cache_latents: whether `data.cache_latents` is available (training on cached VAE latents).
    """

    images: str = "joint"
    n_images: int = 0
    needs_video: bool = True
    cache_latents: bool = True


def register_stage(cls: type[TrainingStage]) -> type[TrainingStage]:
    """Class decorator: make `cls` trainable as `lavie-train --stage <cls.name>`."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} needs a `name`")
    _REGISTRY[cls.name] = cls
    return cls


def stage_names() -> list[str]:
    return list(dict.fromkeys([*BUILTIN, *_REGISTRY]))


def get_stage(name: str) -> type[TrainingStage]:
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        raise ValueError(f"stage={name!r}: choose one of {', '.join(stage_names())}")
    return _REGISTRY[name]


class TrainingStage(abc.ABC):
    """One model of the cascade as the training loop sees it; `config` is the run's `TrainConfig`."""

    name: ClassVar[str] = ""
    preset: ClassVar[str] = "base"  # tiny model preset (`model.tiny: true`) the stage starts from
    components: ClassVar[tuple[str, ...]] = ("unet", *FROZEN)  # sub-folders its starting folder must hold

    def __init__(self, config):
        self.config = config

    # --- config and data ---------------------------------------------------------------------

    def check_config(self) -> None:
        """Stage-specific checks of the config; a ValueError naming the key and what to do."""

    def data_needs(self) -> DataNeeds:
        return DataNeeds(images="joint", n_images=self.config.data.n_images)

    # --- models ------------------------------------------------------------------------------

    def model_folder(self, scratch: Path) -> Path:
        """The folder the stage starts from: `model.pretrained`, or a tiny one built in `scratch`."""
        if self.config.model.tiny:
            folder = scratch / f"tiny-{self.preset}"
            if not (folder / "model_index.json").is_file():
                build_tiny_components(folder, stage=self.preset, seed=self.config.seed)
            return folder
        folder = resolve_model_dir(self.config.model.pretrained, self.preset)
        missing = [n for n in self.components if not (folder / n).is_dir()]
        if missing:
            raise ModelFolderError(f"{self.name} model folder {folder} lacks {', '.join(m + '/' for m in missing)}")
        return folder

    def load_models(self, folder: Path) -> StageModels:
        """The frozen parts and the trainable network of `folder`, frozen parts in eval mode."""
        models = StageModels(unet=self.build_unet(folder / "unet"), folder=folder, **load_frozen(folder, self.config.train.prediction_type))
        for frozen in (models.vae, models.text_encoder):
            frozen.requires_grad_(False).eval()
        return models

    @abc.abstractmethod
    def build_unet(self, unet_dir: Path) -> torch.nn.Module:
        """The network to train, loaded (or inflated) from `unet_dir`, with `requires_grad` set."""

    def set_trainable(self, unet) -> None:
        if self.config.model.train_spatial:
            unet.requires_grad_(True)
        else:
            unet.freeze_spatial()  # temporal layers only (Video LDM §3.1, Eq. 2)

    # --- objective ---------------------------------------------------------------------------

    @property
    def weight_dtype(self) -> torch.dtype:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.config.train.mixed_precision, torch.float32)

    @abc.abstractmethod
    def loss(self, unet, models: StageModels, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """The training loss of one micro-batch and its named parts (logged)."""

    def text(self, models: StageModels, captions: list[str], generator: torch.Generator) -> torch.Tensor:
        """(B, L, D) text embeddings of the captions, each dropped to "" with `train.text_dropout`."""
        return encode_text(models, drop_captions(captions, self.config.train.text_dropout, generator), generator.device, self.weight_dtype)

    # --- validation and sampling ---------------------------------------------------------------

    def validation_inputs(self, dataset) -> list[tuple[str, torch.Tensor | None]]:
        """Fixed validation inputs: (prompt, input video or None)."""
        return [(p, None) for p in self.config.validation.prompts]

    def pipeline(self, models: StageModels, unet):
        """The sampling pipeline around the training components (the UNet in its current weights)."""
        scheduler = type(models.scheduler).from_config(models.scheduler.config)
        return stage_pipeline(unet, models.vae, models.text_encoder, models.tokenizer, scheduler, self.recipe(models),
                              low_res_scheduler=models.low_res_scheduler)

    def recipe(self, models: StageModels) -> dict:
        """The sampling recipe to keep in the output's model_index.json: the starting folder's,
        when it is a stage folder of the same pipeline class."""
        if models.folder is None or not (models.folder / "model_index.json").is_file():
            return {}
        index = json.loads((models.folder / "model_index.json").read_text())
        cls = pipeline_class_for(models.unet)
        if index.get("_class_name") != cls.__name__:
            return {}
        _, config_keys = cls._get_signature_keys(cls)  # the recipe: init arguments that are not components
        return {k: index[k] for k in config_keys if k in index}

    def sample(self, pipe, prompt: str, video: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """One validation video as (3, T, H, W) frames in [-1, 1]."""
        v = self.config.validation
        frames = pipe(prompt, num_frames=v.num_frames, num_inference_steps=v.steps, guidance_scale=v.guidance_scale,
                      generator=generator, output_type="pt").frames  # (1, T, 3, H, W) in [0, 1]
        return frames[0].transpose(0, 1) * 2 - 1

    # --- checkpoints and output -----------------------------------------------------------------

    def save_frozen(self, models: StageModels, out_dir: Path) -> None:
        """The parts training never changes, saved once per run with the stage's model_index.json;
        checkpoints link to them, so each checkpoint is itself a stage folder."""
        out_dir.mkdir(parents=True, exist_ok=True)
        pipe = self.pipeline(models, models.unet)
        for name, part in pipe.components.items():
            if name != "unet":
                part.save_pretrained(out_dir / name)
        pipe.save_config(out_dir)

    def save_network(self, unet, out_dir: Path) -> None:
        """The trained network inside a checkpoint."""
        unet.save_pretrained(out_dir / "unet")

    def load_network(self, unet, in_dir: Path) -> None:
        saved = type(unet).from_pretrained(in_dir / "unet")
        unet.load_state_dict(saved.state_dict())

    def export(self, unet, run_dir: Path, out: Path) -> Path:
        """`final/`: a self-contained stage folder (the frozen parts copied, the trained UNet)."""
        shutil.copytree(run_dir / "frozen", out)
        self.save_network(unet, out)
        return out

    def checkpoint_links(self) -> list[str]:
        """Entries of `frozen/` each checkpoint links to."""
        return [*FROZEN, "low_res_scheduler", "model_index.json"]
