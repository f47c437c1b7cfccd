"""Video super-resolution sampling over overlapping frame windows (LaVie §3.3, Video LDM §3.4)."""

from __future__ import annotations

import torch

from .common import LaVieVideoPipeline


def frame_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) windows of `window` frames covering `num_frames`, neighbours sharing `overlap`
    frames; the last window is aligned to the end, so it may share more."""
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if num_frames <= window:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - window + 1, window - overlap))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return [(s, s + window) for s in starts]


class LaVieVideoSuperResolutionPipeline(LaVieVideoPipeline):
    r"""Low-resolution video + prompt -> a video at 4x resolution with a `VideoSRUNet` and the x4
    upscaler's VAE. The low-resolution frames are noised to `noise_level` (noise augmentation,
    Video LDM §3.4) and concatenated to the latents; the UNet runs on chunks of `chunk_size`
    frames, and where chunks overlap (`chunk_overlap` frames) their predictions are averaged at
    every step, so neighbouring chunks agree.

    The recipe in the config: `num_inference_steps`, `guidance_scale`, `negative_prompt`, `prompt_suffix`,
    `noise_level`, `chunk_size`, `chunk_overlap`; `max_noise_level` bounds `noise_level`.
    """

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, low_res_scheduler, max_noise_level: int = 350,
                 num_inference_steps: int = 50, guidance_scale: float = 7.5, negative_prompt: str | None = None,
                 noise_level: int = 50, chunk_size: int = 8, chunk_overlap: int = 2,
                 prompt_suffix: str = ""):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                              low_res_scheduler=low_res_scheduler)
        self._register_recipe(max_noise_level=max_noise_level, num_inference_steps=num_inference_steps,
                              guidance_scale=guidance_scale, negative_prompt=negative_prompt, noise_level=noise_level,
                              chunk_size=chunk_size, chunk_overlap=chunk_overlap, prompt_suffix=prompt_suffix)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        video: torch.Tensor,
        negative_prompt: str | list[str] | None = None,
        noise_level: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end=None,
    ):
        """video: (B, 3, T, h, w) in [-1, 1]. Returns frames at H, W = 4h, 4w (through the x4 VAE)."""
        noise_level = self.recipe("noise_level", noise_level)
        if not 0 <= noise_level <= self.config.max_noise_level:
            raise ValueError(f"noise_level must lie in [0, {self.config.max_noise_level}], got {noise_level}")
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        negative_prompt = self.recipe("negative_prompt", negative_prompt)
        guidance_scale = self.recipe("guidance_scale", guidance_scale)
        num_inference_steps = self.recipe("num_inference_steps", num_inference_steps)
        windows = frame_windows(video.shape[2], self.recipe("chunk_size", chunk_size), self.recipe("chunk_overlap", chunk_overlap))
        device = self._execution_device
        b, _, t, h, w = video.shape

        # 1. text
        do_cfg = guidance_scale > 1.0
        text = self.encode_prompt(prompt, negative_prompt, do_cfg)  # ((1 + cfg) * B, L, D)

        # 2. noise-augmented low-resolution frames (Video LDM §3.4, c_tau_gamma)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        video = video.to(device, self.unet.dtype)
        level = torch.full((b,), noise_level, dtype=torch.long, device=device)
        aug_noise = self.initial_latents(video.shape, generator) / self.scheduler.init_noise_sigma
        low_res = self.low_res_scheduler.add_noise(video.transpose(1, 2).flatten(0, 1), aug_noise.transpose(1, 2).flatten(0, 1),
                                                   level.repeat_interleave(t))
        low_res = low_res.unflatten(0, (b, t)).transpose(1, 2)  # (B, 3, T, h, w)

        # 3. latents at the low-resolution size; the x4 VAE decodes them to 4x pixels
        channels = self.unet.unet2d.config.out_channels
        latents = self.initial_latents((b, channels, t, h, w), generator)  # (B, 4, T, h, w)
        counts = torch.zeros(t, device=device, dtype=latents.dtype)
        for start, end in windows:
            counts[start:end] += 1

        # 4. denoising loop, chunked in time
        def predict(x, step):
            noise_pred = torch.zeros_like(x)
            for start, end in windows:
                xw, lw = x[:, :, start:end], low_res[:, :, start:end]  # (B, C, chunk, h, w)
                if do_cfg:
                    pred = self.unet(torch.cat([xw, xw]), step, text, low_res=torch.cat([lw, lw]), noise_level=torch.cat([level, level])).sample
                    pred = self.guide(pred, guidance_scale)
                else:
                    pred = self.unet(xw, step, text, low_res=lw, noise_level=level).sample
                noise_pred[:, :, start:end] += pred
            return noise_pred / counts.view(1, 1, t, 1, 1)

        latents = self.denoise(latents, predict, callback_on_step_end)

        # 5. decode
        return self.postprocess(latents, output_type, return_dict)
