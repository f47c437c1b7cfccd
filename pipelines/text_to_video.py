"""Base text-to-video sampling (LaVie §3.1), recursive long videos (LaVie §4.4) and LoRA adapters
for personalised videos (LaVie §4.4) loaded the diffusers way."""

from __future__ import annotations

import torch
from diffusers.loaders import StableDiffusionLoraLoaderMixin

from lavie.model import context_conditioning

from .common import LaVieVideoPipeline


class LaVieTextToVideoPipeline(LaVieVideoPipeline, StableDiffusionLoraLoaderMixin):
    r"""Prompt -> key-frame video with a `VideoUNet` (conditioning `"none"`, or `"context"` for a
    long-video model).

    A `"context"` model also reads the first S frames of the window as input channels: LaVie's
    long-video model is trained with S = 1, the first frame (§4.4); Video LDM's prediction model with
    S in {0, 1, 2} and context guidance (§3.2). `__call__` samples one window; `generate_long` chains
    windows, each conditioned on the last frames of the one before.

    LoRA adapters saved by `lavie-train --stage lora` load with `load_lora_weights(folder)` and are
    weighted with `set_adapters(name, adapter_weights=scale)`, as in diffusers' image pipelines.

    Parameters: the components, then the sampling recipe kept in `model_index.json`:
    `num_inference_steps`, `guidance_scale`, `negative_prompt`, `prompt_suffix` (call arguments
    override the first three).
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
        negative_prompt: str | list[str] | None = None,
        num_frames: int = 16,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        context_latents: torch.Tensor | None = None,
        context_guidance_scale: float = 1.0,
        output_type: str = "np",
        return_dict: bool = True,
        callback_on_step_end=None,
    ):
        """Returns `LaVieVideoPipelineOutput(frames)`; `output_type="latent"` returns latents (B, C, T, h, w).

        `context_latents` (B, C, S, h, w): the first S frames to continue from (context models only).
        `None` recipe arguments take the folder's recipe.
        """
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        negative_prompt = self.recipe("negative_prompt", negative_prompt)
        guidance_scale = self.recipe("guidance_scale", guidance_scale)
        num_inference_steps = self.recipe("num_inference_steps", num_inference_steps)
        conditioning = self.unet.config.conditioning
        if conditioning not in ("none", "context"):
            raise ValueError(f"the base stage needs a VideoUNet with conditioning 'none' or 'context', got {conditioning!r}")
        if context_latents is not None and conditioning != "context":
            raise ValueError("context_latents need a long-video model (VideoUNet conditioning='context')")
        device = self._execution_device

        # 1. text, with the negative prompt as the unconditional branch of guidance
        do_cfg = guidance_scale > 1.0
        text = self.encode_prompt(prompt, negative_prompt, do_cfg)  # ((1 + cfg) * B, L, D)

        # 2. noise and, for context models, the conditioning c_S = (m_S * z, m_S)
        height = height or self.unet.unet2d.config.sample_size * self.vae_scale_factor
        width = width or self.unet.unet2d.config.sample_size * self.vae_scale_factor
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}")
        channels = self.unet.unet2d.config.out_channels
        shape = (len(prompt), channels, num_frames, height // self.vae_scale_factor, width // self.vae_scale_factor)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.initial_latents(shape, generator)  # (B, C, T, h, w)
        cond = cond_empty = None
        if conditioning == "context":
            num_context = 0 if context_latents is None else context_latents.shape[2]
            padded = torch.zeros(shape, device=device, dtype=latents.dtype)
            if num_context:
                padded[:, :, :num_context] = context_latents.to(device, latents.dtype)
            cond = context_conditioning(padded, num_context)  # (B, C + 1, T, h, w)
            cond_empty = context_conditioning(padded, 0)  # S = 0: the unconditional branch of context guidance

        # 3. denoising loop
        def predict(x, t):
            return self._predict(x, t, text, cond, cond_empty, do_cfg, guidance_scale, context_guidance_scale)

        latents = self.denoise(latents, predict, callback_on_step_end)

        # 4. decode
        return self.postprocess(latents, output_type, return_dict)

    def _predict(self, x, t, text, cond, cond_empty, do_cfg, guidance_scale, context_guidance_scale):
        if cond is None:
            inputs = torch.cat([x, x]) if do_cfg else x
            noise_pred = self.unet(inputs, t, text).sample
            return self.guide(noise_pred, guidance_scale) if do_cfg else noise_pred
        # Context guidance (Video LDM §3.2, Eq. 4) composed with text guidance:
        # e(none, no ctx) + s_text * (e(text, no ctx) - e(none, no ctx)) + s_ctx * (e(text, ctx) - e(text, no ctx))
        uncond_text, cond_text = text.chunk(2) if do_cfg else (None, text)
        e_text_ctx = self.unet(x, t, cond_text, cond=cond).sample
        if context_guidance_scale == 1.0 and not do_cfg:
            return e_text_ctx
        e_text = self.unet(x, t, cond_text, cond=cond_empty).sample
        guided = e_text + context_guidance_scale * (e_text_ctx - e_text)
        if do_cfg:
            e_none = self.unet(x, t, uncond_text, cond=cond_empty).sample
            guided = guided + (guidance_scale - 1.0) * (e_text - e_none)
        return guided

    @torch.no_grad()
    def generate_long(self, prompt: str | list[str], num_segments: int, num_context: int = 1, num_frames: int = 16,
                      output_type: str = "np", return_dict: bool = True, **kwargs):
        """A long video made recursively (LaVie §4.4): the first segment from the prompt alone, every
        later one conditioned on the last `num_context` latents of the video so far (LaVie: the last
        frame), contributing its `num_frames - num_context` new frames.

        Frames: num_frames + (num_segments - 1) * (num_frames - num_context).
        """
        if self.unet.config.conditioning != "context":
            raise ValueError("long videos need a long-video model: train one with lavie-train --stage long "
                             "(a VideoUNet with conditioning='context')")
        if num_context not in (1, 2) or num_segments < 1 or num_frames <= num_context:
            raise ValueError(f"need num_context 1 or 2, num_segments >= 1 and num_frames > num_context, "
                             f"got {num_context}, {num_segments}, {num_frames}")
        latents = self(prompt, num_frames=num_frames, output_type="latent", **kwargs).frames  # (B, C, T, h, w)
        for _ in range(num_segments - 1):
            segment = self(prompt, num_frames=num_frames, output_type="latent",
                           context_latents=latents[:, :, -num_context:], **kwargs).frames
            latents = torch.cat([latents, segment[:, :, num_context:]], dim=2)
        return self.postprocess(latents, output_type, return_dict)
