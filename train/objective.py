"""The training objective of each stage: latents in, noise added, the network's prediction scored.

All randomness (caption dropout, latent samples, noise, timesteps, noise levels) comes from the
`generator` the loop seeds per (seed, step, micro-batch, rank), which is what makes a resumed run
continue the uninterrupted one exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lavie.model import interpolation_conditioning

from .models import StageModels


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by the empty prompt with probability `p`, so the model also learns the
    unconditional prediction that classifier-free guidance needs."""
    if p <= 0:
        return list(captions)
    keep = torch.rand(len(captions), generator=generator, device=generator.device) >= p
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


@torch.no_grad()
def encode_text(models: StageModels, captions: list[str], device, dtype) -> torch.Tensor:
    """(N,) captions -> (N, L, D) CLIP text embeddings."""
    tokens = models.tokenizer(captions, padding="max_length", max_length=models.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids
    return models.text_encoder(tokens.to(device))[0].to(dtype)


@torch.no_grad()
def to_latents(batch: dict, key: str, models: StageModels, generator: torch.Generator, chunk: int = 16) -> torch.Tensor:
    """Scaled VAE latents (B, C, T, h, w) of `batch[key]` pixels, or a sample of the cached posterior."""
    vae = models.vae
    cached = batch.get(f"{key}_latents" if key == "video" else "image_latents")
    if cached is not None:
        cached = cached.to(generator.device, torch.float32)  # (B, 2, C, T, h, w)
        mean, std = cached[:, 0], cached[:, 1]
        latents = mean + std * torch.randn(mean.shape, generator=generator, device=generator.device)
    else:
        pixels = batch[key]  # (B, 3, T, H, W)
        b, _, t = pixels.shape[:3]
        flat = pixels.transpose(1, 2).flatten(0, 1).to(vae.device, vae.dtype)  # (B*T, 3, H, W)
        latents = torch.cat([vae.encode(part).latent_dist.sample(generator) for part in flat.split(chunk)])
        latents = latents.float().unflatten(0, (b, t)).transpose(1, 2)  # (B, C, T, h, w)
    return latents * vae.config.scaling_factor


def _noised(models: StageModels, x0: torch.Tensor, generator: torch.Generator):
    """Forward diffusion: the noisy latents, timesteps and the regression target (epsilon or v)."""
    sched = models.noise_scheduler
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device)
    t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=generator,
                      device=generator.device).to(x0.device)  # (B,)
    noisy = sched.add_noise(x0, noise, t)
    if sched.config.prediction_type == "epsilon":
        target = noise
    elif sched.config.prediction_type == "v_prediction":
        target = sched.get_velocity(x0, noise, t)
    else:
        raise ValueError(f"prediction_type={sched.config.prediction_type!r}: choose epsilon or v_prediction")
    return noisy, t, target


def base_loss(unet, models: StageModels, batch: dict, generator: torch.Generator, text_dropout: float,
              image_weight: float, dtype: torch.dtype) -> tuple[torch.Tensor, dict]:
    """Joint image-video loss, LaVie §3.1 Eq. 3: L = L_video + alpha * L_image. The M images of each
    sample ride along the time axis after its T frames, each with its own caption."""
    device = generator.device
    video = to_latents(batch, "video", models, generator)  # (B, C, T, h, w)
    b, _, t = video.shape[:3]
    captions = drop_captions(batch["captions"], text_dropout, generator)
    has_images = "images" in batch or "image_latents" in batch
    if has_images:
        images = to_latents(batch, "images", models, generator)  # (B, C, M, h, w)
        m = images.shape[2]
        x0 = torch.cat([video, images], dim=2)  # (B, C, T + M, h, w)
        image_captions = drop_captions([c for row in batch["image_captions"] for c in row], text_dropout, generator)
        text = encode_text(models, captions + image_captions, device, dtype)  # (B + B*M, L, D)
        video_text = text[:b, None].expand(b, t, *text.shape[1:])  # (B, T, L, D)
        image_text = text[b:].unflatten(0, (b, m))  # (B, M, L, D)
        context = torch.cat([video_text, image_text], dim=1)  # (B, T + M, L, D)
    else:
        m = 0
        x0 = video
        context = encode_text(models, captions, device, dtype)  # (B, L, D)
    noisy, timesteps, target = _noised(models, x0, generator)
    pred = unet(noisy, timesteps, context, n_images=m).sample  # (B, C, T + M, h, w)
    err = (pred.float() - target.float()) ** 2
    loss_video = err[:, :, :t].mean()
    if m == 0:
        return loss_video, {"loss_video": loss_video.detach()}
    loss_image = err[:, :, t:].mean()
    return loss_video + image_weight * loss_image, {"loss_video": loss_video.detach(), "loss_image": loss_image.detach()}


