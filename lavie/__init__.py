"""LaVie toolkit: video corpus curation and cascaded video latent diffusion training."""
