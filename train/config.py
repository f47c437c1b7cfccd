"""The training config: one typed dataclass tree, loaded from YAML plus `section.key=value`
overrides with the curation loader (`lavie.curate.config`), unknown keys are errors.

Every field carries a `help` string; `lavie-train --help` prints them all, so the help, the
presets in `configs/train/` and this file describe the same keys. The resolved config is saved as
`config.yaml` in the run folder and inside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lavie.curate.config import load_config, save_config

STAGES = ("base", "interp", "vsr", "long", "lora")  # built-in; lavie.train.stages.register_stage adds more
KINDS = ("video", "image")
CROPS = ("random", "center")
PRECISIONS = ("fp32", "fp16", "bf16", "no")
PREDICTION_TYPES = ("epsilon", "v_prediction")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
TRACKERS = ("tensorboard", "none")

DEFAULT_PROMPTS = [
    "a panda playing guitar on a sunny beach",
    "aerial view of a coastline at sunset, waves crashing",
    "a red sports car driving through a snowy forest",
    "a teddy bear walking down fifth avenue, cinematic",
]


def _f(default, help: str):
    """A dataclass field with a help string (mutable defaults copied per instance)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class SourceConfig:
    name: str = _f("", "source name, used in logs (mix/<name>) and the latent cache")
    manifest: str = _f("", "clips manifest: a .parquet file or a stage output folder")
    kind: str = _f("video", "video (clips, decoded with PyAV) | image (one frame per row, read with PIL)")
    weight: float | list[list[float]] = _f(1.0, "sampling weight: a number, or [[step, weight], ...] piecewise-linear "
                                                "in the training step, held constant outside the listed steps")


@dataclass
class ModelConfig:
    pretrained: str | None = _f(None, "base: an SD 1.4-layout folder or hub id (image UNet inflated) or a base checkpoint; "
                                      "interp: a base checkpoint; vsr: the x4 upscaler folder or hub id, or a vsr checkpoint")
    tiny: bool = _f(False, "build tiny random components from the packaged model preset tiny-<stage>.yaml "
                           "(tiny-base for long and lora) instead of `pretrained`")
    temporal_conv: bool = _f(False, "when inflating an image UNet: add temporal 3D-conv residual blocks (Video LDM §3.1)")
    alpha_merge: bool = _f(False, "when inflating an image UNet: learned alpha*spatial + (1-alpha)*temporal merge (Video LDM §3.1)")
    train_spatial: bool = _f(True, "false: train the temporal layers only, spatial layers frozen (Video LDM §3.1 Eq. 2)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")


@dataclass
class DataConfig:
    sources: list[SourceConfig] = _f([], "curriculum sources: {name, manifest, kind, weight}")
    num_frames: int = _f(16, "frames per training clip (interp: the high-rate frames, factor*(key frames-1)+1, e.g. 61)")
    target_fps: float = _f(8.0, "frame rate the clip is sampled at: stride = round(clip fps / target_fps), "
                                "shrunk when the clip is too short")
    height: int = _f(320, "training frame height in pixels (interp: 256 patches; vsr: 320 high-resolution patches)")
    width: int = _f(512, "training frame width in pixels")
    crop: str = _f("random", "random | center: where the crop window and the clip's frame window are placed")
    n_images: int = _f(4, "base stage: images from the image sources appended to every video (LaVie §3.1, App. C)")
    batch_size: int = _f(1, "videos per device per micro-batch")
    num_workers: int = _f(4, "DataLoader worker processes")
    pin_memory: bool = _f(True, "pin batch memory for faster host-to-GPU copies")
    max_retries: int = _f(8, "replacement draws for a clip that fails to decode before the run stops")
    cache_latents: bool = _f(False, "encode every clip once with the VAE (center crop, fixed frame window) and train on "
                                    "the cached latents (base and interp)")
    cache_dir: str | None = _f(None, "latent cache folder (default: <output_dir>/latents)")


@dataclass
class InterpConfig:
    factor: int = _f(4, "frame-rate multiplier: key frames = every factor-th training frame (LaVie §3.2: 16 -> 61 at 4)")


@dataclass
class VSRConfig:
    scale: int = _f(4, "downscale factor from the training patch to the low-resolution input")
    max_noise_level: int | None = _f(None, "noise augmentation levels drawn in [0, max] (default: the model folder's, 350)")
    max_translation: float = _f(2.0, "image sources become clips by a random walk of the crop window, "
                                     "at most this many pixels per frame (LaVie App. C)")