def interp_loss(unet, models: StageModels, batch: dict, generator: torch.Generator, text_dropout: float,
                factor: int, dtype: torch.dtype) -> tuple[torch.Tensor, dict]:
    """Temporal interpolation, LaVie §3.2: every `factor`-th frame is a key frame; the key frames,
    repeated to the full rate with their mask, are concatenated to the noisy latents, and the
    network denoises all frames (key frames included)."""
    x0 = to_latents(batch, "video", models, generator)  # (B, C, T_out, h, w)
    cond = interpolation_conditioning(x0[:, :, ::factor], factor)  # (B, C, T_out, h, w)
    captions = drop_captions(batch["captions"], text_dropout, generator)
    context = encode_text(models, captions, generator.device, dtype)  # (B, L, D)
    noisy, timesteps, target = _noised(models, x0, generator)
    pred = unet(noisy, timesteps, context, cond=cond).sample
    loss = F.mse_loss(pred.float(), target.float())
    return loss, {"loss_video": loss.detach()}


def vsr_loss(unet, models: StageModels, batch: dict, generator: torch.Generator, text_dropout: float,
             scale: int, dtype: torch.dtype) -> tuple[torch.Tensor, dict]:
    """Video super-resolution, LaVie §3.3 and Video LDM §3.4 Eq. 5: the patch is downscaled by
    `scale`, noised to a random level tau_gamma (noise augmentation) and concatenated to the noisy
    latents; the level is the model's class label."""
    pixels = batch["video"]  # (B, 3, T, H, W) in [-1, 1]
    b, _, t, h, w = pixels.shape
    flat = pixels.transpose(1, 2).flatten(0, 1).to(generator.device)  # (B*T, 3, H, W)
    low = F.interpolate(flat, size=(h // scale, w // scale), mode="bicubic", antialias=True).clamp(-1, 1)  # (B*T, 3, h, w)
    x0 = to_latents(batch, "video", models, generator)  # (B, C, T, h', w')
    if x0.shape[-2:] != low.shape[-2:]:
        raise ValueError(f"VAE latents {tuple(x0.shape[-2:])} and low-resolution frames {tuple(low.shape[-2:])} differ in size: "
                         f"vsr.scale must equal the VAE's downsampling factor")
    level = torch.randint(0, models.max_noise_level + 1, (b,), generator=generator, device=generator.device)  # (B,)
    aug = torch.randn(low.shape, generator=generator, device=generator.device)
    low = models.low_res_scheduler.add_noise(low, aug, level.repeat_interleave(t))  # (B*T, 3, h, w)
    low = low.unflatten(0, (b, t)).transpose(1, 2)  # (B, 3, T, h, w)
    captions = drop_captions(batch["captions"], text_dropout, generator)
    context = encode_text(models, captions, generator.device, dtype)  # (B, L, D)
    noisy, timesteps, target = _noised(models, x0, generator)
    pred = unet(noisy, timesteps, context, low_res=low, noise_level=level).sample
    loss = F.mse_loss(pred.float(), target.float())
    return loss, {"loss_video": loss.detach()}
