"""Temporal interpolation sampling: 16 key frames -> 61 frames (LaVie §3.2)."""

import torch
from tqdm.auto import tqdm

from lavie.model import interpolated_length, interpolation_conditioning

from .stage import StagePipeline


class InterpolationPipeline(StagePipeline):
    """Key frames + prompt -> a video `factor` times denser with a `VideoUNet(conditioning="interpolation")`.

    Every output frame is synthesised anew, the key frames included (LaVie §3.2): the key frames
    enter only through the conditioning channels.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        video: torch.Tensor,
        negative_prompt: str | list[str] | None = None,
        factor: int = 4,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """video: (B, 3, T, H, W) key frames in [-1, 1]. Returns (B, 3, factor*(T-1)+1, H, W) in [-1, 1]."""
        if self.unet.config.conditioning != "interpolation":
            raise ValueError(f"the interpolation stage needs a VideoUNet with conditioning='interpolation', got {self.unet.config.conditioning!r}")
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        negative_prompt = [negative_prompt] * len(prompt) if isinstance(negative_prompt, str) else negative_prompt
        if video.shape[0] != len(prompt):
            raise ValueError(f"{video.shape[0]} videos for {len(prompt)} prompts")

        # 1. text
        do_cfg = guidance_scale > 1.0
        text = self.encode_prompt(prompt, negative_prompt, do_cfg)  # ((1 + cfg) * B, L, D)

        # 2. key-frame latents repeated to the target rate, with their mask
        key_latents = self.encode_frames(video)  # (B, C, T, h, w)
        cond = interpolation_conditioning(key_latents, factor)  # (B, C, T_out, h, w)
        b, c, t, h, w = key_latents.shape
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = self.initial_latents((b, c, interpolated_length(t, factor), h, w), generator)  # (B, C, T_out, h, w)

        # 3. denoising loop
        with self.running(self.unet) as unet:
            for step in tqdm(self.scheduler.timesteps, desc="interpolation", leave=False):
                x = self.scheduler.scale_model_input(latents, step)
                if do_cfg:
                    noise_pred = self.guide(unet(torch.cat([x, x]), step, text, cond=torch.cat([cond, cond])).sample, guidance_scale)
                else:
                    noise_pred = unet(x, step, text, cond=cond).sample
                latents = self.scheduler.step(noise_pred, step, latents).prev_sample

        # 4. decode
        return self.decode_latents(latents)
