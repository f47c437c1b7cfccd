"""`lavie-sample`: a prompt through the LaVie cascade into an mp4."""

import argparse
import logging
import sys

from lavie.usage import OneLineParser, one_line, usage_error

from .preflight import preflight

# The samplers --scheduler offers (pipelines.stage.SCHEDULERS), listed here so that --help
# answers without importing torch and diffusers; a test keeps the two lists equal.
SCHEDULER_NAMES = ("ddim", "dpm++", "euler")

DESCRIPTION = """\
Sample a video from a prompt with LaVie's cascade: the base model makes key frames (16 by
default), the optional interpolation model makes them 4x denser (16 -> 61), the optional
super-resolution model makes them 4x larger. Writes an H.264 mp4 with PyAV.

Each of --base, --interp, --vsr takes a local folder laid out like a diffusers pipeline
(unet/ vae/ text_encoder/ tokenizer/ scheduler/, and low_res_scheduler/ for --vsr) or a
Hugging Face hub id. Trained LaVie models are such folders. Real image models work too:
  --base CompVis/stable-diffusion-v1-4 (or its local copy) inflates SD 1.4's UNet with untrained,
      identity temporal layers, so frames are independent images until trained;
  --vsr stabilityai/stable-diffusion-x4-upscaler (or its local copy) does the same for the x4
      upscaler.
Tiny random folders for a CPU try-out: python -c "from lavie.model.tiny import build_tiny_components as b;
  [b(f'tiny/{s}', stage=s) for s in ('base', 'interp', 'vsr')]"
"""


EPILOG = """\
exit status: 0 the video was written; 1 it could not be written after sampling (disk full,
folder removed meanwhile), the path and cause named; 2 usage error, in one line before any model
is loaded: a bad flag or value, a missing model folder, an output path that cannot be written;
130 stopped by SIGINT (Ctrl-C) while sampling.
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="lavie-sample", description=DESCRIPTION, epilog=EPILOG,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", help="text prompt")
    p.add_argument("--base", required=True, metavar="DIR", help="base text-to-video model folder or hub id")
    p.add_argument("--interp", metavar="DIR", help="temporal interpolation model folder or hub id (16 -> 61 frames)")
    p.add_argument("--vsr", metavar="DIR", help="video super-resolution model folder or hub id (x4 size)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="mp4 file to write")
    p.add_argument("--grid", metavar="OUT.png", help="also write all frames tiled into one PNG")
    p.add_argument("--negative-prompt", default=None, help="what guidance steers away from")
    p.add_argument("--num-frames", type=int, default=16, help="base key frames (default 16)")
    p.add_argument("--height", type=int, help="base height in pixels (default: the UNet's sample size x the VAE factor)")
    p.add_argument("--width", type=int, help="base width in pixels (default as --height)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps of every stage (default 50)")
    p.add_argument("--interp-steps", type=int, help="denoising steps of the interpolation stage (default --steps)")
    p.add_argument("--vsr-steps", type=int, help="denoising steps of the super-resolution stage (default --steps)")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance scale; <= 1 disables it (default 7.5)")
    p.add_argument("--scheduler", choices=sorted(SCHEDULER_NAMES), help="sampler over each folder's noise schedule (default: the folder's own scheduler)")
    p.add_argument("--noise-level", type=int, default=50, help="noise added to the low-resolution frames before super-resolution (default 50)")
    p.add_argument("--vsr-window", type=int, default=8, help="frames per super-resolution window (default 8)")
    p.add_argument("--vsr-overlap", type=int, default=2, help="frames shared by neighbouring windows (default 2)")
    p.add_argument("--windows", type=int, default=1, help="extend the base video over this many windows; needs a base model trained with context frames (default 1)")
    p.add_argument("--context-frames", type=int, default=2, choices=(1, 2), help="frames carried into the next window (default 2)")
    p.add_argument("--context-guidance", type=float, default=1.0, help="context guidance scale for long videos (default 1.0)")
    p.add_argument("--fps", type=int, default=8, help="frame rate of the base video; interpolation multiplies it by 4 (default 8)")
    p.add_argument("--seed", type=int, help="seed: the same seed and settings give the same video")
    p.add_argument("--device", default=None, help="device (default: cuda when present, else cpu)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="model dtype (default float32)")
    p.add_argument("--cpu-offload", action="store_true", help="keep models in CPU memory, moving each to --device only while it runs")
    p.add_argument("--vae-slicing", action="store_true", help="decode one frame at a time to save memory")
    p.add_argument("--vae-chunk", type=int, default=8, help="frames per VAE call (default 8)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        preflight(args)  # paths and numbers, before torch loads and before any model is built
    except ValueError as err:
        usage_error("lavie-sample", err)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import torch

    from .cascade import CascadeOptions, CascadePipeline
    from .loading import ModelFolderError, load_stage
    from .video_io import to_uint8_frames, write_grid, write_mp4

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.cpu_offload and torch.device(args.device).type == "cpu":
        parser.error("--cpu-offload moves models to an accelerator while they run; pass --device cuda")

    try:
        stages = {name: load_stage(spec, name) for name, spec in (("base", args.base), ("interp", args.interp), ("vsr", args.vsr)) if spec}
    except (ModelFolderError, ValueError, OSError) as err:
        usage_error("lavie-sample", err)
    dtype = getattr(torch, args.dtype)
    for stage in stages.values():
        if args.scheduler:
            stage.set_scheduler(args.scheduler)
        stage.vae_chunk_size = args.vae_chunk
        if args.vae_slicing:
            stage.enable_vae_slicing()
        if args.cpu_offload:
            stage.enable_model_cpu_offload(args.device)
            stage.to(dtype=dtype)
        else:
            stage.to(args.device, dtype)

    cascade = CascadePipeline(stages["base"], stages.get("interp"), stages.get("vsr"))
    options = CascadeOptions(
        negative_prompt=args.negative_prompt, num_frames=args.num_frames, height=args.height, width=args.width,
        num_inference_steps=args.steps, guidance_scale=args.guidance_scale, interp_steps=args.interp_steps,
        vsr_steps=args.vsr_steps, noise_level=args.noise_level, vsr_window=args.vsr_window, vsr_overlap=args.vsr_overlap,
        num_windows=args.windows, num_context=args.context_frames, context_guidance_scale=args.context_guidance, seed=args.seed,
    )
    try:
        video = cascade(args.prompt, options)  # (1, 3, T, H, W)
    except ValueError as err:
        usage_error("lavie-sample", err)
    except KeyboardInterrupt:
        print("lavie-sample: stopped by SIGINT before the video was written", file=sys.stderr)
        return 130

    frames = to_uint8_frames(video[0])  # (T, H, W, 3)
    fps = args.fps * (options.interp_factor if "interp" in stages else 1)
    target = args.output
    try:
        write_mp4(frames, args.output, fps=fps)
        print(f"wrote {args.output}: {frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]}, {fps} fps")
        if args.grid:
            target = args.grid
            write_grid(frames, args.grid)
            print(f"wrote {args.grid}")
    except OSError as err:  # the disk filled up or the folder went away while sampling
        print(f"lavie-sample: error: cannot write {target}: {one_line(err.strerror or err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
