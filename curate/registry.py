"""Stages by name, so a YAML pipeline lists them and a runner builds them without an if-chain.

A stage is a class whose `__init__` takes plain config values (and loads any model once) and whose
`__call__(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]` returns the batch's rows with
columns added, row for row, in order. A stage that needs a model sets `uses_model = True`; one
that wants a GPU when present sets `wants_gpu = True`.
"""

from __future__ import annotations

from typing import Callable

_STAGES: dict[str, type] = {}


def register_stage(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in _STAGES and _STAGES[name] is not cls:
            raise ValueError(f"stage {name!r} is registered twice ({_STAGES[name].__name__}, {cls.__name__})")
        cls.stage_name = name
        _STAGES[name] = cls
        return cls

    return wrap


def get_stage(name: str) -> type:
    if name not in _STAGES and name in _BUILTIN_MODULES:
        # Only the stage's own module: a cheap stage's worker never imports torch or open_clip.
        import importlib

        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _STAGES:
        _load_builtin_stages()
    if name not in _STAGES:
        raise ValueError(f"unknown stage {name!r}; registered stages: {', '.join(sorted(_STAGES))}")
    return _STAGES[name]


def stage_names() -> list[str]:
    _load_builtin_stages()
    return sorted(_STAGES)


def _load_builtin_stages() -> None:
    # Importing a stage module registers it; modules are imported lazily so that the CLI's
    # --help and cheap stages never pay for torch or open_clip.
    import importlib

    for module in _BUILTIN_MODULES.values():
        importlib.import_module(module)


# Built-in stage name -> the module that registers it.
_BUILTIN_MODULES = {
    "scenes": "lavie.curate.scenes",
    "filter": "lavie.curate.filters",
    "aesthetic": "lavie.curate.aesthetic",
    "category": "lavie.curate.category",
    "caption": "lavie.curate.caption",
}
