"""Training-step time and peak memory of the base stage (joint image-video loss, LaVie Eq. 3).

Two configs, each timed over the same recipe the trainer runs (VAE encode of the clip and its
images, text encode, noise, UNet forward + backward, AdamW step):
  tiny    the tiny-base model preset, 4 frames + 2 images at 16x24
  small   the tiny layout widened to (64, 128, 256) channels, 2 layers per block, 8 frames +
          2 images at 64x64
On CUDA (`--device cuda`) a third row runs SD 1.4's UNet layout at 16x320x512 with 4 images in
bf16 and gradient checkpointing, the paper's setting (LaVie App. C). Prints median seconds per
step, samples/s and peak memory (CUDA: max allocated; CPU: growth of the process's peak RSS).

    python benchmarks/train_step.py [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import time

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from lavie.model import VideoUNet
from lavie.model.tiny import build_tokenizer, load_preset
from lavie.train.models import StageModels
from lavie.train.objective import base_loss


def build(preset: dict, device, unet_overrides: dict | None = None) -> StageModels:
    tokenizer = build_tokenizer(preset["tokenizer"]["model_max_length"])
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id, **preset["text_encoder"]))
    unet2d = UNet2DConditionModel(**{**preset["unet2d"], **(unet_overrides or {})})
    scheduler = DDPMScheduler.from_config({k: v for k, v in preset["scheduler"].items() if k != "_class_name"})
    models = StageModels(unet=VideoUNet.from_unet2d(unet2d).to(device), vae=AutoencoderKL(**preset["vae"]).to(device).eval(),
                         text_encoder=text.to(device).eval(), tokenizer=tokenizer, scheduler=scheduler, noise_scheduler=scheduler)
    models.vae.requires_grad_(False)
    models.text_encoder.requires_grad_(False)
    return models


def peak_bytes(device) -> int:
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(name: str, models: StageModels, frames: int, images: int, size: tuple[int, int], batch: int, steps: int,
            device, dtype=torch.float32, checkpointing: bool = False) -> None:
    h, w = size
    if checkpointing:
        models.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(models.unet.parameters(), lr=1e-4)
    batch_data = {"video": torch.rand(batch, 3, frames, h, w) * 2 - 1, "captions": ["a red bus on a bridge"] * batch}
    if images:
        batch_data["images"] = torch.rand(batch, 3, images, h, w) * 2 - 1
        batch_data["image_captions"] = [["a photo of a cat"] * images] * batch
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = peak_bytes(device)
    times = []
    for step in range(steps + 2):  # two warm-up steps
        generator = torch.Generator(device).manual_seed(step)
        t0 = time.perf_counter()
        with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype != torch.float32):
            loss, _ = base_loss(models.unet, models, batch_data, generator, 0.1, 1.0, dtype)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times[2:])
    peak = peak_bytes(device) - (0 if torch.device(device).type == "cuda" else before)
    params = sum(p.numel() for p in models.unet.parameters()) / 1e6
    print(f"{name:6s} UNet {params:7.1f}M  {batch}x({frames}+{images})x{h}x{w}  {median:7.3f} s/step  "
          f"{batch / median:7.2f} videos/s  peak {'allocated' if torch.device(device).type == 'cuda' else 'RSS growth'} {peak / 2**20:8.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    preset = load_preset("base")
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    measure("tiny", build(preset, args.device), 4, 2, (16, 24), 2, args.steps, args.device)
    small = copy.deepcopy(preset)
    small["unet2d"].update(block_out_channels=[64, 128, 256], layers_per_block=2,
                           down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                           up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"], attention_head_dim=4)
    measure("small", build(small, args.device), 8, 2, (64, 64), 1, args.steps, args.device)
    if torch.device(args.device).type == "cuda":
        sd = copy.deepcopy(preset)
        sd["unet2d"].update(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, attention_head_dim=8,
                            cross_attention_dim=768, sample_size=64,
                            down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                            up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
        sd["text_encoder"].update(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
        sd["vae"].update(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4)
        models = build(sd, args.device)
        models.vae.to(dtype=torch.bfloat16)
        models.text_encoder.to(dtype=torch.bfloat16)
        measure("sd1.4", models, 16, 4, (320, 512), 1, args.steps, args.device, torch.bfloat16, checkpointing=True)


if __name__ == "__main__":
    main()
