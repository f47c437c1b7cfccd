"""Typed run configs: YAML files plus `section.key=value` overrides; unknown keys raise.

Each run saves its resolved config beside its manifest (`config.yaml`), so a manifest always says
how it was made. The loader is generic over dataclasses and is shared by the trainer.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lavie.curate.filters import FilterConfig  # the filter section is defined with its filters

T = TypeVar("T")

VIDEO_EXTENSIONS = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv"]


def from_dict(cls: type[T], values: dict | None, where: str = "config") -> T:
    """Build dataclass `cls` from a nested dict, naming any unknown or mistyped key."""
    values = values or {}
    if not isinstance(values, dict):
        raise ValueError(f"{where} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown key {where}.{unknown[0]}; valid keys: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return value
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be true or false, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads `1e-4` (no dot) as a string; take it as the number it spells.
            try:
                return float(value)
            except ValueError:
                pass
        raise ValueError(f"{where} must be a number, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be an integer, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{where} must be a string, got {value!r}")
    return value


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """`a.b=value` strings applied to a nested dict; values parse as YAML (`3`, `true`, `[1,2]`)."""
    values = dict(values)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = values
        for key in keys[:-1]:
            node[key] = dict(node.get(key) or {})
            node = node[key]
        node[keys[-1]] = yaml.safe_load(raw)
    return values


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    values: dict = {}
    if path is not None:
        with open(path) as fh:
            try:
                values = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:  # one line: file, line, column and what is wrong
                mark = getattr(exc, "problem_mark", None)
                where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
                raise ValueError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a mapping at the top level")
    merged = apply_overrides(values, overrides or [])
    try:
        return from_dict(cls, merged, where=Path(path).name if path else "config")
    except ValueError:
        if overrides:
            # A mistake on the command line is named as typed there, not blamed on the file.
            try:
                from_dict(cls, apply_overrides({}, overrides), where="override")
            except ValueError as exc:
                raise ValueError(str(exc).replace("key override.", "key ").replace("override.", "")) from None
        raise


def save_config(config: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        yaml.safe_dump(dataclasses.asdict(config), fh, sort_keys=False)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Curation config: the YAML sections are input / scenes / filter / aesthetic / caption / output /
# distribution, in the order a run uses them.


@dataclass
class InputConfig:
    extensions: list[str] = field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    category_from_folder: bool = True  # a raw tree organised as <category>/<video>


@dataclass
class ScenesConfig:
    detector: str = "adaptive"  # adaptive | content (PySceneDetect detectors)
    threshold: float | None = None  # detector default when unset (adaptive 3.0, content 27.0)
    min_scene_len: int = 6  # frames the detector waits between cuts
    downscale_width: int = 256  # width frames are decoded at for detection
    min_frames: int = 16  # LaVie §4.1: segments under 16 frames are dropped
    max_seconds: float | None = 60.0  # longer scenes are split into equal parts
    cut: str = "reencode"  # reencode (frame accurate) | copy (key-frame aligned) | virtual (no files)
    crf: int = 18
    preset: str = "veryfast"


@dataclass
class AestheticConfig:
    """LAION aesthetic predictor (open_clip ViT-L/14 + MLP head); unset values: the stage's defaults."""

    enabled: bool = True
    head: str | None = None  # head file: local .pth/.safetensors path or "org/repo/file" on the hub
    clip_model: str | None = None  # open_clip architecture (ViT-L-14)
    clip_pretrained: str | None = None  # open_clip weights tag (openai) or a local checkpoint file
    frames: int | None = None  # frames scored per clip (3: first, middle, last)
    reduce: str | None = None  # mean | min over frames
    batch_size: int = 16
    workers: int = 1  # actors, each with its own model
    category: bool = True  # zero-shot Vimeo category with the same CLIP model (for the report)


@dataclass
class CaptionConfig:
    """VLM captioning through transformers; unset values: the stage's defaults."""

    enabled: bool = True
    model: str | None = None  # hub id or local folder of a Qwen2.5-VL or SmolVLM2 checkpoint
    frames: int | None = None  # frames sampled per clip
    prompt: str | None = None
    max_new_tokens: int | None = None
    do_sample: bool | None = None  # greedy by default
    seed: int | None = None
    frame_size: int | None = None  # long side frames are decoded at
    frames_as: str | None = None  # video | images: how frames reach the processor
    batch_size: int = 8
    workers: int = 1


@dataclass
class ReportConfig:
    enabled: bool = True


@dataclass
class DistributionConfig:
    ray_address: str | None = None  # also RAY_ADDRESS; unset: a local Ray
    workers: int | None = None  # parallel workers per CPU stage; unset: one per CPU
    batch_size: int = 1  # videos per task in the scenes stage


@dataclass
class CurateConfig:
    input: InputConfig = field(default_factory=InputConfig)
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    aesthetic: AestheticConfig = field(default_factory=AestheticConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    distribution: DistributionConfig = field(default_factory=DistributionConfig)


def stage_kwargs(section) -> dict:
    """A model section's values for its stage: the set ones, without the run-level keys."""
    skip = {"enabled", "workers", "category"}
    values = {k: v for k, v in dataclasses.asdict(section).items() if k not in skip and v is not None}
    if isinstance(section, AestheticConfig):
        values.pop("batch_size", None)
    return values
