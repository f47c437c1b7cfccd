"""Stages by name: the one registry a YAML pipeline's `stages:` list is resolved against.

`@register_stage("name")` on a `Stage` subclass (see `curate/stage.py`) makes it available to
`lavie-curate run`; a built-in stage's module is imported only when the stage is asked for, so
`--help` and the cheap commands never pay for torch. A stage defined anywhere else (a plug-in
module, a test file) registers the same way, once its module is imported.
"""

from __future__ import annotations

import importlib
from typing import Callable

_STAGES: dict[str, type] = {}

# Built-in stage name -> the module that registers it.
_BUILTIN_MODULES = {
    "scenes": "lavie.curate.scenes",
    "filter": "lavie.curate.filters",
    "motion": "lavie.curate.motion",
    "text_area": "lavie.curate.text",
    "clip": "lavie.curate.clip_scores",
    "caption": "lavie.curate.caption",
    "caption_metadata": "lavie.curate.metadata",
    "import_webvid": "lavie.curate.importers",
    "import_laion": "lavie.curate.importers",
}


def register_stage(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        known = _STAGES.get(name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"stage {name!r} is registered twice ({known.__name__}, {cls.__name__})")
        cls.name = name
        _STAGES[name] = cls
        return cls

    return wrap


def get_stage(name: str) -> type:
    if name not in _STAGES and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _STAGES:
        raise ValueError(f"unknown stage {name!r}; registered stages: {', '.join(stage_names())}")
    return _STAGES[name]


def stage_names() -> list[str]:
    """Every stage name a pipeline may list (built-in ones without importing them)."""
    return sorted(set(_STAGES) | set(_BUILTIN_MODULES))
