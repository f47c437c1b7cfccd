"""Typed run configs: YAML files plus `section.key=value` overrides; unknown keys raise.

Each run saves its resolved config beside its manifest (`config.yaml`), so a manifest always says
how it was made. The curation config is a pydantic model (`CurateConfig`): sections `input`,
`filter` (the thresholds every `filter` stage applies), `stages` (the pipeline, in order),
`report`, `distribution`; each stage entry is validated by its own stage's config class, so
every default lives in one place, on the stage. The dataclass loader `load_config` is the
trainer's.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


def _read_yaml_mapping(path: str | os.PathLike | None) -> dict:
    """The mapping a YAML config file holds ({} without a file); bad YAML is a one-line ValueError."""
    if path is None:
        return {}
    with open(path) as fh:
        try:
            values = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:  # one line: file, line, column and what is wrong
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
            raise ValueError(f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping at the top level")
    return values


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> T:
    values = _read_yaml_mapping(path)
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
        values = config.model_dump(mode="json") if hasattr(config, "model_dump") else dataclasses.asdict(config)
        yaml.safe_dump(values, fh, sort_keys=False)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Curation config


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(_Section):
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS))
    category_from_folder: bool = True  # a raw tree organised as <category>/<video>


class ReportConfig(_Section):
    enabled: bool = True


class DistributionConfig(_Section):
    ray_address: str | None = None  # also RAY_ADDRESS; unset: a local Ray
    workers: int | None = None  # CPUs of a local Ray / processes of a local pool; unset: every CPU
    # auto: a raw folder split by model-free stages, with no cluster given, runs in a pool of local
    # processes (no Ray start-up); everything else on Ray. ray / local: always that one.
    executor: Literal["auto", "ray", "local"] = "auto"


# Keys of a stage entry that say how to run it; every other key belongs to the stage's config.
RUN_KEYS = ("stage", "workers", "batch_size", "on_missing")


class StageEntry(_Section):
    """One line of `stages:`: the stage's name, how to run it, its arguments (validated by it)."""

    stage: str
    workers: int | None = None  # actors of a model stage / concurrent tasks; unset: from the cluster
    batch_size: int | None = None  # rows per call; unset: the stage's default
    on_missing: Literal["error", "skip"] = "error"  # a missing model: stop before any work, or skip
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, values):
        if isinstance(values, dict) and "args" not in values:
            run = {k: v for k, v in values.items() if k in RUN_KEYS}
            run["args"] = {k: v for k, v in values.items() if k not in RUN_KEYS}
            return run
        return values

    def flat(self) -> dict:
        """As written in YAML: the run keys that differ from their defaults, then the arguments."""
        out: dict[str, Any] = {"stage": self.stage}
        if self.workers is not None:
            out["workers"] = self.workers
        if self.batch_size is not None:
            out["batch_size"] = self.batch_size
        if self.on_missing != "error":
            out["on_missing"] = self.on_missing
        return {**out, **self.args}


# The Vimeo25M recipe (LaVie §4.1), cheapest first so the models see only survivors. Arguments
# are the stages' own defaults; configs/curate.yaml spells them out.
DEFAULT_STAGES = [
    {"stage": "scenes"},
    {"stage": "filter"},  # resolution, aspect, frames, duration: probe data only
    {"stage": "motion"},
    {"stage": "text_area"},
    {"stage": "filter"},  # + still / extreme motion, burned-in text and logos
    {"stage": "clip", "on_missing": "skip"},  # aesthetic score + category, one CLIP pass
    {"stage": "filter"},  # + aesthetic floor
    {"stage": "caption_metadata"},  # captions from sidecar metadata, where a source has them
    {"stage": "caption", "on_missing": "skip"},  # a VLM for the clips still without one
    {"stage": "filter"},  # + caption words (LaVie §4.1: fewer than three dropped)
]


