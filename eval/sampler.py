"""The one place `lavie-eval` calls the sampling pipelines: stage folders in, a function from
(prompt, seed) to uint8 frames out. Everything else in `lavie.eval` sees only that function."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

Sampler = Callable[[str, int], np.ndarray]  # (prompt, seed) -> (T, H, W, 3) uint8


@dataclass
class SamplingOptions:
    """How every video of a run is sampled; recorded in the run's generate.json."""

    base: str
    interp: str | None = None
    vsr: str | None = None
    num_frames: int = 16
    height: int | None = None
    width: int | None = None
    steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: str | None = None
    scheduler: str | None = None
    dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)


def base_recipe(spec: str) -> dict:
    """The sampling recipe a base folder carries in its model_index.json (converted LaVie folders:
    steps, guidance, negative prompt); {} for hub ids and folders without one."""
    import json
    from pathlib import Path

    index = Path(spec) / "model_index.json"
    try:
        recipe = json.loads(index.read_text()) if index.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return {k: recipe[k] for k in ("num_inference_steps", "guidance_scale", "negative_prompt") if k in recipe}


def load_sampler(options: SamplingOptions, device, progress: bool = True) -> Sampler:
    """Load the stage folders (hub ids or local folders) once and return the sampling function."""
    import torch

    from lavie.pipelines import CascadeOptions, CascadePipeline, load_stage, make_scheduler, to_uint8_frames

    dtype = getattr(torch, options.dtype)
    stages = {name: load_stage(spec, name) for name, spec in (("base", options.base), ("interp", options.interp),
                                                              ("vsr", options.vsr)) if spec}
    for stage in stages.values():
        if options.scheduler:  # another sampler over the folder's own noise schedule
            stage.scheduler = make_scheduler(options.scheduler, stage.scheduler.config)
        stage.to(device, dtype)
        if hasattr(stage, "set_progress_bar_config"):  # diffusers pipelines: the per-step bar
            stage.set_progress_bar_config(disable=not progress)
    cascade = CascadePipeline(stages["base"], stages.get("interp"), stages.get("vsr"))

    def sample(prompt: str, seed: int) -> np.ndarray:
        cascade_options = CascadeOptions(negative_prompt=options.negative_prompt, num_frames=options.num_frames,
                                         height=options.height, width=options.width, num_inference_steps=options.steps,
                                         guidance_scale=options.guidance_scale, seed=seed)
        return to_uint8_frames(cascade(prompt, cascade_options)[0])  # (T, H, W, 3)

    return sample


def output_fps(options: SamplingOptions, base_fps: int = 8) -> int:
    """Frame rate of the written mp4: the base rate, x4 when the interpolation stage runs."""
    return base_fps * (4 if options.interp else 1)


def write_video(frames: np.ndarray, path, fps: int, crf: int) -> None:
    from lavie.pipelines import write_mp4

    write_mp4(frames, path, fps=fps, crf=crf)
