"""Temporal interpolation sampling: 16 key frames -> 61 frames (LaVie §3.2)."""

from __future__ import annotations

import torch

from lavie.model import interpolated_length, interpolation_conditioning

from .common import LaVieVideoPipeline


class LaVieInterpolationPipeline(LaVieVideoPipeline):
    r"""Key frames + prompt -> a video `factor` times denser with a `VideoUNet(conditioning="interpolation")`.

    Every output frame is synthesised anew, the key frames included (LaVie §3.2): the key frames
    enter only through the conditioning channels. The recipe (`num_inference_steps`,
    `guidance_scale`, `negative_prompt`, `prompt_suffix`) lives in the config as for the base pipeline.
    """

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5, negative_prompt: str | None = None,
                 prompt_suffix: str = ""):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self._register_recipe(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                              prompt_suffix=prompt_suffix)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        video: torch.Tensor,
        negative_prompt: str | list[str] | None = None,
        factor: int = 4,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end=None,
    ):
        """video: (B, 3, T, H, W) key frames in [-1, 1]. Returns frames of factor*(T-1)+1 frames."""
        if self.unet.config.conditioning != "interpolation":
            raise ValueError(f"the interpolation stage needs a VideoUNet with conditioning='interpolation', got {self.unet.config.conditioning!r}")
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        if video.shape[0] != len(prompt):
            raise ValueError(f"{video.shape[0]} videos for {len(prompt)} prompts")
        negative_prompt = self.recipe("negative_prompt", negative_prompt)
        guidance_scale = self.recipe("guidance_scale", guidance_scale)
        num_inference_steps = self.recipe("num_inference_steps", num_inference_steps)

        # 1. text
        do_cfg = guidance_scale > 1.0
        text = self.encode_prompt(prompt, negative_prompt, do_cfg)  # ((1 + cfg) * B, L, D)

        # 2. key-frame latents repeated to the target rate, with their mask
        key_latents = self.encode_frames(video)  # (B, C, T, h, w)
        cond = interpolation_conditioning(key_latents, factor)  # (B, C, T_out, h, w)
        b, c, t, h, w = key_latents.shape
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = self.initial_latents((b, c, interpolated_length(t, factor), h, w), generator)  # (B, C, T_out, h, w)

        # 3. denoising loop
        def predict(x, step):
            if do_cfg:
                return self.guide(self.unet(torch.cat([x, x]), step, text, cond=torch.cat([cond, cond])).sample, guidance_scale)
            return self.unet(x, step, text, cond=cond).sample

        latents = self.denoise(latents, predict, callback_on_step_end)

        # 4. decode
        return self.postprocess(latents, output_type, return_dict)
