"""`lavie-convert`: the released LaVie checkpoints as complete stage folders.

A stage folder holds `unet/ vae/ text_encoder/ tokenizer/ scheduler/` (plus `low_res_scheduler/` for
VSR) and a `model_index.json` carrying the stage's sampling recipe, so `lavie-sample --base/--interp/
--vsr` and `lavie-train ... model.pretrained=DIR` load it directly. The UNet comes from the official
checkpoint (`lavie.model.convert.from_official_checkpoint`); the VAE, text encoder and tokenizer are
copied from the image pipeline the official model was inflated from; the scheduler follows the
released sampling scripts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

STAGES = ("base", "interp", "vsr")
COPIED = ("vae", "text_encoder", "tokenizer")

# The released sampling recipes (base/pipelines/sample.py + base/configs/sample.yaml,
# interpolation/sample.py + configs/sample.yaml, vsr/sample.py + configs/sample.yaml).
RECIPES = {
    # DDPM over a linear beta schedule 1e-4 -> 0.02, 50 steps, guidance 7.5, empty negative prompt
    "base": {"scheduler": {"_class_name": "DDPMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"},
             "num_inference_steps": 50, "guidance_scale": 7.5, "negative_prompt": ""},
    # DDIM (eta 0) over the same schedule, 50 steps, guidance 4.0; the released script appends
    # ", 4k." to the prompt and uses the literal text "None" as its negative prompt
    "interp": {"scheduler": {"_class_name": "DDIMScheduler", "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
                             "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
                             "timestep_spacing": "linspace", "prediction_type": "epsilon"},
               "num_inference_steps": 50, "guidance_scale": 4.0, "negative_prompt": "None", "prompt_suffix": ", 4k."},
    # DDIM over the x4 upscaler's schedule made linear, v-prediction, 50 steps, guidance 5,
    # noise level 50 on the low-resolution frames, non-overlapping chunks of 8 frames
    "vsr": {"scheduler": {"_class_name": "DDIMScheduler", "beta_schedule": "linear"},
            "num_inference_steps": 50, "guidance_scale": 5.0, "negative_prompt": "blur, worst quality",
            "noise_level": 50, "chunk_size": 8, "chunk_overlap": 0},
}
PIPELINE_CLASSES = {"base": "LaVieTextToVideoPipeline", "interp": "LaVieInterpolationPipeline", "vsr": "LaVieVideoSuperResolutionPipeline"}
OFFICIAL_LAYOUT = {  # the released README's pretrained_models/ folder
    "base": ("lavie_base.pt", "stable-diffusion-v1-4"),
    "interp": ("lavie_interpolation.pt", "stable-diffusion-v1-4"),
    "vsr": ("lavie_vsr.pt", "stable-diffusion-x4-upscaler"),
}

DESCRIPTION = """\
Convert the released LaVie checkpoints (lavie_base.pt, lavie_interpolation.pt, lavie_vsr.pt) into
stage folders that lavie-sample and lavie-train load, with the released sampling recipes as the
folders' defaults:
  base    DDPM, linear betas 1e-4..0.02, 50 steps, guidance 7.5
  interp  DDIM 50 steps, guidance 4.0, negative prompt "None", prompt suffix ", 4k." (16 -> 61 frames)
  vsr     DDIM 50 steps (v-prediction), guidance 5, negative prompt "blur, worst quality",
          noise level 50, chunks of 8 frames (4x larger frames)

One stage:
  lavie-convert --stage base pretrained_models/lavie_base.pt --image-model pretrained_models/stable-diffusion-v1-4 -o lavie/base
All three from the released download layout (pretrained_models/ holding the three .pt files,
stable-diffusion-v1-4/ and stable-diffusion-x4-upscaler/):
  lavie-convert --official pretrained_models/ -o lavie/     (writes lavie/base, lavie/interp, lavie/vsr)

