"""JSON reports of `lavie-eval` runs and the side-by-side table of `lavie-eval compare`."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

PACKAGES = ("lavie-toolkit", "torch", "torchvision", "diffusers", "transformers", "accelerate", "scipy", "numpy", "av")
# rows compare puts first, in this order; every other scalar follows in the order the reports hold it
LEADING = ("command", "fvd", "is.mean", "is.std", "clipsim", "clipsim_std", "scale_factor", "generated.videos", "real.videos", "videos",
           "generated.read_errors", "real.read_errors", "read_errors", "model.base", "model.interp", "model.vsr", "model.seed",
           "model.steps", "model.guidance_scale", "clip.seed", "clip.max_videos")
# left out of the table: lists, the sampling settings the `model.*` rows already summarise, fixed texts
HIDDEN = ("errors", "per_video", "argv", "created", "preprocessing", "generated.settings", "set.settings")
CELL_WIDTH = 40


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def build_report(command: str, results: dict, model: dict | None = None) -> dict:
    """The report of one run: what was computed, on what, with which software."""
    return {"command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv, "model": model, **results, "versions": versions()}


def write_report(report: dict, path: str | Path) -> Path:
    """Write the report atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def flatten(report: dict, prefix: str = "") -> dict:
    """Scalar leaves of a report as dotted keys ("is.mean"); lists and hidden keys left out."""
    flat = {}
    for key, value in report.items():
        name = f"{prefix}{key}"
        if key in HIDDEN or name in HIDDEN or isinstance(value, list):
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    return text if len(text) <= CELL_WIDTH else "…" + text[-(CELL_WIDTH - 1):]  # paths and hashes: their ends tell them apart


def read_report(path: str | Path) -> dict:
    from .errors import InputError

    path = Path(path)
    try:
        report = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"report {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"report {str(path)!r} is not a JSON file ({err})") from None
    if not isinstance(report, dict) or "command" not in report:
        raise InputError(f"{str(path)!r} is not a lavie-eval report (no 'command' key)")
    return report


def compare_table(paths: list[str | Path]) -> str:
    """A text table: one column per report, one row per figure or setting; '*' marks rows that differ."""
    reports = [flatten(read_report(p)) for p in paths]
    names = [Path(p).name if len({Path(q).name for q in paths}) == len(paths) else str(p) for p in paths]
    keys = [k for k in LEADING if any(k in r for r in reports)]
    for report in reports:
        keys += [k for k in report if k not in keys and not k.startswith("versions.")]
    keys += [k for report in reports for k in report if k.startswith("versions.")]
    keys = list(dict.fromkeys(keys))
    rows = [[("* " if len({_cell(r.get(k)) for r in reports}) > 1 else "  ") + k] + [_cell(r.get(k)) for r in reports]
            for k in keys]
    header = ["  figure"] + names
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
