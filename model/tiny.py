"""Tiny random pipeline folders for CPU tests, the demo and training smoke runs.

The presets `tiny-{base,interp,vsr}.yaml` (package data of `lavie.configs`, `configs/model/` in a
checkout, read through `importlib.resources` so an installed wheel finds them too) shrink the SD 1.4 and SD x4 upscaler
layouts. `build_tiny_components` builds every component of a stage from its preset (a tiny CLIP
text model with a locally built byte-level tokenizer, a tiny VAE, a tiny image UNet inflated to a
`VideoUNet` / `VideoSRUNet`, the scheduler) and writes them as a stage folder (the stage pipeline's
`save_pretrained`), so tiny and real models load through the same code:

    from lavie.model.tiny import build_tiny_components
    base_dir = build_tiny_components("runs/tiny/base", stage="base")
    # lavie-sample "a cat" --base runs/tiny/base -o cat.mp4

Nothing here touches a model hub.
"""

from importlib import resources
from pathlib import Path

import torch
import yaml
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from tokenizers.pre_tokenizers import ByteLevel

from .video_unet import VideoSRUNet, VideoUNet

STAGES = ("base", "interp", "vsr")
SCHEDULER_CLASSES = {cls.__name__: cls for cls in (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler)}


def load_preset(stage: str = "base", preset: str | Path | None = None) -> dict:
    """The preset dict of a stage: the packaged `tiny-{stage}.yaml` unless `preset` names a file."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}: choose one of {STAGES}")
    path = Path(preset) if preset is not None else preset_file(f"tiny-{stage}.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"model preset {path} not found")
    config = yaml.safe_load(path.read_text())
    if config.get("stage") != stage:
        raise ValueError(f"preset {path} is for stage {config.get('stage')!r}, not {stage!r}")
    return config


def preset_file(name: str):
    """A model preset shipped with the package (`lavie.configs`, folder `model/`)."""
    return resources.files("lavie.configs").joinpath("model", name)


def build_tokenizer(model_max_length: int) -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (plain and word-final) and the
    two special tokens, with no merges: every word splits into characters. Built locally."""
    symbols = sorted(ByteLevel.alphabet())
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def build_tiny_components(out_dir: str | Path, stage: str = "base", preset: str | Path | None = None,
                          seed: int | None = None) -> Path:
    """Build a stage's tiny random components and save them under `out_dir`.

    Args:
        out_dir: folder to write; gets `unet/ vae/ text_encoder/ tokenizer/ scheduler/` (plus
            `low_res_scheduler/` for `"vsr"`) and a `model_index.json`.
        stage: `"base"`, `"interp"` or `"vsr"`.
        preset: a preset YAML to use instead of the packaged `tiny-{stage}.yaml`.
        seed: seed of the random weights (defaults to the preset's).

    Returns the folder, ready for `lavie-sample --base/--interp/--vsr`, `lavie.pipelines.load_stage`
    or `LaVieTextToVideoPipeline.from_pretrained` (the class of its stage).
    """
    config = load_preset(stage, preset)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.get("seed", 0) if seed is None else seed)

    # 1. text: a byte-level CLIP tokenizer and a CLIP text model sized to its vocabulary
    tokenizer = build_tokenizer(config["tokenizer"]["model_max_length"])
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **config["text_encoder"],
    )
    text_encoder = CLIPTextModel(text_config)

    # 2. autoencoder
    vae = AutoencoderKL(**config["vae"])

    # 3. the image UNet, inflated to video
    unet2d = UNet2DConditionModel(**config["unet2d"])
    video_cls = VideoSRUNet if stage == "vsr" else VideoUNet
    unet = video_cls.from_unet2d(unet2d, **config["video"])

    # 4. schedulers
    schedulers = {name: _build_scheduler(config[name]) for name in ("scheduler", "low_res_scheduler") if name in config}

    # 5. the stage folder, written by the stage's pipeline (model_index.json with its default recipe)
    from lavie.pipelines import save_stage_folder  # the folder format belongs to the pipelines

    recipe = {"max_noise_level": config["max_noise_level"]} if "max_noise_level" in config else None
    return save_stage_folder(out_dir, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                             scheduler=schedulers["scheduler"], low_res_scheduler=schedulers.get("low_res_scheduler"), recipe=recipe)


def _build_scheduler(config: dict):
    config = dict(config)
    name = config.pop("_class_name")
    if name not in SCHEDULER_CLASSES:
        raise ValueError(f"scheduler class {name!r}: choose one of {sorted(SCHEDULER_CLASSES)}")
    return SCHEDULER_CLASSES[name](**config)
