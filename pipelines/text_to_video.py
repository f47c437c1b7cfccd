"""Base text-to-video sampling (LaVie §3.1), with autoregressive extension for long videos
(LaVie §4.4, Video LDM §3.2)."""

import torch
from tqdm.auto import tqdm

from lavie.model import context_conditioning

from .stage import StagePipeline


class TextToVideoPipeline(StagePipeline):
    """Prompt -> key-frame video with a `VideoUNet` (conditioning `"none"` or `"context"`).

    A `"context"` model is a prediction model: it also reads the first S frames of the window
    (Video LDM §3.2). `__call__` samples one window; `generate_long` chains windows, each starting
    from the last frames of the previous one.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        num_frames: int = 16,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        generator: torch.Generator | None = None,
        context_latents: torch.Tensor | None = None,
        context_guidance_scale: float = 1.0,
        output_type: str = "pt",
    ) -> torch.Tensor:
        """Returns frames (B, 3, T, H, W) in [-1, 1], or latents (B, C, T, h, w) for `output_type="latent"`.

        `context_latents` (B, C, S, h, w): the first S frames to continue from (context models only).
        """
        if output_type not in ("pt", "latent"):
            raise ValueError(f"output_type={output_type!r}: choose one of ('pt', 'latent')")
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        negative_prompt = [negative_prompt] * len(prompt) if isinstance(negative_prompt, str) else negative_prompt
        is_context_model = self.unet.config.conditioning == "context"
        if self.unet.config.conditioning not in ("none", "context"):
            raise ValueError(f"the base stage needs a VideoUNet with conditioning 'none' or 'context', got {self.unet.config.conditioning!r}")
        if context_latents is not None and not is_context_model:
            raise ValueError("context_latents need a prediction model (VideoUNet conditioning='context')")

        # 1. text, with the negative prompt as the unconditional branch of guidance
        do_cfg = guidance_scale > 1.0
        text = self.encode_prompt(prompt, negative_prompt, do_cfg)  # ((1 + cfg) * B, L, D)

        # 2. noise and, for prediction models, the context conditioning c_S = (m_S * z, m_S)
        height = height or self.unet.unet2d.config.sample_size * self.vae_scale_factor
        width = width or self.unet.unet2d.config.sample_size * self.vae_scale_factor
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}")
        channels = self.unet.unet2d.config.out_channels
        shape = (len(prompt), channels, num_frames, height // self.vae_scale_factor, width // self.vae_scale_factor)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = self.initial_latents(shape, generator)  # (B, C, T, h, w)
        cond = cond_empty = None
        if is_context_model:
            num_context = 0 if context_latents is None else context_latents.shape[2]
            padded = torch.zeros(shape, device=self.device, dtype=self.dtype)
            if num_context:
                padded[:, :, :num_context] = context_latents.to(self.device, self.dtype)
            cond = context_conditioning(padded, num_context)  # (B, C + 1, T, h, w)
            cond_empty = context_conditioning(padded, 0)  # S = 0: the unconditional branch of context guidance

        # 3. denoising loop
        with self.running(self.unet) as unet:
            for t in tqdm(self.scheduler.timesteps, desc="base", leave=False):
                model_input = self.scheduler.scale_model_input(latents, t)
                noise_pred = self._predict(unet, model_input, t, text, cond, cond_empty, do_cfg, guidance_scale, context_guidance_scale)
                latents = self.scheduler.step(noise_pred, t, latents).prev_sample

        # 4. decode
        return latents if output_type == "latent" else self.decode_latents(latents)

    def _predict(self, unet, x, t, text, cond, cond_empty, do_cfg, guidance_scale, context_guidance_scale):
        if cond is None:
            inputs = torch.cat([x, x]) if do_cfg else x
            noise_pred = unet(inputs, t, text).sample
            return self.guide(noise_pred, guidance_scale) if do_cfg else noise_pred
        # Context guidance (Video LDM §3.2, Eq. 4) composed with text guidance:
        # e(none, no ctx) + s_text * (e(text, no ctx) - e(none, no ctx)) + s_ctx * (e(text, ctx) - e(text, no ctx))
        uncond_text, cond_text = text.chunk(2) if do_cfg else (None, text)
        e_text_ctx = unet(x, t, cond_text, cond=cond).sample
        if context_guidance_scale == 1.0 and not do_cfg:
            return e_text_ctx
        e_text = unet(x, t, cond_text, cond=cond_empty).sample
        guided = e_text + context_guidance_scale * (e_text_ctx - e_text)
        if do_cfg:
            e_none = unet(x, t, uncond_text, cond=cond_empty).sample
            guided = guided + (guidance_scale - 1.0) * (e_text - e_none)
        return guided

    @torch.no_grad()
    def generate_long(self, prompt: str | list[str], num_windows: int, num_context: int = 2, num_frames: int = 16,
                      **kwargs) -> torch.Tensor:
        """Extend a video autoregressively (LaVie §4.4, Video LDM §3.2): the first window starts from no
        context (S = 0); every later window is conditioned on the last `num_context` latents of the
        video so far and contributes its `num_frames - num_context` new frames.

        Returns frames (B, 3, T_total, H, W) with T_total = num_frames + (num_windows - 1) * (num_frames - num_context).
        """
        if self.unet.config.conditioning != "context":
            raise ValueError("generate_long needs a prediction model: a VideoUNet built with conditioning='context'")
        if num_context not in (1, 2) or num_windows < 1:
            raise ValueError(f"num_context must be 1 or 2 and num_windows >= 1, got {num_context}, {num_windows}")
        output_type = kwargs.pop("output_type", "pt")
        latents = self(prompt, num_frames=num_frames, output_type="latent", **kwargs)  # (B, C, T, h, w)
        for _ in range(num_windows - 1):
            window = self(prompt, num_frames=num_frames, output_type="latent",
                          context_latents=latents[:, :, -num_context:], **kwargs)
            latents = torch.cat([latents, window[:, :, num_context:]], dim=2)
        return latents if output_type == "latent" else self.decode_latents(latents)