@dataclass
class LongConfig:
    num_context: list[int] = _f([1], "leading frames whose latents condition the model, one count drawn per batch: [1] is "
                                     "LaVie's first-frame model (§4.4); [0, 1, 2] Video LDM's prediction model (§3.2)")
    validation_segments: int = _f(2, "segments per validation video, each continuing from the last frame of the one before")


@dataclass
class LoraConfig:
    rank: int = _f(4, "LoRA rank of the adapters on the spatial attention projections (to_q, to_k, to_v, to_out)")
    alpha: float | None = _f(None, "LoRA alpha; the update is scaled by alpha / rank (default: rank)")
    dropout: float = _f(0.0, "dropout on the LoRA branch")
    max_translation: float = _f(0.0, "image sources become clips whose crop window moves at most this many pixels per frame; "
                                     "0 repeats the image (its frames are trained as independent images)")


@dataclass
class TrainLoopConfig:
    max_steps: int = _f(10000, "optimizer steps to train for")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step")
    mixed_precision: str = _f("fp32", "fp32 | fp16 | bf16 (autocast; frozen VAE and text encoder are cast to it); "
                                      "accelerate's 'no' is accepted for fp32")
    learning_rate: float = _f(1e-4, "peak learning rate")
    scale_lr: bool = _f(False, "multiply the learning rate by accumulation steps x batch size x processes")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_weight_decay: float = _f(1e-2, "AdamW weight decay")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    lr_scheduler: str = _f("constant", f"diffusers get_scheduler name: {' | '.join(LR_SCHEDULERS)}")
    lr_warmup_steps: int = _f(500, "linear learning-rate warm-up steps")
    max_grad_norm: float = _f(1.0, "gradient clipping norm; 0 disables clipping")
    text_dropout: float = _f(0.1, "probability of replacing a caption with the empty prompt (classifier-free guidance)")
    image_loss_weight: float = _f(1.0, "alpha of LaVie Eq. 3: loss = L_video + alpha * L_image")
    prediction_type: str | None = _f(None, "epsilon | v_prediction (default: the model folder's scheduler config)")
    max_nonfinite_steps: int = _f(10, "this many non-finite losses in a row stop the run with a checkpoint")
    deterministic: bool = _f(False, "torch deterministic algorithms (bitwise-reproducible resume on CPU)")
    allow_tf32: bool = _f(True, "allow TF32 matmuls on Ampere+ GPUs")


@dataclass
class EMAConfig:
    enabled: bool = _f(True, "keep an exponential moving average of the weights (diffusers EMAModel)")
    decay: float = _f(0.9999, "EMA decay")
    update_after_step: int = _f(0, "start averaging after this many steps")
    use_warmup: bool = _f(False, "EMA warm-up (decay grows as 1 - (1 + step/inv_gamma)^-power)")
    inv_gamma: float = _f(1.0, "EMA warm-up inv_gamma")
    power: float = _f(2 / 3, "EMA warm-up power")


@dataclass
class CheckpointConfig:
    every: int = _f(500, "write a checkpoint every this many steps (and at the end)")
    keep_last: int = _f(3, "checkpoints kept; older ones are deleted")


@dataclass
class ValidationConfig:
    every: int = _f(0, "sample the validation set every this many steps (0: never)")
    prompts: list[str] = _f(DEFAULT_PROMPTS, "base stage: fixed prompts sampled to mp4s")
    num_videos: int = _f(2, "interp / vsr: fixed clips (center crops of the first video source) to upsample")
    num_frames: int = _f(16, "base stage: frames sampled per prompt")
    steps: int = _f(25, "denoising steps")
    guidance_scale: float = _f(7.5, "classifier-free guidance scale")
    fps: int = _f(8, "frame rate of the written mp4s")
    use_ema: bool = _f(True, "sample with the EMA weights when EMA is on")
    seed: int = _f(0, "sampling seed")
    clip_model: str | None = _f("openai/clip-vit-base-patch32", "CLIP (transformers) folder or hub id for CLIPSIM; "
                                                               "null skips the metric")


@dataclass
class LoggingConfig:
    every: int = _f(10, "log loss, lr, throughput and the realised source mix every this many steps")
    report_to: str = _f("tensorboard", "tensorboard | none (metrics.jsonl is always written)")


