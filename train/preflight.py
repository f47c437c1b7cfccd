"""What `lavie-train` checks before it builds a model: each problem is one line, exit status 2.

A run that is going to fail on its data or its folder should say so in a second, not after the
models are built: the manifests must exist, be manifests, and carry captions; the model source
must be one thing; and an output folder that already holds a run is continued only when asked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq

from lavie.curate.manifest import ManifestError, manifest_files

from .config import TrainConfig


def check_sources(config: TrainConfig) -> None:
    """Every source manifest exists, reads as a clips manifest and has captions to train on."""
    for i, source in enumerate(config.data.sources):
        where = f"data.sources[{i}] ({source.name}): manifest {source.manifest}"
        if not Path(source.manifest).exists():
            raise ValueError(f"{where} does not exist")
        try:
            files = manifest_files(source.manifest, "clips")
        except ManifestError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if not files:
            raise ValueError(f"{where} holds no Parquet files")
        if not any("caption" in pq.read_schema(f).names for f in files):
            raise ValueError(f"{where} has no caption column: caption it first "
                             f"(lavie-curate caption {source.manifest} -o OUT)")


def check_model(config: TrainConfig) -> None:
    if config.model.tiny and config.model.pretrained:
        raise ValueError(f"model.tiny=true builds random tiny components, but model.pretrained="
                         f"{config.model.pretrained} is set too: set one of them")


def check_output_dir(config: TrainConfig, resume: str | None) -> str | None:
    """Refuse to write over an earlier run unless `--resume` says to continue it.

    Returns a line saying what the run will do with the folder (None for a new folder).
    """
    run_dir = Path(config.output_dir)
    checkpoints = sorted((run_dir / "checkpoints").glob("checkpoint-*")) if run_dir.is_dir() else []
    earlier = run_dir.is_dir() and ((run_dir / "config.yaml").exists() or checkpoints or (run_dir / "final").exists())
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"output_dir={run_dir} is a file, not a folder")
    if resume is None:
        if earlier:
            if checkpoints:
                raise ValueError(f"output_dir={run_dir} already holds a run ({len(checkpoints)} checkpoints); "
                                 f"pass --resume latest to continue it, or choose another output_dir")
            raise ValueError(f"output_dir={run_dir} already holds a run with no checkpoint yet; "
                             f"remove it or choose another output_dir")
        return None
    if resume == "latest":
        if not checkpoints:
            raise ValueError(f"--resume latest: no checkpoint in {run_dir / 'checkpoints'}")
        return f"resuming the run in {run_dir} from its latest checkpoint"
    if not (Path(resume) / "unet").is_dir():
        raise ValueError(f"--resume {resume}: not a checkpoint folder (no unet/)")
    return f"resuming from {resume} into {run_dir}"


def preflight(config: TrainConfig, resume: str | None) -> str | None:
    """All checks, cheapest first; raises ValueError (one line) for the first problem.

    Under a multi-process launch (torchrun, accelerate launch) only the first process judges
    the output folder: it is the one that writes there, and the others must not mistake its
    fresh files for an earlier run. If it refuses, the launcher stops the others.
    """
    check_model(config)
    note = check_output_dir(config, resume) if int(os.environ.get("RANK", "0") or 0) == 0 else None
    check_sources(config)
    return note