class CurateConfig(_Section):
    input: InputConfig = Field(default_factory=InputConfig)
    filter: dict[str, Any] = Field(default_factory=dict)  # thresholds shared by every `filter` stage
    stages: list[StageEntry] = Field(default_factory=lambda: [StageEntry(**e) for e in DEFAULT_STAGES])
    report: ReportConfig = Field(default_factory=ReportConfig)
    distribution: DistributionConfig = Field(default_factory=DistributionConfig)

    @model_validator(mode="after")
    def _check_stages(self) -> CurateConfig:
        from lavie.curate.filters import FilterConfig

        _validated(FilterConfig, self.filter, "filter")
        for i, entry in enumerate(self.stages):
            self.stage_config(i)  # names the stage and key of any mistake
        return self

    def stage_config(self, index: int):
        """The typed config of stage entry `index` (a `filter` entry on top of `filter:`)."""
        from lavie.curate.registry import get_stage

        entry = self.stages[index]
        cls = get_stage(entry.stage)
        args = {**self.filter, **entry.args} if entry.stage == "filter" else entry.args
        return _validated(cls.Config, args, f"stages[{index}] ({entry.stage})")

    def model_dump_yaml(self) -> dict:
        values = self.model_dump(mode="json")
        values["stages"] = [e.flat() for e in self.stages]
        return values


def _validated(cls, args: dict, where: str):
    try:
        return cls(**args)
    except ValidationError as exc:
        raise ValueError(f"{where}: {_pydantic_reason(exc, cls)}") from None


def _pydantic_reason(exc: ValidationError, cls) -> str:
    """The first problem of a validation error, in one line, with the valid keys when unknown."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        return f"unknown key {key!r}; valid keys: {', '.join(cls.model_fields)}"
    if err.get("type") == "value_error":
        return str(err.get("ctx", {}).get("error", err.get("msg")))
    return f"{key}: {err.get('msg')} (got {err.get('input')!r})"


def load_curate_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                       settings: dict[str, Any] | None = None) -> CurateConfig:
    """The curation config from YAML (or the defaults), then `settings`, then `key=value` overrides.

    Keys address sections (`filter.min_short_side`, `input.category_from_folder`) and stage
    entries by name (`stages.scenes.detector`: every entry of that stage) or by position
    (`stages.3.workers`). `settings` hold typed values (from command-line flags); overrides are
    text parsed as YAML (`--set key=value`).
    """
    values = _read_yaml_mapping(path)
    pairs = list((settings or {}).items())
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        pairs.append((dotted.strip(), yaml.safe_load(raw)))
    stages = values.get("stages", DEFAULT_STAGES)
    if not isinstance(stages, list) or not all(isinstance(e, dict) and "stage" in e for e in stages):
        raise ValueError("stages must be a list of mappings, each with a 'stage' key")
    values["stages"] = [dict(e) for e in stages]
    for dotted, value in pairs:
        _set(values, dotted, value)
    try:
        return CurateConfig(**values)
    except ValidationError as exc:
        raise ValueError(_pydantic_reason(exc, CurateConfig)) from None


def _set(values: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if keys == ["stages"]:  # a whole stage list
        if not isinstance(value, list) or not all(isinstance(e, dict) and "stage" in e for e in value):
            raise ValueError("stages must be a list of mappings, each with a 'stage' key")
        values["stages"] = [dict(e) for e in value]
        return
    if keys[0] != "stages":
        node = values
        for key in keys[:-1]:
            if not isinstance(node.get(key, {}), dict):
                raise ValueError(f"{dotted}: {key} is not a section")
            node[key] = dict(node.get(key) or {})
            node = node[key]
        node[keys[-1]] = value
        return
    stages = values["stages"]
    if len(keys) != 3:
        raise ValueError(f"{dotted!r} must look like stages.<name or index>.key")
    _, which, key = keys
    if which.isdigit():
        if int(which) >= len(stages):
            raise ValueError(f"{dotted}: there are {len(stages)} stages")
        targets = [stages[int(which)]]
    else:
        targets = [e for e in stages if e["stage"] == which]
        if not targets:
            raise ValueError(f"{dotted}: no stage {which!r} in the pipeline ({', '.join(e['stage'] for e in stages)})")
    for entry in targets:
        entry[key] = value


def save_curate_config(config: CurateConfig, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        yaml.safe_dump(config.model_dump_yaml(), fh, sort_keys=False)
    os.replace(tmp, path)
