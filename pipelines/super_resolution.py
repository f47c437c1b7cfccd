"""Video super-resolution sampling over overlapping frame windows (LaVie §3.3, Video LDM §3.4)."""

import torch
from tqdm.auto import tqdm

from .stage import StagePipeline


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


class VideoSuperResolutionPipeline(StagePipeline):
    """Low-resolution video + prompt -> a video at 4x resolution with a `VideoSRUNet` and the x4
    upscaler's VAE. The low-resolution frames are noised to `noise_level` (noise augmentation,
    Video LDM §3.4) and concatenated to the latents; the UNet runs on windows of `window` frames,
    and in the frames where windows overlap their predictions are averaged at every step, so
    neighbouring windows agree.
    """

    def __init__(self, tokenizer, text_encoder, vae, unet, scheduler, low_res_scheduler, max_noise_level: int = 350):
        super().__init__(tokenizer, text_encoder, vae, unet, scheduler)
        self.low_res_scheduler = low_res_scheduler
        self.max_noise_level = max_noise_level

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        video: torch.Tensor,
        negative_prompt: str | list[str] | None = None,
        noise_level: int = 50,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        window: int = 8,
        overlap: int = 2,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """video: (B, 3, T, h, w) in [-1, 1]. Returns (B, 3, T, H, W) in [-1, 1], H, W = x4 through the VAE."""
        if not 0 <= noise_level <= self.max_noise_level:
            raise ValueError(f"noise_level must lie in [0, {self.max_noise_level}], got {noise_level}")
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        negative_prompt = [negative_prompt] * len(prompt) if isinstance(negative_prompt, str) else negative_prompt
        b, _, t, h, w = video.shape

        # 1. text
        do_cfg = guidance_scale > 1.0
        text = self.encode_prompt(prompt, negative_prompt, do_cfg)  # ((1 + cfg) * B, L, D)

        # 2. noise-augmented low-resolution frames (Video LDM §3.4, c_tau_gamma)
        video = video.to(self.device, self.dtype)
        level = torch.full((b,), noise_level, dtype=torch.long, device=self.device)
        aug_noise = self.initial_latents(video.shape, generator) / self.scheduler.init_noise_sigma
        low_res = self.low_res_scheduler.add_noise(video.transpose(1, 2).flatten(0, 1), aug_noise.transpose(1, 2).flatten(0, 1), level.repeat_interleave(t))
        low_res = low_res.unflatten(0, (b, t)).transpose(1, 2)  # (B, 3, T, h, w)

        # 3. latents at the low-resolution size; the x4 VAE decodes them to 4x pixels
        channels = self.unet.unet2d.config.out_channels
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = self.initial_latents((b, channels, t, h, w), generator)  # (B, 4, T, h, w)
        windows = frame_windows(t, window, overlap)
        counts = torch.zeros(t, device=self.device, dtype=self.dtype)
        for start, end in windows:
            counts[start:end] += 1

        # 4. denoising loop, windowed in time
        with self.running(self.unet) as unet:
            for step in tqdm(self.scheduler.timesteps, desc="super-resolution", leave=False):
                x = self.scheduler.scale_model_input(latents, step)
                noise_pred = torch.zeros_like(latents)
                for start, end in windows:
                    xw, lw = x[:, :, start:end], low_res[:, :, start:end]  # (B, C, window, h, w)
                    if do_cfg:
                        pred = unet(torch.cat([xw, xw]), step, text, low_res=torch.cat([lw, lw]), noise_level=torch.cat([level, level])).sample
                        pred = self.guide(pred, guidance_scale)
                    else:
                        pred = unet(xw, step, text, low_res=lw, noise_level=level).sample
                    noise_pred[:, :, start:end] += pred
                noise_pred = noise_pred / counts.view(1, 1, t, 1, 1)
                latents = self.scheduler.step(noise_pred, step, latents).prev_sample

        # 5. decode
        return self.decode_latents(latents)
