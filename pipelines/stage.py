"""What every sampling stage shares: prompt encoding with classifier-free guidance, VAE encode and
decode in frame chunks, scheduler choice, device placement and CPU offload."""

import contextlib

import torch
from diffusers.schedulers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

# name -> (scheduler class, config overrides); every stage keeps its folder's noise schedule
SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
    "euler": (EulerDiscreteScheduler, {}),
}


def make_scheduler(name: str, config):
    """A diffusers scheduler of the named kind over the noise schedule in `config`."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler={name!r}: choose one of {sorted(SCHEDULERS)}")
    cls, overrides = SCHEDULERS[name]
    return cls.from_config(config, **overrides)


class StagePipeline:
    """Holds one stage's components: tokenizer, text encoder, VAE, video UNet, scheduler."""

    def __init__(self, tokenizer, text_encoder, vae, unet, scheduler):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.vae = vae
        self.unet = unet
        self.scheduler = scheduler
        self.device = torch.device("cpu")
        self.offload = False
        self.vae_chunk_size = 8  # frames per VAE call; bounds decoder memory for long videos
        for model in self.models:
            model.eval().requires_grad_(False)

    @property
    def models(self) -> list[torch.nn.Module]:
        return [self.text_encoder, self.unet, self.vae]

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # --- placement -----------------------------------------------------------------------------

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "StagePipeline":
        if device is not None:
            self.device = torch.device(device)
        for model in self.models:
            if not self.offload:
                model.to(self.device)
            if dtype is not None and model.dtype != dtype:  # casting to the same dtype only draws diffusers warnings
                model.to(dtype=dtype)
        return self

    def enable_model_cpu_offload(self, device: str | torch.device = "cuda") -> None:
        """Keep models in CPU memory and move each to `device` only while it runs, for small GPUs."""
        self.device = torch.device(device)
        self.offload = True
        for model in self.models:
            model.to("cpu")

    def enable_vae_slicing(self) -> None:
        """Decode one frame at a time through the VAE (diffusers' VAE slicing)."""
        self.vae.enable_slicing()

    def set_scheduler(self, name: str) -> None:
        self.scheduler = make_scheduler(name, self.scheduler.config)

    @contextlib.contextmanager
    def running(self, model: torch.nn.Module):
        if self.offload:
            model.to(self.device)
        try:
            yield model
        finally:
            if self.offload:
                model.to("cpu")

    # --- text ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_prompt(self, prompt: list[str], negative_prompt: list[str] | None, do_cfg: bool) -> torch.Tensor:
        """CLIP text embeddings (B, L, D), or (2B, L, D) as [negative, positive] for guidance."""
        texts = (negative_prompt or [""] * len(prompt)) + prompt if do_cfg else prompt
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt").input_ids
        with self.running(self.text_encoder) as text_encoder:
            return text_encoder(tokens.to(self.device))[0].to(self.dtype)

    # --- autoencoder ----------------------------------------------------------------------------

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, T, h, w) latents -> (B, 3, T, H, W) frames in [-1, 1], `vae_chunk_size` frames a call."""
        b, _, t = latents.shape[:3]
        flat = latents.transpose(1, 2).flatten(0, 1) / self.vae.config.scaling_factor  # (B*T, C, h, w)
        with self.running(self.vae) as vae:
            frames = torch.cat([vae.decode(chunk.to(vae.dtype)).sample for chunk in flat.split(self.vae_chunk_size)])
        return frames.clamp(-1, 1).float().unflatten(0, (b, t)).transpose(1, 2)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) frames in [-1, 1] -> (B, C, T, h, w) latents (posterior mode, scaled)."""
        b, _, t = frames.shape[:3]
        flat = frames.transpose(1, 2).flatten(0, 1).to(self.device, self.dtype)  # (B*T, 3, H, W)
        with self.running(self.vae) as vae:
            latents = torch.cat([vae.encode(chunk.to(vae.dtype)).latent_dist.mode() for chunk in flat.split(self.vae_chunk_size)])
        return (latents * self.vae.config.scaling_factor).to(self.dtype).unflatten(0, (b, t)).transpose(1, 2)

    # --- denoising ------------------------------------------------------------------------------

    def initial_latents(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        # noise drawn on the generator's device (CPU by default) so a seed gives the same video on any device
        noise = randn_tensor(shape, generator=generator, device=generator.device if generator is not None else self.device, dtype=torch.float32)
        return (noise * self.scheduler.init_noise_sigma).to(self.device, self.dtype)

    @staticmethod
    def guide(noise_pred: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Classifier-free guidance over a [negative, positive] batch."""
        uncond, cond = noise_pred.chunk(2)
        return uncond + guidance_scale * (cond - uncond)
