"""What `lavie-sample` checks before it loads a model: each problem is one line, exit status 2.

Sampling takes minutes on a GPU and hours on a CPU; an output path it cannot write, or a model
folder that is not there, must be reported before that work, not after it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """`path` can be written: not a folder, its folder exists or can be made, and takes a file."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path} cannot be written (permission denied)")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{path.name}.{uuid.uuid4().hex[:8]}.write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"{flag} {path} cannot be written: {exc.strerror or exc}") from None


def check_model_spec(spec: str | None, flag: str) -> None:
    """A local model folder must exist; anything else must look like a hub id (`org/name`)."""
    if spec is None:
        return
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{flag} {spec} is a file; give a model folder or a hub id")
        return
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ValueError(f"{flag} {spec}: no such model folder (nor a hub id of the form org/name)")


def check_numbers(args) -> None:
    for flag, value, low in (("--num-frames", args.num_frames, 1), ("--steps", args.steps, 1),
                             ("--fps", args.fps, 1), ("--vae-chunk", args.vae_chunk, 1),
                             ("--windows", args.windows, 1), ("--height", args.height, 8),
                             ("--width", args.width, 8)):
        if value is not None and value < low:
            raise ValueError(f"{flag} {value}: must be at least {low}")


def preflight(args) -> None:
    """All checks on parsed `lavie-sample` arguments; raises ValueError (one line) for the first."""
    check_numbers(args)
    for flag, spec in (("--base", args.base), ("--interp", args.interp), ("--vsr", args.vsr)):
        check_model_spec(spec, flag)
    check_output_file(args.output, "-o")
    if args.grid:
        check_output_file(args.grid, "--grid")