@dataclass
class TrainConfig:
    stage: str = _f("base", "base | interp | vsr | long | lora, or a registered stage (must match --stage)")
    output_dir: str = _f("runs/lavie", "run folder: config.yaml, checkpoints/, logs/, validation/, metrics.jsonl")
    seed: int = _f(0, "seed of data order, crops, noise, timesteps and caption dropout")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    interp: InterpConfig = field(default_factory=InterpConfig)
    vsr: VSRConfig = field(default_factory=VSRConfig)
    long: LongConfig = field(default_factory=LongConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def _choice(value, choices, key: str) -> None:
    if value not in choices:
        raise ValueError(f"{key}={value!r}: choose one of {', '.join(map(str, choices))}")


def validate(config: TrainConfig) -> TrainConfig:
    """Check values the types cannot; a bad value is a ValueError naming the key and the choices.
    Checks that belong to one stage are that stage's `check_config`."""
    from .stages import get_stage  # the stage classes load torch; the config alone does not

    stage = get_stage(config.stage)(config)
    _choice(config.data.crop, CROPS, "data.crop")
    _choice(config.train.mixed_precision, PRECISIONS, "train.mixed_precision")
    _choice(config.train.lr_scheduler, LR_SCHEDULERS, "train.lr_scheduler")
    _choice(config.logging.report_to, TRACKERS, "logging.report_to")
    if config.train.prediction_type is not None:
        _choice(config.train.prediction_type, PREDICTION_TYPES, "train.prediction_type")
    if not config.model.tiny and not config.model.pretrained:
        raise ValueError("model.pretrained is required unless model.tiny is true")
    if not config.data.sources:
        raise ValueError("data.sources is empty: list at least one {name, manifest, kind, weight}")
    names = [s.name for s in config.data.sources]
    for i, source in enumerate(config.data.sources):
        _choice(source.kind, KINDS, f"data.sources[{i}].kind")
        if not source.name or not source.manifest:
            raise ValueError(f"data.sources[{i}] needs a name and a manifest")
    if len(set(names)) != len(names):
        raise ValueError(f"data.sources names must be unique, got {names}")
    needs = stage.data_needs()
    if needs.needs_video and "video" not in {s.kind for s in config.data.sources}:
        raise ValueError(f"stage {config.stage} needs at least one source of kind video")
    if config.data.cache_latents and not needs.cache_latents:
        raise ValueError(f"data.cache_latents is not available for stage {config.stage}")
    for key in ("num_frames", "batch_size", "height", "width"):
        if getattr(config.data, key) < 1:
            raise ValueError(f"data.{key} must be >= 1")
    if config.train.gradient_accumulation_steps < 1 or config.train.max_steps < 1:
        raise ValueError("train.max_steps and train.gradient_accumulation_steps must be >= 1")
    if config.checkpoint.every < 1 or config.checkpoint.keep_last < 1:
        raise ValueError("checkpoint.every and checkpoint.keep_last must be >= 1")
    stage.check_config()
    return config


def resolve_config_path(path: str | Path) -> Path:
    """A config file, or the name of a packaged one: `tiny-base` or `tiny-base.yaml` reads
    `lavie.configs` `train/tiny-base.yaml`, so an installed package runs from any folder."""
    path = Path(path)
    if path.exists() or path.parent != Path("."):
        return path
    from lavie.configs import config_file

    try:
        return config_file("train", path.name if path.suffix else f"{path.name}.yaml")
    except FileNotFoundError:
        raise FileNotFoundError(f"config {str(path)!r}: no such file, nor a packaged train config of that name") from None


def load_train_config(path: str | Path | None, overrides: list[str] | None = None, stage: str | None = None) -> TrainConfig:
    """The config of `path` with overrides applied; `stage` (from --stage) must agree with the file."""
    if stage is not None:
        overrides = [f"stage={stage}"] + list(overrides or []) if path is None else list(overrides or [])
    config = load_config(TrainConfig, None if path is None else resolve_config_path(path), overrides)
    if stage is not None and config.stage != stage:
        raise ValueError(f"--stage {stage} but the config says stage: {config.stage}")
    return validate(config)


def save_train_config(config: TrainConfig, path: str | Path) -> None:
    save_config(config, path)


def describe_keys(cls=TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) of every leaf key, in declaration order."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe_keys(hints[f.name], key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, repr(default) if not isinstance(default, list) or len(repr(default)) < 40 else "[...]",
                     f.metadata.get("help", "")))
        if f.name == "sources":
            rows.extend((f"{key}[].{k}", d, h) for k, d, h in describe_keys(SourceConfig))
    return rows
