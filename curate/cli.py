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
from lavie.usage import OneLineParser

EXIT_USAGE = 2

DESCRIPTION = """\
Curate a text-video corpus the way LaVie built Vimeo25M (LaVie §4.1, App. B):
raw videos -> single-scene clips -> filters -> captions -> statistics report.
Each command writes Parquet manifests into its output folder and resumes when re-run.
"""


EPILOG = """\
exit status: 0 done (unreadable or broken videos become rows with status=error);
1 an output could not be written (disk full, read-only; finished parts are kept, re-run resumes);
2 usage or configuration error (a missing folder, config file or model, malformed YAML, an
  unknown config key), reported in one line before any work starts;
3 the output folder is in use by another run (the message names it; a crashed run never holds it);
130 interrupted by SIGINT (Ctrl-C), 143 stopped by SIGTERM: one line, Ray stopped, finished parts
  kept; re-run to resume.
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
    parser = OneLineParser(prog="lavie-curate", description=DESCRIPTION, epilog=EPILOG,
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

    p = sub.add_parser("filter", help="resolution / aspect / length / aesthetic / caption-length filters",
                       description="Apply the cheap filters (resolution: short side >= 720, aspect, "
                                   "frames >= 16, duration, caption words >= 3 where captions exist), "
                                   "then score the survivors with the LAION aesthetic predictor and "
                                   "apply the aesthetic threshold. Rejected clips keep their rows with "
                                   "keep=false and reject_reason. Writes OUT/clips.parquet.")
    p.add_argument("manifest", type=Path, help="clips manifest (a stage's output folder or a .parquet)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    p.add_argument("--min-short-side", type=int, help="resolution filter (default 720; portrait aware)")
    p.add_argument("--min-frames", type=int, help="length filter in frames (default 16)")
    p.add_argument("--min-aesthetic", type=float, help="aesthetic score threshold (default 4.0)")
    p.add_argument("--min-caption-words", type=int, help="caption length filter (default 3)")
    p.add_argument("--no-aesthetic", action="store_true", help="cheap filters only: no aesthetic model")
    _add_common(p)

    p = sub.add_parser("caption", help="caption clips with a vision-language model",
                       description="Caption each kept clip from sampled frames with a VLM "
                                   "(transformers; Qwen2.5-VL or SmolVLM2), then drop captions shorter "
                                   "than --min-caption-words. Writes caption and caption_words.")
    p.add_argument("manifest", type=Path, help="clips manifest (a stage's output folder or a .parquet)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    p.add_argument("--model", help="hub id or local folder of the captioning model")
    p.add_argument("--min-caption-words", type=int, help="caption length filter (default 3)")
    _add_common(p)

    p = sub.add_parser("report", help="dataset statistics as HTML, PNG charts and JSON",
                       description="Statistics of one or more clips manifests, side by side (LaVie "
                                   "App. B): categories, clip durations, caption lengths, aesthetic "
                                   "buckets, resolutions, the filter funnel and totals.")
    p.add_argument("manifests", type=Path, nargs="+", help="clips manifests to compare")
    p.add_argument("-o", "--out", type=Path, required=True, help="report folder")
    p.add_argument("--names", help="comma-separated names for the manifests (default: folder names)")

    p = sub.add_parser("import", help="bring WebVid-style or LAION-style corpora into a manifest",
                       description="Turn an existing corpus into a clips manifest of this toolkit's "
                                   "schema so the trainer can mix it with curated clips.")
    p.add_argument("format", choices=["webvid", "laion"], help="webvid: video CSV; laion: image Parquet")
    p.add_argument("source", type=Path, help="the CSV (webvid) or Parquet (laion) file")
    p.add_argument("-o", "--out", type=Path, required=True, help="output manifest folder")
    p.add_argument("--root", type=Path, help="folder the local videos / images live under")
    p.add_argument("--probe", action="store_true", help="probe each video for fps, frames and size")

    p = sub.add_parser("run", help="the whole recipe: scenes, filters, aesthetic, captions, report",
                       description="scenes -> cheap filters -> aesthetic (+ category) -> captions -> "
                                   "caption filter -> report, cheapest first so the models see only "
                                   "survivors. Each stage keeps its manifest under OUT/<stage>/ and "
                                   "resumes. A stage whose model is missing is skipped with the reason.")
    p.add_argument("raw_dir", type=Path, help="folder of raw videos (searched recursively)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    _add_common(p)
    return parser


def _config(args: argparse.Namespace, flag_keys: dict[str, str], extra: list[str] | None = None) -> CurateConfig:
    """The run config: YAML, then flags, then --set overrides (last wins)."""
    overrides = list(extra or [])
    flag_keys = {**flag_keys, "ray_address": "distribution.ray_address", "workers": "distribution.workers"}
    for attr, key in flag_keys.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(CurateConfig, args.config, overrides + list(args.overrides))


def _scenes_config(args: argparse.Namespace) -> CurateConfig:
    overrides = []
    if args.extensions:
        exts = [e.strip() for e in args.extensions.split(",") if e.strip()]
        overrides.append(f"input.extensions=[{', '.join(repr(e) for e in exts)}]")
    if args.copy:
        overrides.append("scenes.cut=copy")
    if args.virtual:
        overrides.append("scenes.cut=virtual")
    return _config(args, {
        "detector": "scenes.detector", "threshold": "scenes.threshold",
        "min_scene_len": "scenes.min_scene_len", "min_frames": "scenes.min_frames",
        "max_seconds": "scenes.max_seconds",
    }, overrides)


def _require_output(out_dir: Path) -> None:
    from lavie.curate.video import is_writable_dir

    if not is_writable_dir(out_dir):
        raise UsageError(f"output folder {out_dir} cannot be created or written to")


def _require_input(path: Path, what: str, folder: bool = False) -> None:
    if not (path.is_dir() if folder else path.exists()):
        raise UsageError(f"{what} {path} does not exist" + (" or is not a folder" if folder else ""))


def cmd_samples(args: argparse.Namespace) -> int:
    from lavie.curate.samples import make_samples

    _require_output(args.out_dir)
    truth = make_samples(args.out_dir, bad=args.bad)
    print(f"wrote {len(truth)} sample videos to {args.out_dir} (ground truth: {args.out_dir / 'cuts.json'})")
    return 0


def cmd_scenes(args: argparse.Namespace) -> int:
    from lavie.curate.jobs import run_scenes

    config = _scenes_config(args)
    _require_input(args.raw_dir, "raw video folder", folder=True)
    _require_output(args.out)
    summary = run_scenes(args.raw_dir, args.out, config, progress=not args.no_progress)
    print(summary.line())
    print(f"manifests: {args.out / 'videos.parquet'}, {args.out / 'clips.parquet'}")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    from lavie.curate.jobs import CHEAP_FILTERS, ModelMissing, aesthetic_specs, filter_spec, run_clip_stages

    config = _config(args, {
        "min_short_side": "filter.min_short_side", "min_frames": "filter.min_frames",
        "min_aesthetic": "filter.min_aesthetic", "min_caption_words": "filter.min_caption_words",
    })
    _require_input(args.manifest, "manifest")
    _require_output(args.out)
    specs = [filter_spec(config, CHEAP_FILTERS)]
    if not args.no_aesthetic and config.aesthetic.enabled:
        try:
            specs += aesthetic_specs(config)
        except ModelMissing as exc:
            raise UsageError(f"{exc} (or pass --no-aesthetic to run the cheap filters only)") from None
    summary = run_clip_stages(args.manifest, args.out, specs, config, "filter", not args.no_progress)
    print(summary.line())
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    from lavie.curate.jobs import ModelMissing, caption_specs, run_clip_stages

    config = _config(args, {"model": "caption.model", "min_caption_words": "filter.min_caption_words"})
    _require_input(args.manifest, "manifest")
    _require_output(args.out)
    try:
        specs = caption_specs(config)
    except ModelMissing as exc:
        raise UsageError(str(exc)) from None
    summary = run_clip_stages(args.manifest, args.out, specs, config, "caption", not args.no_progress)
    print(summary.line())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lavie.curate.report import build_report

    for m in args.manifests:
        _require_input(m, "manifest")
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if names is not None and len(names) != len(args.manifests):
        raise UsageError(f"--names gives {len(names)} names for {len(args.manifests)} manifests")
    _require_output(args.out)
    build_report(args.manifests, names, args.out)
    print(f"report: {args.out / 'report.html'} (stats.json and PNG charts beside it)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from lavie.curate import importers

    _require_input(args.source, "corpus file")
    _require_output(args.out if args.out.suffix != ".parquet" else args.out.parent)
    if args.format == "webvid":
        result = importers.import_webvid(args.source, args.out, video_root=args.root, probe=args.probe)
    else:
        result = importers.import_laion(args.source, args.out, image_root=args.root)
    print(f"import {args.format}: {result.line()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lavie.curate.jobs import run_recipe

    config = _config(args, {})
    _require_input(args.raw_dir, "raw video folder", folder=True)
    _require_output(args.out)
    result = run_recipe(args.raw_dir, args.out, config, progress=not args.no_progress)
    for stage, why in result.skipped.items():
        print(f"not run: {stage}: {why}")
    return 0


COMMANDS = {
    "samples": cmd_samples, "scenes": cmd_scenes, "filter": cmd_filter, "caption": cmd_caption,
    "report": cmd_report, "import": cmd_import, "run": cmd_run,
}


def main(argv: list[str] | None = None) -> int:
    from lavie.curate import signals
    from lavie.curate.lock import OutputBusy
    from lavie.curate.preflight import EXIT_BUSY, check_config_file, locked_output

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    signals.install()
    try:
        check_config_file(getattr(args, "config", None))
        with locked_output(args):
            return COMMANDS[args.command](args)
    except (signals.Interrupted, SystemExit) as exc:
        if isinstance(exc, SystemExit):
            if exc.code != signals.signal.SIGTERM:
                raise
            # Ray's own SIGTERM handler (sys.exit(15)), live while ray.init runs.
            exc = signals.Interrupted(signals.signal.SIGTERM)
        from lavie.curate.runner import shutdown_ray

        shutdown_ray()
        print(f"lavie-curate {args.command}: stopped by {exc.name}; finished parts are kept, "
              f"re-run to resume", file=sys.stderr)
        return exc.exit_status
    except OutputBusy as exc:
        print(f"lavie-curate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except UsageError as exc:
        print(f"lavie-curate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:  # bad configuration or manifest: names the key or the column
        print(f"lavie-curate {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # output unwritable or disk full (OutputError): exit 1, re-run resumes
        print(f"lavie-curate {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        signals.restore()


if __name__ == "__main__":
    sys.exit(main())
