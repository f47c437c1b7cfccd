"""`lavie-curate`: build a Vimeo25M-style corpus from raw video directories.

The CLI parses arguments and calls library functions; all the work lives in `lavie.curate`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from lavie.curate.config import CurateConfig, load_config

EXIT_USAGE = 2

DESCRIPTION = """\
Curate a text-video corpus the way LaVie built Vimeo25M (LaVie §4.1, App. B):
raw videos -> single-scene clips -> filters -> captions -> statistics report.
Each command writes Parquet manifests into its output folder and resumes when re-run.
"""


class UsageError(Exception):
    """A mistake in how the command was called: reported in one line, exit code 2."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, help="YAML config (sections: input, scenes, distribution, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set scenes.min_frames=24 (repeatable)")
    p.add_argument("--ray-address", help="join this Ray cluster (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--workers", type=int, help="parallel workers for CPU stages (default: one per CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lavie-curate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("samples", help="write reproducible synthetic raw videos with known cuts",
                       description="Write sample raw videos made from ffmpeg's synthetic sources "
                                   "(several shots, hard cuts, a dissolve and a fade, mixed sizes and "
                                   "frame rates) and their ground-truth cut list, cuts.json.")
    p.add_argument("out_dir", type=Path, help="folder to write the videos into")
    p.add_argument("--bad", action="store_true",
                   help="also write bad/ with broken and awkward files (zero-byte, truncated, text, "
                        "audio-only, rotated, variable frame rate, odd names, a dangling link)")

    p = sub.add_parser("scenes", help="split raw videos into single-scene clips",
                       description="Discover videos under RAW_DIR, probe them, detect scenes with "
                                   "PySceneDetect, drop scenes shorter than --min-frames (recorded "
                                   "with their reason), split scenes longer than --max-seconds and "
                                   "cut clips with ffmpeg. Writes OUT/videos.parquet, "
                                   "OUT/clips.parquet, OUT/clips/ and OUT/summary.json.")
    p.add_argument("raw_dir", type=Path, help="folder of raw videos (searched recursively)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    p.add_argument("--detector", choices=["adaptive", "content"], help="PySceneDetect detector (default adaptive)")
    p.add_argument("--threshold", type=float, help="detector threshold (adaptive 3.0, content 27.0)")
    p.add_argument("--min-scene-len", type=int, help="frames the detector waits between cuts (default 6)")
    p.add_argument("--min-frames", type=int, help="drop scenes shorter than this (default 16)")
    p.add_argument("--max-seconds", type=float, help="split scenes longer than this (default 60)")
    p.add_argument("--extensions", help="comma-separated file extensions to look for")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--copy", action="store_true", help="cut by stream copy (fast, key-frame aligned)")
    mode.add_argument("--virtual", action="store_true", help="write no clip files: clips are source + frame range")
    _add_common(p)
    return parser


def _scenes_config(args: argparse.Namespace) -> CurateConfig:
    overrides = list(args.overrides)
    flag_keys = {
        "detector": "scenes.detector", "threshold": "scenes.threshold",
        "min_scene_len": "scenes.min_scene_len", "min_frames": "scenes.min_frames",
        "max_seconds": "scenes.max_seconds", "ray_address": "distribution.ray_address",
        "workers": "distribution.workers",
    }
    for attr, key in flag_keys.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.extensions:
        exts = [e.strip() for e in args.extensions.split(",") if e.strip()]
        overrides.append(f"input.extensions=[{', '.join(repr(e) for e in exts)}]")
    if args.copy:
        overrides.append("scenes.cut=copy")
    if args.virtual:
        overrides.append("scenes.cut=virtual")
    return load_config(CurateConfig, args.config, overrides)


def _check_dirs(raw_dir: Path, out_dir: Path) -> None:
    from lavie.curate.video import is_writable_dir

    if not raw_dir.is_dir():
        raise UsageError(f"raw video folder {raw_dir} does not exist or is not a folder")
    if not is_writable_dir(out_dir):
        raise UsageError(f"output folder {out_dir} cannot be created or written to")


def cmd_samples(args: argparse.Namespace) -> int:
    from lavie.curate.samples import make_samples

    if not _writable(args.out_dir):
        raise UsageError(f"output folder {args.out_dir} cannot be created or written to")
    truth = make_samples(args.out_dir, bad=args.bad)
    print(f"wrote {len(truth)} sample videos to {args.out_dir} (ground truth: {args.out_dir / 'cuts.json'})")
    return 0


def _writable(path: Path) -> bool:
    from lavie.curate.video import is_writable_dir

    return is_writable_dir(path)


def cmd_scenes(args: argparse.Namespace) -> int:
    from lavie.curate.jobs import run_scenes

    config = _scenes_config(args)
    _check_dirs(args.raw_dir, args.out)
    summary = run_scenes(args.raw_dir, args.out, config, progress=not args.no_progress)
    print(summary.line())
    print(f"manifests: {args.out / 'videos.parquet'}, {args.out / 'clips.parquet'}")
    return 0


COMMANDS = {"samples": cmd_samples, "scenes": cmd_scenes}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"lavie-curate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # bad configuration: names the key and the choices
        print(f"lavie-curate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
