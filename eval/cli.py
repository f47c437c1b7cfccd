"""`lavie-eval`: the paper's zero-shot evaluations (LaVie §4.3) on any checkpoint.

The CLI parses arguments, checks every input (prompt files, video sets, model and extractor
files, output folders) and only then loads models and calls `lavie.eval`. torch is imported
lazily, so `--help` and argument errors are fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .errors import InputError, TooFewVideos

EXIT_OUTPUT, EXIT_USAGE, EXIT_TOO_FEW = 1, 2, 3

DESCRIPTION = """\
Zero-shot evaluation of a LaVie checkpoint the way the paper reports it (LaVie §4.3):
  UCF-101:  generate --ucf101 classInd.txt (class names as prompts, 100 samples each),
            then fvd (I3D features, centre crop 270/320 of the short side -> 224x224) and IS;
  MSR-VTT:  generate --msrvtt test_videodatainfo.json (one random caption per test video),
            then clipsim (CLIP ViT-B/32 text-frame cosine similarity, mean over frames and videos).
Each command writes a JSON report; compare prints reports side by side. See docs/evaluation.md.
"""

EPILOG = """\
exit status: 0 done (videos that fail to sample or decode are counted as errors in the manifest
and report); 1 an output could not be written (finished videos are kept, re-run resumes);
2 usage error: a missing or malformed prompt file, video set, model or extractor file, or a
generate folder made with other settings (reported before any model is loaded);
3 too few readable videos for the statistic.
"""


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="torch device (default: cuda when present, else cpu; generate: the accelerate process's device)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lavie-eval", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="sample a prompt set into mp4s and a prompt -> file manifest",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       description="Sample every prompt of a prompt set through a stage folder or the cascade into OUT/videos/*.mp4 "
                                   "and OUT/manifest.jsonl. Resumable: re-running the same command samples only what is missing. "
                                   "Sharded over GPUs with `accelerate launch -m lavie.eval.cli generate ...` (or torchrun).")
    prompts = p.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--ucf101", metavar="FILE", help="UCF-101 class list: classInd.txt ('1 ApplyEyeMakeup') or one name a line")
    prompts.add_argument("--msrvtt", metavar="FILE", help="MSR-VTT captions: test_videodatainfo.json, or a CSV with video_id,caption")
    prompts.add_argument("--prompts", metavar="FILE", help="a plain prompt list, one prompt a line")
    p.add_argument("--base", required=True, metavar="DIR", help="base model folder or hub id (a lavie-train output, a converted LaVie model)")
    p.add_argument("--interp", metavar="DIR", help="also run the interpolation stage (16 -> 61 frames)")
    p.add_argument("--vsr", metavar="DIR", help="also run the super-resolution stage (x4)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUT", help="evaluation folder to write (or resume)")
    p.add_argument("--samples-per-prompt", type=int, help="videos per prompt (default: 100 for --ucf101, else 1)")
    p.add_argument("--class-prompt", choices=("words", "raw"), default="words",
                   help="UCF-101 prompts: 'words' turns ApplyEyeMakeup into 'apply eye makeup'; 'raw' keeps the name (default words)")
    p.add_argument("--limit", type=int, help="sample only the first N items of the set (a quick partial run; resumable)")
    p.add_argument("--seed", type=int, default=0, help="item k is sampled with seed + k; MSR-VTT captions are drawn with it (default 0)")
    p.add_argument("--num-frames", type=int, default=16, help="base frames (default 16)")
    p.add_argument("--height", type=int, help="frame height (the paper: 320; default: the model's)")
    p.add_argument("--width", type=int, help="frame width (the paper: 512; default: the model's)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the base folder's recipe, else 50)")
    p.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default: the base folder's recipe, else 7.5)")
    p.add_argument("--negative-prompt", help="negative prompt of every video (default: the base folder's recipe, else none)")
    p.add_argument("--scheduler", choices=("ddim", "dpm++", "euler"), help="sampler (default: the folder's scheduler)")
    p.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="model dtype (default float32)")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality of the written mp4s, lower is closer to lossless (default 18)")
    _add_device(p)

    p = sub.add_parser("fvd", help="Fréchet Video Distance (and IS) of a generated set against real videos",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       description="FVD with the TorchScript I3D (i3d_torchscript.pt) between GENERATED and --real, after the "
                                   "paper's preprocessing; IS of GENERATED when --is-classifier is given. A set is a folder written "
                                   "by generate, a folder of videos, or a lavie-curate clips manifest.")
    p.add_argument("generated", help="generated set (a generate folder)")
    p.add_argument("--real", help="real set: a folder of videos (e.g. UCF-101) or a clips manifest")
    p.add_argument("--real-stats", type=Path, metavar="FILE.npz",
                   help="cache of the real set's statistics: read when it matches the settings, written otherwise")
    p.add_argument("--i3d", required=True, metavar="FILE", help="i3d_torchscript.pt (see docs/evaluation.md)")
    p.add_argument("--is-classifier", metavar="FILE", help="also report IS with this TorchScript UCF-101 classifier (c3d_ucf101.pt)")
    p.add_argument("--is-output", choices=("probs", "logits"), default="probs", help="what the classifier returns (default probs)")
    p.add_argument("--is-splits", type=int, default=10, help="IS splits (default 10)")
    p.add_argument("--num-frames", type=int, default=16, help="frames per video (default 16)")
    p.add_argument("--stride", type=int, default=1, help="take every STRIDE-th frame (default 1)")
    p.add_argument("--clip-start", choices=("random", "first", "center"), default="random",
                   help="where the frames start in a longer video; random is seeded per video (default random)")
    p.add_argument("--max-videos", type=int, help="use at most N videos of each set, drawn with --seed")
    p.add_argument("--seed", type=int, default=0, help="seed of --max-videos and random clip starts (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="videos per I3D call (default 8)")
    p.add_argument("--workers", type=int, default=4, help="decoding threads (default 4)")
    p.add_argument("-o", "--output", type=Path, metavar="REPORT.json", help="report file (default GENERATED/fvd.json)")
    _add_device(p)

    p = sub.add_parser("clipsim", help="CLIPSIM of a generated set (CLIP ViT-B/32)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
                       description="Mean over videos of the mean over frames of the cosine similarity between CLIP's frame and "
                                   "prompt embeddings (scale factor 1, as LaVie's Table 2). Prompts come from the generate manifest, "
                                   "or from the captions of a clips manifest.")
    p.add_argument("generated", help="a generate folder, or a captioned clips manifest")
    p.add_argument("--clip-model", default="openai/clip-vit-base-patch32",
                   help="transformers CLIP folder or hub id (default openai/clip-vit-base-patch32)")
    p.add_argument("--num-frames", type=int, help="score the first N frames (default: all)")
    p.add_argument("--max-videos", type=int, help="use at most N videos, drawn with --seed")
    p.add_argument("--seed", type=int, default=0, help="seed of --max-videos (default 0)")
    p.add_argument("-o", "--output", type=Path, metavar="REPORT.json", help="report file (default GENERATED/clipsim.json)")
    _add_device(p)

    p = sub.add_parser("compare", help="print reports side by side", description="A table of the figures and settings of "
                       "several reports, one column each; rows that differ are marked with '*'.")
    p.add_argument("reports", nargs="+", metavar="REPORT.json")
    return parser


# --- checks run before any model is loaded --------------------------------------------------------


def _model_spec(spec: str, what: str) -> str:
    """A local folder (made absolute, so a resumed run matches from any directory) or a hub id."""
    import re

    path = Path(spec)
    if path.is_dir():
        return str(path.resolve())
    if path.exists() or not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", spec):
        raise InputError(f"{what} model {spec!r}: no such folder; pass a folder laid out like a diffusers pipeline "
                         f"(unet/ vae/ text_encoder/ tokenizer/ scheduler/), e.g. saved by lavie-train, or a hub id")
    return spec


def _output_file(path: Path | None, generated: str, name: str) -> Path:
    if path is None:
        if not Path(generated).is_dir():
            raise InputError(f"{generated!r} is not a folder: pass -o REPORT.json")
        path = Path(generated) / name
    _check_writable(path.parent)
    return path


def _check_writable(folder: Path) -> None:
    import os

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"output folder {str(folder)!r} cannot be created ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder {str(folder)!r} is not writable")


def _device(spec: str | None):
    import torch

    try:
        return torch.device(spec or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        raise InputError(f"--device {spec!r}: {err}") from None


# --- commands -------------------------------------------------------------------------------------


def cmd_generate(args) -> int:
    from .generate import check_settings, file_sha256
    from .prompts import DEFAULT_SAMPLES, build_items
    from .sampler import SamplingOptions, base_recipe, output_fps

    protocol, prompt_file = next((k, getattr(args, k)) for k in ("ucf101", "msrvtt", "prompts") if getattr(args, k))
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    if args.num_frames < 1 or (args.steps is not None and args.steps < 1) or not 0 <= args.crf <= 51:
        raise InputError("--num-frames and --steps must be >= 1 and --crf within 0..51")
    items = build_items(protocol, prompt_file, args.samples_per_prompt, args.seed, args.class_prompt)
    total, items = len(items), items[: args.limit]
    base = _model_spec(args.base, "base")
    recipe = base_recipe(base)  # a converted LaVie folder carries the released recipe
    options = SamplingOptions(base=base, interp=args.interp and _model_spec(args.interp, "interp"),
                              vsr=args.vsr and _model_spec(args.vsr, "vsr"), num_frames=args.num_frames, height=args.height,
                              width=args.width, steps=args.steps or recipe.get("num_inference_steps", 50),
                              guidance_scale=args.guidance_scale if args.guidance_scale is not None else recipe.get("guidance_scale", 7.5),
                              negative_prompt=args.negative_prompt if args.negative_prompt is not None else recipe.get("negative_prompt") or None,
                              scheduler=args.scheduler, dtype=args.dtype)
    fps = output_fps(options)
    settings = {"protocol": protocol, "prompt_file": str(Path(prompt_file).resolve()), "prompt_file_sha256": file_sha256(prompt_file),
                "samples_per_prompt": args.samples_per_prompt or DEFAULT_SAMPLES[protocol], "class_prompt": args.class_prompt if protocol == "ucf101" else None,
                "items": total, "seed": args.seed, "crf": args.crf, "fps": fps, **options.to_dict()}
    _check_writable(args.output)
    check_settings(args.output, settings)

    from accelerate import PartialState

    from .generate import run_generate
    from .sampler import load_sampler, write_video

    import os

    import torch

    # on a machine without CUDA, processes started by torchrun or accelerate find each other over gloo
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:  # processes that do not see each other would sample the same items
        raise InputError(f"launched as {launched} processes, but accelerate sees {state.num_processes}; "
                         f"start with accelerate launch or torchrun")
    device = _device(args.device) if args.device else state.device
    try:
        sample = load_sampler(options, device, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as err:  # an incomplete model folder, a wrong stage
        raise InputError(" ".join(str(err).split())) from None
    try:
        counts = run_generate(items, args.output, sample, write_video, fps=fps, crf=args.crf, process_index=state.process_index,
                              num_processes=state.num_processes, barrier=state.wait_for_everyone, progress=not args.no_progress)
    except ValueError as err:  # a setting no prompt can satisfy (a frame size the model cannot make)
        raise InputError(" ".join(str(err).split())) from None
    if state.is_main_process:
        print(f"{args.output}: {counts['items']} items; {counts['done_before']} were done, {counts['sampled']} sampled now "
              f"by this process ({state.num_processes} in all), {counts['errors']} errors; manifest {args.output / 'manifest.jsonl'}")
    return 0


def cmd_fvd(args) -> int:
    from .fvd import C3D_SOURCE, I3D_SOURCE, ClipOptions, check_model_file, load_cached_stats
    from .generate import file_sha256
    from .videos import open_video_set

    i3d_path = check_model_file(args.i3d, "I3D", I3D_SOURCE)
    classifier_path = check_model_file(args.is_classifier, "IS classifier", C3D_SOURCE) if args.is_classifier else None
    if args.is_splits < 1:
        raise InputError(f"--is-splits must be >= 1, got {args.is_splits}")
    options = ClipOptions(num_frames=args.num_frames, stride=args.stride, clip_start=args.clip_start, max_videos=args.max_videos,
                          seed=args.seed, batch_size=args.batch_size, workers=args.workers)
    generated = open_video_set(args.generated)
    expected = _warn_incomplete(generated)
    if args.real is None and (args.real_stats is None or not args.real_stats.is_file()):
        raise InputError("pass --real (a folder of real videos or a clips manifest), or --real-stats with a saved statistics file")
    real = open_video_set(args.real) if args.real else None
    output = _output_file(args.output, args.generated, "fvd.json")
    i3d_sha = file_sha256(i3d_path)
    real_key = {"real": str(Path(args.real).resolve()) if args.real else None, "i3d_sha256": i3d_sha, "num_frames": options.num_frames,
                "stride": options.stride, "clip_start": options.clip_start, "max_videos": options.max_videos, "seed": options.seed}
    if args.real_stats is not None and args.real_stats.is_file():
        if args.real is None:
            real_key["real"] = _recorded_real(args.real_stats)
        load_cached_stats(args.real_stats, real_key)  # statistics made with other settings: an error now, not after the work

    from .fvd import TorchScriptVideoNet, compute_fvd
    from .report import build_report, write_report

    device = _device(args.device)
    i3d = TorchScriptVideoNet(i3d_path, device, "i3d")
    classifier = TorchScriptVideoNet(classifier_path, device, "classifier", args.is_output) if classifier_path else None
    results = compute_fvd(generated, real, i3d, options, classifier, args.is_splits, args.real_stats, real_key,
                          progress=not args.no_progress)
    results["generated"]["settings"] = generated.settings
    results["generated"]["expected_videos"] = expected
    results["preprocessing"] = {"crop": "square centre crop of side round(270/320 x short side) (270x270 for 320x512)",
                                "resize": "224x224 bilinear, antialiased when shrinking", "range": "[-1, 1]"}
    results["i3d"] = {"file": str(i3d_path.resolve()), "sha256": i3d_sha}
    if classifier_path:
        results["is"]["classifier"] = {"file": str(classifier_path.resolve()), "sha256": file_sha256(classifier_path)}
    write_report(build_report("fvd", results, _model_summary(generated.settings)), output)
    line = f"FVD {results['fvd']:.2f} ({results['generated']['videos']} generated vs {results['real']['videos']} real videos)"
    if "is" in results:
        line += f"; IS {results['is']['mean']:.2f} ± {results['is']['std']:.2f}"
    print(f"{line}; report {output}")
    return 0


def _recorded_real(stats_file: Path) -> str | None:
    import json

    import numpy as np

    try:
        with np.load(stats_file) as data:
            return json.loads(str(data["key"])).get("real")
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"real statistics {str(stats_file)!r} could not be read ({err})") from None


def _warn_incomplete(video_set) -> int | None:
    """The number of items the generate run was asked for; a line on stderr when fewer are there."""
    expected = (video_set.settings or {}).get("items")
    if expected and len(video_set.videos) < expected:
        print(f"lavie-eval: warning: {video_set.spec} holds {len(video_set.videos)} of its {expected} videos; "
              f"re-run the same generate command to finish it", file=sys.stderr)
    return expected


def _model_summary(settings: dict | None) -> dict | None:
    if not settings:
        return None
    keys = ("base", "interp", "vsr", "protocol", "seed", "steps", "guidance_scale", "num_frames", "height", "width", "scheduler", "dtype")
    return {k: settings.get(k) for k in keys}


def cmd_clipsim(args) -> int:
    from .clipsim import check_clip_model
    from .videos import open_video_set

    if args.num_frames is not None and args.num_frames < 1:
        raise InputError(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.max_videos is not None and args.max_videos < 1:
        raise InputError(f"--max-videos must be >= 1, got {args.max_videos}")
    video_set = open_video_set(args.generated)
    expected = _warn_incomplete(video_set)
    missing = [v.key for v in video_set.videos if not v.prompt]
    if missing:
        raise InputError(f"{args.generated}: {len(missing)} videos have no prompt (first: {missing[0]}); pass a folder written by "
                         f"lavie-eval generate or a captioned clips manifest")
    check_clip_model(args.clip_model)
    output = _output_file(args.output, args.generated, "clipsim.json")

    from .clipsim import compute_clipsim, load_clip_similarity
    from .report import build_report, write_report

    scorer = load_clip_similarity(args.clip_model, _device(args.device))
    results = compute_clipsim(video_set, scorer, args.num_frames, args.max_videos, args.seed, progress=not args.no_progress)
    results = {"clip_model": args.clip_model, "set": {"spec": str(Path(args.generated).resolve()), "kind": video_set.kind,
                                                       "expected_videos": expected, "settings": video_set.settings},
               "seed": args.seed, "max_videos": args.max_videos, **results}
    write_report(build_report("clipsim", results, _model_summary(video_set.settings)), output)
    print(f"CLIPSIM {results['clipsim']:.4f} over {results['videos']} videos (cosine similarity, scale 1); report {output}")
    return 0


def cmd_compare(args) -> int:
    from .report import compare_table

    print(compare_table(args.reports))
    return 0


COMMANDS = {"generate": cmd_generate, "fvd": cmd_fvd, "clipsim": cmd_clipsim, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command](args)
    except InputError as err:
        print(f"lavie-eval {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
    except TooFewVideos as err:
        print(f"lavie-eval {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_TOO_FEW
    except OSError as err:  # an output could not be written: what is finished stays, a re-run resumes
        print(f"lavie-eval {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_OUTPUT


if __name__ == "__main__":
    sys.exit(main())
