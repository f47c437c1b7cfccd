"""Shared fixtures: generated sample videos and one scenes run over them, made once a session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """The `lavie-curate samples` set with its bad-input corpus under bad/."""
    from lavie.curate.samples import make_samples

    root = tmp_path_factory.mktemp("raw")
    make_samples(root, bad=True)
    return root


@pytest.fixture(scope="session")
def cuts_truth(samples_dir) -> dict:
    return json.loads((samples_dir / "cuts.json").read_text())


@pytest.fixture(scope="session")
def scenes_out(samples_dir, tmp_path_factory) -> Path:
    """One uninterrupted `scenes` run over the samples (clip files re-encoded)."""
    out = tmp_path_factory.mktemp("scenes")
    run_scenes(samples_dir, out)
    return out


def run_scenes(raw, out, *overrides: str):
    """The `scenes` slice of the default pipeline over `raw` into `out` (`--set` overrides)."""
    from lavie.curate.config import load_curate_config
    from lavie.curate.pipeline import run_stages, slice_entries

    config = load_curate_config(None, list(overrides))
    return run_stages(raw, out, config, slice_entries(config, "scenes"), label="scenes", progress=False)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps its state in class attributes: reset it after each in-process training run."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