exit status: 0 written; 1 the output could not be written; 2 a usage error, a missing or wrong file,
a checkpoint of another stage or an image model that does not match (one line on stderr).
"""


class UsageError(Exception):
    """A mistake in what the command was given: one line, exit status 2."""


def check_image_model(folder: Path, stage: str) -> None:
    needed = ["unet", *COPIED, "scheduler"] + (["low_res_scheduler"] if stage == "vsr" else [])
    if not folder.is_dir():
        raise UsageError(f"image model {folder}: no such folder (give the {OFFICIAL_LAYOUT[stage][1]} pipeline folder)")
    missing = [n for n in needed if not (folder / n).is_dir()]
    if missing or not (folder / "unet" / "config.json").is_file():
        raise UsageError(f"image model {folder} lacks {', '.join(m + '/' for m in missing) or 'unet/config.json'}: "
                         f"give the {OFFICIAL_LAYOUT[stage][1]} pipeline folder")


def check_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise UsageError(f"output {out_dir} exists and is not empty; choose another -o or pass --overwrite")


def convert_stage(checkpoint: Path, image_model: Path, stage: str, out_dir: Path) -> Path:
    """Write the stage folder of an official checkpoint; returns `out_dir`."""
    from lavie.model.convert import ConversionError, from_official_checkpoint

    try:
        unet = from_official_checkpoint(checkpoint, image_model / "unet", stage)
    except ConversionError as error:
        raise UsageError(str(error)) from None
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    unet.save_pretrained(staging / "unet")
    for name in COPIED:
        shutil.copytree(image_model / name, staging / name)
    recipe = dict(RECIPES[stage])
    scheduler_config = write_scheduler(image_model / "scheduler", staging / "scheduler", recipe.pop("scheduler"))
    index = {"_class_name": PIPELINE_CLASSES[stage], "stage": stage, "unet": ["lavie.model", type(unet).__name__],
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", scheduler_config["_class_name"]], **recipe}
    if stage == "vsr":
        shutil.copytree(image_model / "low_res_scheduler", staging / "low_res_scheduler")
        low_res = json.loads((staging / "low_res_scheduler" / "scheduler_config.json").read_text())
        index["low_res_scheduler"] = ["diffusers", low_res["_class_name"]]
        image_index = image_model / "model_index.json"
        index["max_noise_level"] = json.loads(image_index.read_text()).get("max_noise_level", 350) if image_index.is_file() else 350
    (staging / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def write_scheduler(source: Path, target: Path, recipe: dict) -> dict:
    """The image model's noise schedule with the released recipe's sampler and betas."""
    config = json.loads((source / "scheduler_config.json").read_text())
    config = {k: v for k, v in config.items() if k in ("num_train_timesteps", "prediction_type", "steps_offset", "clip_sample",
                                                       "set_alpha_to_one", "timestep_spacing", "trained_betas", "beta_start", "beta_end")}
    config.update(recipe)
    target.mkdir(parents=True)
    (target / "scheduler_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lavie-convert", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", metavar="CHECKPOINT", help="an official .pt file (with --stage)")
    p.add_argument("--stage", choices=STAGES, help="which network CHECKPOINT holds")
    p.add_argument("--image-model", metavar="PIPELINE_DIR", help="the image pipeline the network was inflated from "
                   "(stable-diffusion-v1-4 for base and interp, stable-diffusion-x4-upscaler for vsr)")
    p.add_argument("--official", metavar="DIR", help="convert all three from the released pretrained_models/ layout")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="stage folder to write (with --official: a folder for base/ interp/ vsr/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output")
    return p


def plan(args) -> list[tuple[Path, Path, str, Path]]:
    """(checkpoint, image model, stage, output) per stage to convert; every check that needs no model."""
    out = Path(args.output)
    if args.official:
        if args.checkpoint or args.stage or args.image_model:
            raise UsageError("--official converts all three stages; give no CHECKPOINT, --stage or --image-model with it")
        root = Path(args.official)
        if not root.is_dir():
            raise UsageError(f"--official {root}: no such folder")
        jobs = [(root / ckpt, root / image, stage, out / stage) for stage, (ckpt, image) in OFFICIAL_LAYOUT.items()]
    else:
        if not (args.checkpoint and args.stage and args.image_model):
            raise UsageError("give CHECKPOINT, --stage and --image-model, or --official DIR")
        jobs = [(Path(args.checkpoint), Path(args.image_model), args.stage, out)]
    for checkpoint, image_model, stage, target in jobs:
        if not checkpoint.is_file():
            raise UsageError(f"checkpoint {checkpoint}: no such file ({OFFICIAL_LAYOUT[stage][0]} from the LaVie release)")
        check_image_model(image_model, stage)
        check_output(target, args.overwrite)
    return jobs


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        jobs = plan(args)
        for checkpoint, image_model, stage, target in jobs:
            print(f"converting {checkpoint} ({stage}) ...", flush=True)
            convert_stage(checkpoint, image_model, stage, target)
            print(f"wrote {target}")
    except UsageError as error:
        print(f"lavie-convert: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"lavie-convert: cannot write the output: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
