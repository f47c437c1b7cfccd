"""What LaVie's three sampling pipelines share, on top of diffusers' `DiffusionPipeline`.

Loading, saving, device placement, CPU offload and the progress bar come from `DiffusionPipeline`;
this file adds only the video pieces: prompt encoding for classifier-free guidance, VAE encode and
decode a few frames at a time, the sampling recipe kept in the pipeline config, the step callback
and the `.frames` output of diffusers' video pipelines (so `diffusers.utils.export_to_video` works).

A stage folder is what `save_pretrained` writes: `model_index.json` (pipeline class, components and
the sampling recipe) and one sub-folder per component. It loads with
`LaVieTextToVideoPipeline.from_pretrained(folder)` (or the stage's own class), and with diffusers'
generic loader as
`DiffusionPipeline.from_pretrained(folder, custom_pipeline=lavie.pipelines.custom_pipeline_file(folder))`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from diffusers.video_processor import VideoProcessor

OUTPUT_TYPES = ("np", "pt", "pil", "latent")

# Recipe keys every pipeline registers in its config, with the defaults used when a folder has none.
RECIPE_DEFAULTS = {"num_inference_steps": 50, "guidance_scale": 7.5, "negative_prompt": None, "prompt_suffix": ""}


@dataclass
class LaVieVideoPipelineOutput(BaseOutput):
    """`frames`: (B, T, H, W, 3) floats in [0, 1] for `"np"`, (B, T, 3, H, W) for `"pt"`, a list of
    lists of PIL images for `"pil"`, or latents (B, C, T, h, w) for `"latent"`, as diffusers' video
    pipelines return them."""

    frames: np.ndarray | torch.Tensor | list[list[PIL.Image.Image]]


def encode_video(vae, frames: torch.Tensor, chunk_size: int = 8, generator: torch.Generator | None = None,
                 sample: bool = False) -> torch.Tensor:
    """(B, 3, T, H, W) frames in [-1, 1] -> scaled latents (B, C, T, h, w) in float32.

    `chunk_size` frames go through the VAE at a time, which bounds its memory on long clips;
    `sample=True` draws from the posterior with `generator` (training), else its mode (sampling).
    """
    b, _, t = frames.shape[:3]
    dists = posterior_chunks(vae, frames.transpose(1, 2).flatten(0, 1), chunk_size)
    latents = torch.cat([d.sample(generator) if sample else d.mode() for d in dists])  # (B*T, C, h, w)
    return latents.float().unflatten(0, (b, t)).transpose(1, 2) * vae.config.scaling_factor


def posterior_chunks(vae, frames: torch.Tensor, chunk_size: int = 8) -> list:
    """VAE posteriors of (N, 3, H, W) frames in [-1, 1], `chunk_size` frames a call (the one place
    frames go through the encoder: sampling, training and the latent cache)."""
    frames = frames.to(vae.device, vae.dtype)
    return [vae.encode(chunk).latent_dist for chunk in frames.split(chunk_size)]


def frames_to_tensor(frames: torch.Tensor) -> torch.Tensor:
    """A `"pt"` output (B, T, 3, H, W) in [0, 1] -> the (B, 3, T, H, W) in [-1, 1] the next stage reads."""
    return frames.permute(0, 2, 1, 3, 4) * 2 - 1


class LaVieVideoPipeline(DiffusionPipeline):
    """Base of the LaVie pipelines; not a pipeline by itself (it has no `__call__`)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents"]
    vae_chunk_size = 8  # frames per VAE call; bounds decoder memory for long videos

    def _register_recipe(self, **recipe) -> None:
        """Keep the sampling recipe in the config, so `save_pretrained` writes it to model_index.json."""
        self.register_to_config(**recipe)
        self.video_processor = VideoProcessor(vae_scale_factor=self.vae_scale_factor)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def recipe(self, name: str, value):
        """A call argument, or the folder's recipe when the caller left it at None."""
        if value is not None:
            return value
        return self.config.get(name, RECIPE_DEFAULTS.get(name))

    # --- text ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: list[str], negative_prompt: str | list[str] | None, do_cfg: bool) -> torch.Tensor:
        """CLIP text embeddings (B, L, D), or (2B, L, D) as [negative, positive] for guidance. The
        recipe's `prompt_suffix` (e.g. the released interpolation model's ", 4k.") ends every prompt."""
        suffix = self.recipe("prompt_suffix", None)
        prompt = [p + suffix for p in prompt]
        if isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompt)
        if negative_prompt is not None and len(negative_prompt) != len(prompt):
            raise ValueError(f"{len(negative_prompt)} negative prompts for {len(prompt)} prompts")
        texts = list(negative_prompt or [""] * len(prompt)) + prompt if do_cfg else prompt
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(tokens.to(self._execution_device))[0].to(self.unet.dtype)

    # --- autoencoder ----------------------------------------------------------------------------

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) latents -> (B, 3, T, H, W) frames in [-1, 1], `vae_chunk_size` frames a call."""
        b, _, t = latents.shape[:3]
        flat = latents.transpose(1, 2).flatten(0, 1) / self.vae.config.scaling_factor  # (B*T, C, h, w)
        frames = torch.cat([self.vae.decode(chunk.to(self.vae.device, self.vae.dtype)).sample
                            for chunk in flat.split(self.vae_chunk_size)])
        return frames.clamp(-1, 1).float().unflatten(0, (b, t)).transpose(1, 2)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) frames in [-1, 1] -> (B, C, T, h, w) latents (posterior mode, scaled)."""
        return encode_video(self.vae, frames, self.vae_chunk_size).to(self._execution_device, self.unet.dtype)

    def postprocess(self, latents: torch.Tensor, output_type: str, return_dict: bool):
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: choose one of {OUTPUT_TYPES}")
        frames = latents if output_type == "latent" else self.video_processor.postprocess_video(self.decode_latents(latents), output_type)
        self.maybe_free_model_hooks()
        return LaVieVideoPipelineOutput(frames=frames) if return_dict else (frames,)

    # --- denoising ------------------------------------------------------------------------------

    def initial_latents(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        # noise drawn on the generator's device (CPU by default) so a seed gives the same video on any device
        device = generator.device if generator is not None else torch.device("cpu")
        noise = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        return (noise * self.scheduler.init_noise_sigma).to(self._execution_device, self.unet.dtype)

    @staticmethod
    def guide(noise_pred: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Classifier-free guidance over a [negative, positive] batch."""
        uncond, cond = noise_pred.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    def denoise(self, latents: torch.Tensor, predict, callback_on_step_end=None) -> torch.Tensor:
        """The sampling loop shared by the stages, over the timesteps set beforehand (the initial
        noise scale of some schedulers depends on them): `predict(latents_in, t)` returns the
        (guided) model output; diffusers' progress bar and `callback_on_step_end(pipe, i, t, {"latents": ...})`."""
        timesteps = self.scheduler.timesteps
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, t in enumerate(timesteps):
                noise_pred = predict(self.scheduler.scale_model_input(latents, t), t)
                latents = self.scheduler.step(noise_pred, t, latents).prev_sample
                if callback_on_step_end is not None:
                    outputs = callback_on_step_end(self, i, t, {"latents": latents})
                    latents = outputs.pop("latents", latents)
                progress.update()
        return latents


# name -> (scheduler class, config overrides); every stage keeps its folder's noise schedule
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "euler": ("EulerDiscreteScheduler", {}),
}


def make_scheduler(name: str, config):
    """A diffusers scheduler of the named kind over the noise schedule in `config`."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"scheduler={name!r}: choose one of {sorted(SCHEDULERS)}")
    class_name, overrides = SCHEDULERS[name]
    return getattr(diffusers, class_name).from_config(config, **overrides)
